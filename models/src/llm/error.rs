//! The LLM half's error type: one variant per kind of failure, each naming its culprit
//! (file, tensor, config field, stream, request).

use std::path::PathBuf;

/// Everything that can go wrong loading or running the LLM, its tokenizer or the answer service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file (config.json, tokenizer.json, index) did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A model config value is missing or unusable.
    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// A checkpoint (safetensors/GGUF) lacks a tensor or has one of the wrong shape/type.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// The tokenizer could not be loaded or failed on some text.
    #[error("tokenizer {source_name}: {message}")]
    Tokenizer {
        source_name: String,
        message: String,
    },
    /// A prompt template is unusable (e.g. missing the AV placeholder).
    #[error("prompt template `{field}`: {message}")]
    Template { field: String, message: String },
    /// The [llm] configuration is inconsistent.
    #[error("[llm] `{field}`: {message}")]
    Settings { field: String, message: String },
    /// Audio-visual embeddings handed in have the wrong shape or type.
    #[error("stream `{stream}` window {window}: AV embeddings {message}")]
    AvTokens {
        stream: String,
        window: u64,
        message: String,
    },
    /// A question names a stream that has no context (no window seen yet, or ended).
    #[error("no context for stream `{0}`: no window has been seen for it")]
    UnknownStream(String),
    /// The prompt does not fit in the KV cache even with the oldest windows dropped.
    #[error("prompt of {needed} tokens (+{max_new} new) exceeds `max_context_tokens` = {cap}")]
    ContextOverflow {
        needed: usize,
        max_new: usize,
        cap: usize,
    },
    /// A tensor operation failed; `context` says which.
    #[error("{context}: {source}")]
    Candle {
        context: String,
        source: candle_core::Error,
    },
    /// The HTTP question endpoint could not start.
    #[error("http endpoint {addr}: {message}")]
    Http { addr: String, message: String },
    /// The answer service has stopped.
    #[error("answer service stopped")]
    ServiceStopped,
}

/// Adds context to candle errors: `.ctx("layer 3 attention")`.
pub(crate) trait CandleCtx<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, LlmError>;
}

impl<T> CandleCtx<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, LlmError> {
        self.map_err(|source| LlmError::Candle {
            context: context(),
            source,
        })
    }
}
