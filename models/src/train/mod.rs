//! Training: `sensorium train` teaches the causal Q-Former and its LLM projection (and LoRA
//! pairs on the LLM, or the whole LLM) to turn sight and sound into answers, on the user's
//! own clips, through the same path it serves with.
//!
//! - [`data`]: the JSON Lines manifest (LLaVA / video-SALMONN conversations).
//! - [`source`]: the seam every example source (manifest, generator) plugs into.
//! - [`clips`]: media → engine → frame encoder → windows, cached on disk.
//! - [`encoders`]: the encoders as training variables (`train_encoders`).
//! - [`labels`]: learning from the scene world's facts (label heads, encoder pretraining).
//! - [`lora`]: PEFT-layout LoRA pairs.
//! - [`trainer`]: the loop (FAVOR's recipe: next-token cross-entropy on the answer tokens,
//!   optional diversity loss, AdamW with warm-up + cosine, clipping, accumulation, atomic
//!   resumable checkpoints).
//! - [`eval`]: exact-match accuracy through the live inference path.
//!
//! candle 0.11.1's fused softmax, RMSNorm, LayerNorm and RoPE record no backward; the model
//! code picks the composed (differentiable) forms whenever a tensor is part of a training
//! graph (`Tensor::track_op`), so inference keeps the fast kernels and training loses no
//! gradient.

pub mod clips;
pub mod config;
pub mod data;
pub mod encoders;
pub mod eval;
pub mod labels;
pub mod lora;
pub mod plot;
pub mod pretrain;
pub mod scenes;
pub mod source;
pub mod trainer;

use std::path::{Path, PathBuf};

pub use clips::{ClipExtractor, ClipFeatures, ClipWindow};
pub use config::{LoraConfig, Schedule, TrainConfig, TrainLlm};
pub use data::{check_ranges, read_manifest, Media, Sample, Turn};
pub use encoders::TrainableEncoders;
pub use eval::{normalise_answer, EvalReport};
pub use pretrain::{FrameExample, PartAccuracy, PretrainSummary};
pub use scenes::{SceneExamples, ScenesConfig};
pub use source::{ExampleSource, ManifestSource};
pub use trainer::{Example, TrainSummary, Trainer};

/// Errors of training and evaluation; each names the file, line or field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A `[train]` value is invalid.
    #[error("field `{field}`: {message}")]
    Config { field: String, message: String },
    /// A manifest line is malformed (`origin` is `file:line`).
    #[error("{origin}: {message}")]
    Manifest { origin: String, message: String },
    /// A media file cannot be decoded or is too short.
    #[error("{path}: {message}")]
    Media { path: PathBuf, message: String },
    /// The models do not fit together or failed.
    #[error("{0}")]
    Model(#[from] crate::error::ModelError),
    #[error("{0}")]
    Llm(#[from] crate::llm::LlmError),
    /// A LoRA adapter directory is malformed.
    #[error("{path}: {message}")]
    Adapter { path: PathBuf, message: String },
    /// The output directory cannot be written, or holds something else.
    #[error("{path}: {message}")]
    Output { path: PathBuf, message: String },
    /// A resumable state is missing or does not match this run.
    #[error("{path}: {message}")]
    State { path: PathBuf, message: String },
    /// Stopped by the user after saving a resumable state.
    #[error("interrupted at step {step}; resumable state saved")]
    Interrupted { step: u64 },
    #[error("tensor op failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Replaces directory `dir` by what `fill` writes into a fresh sibling directory: the new
/// one is complete before the old one goes, so `dir` is never half written.
pub(crate) fn replace_dir(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = dir.parent().unwrap_or(Path::new("."));
    let new = parent.join(format!(".{name}.new"));
    let old = parent.join(format!(".{name}.old"));
    let _ = std::fs::remove_dir_all(&new);
    std::fs::create_dir_all(&new).map_err(|e| output_err(&new, e))?;
    fill(&new)?;
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| output_err(dir, e))?;
    }
    std::fs::rename(&new, dir).map_err(|e| output_err(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// A file or directory under the output that cannot be written.
fn output_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Output {
        path: path.to_owned(),
        message: e.to_string(),
    }
}
