//! sensorium-models: the perception model stack (Whisper audio encoder, CLIP/SigLIP vision
//! towers, causal Q-Former) and its adapters to the engine's model traits.
pub mod audio;
pub mod checkpoint;
pub mod error;
pub mod ops;
pub mod qformer;
pub mod stage;
pub mod tokens;
pub mod vision;
