//! How the runtime starts sources without knowing GStreamer: a [`SourceFactory`] (implemented
//! by the pipelines crate, or by tests with synthetic producers) turns a stream's config into
//! a running source that pushes [`SourceEvent`]s into a queue until stopped.

use crate::config::StreamConfig;
use crate::frame::SourceEvent;
use crate::queue::{QueueMode, QueueSender};

/// Resolved per-stream media parameters (engine defaults merged with stream overrides).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceParams {
    pub fps: f64,
    pub width: u32,
    pub height: u32,
    pub mode: QueueMode,
}

/// A source failed to start; `message` names the culprit (file, URL, device, element).
#[derive(Debug, thiserror::Error)]
#[error("stream '{stream}': {message}")]
pub struct SourceStartError {
    pub stream: String,
    pub message: String,
}

/// A running source. Dropping it stops the source too.
pub trait SourceHandle: Send {
    /// Stop producing and release the media pipeline; idempotent.
    fn stop(&mut self);
}

/// Starts sources for streams. Failures after a successful start arrive as
/// [`SourceEvent::Error`] on the queue, never as panics.
pub trait SourceFactory: Send + Sync {
    fn start(
        &self,
        stream: &StreamConfig,
        params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<Box<dyn SourceHandle>, SourceStartError>;
}
