//! The two small traits through which the engine reaches models, without knowing them.
//!
//! A [`FrameEncoder`] runs once per synced frame (batched across streams) between the
//! synchroniser and the window assembler; its output rides on the frame as [`Features`], so
//! overlapping windows reuse it. A [`WindowModel`] runs once per assembled window (batched
//! across streams) and returns extra JSON fields for that window's output line.

use crate::frame::{FrameFeatures, SyncedFrame, Window};

/// Error from a model stage; the message names what failed.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct StageError {
    pub stage: String,
    pub message: String,
}

impl StageError {
    pub fn new(stage: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            stage: stage.into(),
            message: message.to_string(),
        }
    }
}

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
