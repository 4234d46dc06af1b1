//! Loading and validating a [`Config`]: every error names the file and the field (TOML key
//! path such as `stream[1].source.kind`), and the resolved form fills each stream's defaults
//! so that `sensorium check` can show exactly what will run.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use crate::config::{
    Config, FileSource, ReconnectConfig, RtspSource, RtspTransport, SceneSource, SourceConfig,
    StreamConfig, SyntheticPattern, SyntheticSource, TestSource, UriSource,
};
use crate::source::SourceParams;
use crate::sync::SyncConfig;

/// Why a config was rejected. Every variant names the file (or `<inline>`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{path}: cannot read config: {error}")]
    Read { path: String, error: std::io::Error },
    /// The text is not TOML.
    #[error("{origin}: malformed TOML at line {line}, column {column}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A `--source` shorthand that names no source.
    #[error("{uri}: {message}")]
    Source { uri: String, message: String },
    /// A field is unknown, missing, of the wrong type or has an invalid value.
    #[error("{origin}: field `{field}`: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
}

impl ConfigError {
    /// The offending field's key path, when the error is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// One stream with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedStream {
    /// The stream's config with `mode`, `fps`, `width`, `height` set.
    pub config: StreamConfig,
    pub params: SourceParams,
    /// Synchroniser settings derived from the engine config and the source.
    pub sync: SyncConfig,
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors (a path, or `<inline>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError::Syntax {
                origin: origin.into(),
                line,
                column,
                // One line: toml's message may span several.
                message: e.message().trim().replace('\n', "; "),
            }
        })?;
        check_kinds(&table, origin)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                field_error(origin, &path, &inner)
            })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Semantic checks that the schema cannot express.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |field: String, message: String| ConfigError::Field {
            origin: origin.into(),
            field,
            message,
        };
        let e = &self.engine;
        check_fps(e.fps).map_err(|m| err("engine.fps".into(), m))?;
        check_dim(e.width).map_err(|m| err("engine.width".into(), m))?;
        check_dim(e.height).map_err(|m| err("engine.height".into(), m))?;
        if e.window < 1 {
            return Err(err("engine.window".into(), "must be at least 1".into()));
        }
        if e.stride < 1 {
            return Err(err("engine.stride".into(), "must be at least 1".into()));
        }
        if e.queue_capacity < 1 {
            return Err(err(
                "engine.queue_capacity".into(),
                "must be at least 1".into(),
            ));
        }
        if e.batch < 1 {
            return Err(err("engine.batch".into(), "must be at least 1".into()));
        }
        check_device(&e.device).map_err(|m| err("engine.device".into(), m))?;
        if e.shutdown_timeout_ms == 0 {
            return Err(err(
                "engine.shutdown_timeout_ms".into(),
                "must be at least 1".into(),
            ));
        }
        if self.output.path.trim().is_empty() {
            return Err(err(
                "output.path".into(),
                "must not be empty (use \"-\" for stdout)".into(),
            ));
        }
        if let Some(rtsp) = &self.output.rtsp {
            let spec = rtsp.strip_prefix("rtsp://").unwrap_or(rtsp);
            let addr = spec.split_once('/').map_or(spec, |(a, _)| a);
            parse_listen(addr).map_err(|m| {
                err(
                    "output.rtsp".into(),
                    format!("{m} (expected HOST:PORT/PATH, e.g. 127.0.0.1:8554/sensorium)"),
                )
            })?;
        }
        if let Some(listen) = &self.metrics.listen {
            parse_listen(listen).map_err(|m| err("metrics.listen".into(), m))?;
        }
        let h = &self.http;
        if let Some(listen) = &h.listen {
            parse_listen(listen).map_err(|m| err("http.listen".into(), m))?;
        }
        if h.token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err(err("http.token".into(), "must not be empty".into()));
        }
        for (field, v) in [
            ("http.max_body_bytes", h.max_body_bytes as u64),
            ("http.header_timeout_ms", h.header_timeout_ms),
            ("http.body_timeout_ms", h.body_timeout_ms),
            ("http.max_connections", h.max_connections as u64),
        ] {
            if v == 0 {
                return Err(err(field.into(), "must be at least 1".into()));
            }
        }
        // A model config for `train`/`eval` (media from a manifest) needs no stream; `run`
        // checks for at least one itself.
        let model_only = self.train.is_some() || self.models.is_some() || self.llm.is_some();
        if self.streams.is_empty() && !model_only {
            return Err(err(
                "stream".into(),
                "at least one [[stream]] is required".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, s) in self.streams.iter().enumerate() {
            let f = |name: &str| format!("stream[{i}].{name}");
            if s.name.trim().is_empty() {
                return Err(err(f("name"), "must not be empty".into()));
            }
            if !names.insert(s.name.as_str()) {
                return Err(err(
                    f("name"),
                    format!("duplicate stream name '{}'", s.name),
                ));
            }
            if let Some(fps) = s.fps {
                check_fps(fps).map_err(|m| err(f("fps"), m))?;
            }
            if let Some(w) = s.width {
                check_dim(w).map_err(|m| err(f("width"), m))?;
            }
            if let Some(h) = s.height {
                check_dim(h).map_err(|m| err(f("height"), m))?;
            }
            check_source(&s.source).map_err(|(k, m)| err(f(&format!("source.{k}")), m))?;
        }
        Ok(())
    }

    /// Source parameters of one stream: engine defaults merged with its overrides.
    pub fn params(&self, stream: &StreamConfig) -> SourceParams {
        let mode = stream.mode.unwrap_or(if stream.source.is_live() {
            crate::queue::QueueMode::Realtime
        } else {
            crate::queue::QueueMode::Lossless
        });
        SourceParams {
            fps: stream.fps.unwrap_or(self.engine.fps),
            width: stream.width.unwrap_or(self.engine.width),
            height: stream.height.unwrap_or(self.engine.height),
            mode,
        }
    }

    /// Every stream with its defaults filled in.
    pub fn resolved_streams(&self) -> Vec<ResolvedStream> {
        self.streams
            .iter()
            .map(|s| {
                let params = self.params(s);
                let (video, audio) = s.source.expects();
                let mut config = s.clone();
                config.mode = Some(params.mode);
                config.fps = Some(params.fps);
                config.width = Some(params.width);
                config.height = Some(params.height);
                let mut sync =
                    SyncConfig::new(params.fps, video, audio, self.engine.latency_ms * 1_000_000);
                if !s.source.is_live() {
                    sync = sync.non_live();
                }
                ResolvedStream {
                    config,
                    params,
                    sync,
                }
            })
            .collect()
    }

    /// The config with every stream's defaults filled in (what `sensorium check` prints).
    pub fn resolved(&self) -> Config {
        let mut c = self.clone();
        c.streams = self
            .resolved_streams()
            .into_iter()
            .map(|r| r.config)
            .collect();
        c
    }

    /// TOML text with secrets redacted (passwords, credentials inside URLs).
    pub fn to_toml_redacted(&self) -> String {
        let mut c = self.clone();
        for s in &mut c.streams {
            match &mut s.source {
                SourceConfig::Rtsp(r) => r.url = redact_url(&r.url),
                SourceConfig::Uri(u) => u.uri = redact_url(&u.uri),
                _ => {}
            }
        }
        // Serializing plain data (no maps with non-string keys) cannot fail.
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// `host:port`, or just a port (`9464`, `:9464`) meaning 127.0.0.1.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    let l = listen.trim();
    let full = if let Ok(port) = l.trim_start_matches(':').parse::<u16>() {
        format!("127.0.0.1:{port}")
    } else {
        l.to_string()
    };
    full.parse::<SocketAddr>()
        .map_err(|_| format!("'{listen}' is not host:port (e.g. 127.0.0.1:9464)"))
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        Some((head, userinfo, tail)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{head}{user}:***@{tail}")
        }
        _ => url.to_string(),
    }
}

/// `url` without its userinfo (`rtsp://u:p@h/x` -> `rtsp://h/x`): how error messages show a
/// URL.
pub fn strip_userinfo(url: &str) -> String {
    match split_userinfo(url) {
        Some((head, _, tail)) => format!("{head}{tail}"),
        None => url.to_owned(),
    }
}

/// `(scheme://, userinfo, host...)` of a URL with userinfo: the one rule both redactions
/// use. The authority ends at the first '/', '?' or '#'; userinfo is before its last '@'.
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..auth_end].rfind('@')?;
    Some((&url[..scheme_end], &rest[..at], &rest[at + 1..]))
}

fn check_fps(fps: f64) -> Result<(), String> {
    if fps.is_finite() && fps > 0.0 && fps <= 1000.0 {
        Ok(())
    } else {
        Err(format!(
            "must be > 0 and <= 1000 frames per second, got {fps}"
        ))
    }
}

fn check_dim(v: u32) -> Result<(), String> {
    if v == 0 || v & 1 != 0 {
        Err(format!("must be even and > 0, got {v}"))
    } else {
        Ok(())
    }
}

/// What the two generated sources (`test`, `synthetic`) have in common. The checks run in
/// the order the fields are documented: volume, duration, media.
fn check_generator(
    kind: &str,
    volume: f64,
    duration_s: Option<f64>,
    video: bool,
    audio: bool,
) -> Result<(), (&'static str, String)> {
    if !(0.0..=1.0).contains(&volume) {
        return Err(("volume", format!("must be within 0..1, got {volume}")));
    }
    if let Some(d) = duration_s {
        if !(d.is_finite() && d > 0.0) {
            return Err(("duration_s", format!("must be > 0 seconds, got {d}")));
        }
    }
    if !video && !audio {
        return Err(("video", format!("a {kind} source needs video or audio")));
    }
    Ok(())
}

fn check_source(s: &SourceConfig) -> Result<(), (&'static str, String)> {
    match s {
        SourceConfig::Test(t) => {
            if !(t.freq.is_finite() && t.freq > 0.0) {
                return Err(("freq", format!("must be > 0 Hz, got {}", t.freq)));
            }
            check_generator("test", t.volume, t.duration_s, t.video, t.audio)?;
        }
        SourceConfig::Synthetic(s) => {
            if !(s.freq.is_finite() && s.freq > 0.0 && s.freq < 8000.0) {
                return Err((
                    "freq",
                    format!("must be > 0 and < 8000 Hz (16 kHz audio), got {}", s.freq),
                ));
            }
            if !(1..=1000).contains(&s.chunk_ms) {
                return Err((
                    "chunk_ms",
                    format!("must be within 1..1000, got {}", s.chunk_ms),
                ));
            }
            check_generator("synthetic", s.volume, s.duration_s, s.video, s.audio)?;
        }
        SourceConfig::Scene(s) => {
            if !(s.window_s.is_finite() && s.window_s >= 0.5) {
                return Err((
                    "window_s",
                    format!(
                        "must be at least 0.5 s (the window's span), got {}",
                        s.window_s
                    ),
                ));
            }
            if !(1..=1000).contains(&s.chunk_ms) {
                return Err((
                    "chunk_ms",
                    format!("must be within 1..1000, got {}", s.chunk_ms),
                ));
            }
            check_generator("scene", 0.5, s.duration_s, s.video, s.audio)?;
        }
        SourceConfig::File(f) => {
            if f.path.as_os_str().is_empty() {
                return Err(("path", "must not be empty".into()));
            }
            if !f.video && !f.audio {
                return Err(("video", "a stream needs video or audio".into()));
            }
        }
        SourceConfig::Uri(u) => {
            if !u.uri.contains("://") {
                return Err(("uri", format!("'{}' is not a URI (scheme://...)", u.uri)));
            }
            if !u.video && !u.audio {
                return Err(("video", "a stream needs video or audio".into()));
            }
        }
        SourceConfig::Rtsp(r) => {
            let lower = r.url.to_ascii_lowercase();
            if !(lower.starts_with("rtsp://")
                || lower.starts_with("rtsps://")
                || lower.starts_with("rtspt://"))
            {
                return Err((
                    "url",
                    format!("'{}' is not an rtsp:// URL", redact_url(&r.url)),
                ));
            }
            if r.reconnect.initial_ms == 0 || r.reconnect.initial_ms > r.reconnect.max_ms {
                return Err((
                    "reconnect.initial_ms",
                    format!(
                        "must be > 0 and <= reconnect.max_ms ({}), got {}",
                        r.reconnect.max_ms, r.reconnect.initial_ms
                    ),
                ));
            }
            if r.reconnect.stall_ms < 100 {
                return Err((
                    "reconnect.stall_ms",
                    format!("must be >= 100, got {}", r.reconnect.stall_ms),
                ));
            }
            if !r.video && !r.audio {
                return Err(("video", "a stream needs video or audio".into()));
            }
        }
        SourceConfig::Camera(c) => {
            if c.device.trim().is_empty() {
                return Err(("device", "must not be empty".into()));
            }
        }
        SourceConfig::Microphone(_) => {}
        SourceConfig::Launch(l) => {
            if !(l.pipeline.contains("name=video") || l.pipeline.contains("name=audio")) {
                return Err((
                    "pipeline",
                    "must contain an appsink named `video` and/or `audio`".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Unknown `kind` values get their own message naming the key: serde's "unknown variant"
/// for an internally tagged enum would point at `source`, not at `kind`.
fn check_kinds(table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
    let Some(toml::Value::Array(streams)) = table.get("stream") else {
        return Ok(());
    };
    for (i, s) in streams.iter().enumerate() {
        let Some(toml::Value::Table(src)) = s.get("source") else {
            continue;
        };
        let field = format!("stream[{i}].source.kind");
        match src.get("kind") {
            None => {
                return Err(ConfigError::Field {
                    origin: origin.into(),
                    field,
                    message: format!("missing (one of: {})", SourceConfig::KINDS.join(", ")),
                })
            }
            Some(toml::Value::String(k)) if SourceConfig::KINDS.contains(&k.as_str()) => {
                let mut fields = src.clone();
                fields.remove("kind");
                check_source_fields(k, fields, &format!("stream[{i}].source"), origin)?;
            }
            Some(other) => {
                return Err(ConfigError::Field {
                    origin: origin.into(),
                    field,
                    message: format!(
                        "unknown source kind {other} (expected one of: {})",
                        SourceConfig::KINDS.join(", ")
                    ),
                })
            }
        }
    }
    Ok(())
}

/// Deserializes a source table as its kind's struct, so that errors inside it carry their
/// key path (serde loses the path inside an internally tagged enum).
fn check_source_fields(
    kind: &str,
    fields: toml::Table,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    use crate::config::{
        CameraSource, FileSource, LaunchSource, MicrophoneSource, RtspSource, SyntheticSource,
        TestSource, UriSource,
    };
    fn de<T: serde::de::DeserializeOwned>(
        fields: toml::Table,
        prefix: &str,
        origin: &str,
    ) -> Result<(), ConfigError> {
        deserialize_section::<T>(fields, prefix, origin).map(|_| ())
    }
    match kind {
        "test" => de::<TestSource>(fields, prefix, origin),
        "file" => de::<FileSource>(fields, prefix, origin),
        "uri" => de::<UriSource>(fields, prefix, origin),
        "rtsp" => de::<RtspSource>(fields, prefix, origin),
        "camera" => de::<CameraSource>(fields, prefix, origin),
        "microphone" => de::<MicrophoneSource>(fields, prefix, origin),
        "launch" => de::<LaunchSource>(fields, prefix, origin),
        "synthetic" => de::<SyntheticSource>(fields, prefix, origin),
        _ => Ok(()),
    }
}

/// Deserializes the table at key path `prefix` (`"models"`, `"stream[0].source"`) as `T`;
/// an error names the failing key's full path (`models.heads`), unknown and missing fields
/// by their own key. The one helper every section of a config goes through (the engine's
/// own and the models crate's `[models]`, `[llm]`, `[distill]`, `[train]`).
pub fn deserialize_section<T: serde::de::DeserializeOwned>(
    table: toml::Table,
    prefix: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." || path.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        field_error(origin, &path, &e.into_inner().to_string())
    })
}

/// Turns a serde error at `path` into a field error; unknown and missing fields are named
/// by their own key, not their parent's.
fn field_error(origin: &str, path: &str, message: &str) -> ConfigError {
    let child = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    let field = match (child, path) {
        (Some(c), "." | "") => c.to_string(),
        (Some(c), p) if p == c || p.ends_with(&format!(".{c}")) => p.to_string(),
        (Some(c), p) => format!("{p}.{c}"),
        (None, p) => p.to_string(),
    };
    // toml appends "in `key`" on a second line; the field is already named.
    let message = message.lines().next().unwrap_or("").trim().to_string();
    ConfigError::Field {
        origin: origin.into(),
        field,
        message,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, column)
}

/// `auto`, `cpu`, `cuda` or `cuda:N` (case-insensitive; the same grammar as
/// `sensorium_kernels::DeviceSpec::parse`, which opens it).
fn check_device(d: &str) -> Result<(), String> {
    let t = d.trim().to_ascii_lowercase();
    let ok = matches!(t.as_str(), "auto" | "cpu" | "cuda" | "gpu")
        || t.strip_prefix("cuda:")
            .is_some_and(|n| !n.is_empty() && n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{d:?} is not a device: expected auto, cpu, cuda or cuda:N"
        ))
    }
}

impl Config {
    /// A one-stream config for `run --source URI`: `test:[PATTERN]`, `synthetic:[ball|gradient]`,
    /// `scene:[SEED]`, `file://PATH`, `rtsp://…`, any other URI (`uri` source), or a path.
    pub fn for_source(uri: &str) -> Result<Config, ConfigError> {
        let bad = |message: String| ConfigError::Source {
            uri: uri.to_owned(),
            message,
        };
        let source = if let Some(pattern) = uri.strip_prefix("test:") {
            let mut t = TestSource::default();
            if !pattern.is_empty() {
                t.pattern = pattern.into();
            }
            SourceConfig::Test(t)
        } else if let Some(pattern) = uri.strip_prefix("synthetic:") {
            let mut s = SyntheticSource::default();
            match pattern {
                "" | "ball" => {}
                "gradient" => s.pattern = SyntheticPattern::Gradient,
                _ => return Err(bad("unknown pattern (ball or gradient)".into())),
            }
            SourceConfig::Synthetic(s)
        } else if let Some(seed) = uri.strip_prefix("scene:") {
            let mut s = SceneSource::default();
            if !seed.is_empty() {
                s.seed = seed
                    .parse()
                    .map_err(|_| bad("the seed must be a whole number".into()))?;
            }
            SourceConfig::Scene(s)
        } else if let Some(path) = uri.strip_prefix("file://") {
            SourceConfig::File(FileSource {
                path: Path::new(path).to_path_buf(),
                looping: false,
                video: true,
                audio: true,
            })
        } else if uri.to_ascii_lowercase().starts_with("rtsp") && uri.contains("://") {
            SourceConfig::Rtsp(RtspSource {
                url: uri.into(),
                transport: RtspTransport::default(),
                latency_ms: 200,
                user: None,
                password: None,
                reconnect: ReconnectConfig::default(),
                video: true,
                audio: true,
            })
        } else if uri.contains("://") {
            SourceConfig::Uri(UriSource {
                uri: uri.into(),
                looping: false,
                video: true,
                audio: true,
            })
        } else {
            SourceConfig::File(FileSource {
                path: uri.into(),
                looping: false,
                video: true,
                audio: true,
            })
        };
        let config = Config {
            engine: Default::default(),
            output: Default::default(),
            http: Default::default(),
            metrics: Default::default(),
            streams: vec![StreamConfig {
                name: "source".into(),
                source,
                mode: None,
                fps: None,
                width: None,
                height: None,
            }],
            models: None,
            llm: None,
            distill: None,
            train: None,
        };
        config.validate("--source")?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{SourceConfig as Sc, SyntheticPattern};

    fn kind_of(uri: &str) -> Sc {
        Config::for_source(uri).unwrap().streams.remove(0).source
    }

    #[test]
    fn source_shorthand_picks_the_kind() {
        assert!(matches!(kind_of("test:"), Sc::Test(t) if t.pattern == "smpte"));
        assert!(matches!(kind_of("test:ball"), Sc::Test(t) if t.pattern == "ball"));
        assert!(matches!(kind_of("synthetic:"), Sc::Synthetic(s) if s.is_live));
        assert!(matches!(
            kind_of("synthetic:gradient"),
            Sc::Synthetic(s) if s.pattern == SyntheticPattern::Gradient
        ));
        assert_eq!(
            Config::for_source("synthetic:snow")
                .unwrap_err()
                .to_string(),
            "synthetic:snow: unknown pattern (ball or gradient)"
        );
        assert!(
            matches!(kind_of("file:///data/a.mp4"), Sc::File(f) if f.path == Path::new("/data/a.mp4"))
        );
        assert!(matches!(kind_of("clip.mkv"), Sc::File(f) if f.path == Path::new("clip.mkv")));
        assert!(
            matches!(kind_of("rtsp://cam:554/live"), Sc::Rtsp(r) if r.url == "rtsp://cam:554/live")
        );
        assert!(matches!(kind_of("https://x/y.webm"), Sc::Uri(u) if u.uri == "https://x/y.webm"));
    }

    /// Both redactions end the authority at '/', '?' or '#' (they once disagreed: an '@'
    /// in a query was taken for the userinfo's end by one of them).
    #[test]
    fn one_rule_for_userinfo() {
        assert_eq!(
            redact_url("rtsp://u:pw@cam:554/x"),
            "rtsp://u:***@cam:554/x"
        );
        assert_eq!(strip_userinfo("rtsp://u:pw@cam:554/x"), "rtsp://cam:554/x");
        assert_eq!(redact_url("rtsp://cam?token=a@b"), "rtsp://cam?token=a@b");
        assert_eq!(strip_userinfo("rtsp://cam#a@b"), "rtsp://cam#a@b");
        assert_eq!(redact_url("rtsp://user@cam/x"), "rtsp://user@cam/x");
        assert_eq!(strip_userinfo("/tmp/a.mkv"), "/tmp/a.mkv");
    }
    use super::*;
    use crate::queue::QueueMode;

    const MIN: &str = "[[stream]]\nname = \"cam\"\nsource = { kind = \"test\" }\n";

    fn field_of(text: &str) -> String {
        match Config::from_toml_str(text, "t.toml") {
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("t.toml: "), "{msg}");
                e.field().unwrap_or("<none>").to_string()
            }
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn minimal_config_resolves_defaults() {
        let c = Config::from_toml_str(MIN, "t.toml").unwrap();
        let r = c.resolved_streams();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].params.fps, 2.0);
        assert_eq!(r[0].params.mode, QueueMode::Realtime, "test source is live");
        assert_eq!(r[0].config.width, Some(224));
        assert_eq!(r[0].sync.max_latency_ns, 500_000_000);
    }

    #[test]
    fn file_defaults_to_lossless_and_override_wins() {
        let t = "[engine]\nfps = 4\n[[stream]]\nname = \"a\"\nsource = { kind = \"file\", path = \"x.mp4\" }\n\
                 [[stream]]\nname = \"b\"\nmode = \"realtime\"\nfps = 1\nsource = { kind = \"file\", path = \"y.mp4\" }\n";
        let c = Config::from_toml_str(t, "t.toml").unwrap();
        let r = c.resolved_streams();
        assert_eq!(
            (r[0].params.mode, r[0].params.fps),
            (QueueMode::Lossless, 4.0)
        );
        assert_eq!(
            (r[1].params.mode, r[1].params.fps),
            (QueueMode::Realtime, 1.0)
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(&format!("[engine]\nfps = 0\n{MIN}")), "engine.fps");
        assert_eq!(
            field_of(&format!("[engine]\nwidth = 223\n{MIN}")),
            "engine.width"
        );
        assert_eq!(
            field_of(&format!("[engine]\nwindow = 0\n{MIN}")),
            "engine.window"
        );
        assert_eq!(
            field_of(&format!("[engine]\nstride = 0\n{MIN}")),
            "engine.stride"
        );
        assert_eq!(field_of(&format!("[engine]\nfsp = 2\n{MIN}")), "engine.fsp");
        assert_eq!(
            field_of(&format!("[engine]\nfps = \"fast\"\n{MIN}")),
            "engine.fps"
        );
        assert_eq!(field_of("[engine]\nfps = 2\n"), "stream");
        assert_eq!(field_of(&format!("{MIN}{MIN}")), "stream[1].name");
        assert_eq!(
            field_of("[[stream]]\nname = \"c\"\nsource = { kind = \"webcam\" }\n"),
            "stream[0].source.kind"
        );
        assert_eq!(
            field_of("[[stream]]\nname = \"c\"\nsource = { kind = \"file\" }\n"),
            "stream[0].source.path"
        );
        assert_eq!(
            field_of(
                "[[stream]]\nname = \"c\"\nsource = { kind = \"rtsp\", url = \"http://x\" }\n"
            ),
            "stream[0].source.url"
        );
        assert_eq!(
            field_of("[[stream]]\nname = \"c\"\nsource = { kind = \"rtsp\", url = \"rtsp://x\", transport = \"quic\" }\n"),
            "stream[0].source.transport"
        );
        assert_eq!(
            field_of("[[stream]]\nname = \"c\"\nsource = { kind = \"camera\", microphone = { backend = \"oss\" } }\n"),
            "stream[0].source.microphone.backend"
        );
        assert_eq!(
            field_of("[[stream]]\nname = \"c\"\nsource = { kind = \"test\", colour = 1 }\n"),
            "stream[0].source.colour"
        );
        assert_eq!(
            field_of(&format!("[metrics]\nlisten = \"nowhere\"\n{MIN}")),
            "metrics.listen"
        );
    }

    #[test]
    fn syntax_error_has_line() {
        let e = Config::from_toml_str("[engine\nfps = 2\n", "bad.toml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("bad.toml: malformed TOML at line 1"),
            "{msg}"
        );
    }

    #[test]
    fn redaction() {
        let t = "[[stream]]\nname = \"door\"\nsource = { kind = \"rtsp\", url = \"rtsp://admin:hunter2@cam/live\", user = \"admin\", password = \"s3cret\" }\n";
        let c = Config::from_toml_str(t, "t.toml").unwrap();
        let out = c.resolved().to_toml_redacted();
        assert!(!out.contains("hunter2") && !out.contains("s3cret"), "{out}");
        assert!(out.contains("rtsp://admin:***@cam/live"), "{out}");
        assert!(out.contains("password = \"***\""), "{out}");
        assert!(out.contains("fps = 2.0"), "{out}");
    }

    #[test]
    fn listen_port_only_means_localhost() {
        assert_eq!(parse_listen("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_listen(":9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_listen("0.0.0.0:1").unwrap().to_string(), "0.0.0.0:1");
    }

    #[test]
    fn engine_device_is_checked() {
        for ok in ["auto", "cpu", "CUDA", "cuda:1"] {
            assert_eq!(super::check_device(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            super::check_device("cuda:").unwrap_err(),
            "\"cuda:\" is not a device: expected auto, cpu, cuda or cuda:N"
        );
        assert!(super::check_device("tpu").is_err());
    }
}
