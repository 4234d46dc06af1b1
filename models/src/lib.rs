//! sensorium-models: the model stack (encoders, causal Q-Former, LLM) behind the engine's traits.

pub mod llm;
