//! sensorium-pipelines: every source kind, turning media (or a generated world) into engine
//! frames and audio.
//!
//! Every stream of a sensorium config names a source (`[stream.source] kind = ...`). This
//! crate builds the GStreamer pipeline for it (or generates it in Rust: `synthetic`, `scene`)
//! and pushes [`SourceEvent`](sensorium_engine::SourceEvent)s into the stream's queue. It
//! implements the engine's [`SourceFactory`] contract as [`Sources`], one file per kind in
//! `src/sources/`, and offers [`probe`] for `sensorium probe URI`. Without the `gstreamer`
//! feature (on by default) only the generated kinds remain, and nothing links GStreamer.
//!
//! # What a source produces
//! - video: RGB24, exactly `width x height` (letterboxed to keep the picture's shape), at a
//!   fixed `fps` (`videoconvert ! videoscale ! videorate`, caps set on the appsink);
//! - audio: mono f32 at 16 kHz (`audioconvert ! audioresample`);
//! - every item stamped with the stream's **running time** in ns (the buffer's timestamp
//!   mapped through its segment), plus the wall-clock capture instant for latency;
//! - `Eos` when a finite input ends, `Error { message }` naming the element and the input
//!   when it fails for good, `Discontinuity` before the first data after an RTSP reconnect.
//!
//! Running time only ever increases: after a file loops or an RTSP camera reconnects, the
//! new session's times are offset past the last data emitted (last frame + one frame).
//!
//! # Sources
//! | kind         | graph (see each builder's doc for the full gst-launch line)          |
//! |--------------|----------------------------------------------------------------------|
//! | `test`       | `videotestsrc` + `audiotestsrc`, live or not, optional `duration_s`  |
//! | `file`/`uri` | `uridecodebin`, video and/or audio, optional `loop`                  |
//! | `rtsp`       | `rtspsrc` (tcp/udp, latency, user/password) `! decodebin`, reconnect |
//! | `camera`     | `v4l2src`, optionally with a microphone in the same stream           |
//! | `microphone` | `autoaudiosrc`, `pulsesrc` or `alsasrc` (with device)                |
//! | `launch`     | your gst-launch line with `appsink name=video` / `appsink name=audio`|
//! | `synthetic`  | generated in Rust (no GStreamer): a moving picture and a sine tone   |
//! | `scene`      | generated in Rust (no GStreamer): the default model's world          |
//!
//! # Queues and threads
//! Appsink callbacks hand each sample to the stream's [`QueueSender`]: in `realtime` mode a
//! full queue drops its oldest item (capture never blocks), in `lossless` mode the callback
//! waits, which back-pressures file decoding. Each source has its own pipeline and its own
//! thread running the bus loop; nothing is shared between sources, so one failing, looping
//! or reconnecting never affects another. [`SourceHandle::stop`] stops a source promptly
//! and always leaves its pipeline in the `Null` state.
//!
//! # Errors
//! Problems found before anything runs (missing file, missing device node, unparsable launch
//! line, missing GStreamer element) come back from `start` as [`SourceStartError`] naming
//! the input. Problems found while running (not a media file, truncated file, an RTSP camera
//! unreachable after its retries) arrive as [`SourceEvent::Error`]. RTSP credentials never
//! appear in any message: URLs are shown without userinfo and the configured user name and
//! password are masked.
//!
//! # Entry points
//! - [`Sources::new()`] and its [`SourceFactory::start`] (what the engine runtime
//!   calls), or [`Sources::start_source`] for the typed [`PipelineError`];
//! - [`Sources::check`]: the up-front checks of `start` without starting anything;
//! - [`probe`]: container, duration and streams of a path or URI ([`ProbeInfo`] prints as
//!   text with `Display` and as JSON with serde);
//! - [`redact::strip_userinfo`]: a URL as it may be shown to a user;
//! - `testutil` (feature `testutil`, tests only): media files made with GStreamer and an
//!   in-process RTSP server, shared by this crate's tests and the workspace's end-to-end
//!   tests.
//!
//! Example configs for every kind live in `pipelines/configs/*.toml`.
//!
//! # Example
//! ```no_run
//! use sensorium_engine::{bounded, QueueMode, SourceFactory, SourceParams};
//! use sensorium_pipelines::Sources;
//!
//! let cfg: sensorium_engine::config::Config =
//!     toml::from_str(include_str!("../configs/test.toml")).unwrap();
//! let params = SourceParams { fps: 2.0, width: 224, height: 224, mode: QueueMode::Realtime };
//! let (tx, rx) = bounded(32, params.mode);
//! let mut handle = Sources::new().start(&cfg.streams[0], &params, tx).unwrap();
//! while let Some(event) = rx.recv() {
//!     println!("{event:?}");
//! #   break;
//! }
//! handle.stop();
//! ```

#[cfg(feature = "gstreamer")]
mod appsink;
mod error;
#[cfg(feature = "gstreamer")]
mod graph;
#[cfg(feature = "gstreamer")]
mod probe;
pub mod redact;
#[cfg(feature = "gstreamer")]
pub mod render;
#[cfg(feature = "gstreamer")]
pub mod restream;
#[cfg(feature = "gstreamer")]
mod runner;
pub mod sources;
#[cfg(feature = "testutil")]
pub mod testutil;

#[doc(no_inline)]
pub use sensorium_engine::{SourceFactory, SourceHandle, SourceStartError};

pub use error::PipelineError;
#[cfg(feature = "gstreamer")]
pub use probe::{probe, AudioStreamInfo, ProbeInfo, VideoStreamInfo};
#[cfg(feature = "gstreamer")]
pub use runner::GstSourceHandle;
pub use sources::Sources;

/// Initialises GStreamer (idempotent; every entry point of this crate calls it).
#[cfg(feature = "gstreamer")]
pub fn init() -> Result<(), PipelineError> {
    gstreamer::init().map_err(|e| PipelineError::Init(e.to_string()))
}
