//! The pipeline configuration schema (TOML), shared by the CLI, the engine and the sources.
//!
//! Field names are the TOML keys. Defaults are chosen so that the smallest useful config is a
//! single `[[stream]]` with a `source`. Secrets (RTSP passwords) never appear in `Debug` or
//! serialized output.

/// Loading and validating a [`Config`] (every error names the file and the field).
pub mod load;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::queue::QueueMode;

/// The whole config file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(rename = "stream", default)]
    pub streams: Vec<StreamConfig>,
    /// `[models]`, `[llm]`, `[distill]`: the model stack's sections, kept as opaque TOML
    /// tables because the engine does not know the models; the CLI parses and validates them
    /// with the model crate's types (errors name the field, e.g. `llm.sampling.temperature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<toml::Table>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<toml::Table>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<toml::Table>,
    /// `[train]`: `sensorium train`'s section (schema in the models crate, `train::TrainConfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<toml::Table>,
}

/// Defaults for every stream, and the window shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Video frames per second after `videorate` (FAVOR: 2).
    pub fps: f64,
    /// Frame size after `videoscale`.
    pub width: u32,
    pub height: u32,
    /// Frames per window, k (FAVOR: 10).
    pub window: usize,
    /// Frames between window starts, s (FAVOR: s = k; streaming: s < k).
    pub stride: usize,
    /// Capacity of every inter-stage queue.
    pub queue_capacity: usize,
    /// Synchroniser latency bound, ms of running time: a frame whose audio or video is still
    /// missing this long after its end is emitted with what it has (zeros for missing
    /// audio). Must cover the source's audio chunk length plus its jitter.
    pub latency_ms: u64,
    /// Most items a model stage takes in one batch (across streams).
    pub batch: usize,
    /// Where the causal Q-Former runs: `auto` (CUDA device 0 when usable, else the CPU, saying
    /// why once), `cpu`, `cuda` or `cuda:N`. CLI: `run --device`.
    pub device: String,
    /// How long a requested shutdown (Ctrl-C, SIGTERM) may take to flush: stages still busy
    /// after this (a model stuck on a window) are abandoned and named in the error (exit 6).
    pub shutdown_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            fps: 2.0,
            width: 224,
            height: 224,
            window: 10,
            stride: 10,
            queue_capacity: 32,
            latency_ms: 500,
            batch: 8,
            device: "auto".into(),
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// Where per-window (later: per-answer) JSON lines go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// `-` for stdout, otherwise a file path (created or truncated).
    pub path: String,
    /// Re-serve every stream over RTSP with the latest window and answer drawn on it:
    /// `127.0.0.1:8554/sensorium` serves `rtsp://127.0.0.1:8554/sensorium/STREAM`
    /// (loopback only; needs the GStreamer build).
    pub rtsp: Option<String>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            path: "-".into(),
            rtsp: None,
        }
    }
}

/// `[http]`: sensorium's HTTP server (`POST /ask`, and `GET /metrics` when `[metrics] listen`
/// is the same address); off unless `listen` is set. The same limits guard the metrics
/// endpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// e.g. `127.0.0.1:8088`. An address other than loopback is refused unless `token` is set.
    pub listen: Option<String>,
    /// Bearer token every request must carry (`Authorization: Bearer TOKEN`, compared in
    /// constant time). The environment variable `SENSORIUM_HTTP_TOKEN` overrides it (keeps
    /// it out of config files). Never printed: `check` shows `***`.
    pub token: Option<Secret>,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// A client must finish sending its request head within this (else the connection is
    /// closed), so a slow client cannot hold the server.
    pub header_timeout_ms: u64,
    /// ... and its body within this (else 408).
    pub body_timeout_ms: u64,
    /// Connections served at once; one more gets 503 and is closed.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            max_body_bytes: 64 * 1024,
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_connections: 64,
        }
    }
}

/// Prometheus exporter; off unless `listen` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// e.g. `127.0.0.1:9464`.
    pub listen: Option<String>,
}

/// One stream: a source plus per-stream overrides.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub source: SourceConfig,
    /// Overflow policy; default depends on the source (live: realtime, file: lossless).
    pub mode: Option<QueueMode>,
    pub fps: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// Where a stream's media comes from. `kind` selects the variant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// Live `videotestsrc` + `audiotestsrc`.
    Test(TestSource),
    /// A local media file (anything `uridecodebin` decodes).
    File(FileSource),
    /// Any URI `uridecodebin` accepts (file://, http://, ...).
    Uri(UriSource),
    /// An RTSP camera, with reconnect.
    Rtsp(RtspSource),
    /// A V4L2 camera, optionally with a microphone in the same stream.
    Camera(CameraSource),
    /// A microphone alone (audio-only stream).
    Microphone(MicrophoneSource),
    /// A user's gst-launch description with appsinks named `video` and/or `audio`.
    Launch(LaunchSource),
    /// A picture and a tone generated in Rust by the engine itself (no GStreamer): for
    /// builds without media stack, benchmarks and demos.
    Synthetic(SyntheticSource),
    /// The default model's world (objects, motion, tones, clicks), generated in Rust with
    /// exact ground truth: see `engine/src/scene/`.
    Scene(SceneSource),
}

impl SourceConfig {
    /// Live sources default to realtime queues, finite ones to lossless.
    pub fn is_live(&self) -> bool {
        match self {
            SourceConfig::Test(t) => t.is_live,
            SourceConfig::File(_) | SourceConfig::Uri(_) => false,
            SourceConfig::Launch(l) => l.live,
            SourceConfig::Synthetic(s) => s.is_live,
            SourceConfig::Scene(s) => s.is_live,
            SourceConfig::Rtsp(_) | SourceConfig::Camera(_) | SourceConfig::Microphone(_) => true,
        }
    }

    /// Which media the source is configured to deliver: (video, audio). The synchroniser
    /// waits (within the latency bound) only for media a stream is expected to have.
    pub fn expects(&self) -> (bool, bool) {
        match self {
            SourceConfig::Test(t) => (t.video, t.audio),
            SourceConfig::File(f) => (f.video, f.audio),
            SourceConfig::Uri(u) => (u.video, u.audio),
            SourceConfig::Rtsp(r) => (r.video, r.audio),
            SourceConfig::Camera(c) => (true, c.microphone.is_some()),
            SourceConfig::Microphone(_) => (false, true),
            SourceConfig::Launch(_) => (true, true),
            SourceConfig::Synthetic(s) => (s.video, s.audio),
            SourceConfig::Scene(s) => (s.video, s.audio),
        }
    }

    /// Every `kind` value, for error messages.
    pub const KINDS: [&'static str; 9] = [
        "test",
        "file",
        "uri",
        "rtsp",
        "camera",
        "microphone",
        "launch",
        "synthetic",
        "scene",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Test(_) => "test",
            SourceConfig::File(_) => "file",
            SourceConfig::Uri(_) => "uri",
            SourceConfig::Rtsp(_) => "rtsp",
            SourceConfig::Camera(_) => "camera",
            SourceConfig::Microphone(_) => "microphone",
            SourceConfig::Launch(_) => "launch",
            SourceConfig::Synthetic(_) => "synthetic",
            SourceConfig::Scene(_) => "scene",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestSource {
    /// `videotestsrc pattern` nick (smpte, ball, snow, bars... see gst-inspect-1.0).
    pub pattern: String,
    /// `audiotestsrc wave` nick (sine, ticks, white-noise, silence...).
    pub wave: String,
    /// Tone frequency, Hz.
    pub freq: f64,
    /// Tone volume 0..1.
    pub volume: f64,
    pub video: bool,
    pub audio: bool,
    /// Run against the clock (like a camera). `false` runs as fast as possible.
    pub is_live: bool,
    /// Stop after this many seconds of running time (EOS); `None` runs forever.
    pub duration_s: Option<f64>,
}

impl Default for TestSource {
    fn default() -> Self {
        Self {
            pattern: "smpte".into(),
            wave: "sine".into(),
            freq: 440.0,
            volume: 0.5,
            video: true,
            audio: true,
            is_live: true,
            duration_s: None,
        }
    }
}

/// The picture of a [`SyntheticSource`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticPattern {
    /// A white disc crossing a colour gradient, one position per frame.
    #[default]
    Ball,
    /// The colour gradient alone, scrolling one column per frame.
    Gradient,
}

/// A source generated by the engine (no GStreamer): a moving picture at the stream's size
/// and rate and a sine tone at 16 kHz, stamped on an exact timeline (video frame `i` at
/// `i/fps`, audio chunk `j` at `j·chunk_ms`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticSource {
    pub pattern: SyntheticPattern,
    /// Tone frequency, Hz (below the 8 kHz Nyquist limit of 16 kHz audio).
    pub freq: f64,
    /// Tone amplitude 0..1.
    pub volume: f64,
    pub video: bool,
    pub audio: bool,
    /// Paced by the wall clock (like a camera). `false` runs as fast as the engine takes it.
    pub is_live: bool,
    /// Stop after this many seconds (EOS); `None` runs forever.
    pub duration_s: Option<f64>,
    /// Length of one audio chunk, ms.
    pub chunk_ms: u32,
}

impl Default for SyntheticSource {
    fn default() -> Self {
        Self {
            pattern: SyntheticPattern::Ball,
            freq: 440.0,
            volume: 0.5,
            video: true,
            audio: true,
            is_live: true,
            duration_s: None,
            chunk_ms: 20,
        }
    }
}

/// The scene world (`kind = "scene"`): a stream of seeded scenes of 0–2 moving shapes and a
/// sound, drawn at the stream's size and rate, 16 kHz audio, on an exact timeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SceneSource {
    /// Which stream of scenes (the same seed gives the same scenes, frames and samples).
    pub seed: u64,
    /// Scenes last a whole number of these, s: set it to the window's span (`window / fps`)
    /// so that no window straddles two scenes.
    pub window_s: f64,
    pub video: bool,
    pub audio: bool,
    /// Paced by the wall clock (like a camera). `false` runs as fast as the engine takes it.
    pub is_live: bool,
    /// Stop after this many seconds (EOS); `None` runs forever.
    pub duration_s: Option<f64>,
    /// Length of one audio chunk, ms.
    pub chunk_ms: u32,
}

impl Default for SceneSource {
    fn default() -> Self {
        Self {
            seed: 1,
            window_s: 2.0,
            video: true,
            audio: true,
            is_live: true,
            duration_s: None,
            chunk_ms: 20,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub path: PathBuf,
    /// Start again from the beginning at EOS (running time keeps increasing).
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Use the file's video / audio (if it has them).
    #[serde(default = "yes")]
    pub video: bool,
    #[serde(default = "yes")]
    pub audio: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UriSource {
    pub uri: String,
    #[serde(default, rename = "loop")]
    pub looping: bool,
    #[serde(default = "yes")]
    pub video: bool,
    #[serde(default = "yes")]
    pub audio: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RtspSource {
    /// `rtsp://host:port/path`; credentials belong in `user`/`password`, not the URL.
    pub url: String,
    #[serde(default)]
    pub transport: RtspTransport,
    /// rtspsrc jitterbuffer latency, ms.
    #[serde(default = "default_rtsp_latency")]
    pub latency_ms: u32,
    pub user: Option<String>,
    pub password: Option<Secret>,
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    #[serde(default = "yes")]
    pub video: bool,
    #[serde(default = "yes")]
    pub audio: bool,
}

/// Exponential backoff between reconnect attempts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    pub enabled: bool,
    pub initial_ms: u64,
    pub max_ms: u64,
    /// Give up after this many consecutive failed attempts; `None`: never.
    pub max_attempts: Option<u32>,
    /// A connected camera that delivers nothing for this long is treated as lost and
    /// reconnected (a camera that stops sending without closing the connection posts no
    /// error).
    pub stall_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_ms: 500,
            max_ms: 30_000,
            max_attempts: None,
            stall_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraSource {
    /// V4L2 device node.
    #[serde(default = "default_camera")]
    pub device: String,
    /// Capture audio from this microphone into the same stream.
    pub microphone: Option<MicrophoneSource>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioBackend {
    #[default]
    Auto,
    Pulse,
    Alsa,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MicrophoneSource {
    pub backend: AudioBackend,
    /// Backend-specific device name (`hw:1,0`, a pulse source name); default device if unset.
    pub device: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LaunchSource {
    /// gst-launch description containing `appsink name=video` and/or `appsink name=audio`.
    pub pipeline: String,
    /// Whether the description is a live source (default queue mode realtime).
    #[serde(default = "yes")]
    pub live: bool,
}

/// A string that never shows itself in logs, `Debug`, or `sensorium check` output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is handed to the library that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

fn yes() -> bool {
    true
}
fn default_rtsp_latency() -> u32 {
    200
}
fn default_camera() -> String {
    "/dev/video0".into()
}
