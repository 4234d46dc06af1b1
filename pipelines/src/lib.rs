//! sensorium-pipelines: GStreamer sources that turn media into engine frames and audio.
//!
//! Every stream of a sensorium config names a source (`[stream.source] kind = ...`). This
//! crate builds the GStreamer pipeline for it and pushes [`SourceEvent`]s into the stream's
//! queue. It implements the engine's [`SourceFactory`] contract as [`GstSourceFactory`], and
//! offers [`probe`] for `sensorium probe URI`.
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
//! - [`GstSourceFactory::new()`] and its [`SourceFactory::start`] (what the engine runtime
//!   calls), or [`GstSourceFactory::start_source`] for the typed [`PipelineError`];
//! - [`GstSourceFactory::check`]: the up-front checks of `start` without starting anything;
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
//! use sensorium_pipelines::GstSourceFactory;
//!
//! let cfg: sensorium_engine::config::Config =
//!     toml::from_str(include_str!("../configs/test.toml")).unwrap();
//! let params = SourceParams { fps: 2.0, width: 224, height: 224, mode: QueueMode::Realtime };
//! let (tx, rx) = bounded(32, params.mode);
//! let mut handle = GstSourceFactory::new().start(&cfg.streams[0], &params, tx).unwrap();
//! while let Some(event) = rx.recv() {
//!     println!("{event:?}");
//! #   break;
//! }
//! handle.stop();
//! ```

mod appsink;
mod error;
mod graph;
mod probe;
pub mod redact;
pub mod restream;
mod rtsp;
mod runner;
mod sources;
#[cfg(feature = "testutil")]
pub mod testutil;

use gstreamer as gst;

use sensorium_engine::config::{SourceConfig, StreamConfig};
use sensorium_engine::{QueueSender, SourceEvent, SourceParams};
#[doc(no_inline)]
pub use sensorium_engine::{SourceFactory, SourceHandle, SourceStartError};

pub use error::PipelineError;
pub use probe::{probe, AudioStreamInfo, ProbeInfo, VideoStreamInfo};
pub use runner::GstSourceHandle;

/// Initialises GStreamer (idempotent; every entry point of this crate calls it).
pub fn init() -> Result<(), PipelineError> {
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))
}

/// The engine's [`SourceFactory`] for all GStreamer sources.
#[derive(Clone, Copy, Debug, Default)]
pub struct GstSourceFactory;

impl GstSourceFactory {
    pub fn new() -> Self {
        Self
    }

    /// Starts the source of `stream` with typed errors (the trait method wraps these into
    /// [`SourceStartError`]).
    pub fn start_source(
        &self,
        stream: &StreamConfig,
        params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<GstSourceHandle, PipelineError> {
        runner::spawn(spec(stream, params)?, params, out)
    }

    /// Everything `start` checks before it runs anything (GStreamer elements installed, file
    /// or device node present, launch line parses and has its appsinks, parameters valid),
    /// without starting the source: for `sensorium check`.
    pub fn check(&self, stream: &StreamConfig, params: &SourceParams) -> Result<(), PipelineError> {
        if matches!(
            stream.source,
            SourceConfig::Synthetic(_) | SourceConfig::Scene(_)
        ) {
            return Ok(()); // generated by the engine, nothing to look for
        }
        spec(stream, params).map(|_| ())
    }
}

fn spec(stream: &StreamConfig, params: &SourceParams) -> Result<runner::SourceSpec, PipelineError> {
    init()?;
    let name = stream.name.as_str();
    Ok(match &stream.source {
        SourceConfig::Test(t) => sources::test_spec(name, t, params)?,
        SourceConfig::File(f) => {
            sources::file_spec(name, &f.path, f.looping, f.video, f.audio, params)?
        }
        SourceConfig::Uri(u) => {
            sources::uri_spec(name, &u.uri, u.looping, u.video, u.audio, params)?
        }
        SourceConfig::Rtsp(r) => rtsp::rtsp_spec(name, r, params)?,
        SourceConfig::Camera(c) => sources::camera_spec(name, c, params)?,
        SourceConfig::Microphone(m) => sources::microphone_spec(name, m, params)?,
        SourceConfig::Launch(l) => sources::launch_spec(name, l, params)?,
        SourceConfig::Synthetic(_) | SourceConfig::Scene(_) => {
            return Err(PipelineError::Build {
                input: format!("stream '{name}'"),
                message: format!(
                    "a {} source is generated by the engine, not GStreamer: \
                     start it through the SourceFactory trait",
                    stream.source.kind()
                ),
            })
        }
    })
}

impl SourceFactory for GstSourceFactory {
    fn start(
        &self,
        stream: &StreamConfig,
        params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<Box<dyn SourceHandle>, SourceStartError> {
        if matches!(
            stream.source,
            SourceConfig::Synthetic(_) | SourceConfig::Scene(_)
        ) {
            return sensorium_engine::SyntheticFactory.start(stream, params, out);
        }
        self.start_source(stream, params, out)
            .map(|h| Box::new(h) as Box<dyn SourceHandle>)
            .map_err(|e| SourceStartError {
                stream: stream.name.clone(),
                message: e.to_string(),
            })
    }
}
