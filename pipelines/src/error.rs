//! The one error type of the pipelines crate: every failure names its culprit (file path,
//! URL without credentials, device, element), so the CLI can print it as one clear line.

use std::path::PathBuf;

/// Everything that can go wrong while building, running or probing a media pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// `[output] rtsp`: an address the annotated re-stream cannot listen on.
    #[error("output.rtsp: {0}")]
    RestreamAddress(String),
    /// The annotated re-stream's RTSP server did not start.
    #[error("output.rtsp: {0}")]
    RestreamStart(String),
    /// GStreamer itself could not be initialised (no plugins, broken installation).
    #[error("cannot initialise GStreamer: {0}")]
    Init(String),
    /// A GStreamer element the source needs is not installed.
    #[error("GStreamer element '{element}' is not available (install the plugin package that provides it) for {input}")]
    MissingElement { element: String, input: String },
    /// A media file named in the config does not exist or is not a regular file.
    #[error("media file {} does not exist or is not a file", path.display())]
    FileNotFound { path: PathBuf },
    /// A URI or URL that GStreamer cannot use.
    #[error("invalid URI '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },
    /// A capture device (camera node) that does not exist.
    #[error("capture device '{device}' does not exist")]
    DeviceNotFound { device: String },
    /// Frame rate or frame size that no pipeline can produce.
    #[error("invalid stream parameters: {0}")]
    BadParams(String),
    /// A `launch` description that GStreamer cannot parse.
    #[error("cannot parse launch pipeline: {0}")]
    LaunchParse(String),
    /// A `launch` description without an appsink named `video` or `audio`.
    #[error(
        "launch pipeline has no appsink named 'video' or 'audio' (add e.g. '! appsink name=video')"
    )]
    LaunchNoSink,
    /// An element named `video` or `audio` in a `launch` description that is not an appsink.
    #[error("launch pipeline element '{name}' must be an appsink, found '{factory}'")]
    LaunchNotAppSink { name: String, factory: String },
    /// Building or linking the pipeline failed.
    #[error("cannot build pipeline for {input}: {message}")]
    Build { input: String, message: String },
    /// The pipeline refused to start (state change to PLAYING failed).
    #[error("pipeline for {input} failed to start: {message}")]
    StateChange { input: String, message: String },
    /// An element posted an error while the pipeline ran.
    #[error("{input}: element '{element}' failed: {message}")]
    Stream {
        input: String,
        element: String,
        message: String,
    },
    /// A finite input ended (EOS) well before the duration its container declares: the
    /// file is cut short (an interrupted download or copy).
    #[error("{input}: truncated: media ends at {at_s:.3} s of its {duration_s:.3} s duration")]
    Truncated {
        input: String,
        at_s: f64,
        duration_s: f64,
    },
    /// The input has neither a usable video nor a usable audio stream.
    #[error("{input}: no usable stream (wanted {wanted})")]
    NoStreams { input: String, wanted: String },
    /// An RTSP source gave up after its reconnect attempts.
    #[error("{url}: giving up after {attempts} failed connection attempt(s); last error: {last}")]
    ReconnectGaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
    /// The Discoverer could not read a media file or URI.
    #[error("cannot probe {input}: {message}")]
    Probe { input: String, message: String },
}
