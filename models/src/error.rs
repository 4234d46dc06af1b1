//! [`ModelError`], the error of loading and running the encoders and the Q-Former (the
//! crate's boundary error, [`crate::Error`], wraps it with the other parts' errors). Every
//! failure names the file, tensor or field at fault so a user can fix a checkpoint or config
//! without reading the code.

use std::path::PathBuf;

use sensorium_engine::model::StageError;

/// Errors from loading and running models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file the model needs is not there (or cannot be read).
    #[error("{path}: cannot read: {message}")]
    MissingFile { path: PathBuf, message: String },
    /// `config.json` is not valid JSON or lacks a field.
    #[error("{path}: invalid config: {message}")]
    InvalidConfig { path: PathBuf, message: String },
    /// `config.json` names an architecture this loader does not know.
    #[error("{path}: unknown model_type {found:?} (expected one of: {expected})")]
    UnknownArchitecture {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("{path}: missing tensor {tensor:?}")]
    MissingTensor { path: PathBuf, tensor: String },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor {tensor:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A tensor has a dtype we cannot use.
    #[error("{path}: tensor {tensor:?} has dtype {found}, expected a float dtype")]
    TensorDtype {
        path: PathBuf,
        tensor: String,
        found: String,
    },
    /// Input data (audio, image, slots) does not fit the model.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An error from the tensor library while running a model.
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// An error from the fused kernels (device selection, CUDA driver, shapes).
    #[error("kernels: {0}")]
    Kernels(#[from] sensorium_kernels::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// A candle error as one line: candle appends a backtrace (and context) on further lines
/// when `RUST_BACKTRACE` is set, which is not a message for users.
pub fn candle_text(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or("").trim().to_owned()
}

/// A model stage's failure as the engine takes it: `stage`, and the model's error as a
/// [`ModelError`] (typed, not a string; `StageError::downcast_ref::<ModelError>()` gives it
/// back).
pub fn stage_error(stage: &str, error: impl Into<ModelError>) -> StageError {
    StageError::new(stage, error.into())
}
