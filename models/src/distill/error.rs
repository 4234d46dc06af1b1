//! The one error type of the distillation module; every variant names its culprit (file,
//! tensor, config field) so the CLI can print a single clear line.

use std::path::PathBuf;

/// Errors of online cross-modal distillation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistillError {
    /// A `[distill]` config field has an invalid value.
    #[error("distill config: field `{field}`: {message}")]
    Config { field: String, message: String },
    /// The config file could not be parsed.
    #[error("distill config {origin}: {message}")]
    ConfigParse { origin: String, message: String },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint (student state) is unreadable; it is refused and left untouched.
    #[error("corrupt checkpoint {}: {reason}", path.display())]
    CorruptCheckpoint { path: PathBuf, reason: String },
    /// A weights file (teacher head, class embeddings) is missing a tensor or has a wrong shape.
    #[error("{}: tensor `{tensor}`: {message}", path.display())]
    Weights {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    /// Input data of the wrong size (features, frames, samples).
    #[error("{what}: {message}")]
    Input { what: String, message: String },
    /// A tensor operation failed (a bug or an out-of-memory condition, not user input).
    #[error("tensor op in {context}: {source}")]
    Candle {
        context: String,
        #[source]
        source: candle_core::Error,
    },
    /// An external tool (gst-launch-1.0) failed while generating synthetic clips.
    #[error("{tool}: {message}")]
    Tool { tool: String, message: String },
    /// The background trainer thread is gone (panicked or stopped).
    #[error("distill trainer: {0}")]
    Trainer(String),
}

impl DistillError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn config(field: &str, message: impl std::fmt::Display) -> Self {
        Self::Config {
            field: field.into(),
            message: message.to_string(),
        }
    }
    pub(crate) fn input(what: &str, message: impl std::fmt::Display) -> Self {
        Self::Input {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

/// Attach a context string to candle errors.
pub(crate) trait CandleContext<T> {
    fn ctx(self, context: &str) -> Result<T, DistillError>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &str) -> Result<T, DistillError> {
        self.map_err(|source| DistillError::Candle {
            context: context.into(),
            source,
        })
    }
}
