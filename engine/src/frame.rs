//! The data that flows through the engine: what sources produce ([`VideoFrame`],
//! [`AudioChunk`], wrapped in [`SourceEvent`]), what the synchroniser makes of them
//! ([`SyncedFrame`]) and what the window assembler hands to models ([`Window`]).
//!
//! Time is always the stream's running time in nanoseconds. Capture wall time travels
//! beside it (as an [`Instant`]) only to measure latency.

use std::sync::Arc;
use std::time::Instant;

/// Sample rate of all audio inside the engine (mono, f32).
pub const AUDIO_RATE: u32 = 16_000;

/// Nanoseconds per second, for running-time arithmetic.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Name of a stream as given in the config (`[[stream]] name = ...`).
pub type StreamId = Arc<str>;

/// One decoded video frame, RGB24, packed rows (`width * 3` bytes per row, no padding).
#[derive(Clone, Debug)]
pub struct VideoFrame {
    /// Running time of the frame, ns.
    pub pts: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: Arc<[u8]>,
    /// Wall time at which the source handed the frame over.
    pub captured: Instant,
}

/// A run of mono f32 samples at [`AUDIO_RATE`], starting at running time `pts`.
#[derive(Clone, Debug)]
pub struct AudioChunk {
    /// Running time of the first sample, ns.
    pub pts: u64,
    pub samples: Arc<[f32]>,
    pub captured: Instant,
}

/// What a source pushes into the engine for one stream.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    Video(VideoFrame),
    Audio(AudioChunk),
    /// The source restarted (e.g. RTSP reconnect): running time after this event has been
    /// re-based by the source so that it stays monotonic; buffered partial data before it
    /// is flushed.
    Discontinuity {
        reason: String,
    },
    /// End of stream: flush everything, emit the padded last window.
    Eos,
    /// The source failed for good (after any retries). The stream ends; others go on.
    Error {
        message: String,
    },
}

/// One video-frame period of a stream, with the audio of `[t, t + duration)` cut out.
#[derive(Clone, Debug)]
pub struct SyncedFrame {
    pub stream: StreamId,
    /// Frame index within the stream, from 0, contiguous.
    pub index: u64,
    /// Start of the frame period, running time ns.
    pub t: u64,
    /// Length of the frame period (1/fps), ns.
    pub duration: u64,
    /// The video frame, when the stream has video and one arrived for this period.
    pub video: Option<VideoFrame>,
    /// Exactly the samples of `[t, t + duration)` (zeros where audio was missing).
    pub audio: Arc<[f32]>,
    pub has_video: bool,
    pub has_audio: bool,
    /// Earliest capture time of the data in this frame (for latency).
    pub captured: Option<Instant>,
    /// Features from the frame-encoder stage, computed once and shared (by `Arc`) with every
    /// window that contains this frame. `None` when no encoder is configured.
    pub features: Option<Features>,
    /// When the frame passed each stage (for the per-stage latencies of `sensorium bench`
    /// and the records' `timing`).
    pub timing: FrameTiming,
}

/// Wall times at which a frame left the stages before the window model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameTiming {
    /// The synchroniser handed the frame on.
    pub synced: Option<Instant>,
    /// The frame stage finished with it (encoded, or passed through).
    pub encoded: Option<Instant>,
}

/// Opaque per-frame features produced by a [`crate::model::FrameEncoder`]; the engine only
/// moves them around, the model side downcasts them.
#[derive(Clone)]
pub struct Features(pub Arc<dyn std::any::Any + Send + Sync>);

impl Features {
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Self {
        Self(Arc::new(value))
    }
    pub fn downcast_ref<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref::<T>()
    }
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Features(..)")
    }
}

/// `k` consecutive synced frames; a partial last window is padded (`valid[i] == false`).
#[derive(Clone, Debug)]
pub struct Window {
    pub stream: StreamId,
    /// Window index within the stream, from 0.
    pub index: u64,
    /// Start of the first frame, ns.
    pub t_start: u64,
    /// End of the last valid frame, ns.
    pub t_end: u64,
    /// Exactly `k` frames; padding frames have no video, zero audio, and `valid == false`.
    pub frames: Vec<SyncedFrame>,
    pub valid: Vec<bool>,
}

impl Window {
    /// Number of real (non-padding) frames.
    pub fn valid_frames(&self) -> usize {
        self.valid.iter().filter(|v| **v).count()
    }

    /// Capture time of the newest valid frame's data: the reference of every latency the
    /// engine reports (window line written, first answer token), so a latency does not
    /// include the span of stream time the window covers.
    pub fn newest_capture(&self) -> Option<Instant> {
        self.frames
            .iter()
            .zip(&self.valid)
            .filter(|(_, v)| **v)
            .filter_map(|(f, _)| f.captured)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn newest_capture_is_the_newest_valid_frames() {
        let t0 = Instant::now();
        let frame = |i: u64, captured: Option<Instant>| SyncedFrame {
            stream: "s".into(),
            index: i,
            t: i * 500_000_000,
            duration: 500_000_000,
            video: None,
            audio: Arc::from(vec![0f32; 4]),
            has_video: false,
            has_audio: true,
            captured,
            features: None,
            timing: Default::default(),
        };
        let w = Window {
            stream: "s".into(),
            index: 0,
            t_start: 0,
            t_end: 1_500_000_000,
            frames: vec![
                frame(0, Some(t0 + Duration::from_millis(500))),
                frame(1, Some(t0 + Duration::from_millis(1000))),
                frame(2, None),
                // Padding never counts, whatever it carries.
                frame(3, Some(t0 + Duration::from_millis(9000))),
            ],
            valid: vec![true, true, true, false],
        };
        assert_eq!(w.newest_capture(), Some(t0 + Duration::from_millis(1000)));
    }
}
