//! The data that flows through the engine: what sources produce ([`VideoFrame`],
//! [`AudioChunk`], wrapped in [`SourceEvent`]), what the synchroniser makes of them
//! ([`SyncedFrame`]) and what the window assembler hands to models ([`Window`]).
//!
//! Time is always the stream's running time in nanoseconds. Capture wall time travels
//! beside it (as an [`Instant`]) only to measure latency.

use std::sync::Arc;

use candle_core::Tensor;
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
    /// The frame encoder's product, computed once and shared with every window that contains
    /// this frame. `None` when no encoder is configured.
    pub features: Option<Arc<FrameFeatures>>,
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

/// What the frame encoder made of one frame: one typed product, computed once and shared by
/// every window holding the frame (tensors are reference-counted: cloning copies no data).
#[derive(Clone, Debug)]
pub enum FrameFeatures {
    /// The encoders' outputs (the Q-Former's per-frame input) and the distillation's
    /// per-frame features.
    Encoded(EncodedFrame),
    /// The encoders' inputs only (training the encoders runs the weights in its own graph).
    Inputs(EncoderInput),
}

impl FrameFeatures {
    pub fn encoded(&self) -> Option<&EncodedFrame> {
        match self {
            Self::Encoded(e) => Some(e),
            _ => None,
        }
    }

    pub fn inputs(&self) -> Option<&EncoderInput> {
        match self {
            Self::Inputs(i) => Some(i),
            _ => None,
        }
    }

    /// The distillation's features of the frame, when the frame stage computed them.
    pub fn distill(&self) -> Option<&DistillFeatures> {
        self.encoded()?.distill.as_ref()
    }

    /// What the product is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Encoded(_) => "encoder tokens",
            Self::Inputs(_) => "encoder inputs",
        }
    }
}

/// The audio and visual encoders' tokens of one frame.
#[derive(Clone, Debug, Default)]
pub struct EncodedFrame {
    /// Audio tokens `[T_a, d_audio]` (25 Whisper frames per 0.5 s); `None` without audio.
    pub audio: Option<Tensor>,
    /// Visual tokens `[slots, d_visual]`; `None` without a video frame.
    pub visual: Option<Tensor>,
    /// What online distillation reads of this frame (pooled from the tokens above, or the
    /// stand-in extractors' features); `None` without `[distill]`.
    pub distill: Option<DistillFeatures>,
}

/// What the encoders read for one frame: computed from the frame alone, with no weights
/// (so training the encoders can cache it and run only the weights in the graph).
#[derive(Clone, Debug, Default)]
pub struct EncoderInput {
    /// Log-mel of the frame's audio `[n_mels, mel_frames]`.
    pub mel: Option<Tensor>,
    /// Preprocessed pixels of the frame's picture `[3, S, S]`.
    pub pixels: Option<Tensor>,
}

/// A frame's features as the distillation stage uses them (pooled vectors and the audio's
/// SNR estimate).
#[derive(Clone, Debug, PartialEq)]
pub struct DistillFeatures {
    pub audio: Option<Vec<f32>>,
    pub visual: Option<Vec<f32>>,
    /// The SNR estimate of the frame's audio, dB (0 without audio).
    pub snr_db: f32,
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
