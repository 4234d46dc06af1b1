//! The two small traits through which the engine reaches models, without knowing them.
//!
//! A [`FrameEncoder`] runs once per synced frame (batched across streams) between the
//! synchroniser and the window assembler; its output rides on the frame as [`Features`], so
//! overlapping windows reuse it. A [`WindowModel`] runs once per assembled window (batched
//! across streams) and returns extra JSON fields for that window's output line.

use crate::frame::{FrameFeatures, SyncedFrame, Window};

/// Error from a model stage: which stage, where in the stream (optional), and the model's
/// own error, kept typed: [`StageError::downcast_ref`] gives it back to a caller that knows
/// the model crate (e.g. `sensorium_models::error::ModelError`).
#[derive(Debug)]
pub struct StageError {
    /// The stage that failed (`"qformer"`, `"llm"`, an encoder's name...).
    pub stage: String,
    /// Where: e.g. `"stream cam window 3"`.
    pub context: Option<String>,
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl StageError {
    /// `error`: the model's error, or a message (`&str`, `String`) for failures of the
    /// stage's own.
    pub fn new(
        stage: impl Into<String>,
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            stage: stage.into(),
            context: None,
            error: error.into(),
        }
    }

    /// Adds where it happened (`"stream cam window 3"`).
    pub fn at(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// The model's error as its own type, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref::<E>()
    }
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.context {
            Some(c) => write!(f, "{}: {c}: {}", self.stage, self.error),
            None => write!(f, "{}: {}", self.stage, self.error),
        }
    }
}

/// The model's error is part of the text, so it is not also a `source` (an error chain
/// would print it twice); [`StageError::downcast_ref`] reaches it.
impl std::error::Error for StageError {}

/// Encodes frames (video and/or audio) into features, once per frame.
pub trait FrameEncoder: Send {
    /// Stage name for metrics and errors (e.g. `"encoder"`).
    fn name(&self) -> &str;
    /// One [`FrameFeatures`] per input frame, in order. Frames may come from several streams.
    fn encode(&mut self, frames: &[&SyncedFrame]) -> Result<Vec<FrameFeatures>, StageError>;
}

/// Consumes whole windows (e.g. Q-Former + LLM, distillation) and reports per-window fields.
pub trait WindowModel: Send {
    fn name(&self) -> &str;
    /// One JSON object per input window, in order; its fields are merged into the window's
    /// output line. Windows may come from several streams, each stream's in order.
    fn process(
        &mut self,
        windows: &[&Window],
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StageError>;
    /// A stream ended (EOS/error): drop its per-stream state (caches, context).
    fn end_stream(&mut self, _stream: &str) {}
}
