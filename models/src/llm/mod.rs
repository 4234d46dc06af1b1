//! LLM decoding with audio-visual tokens: decoders (Qwen2/Qwen2.5, LLaMA family; safetensors
//! and GGUF), tokenizers, prompt templates with an AV placeholder, sampling, per-stream bounded
//! context, the answer service with its question scheduler, and the stdin/HTTP question inputs.

pub mod error;
pub mod gguf;
pub mod hf_config;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod tokenizer;

pub use error::LlmError;
pub use hf_config::{Arch, DecoderConfig, RopeStyle};
pub use loader::{load_model, load_model_with, ComputeDtype, LoadedModel};
pub use model::{argmax, Decoder};
pub use tokenizer::LlmTokenizer;
