//! LLM decoding with audio-visual tokens: decoders (Qwen2/Qwen2.5, LLaMA family; safetensors
//! and GGUF), tokenizers, prompt templates with an AV placeholder, sampling, per-stream bounded
//! context, the answer service with its question scheduler, and the stdin question input (HTTP:
//! the server crate).
//!
//! How the engine uses it (per window, after the Q-Former):
//! ```text
//! let answerer = Answerer::from_config(&cfg.llm, &device)?;          // [llm] section
//! let svc = AnswerService::spawn(answerer, 32, Box::new(|out| match out {
//!     ServiceOutput::Answer(rec) => output.write_answer(&rec.line()),  // every answer, one line
//!     ServiceOutput::Token { .. } | ServiceOutput::Error { .. } => ..,
//! }));
//! // POST /ask: sensorium-server's `Server` with `Routes { ask: Some(svc.handle()), .. }`
//! if cfg.llm.stdin { spawn_line_questions(std::io::stdin().lock(), svc.handle(), print)?; }
//! // per window: Q-Former output [32, hidden] as AV tokens
//! svc.handle().push_window(WindowMeta::from_window(&window), qformer_tokens)?;
//! // stream ended
//! svc.handle().end_stream(&name)?;
//! ```

pub mod answerer;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod hf_config;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod q4_vnni;
pub mod sampling;
pub mod schedule;
pub mod service;
pub mod settings;
pub mod synth;
pub mod template;
pub mod tokenizer;

pub use answerer::{Answer, AnswerRecord, Answerer, WindowMeta};
pub use error::LlmError;
pub use generate::{CancelToken, Finish, GenParams, Generated, Segment, TextGenerator, TokenEvent};
pub use hf_config::{Arch, DecoderConfig, RopeStyle};
pub use loader::{load_model, load_model_with, ComputeDtype, LoadedModel};
pub use model::{argmax, Decoder};
pub use sampling::{Sampler, SamplingConfig};
pub use schedule::QuestionScheduler;
pub use service::{spawn_line_questions, AnswerService, LiveEvent, ServiceHandle, ServiceOutput};
pub use settings::{HttpConfig, LlmConfig, ScheduledQuestion};
pub use template::{Layout, TemplateConfig, TemplateKind, TokenLayout, AV_PLACEHOLDER};
pub use tokenizer::LlmTokenizer;
