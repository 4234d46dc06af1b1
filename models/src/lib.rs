//! sensorium-models: the model side of the engine (encoders, causal Q-Former, LLM and the
//! online cross-modal distillation), reached by the engine only through its small traits.

pub mod distill;
