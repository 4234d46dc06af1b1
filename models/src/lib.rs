//! sensorium-models: the model stack (Whisper audio encoder, CLIP/SigLIP vision towers,
//! causal Q-Former, LLM decoding with audio-visual tokens, online cross-modal distillation)
//! and its adapters to the engine's small model traits.

pub mod audio;
pub mod checkpoint;
pub mod distill;
pub mod error;
pub mod llm;
pub mod ops;
pub mod qformer;
pub mod setup;
pub mod stack;
pub mod stage;
pub mod synth;
pub(crate) mod tensor_file;
pub mod tokens;
pub mod train;
pub mod vision;
