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

/// Renders GStreamer's test sources to memory: the distillation's `test-sources` clip world
/// asks for its media through this (the models crate links no GStreamer); the pipelines crate
/// implements it (`sensorium_pipelines::render::GstTestMedia`).
pub trait TestMedia {
    /// `frames` RGB frames of `videotestsrc pattern=…` at `width`x`height`, back to back.
    fn video(
        &self,
        pattern: &str,
        width: u32,
        height: u32,
        fps: u32,
        frames: usize,
    ) -> Result<Vec<u8>, String>;
    /// `buffers x samples_per_buffer` mono 16 kHz samples of `audiotestsrc wave=…`.
    fn audio(
        &self,
        wave: &str,
        freq: f64,
        volume: f64,
        samples_per_buffer: usize,
        buffers: usize,
    ) -> Result<Vec<f32>, String>;
}
