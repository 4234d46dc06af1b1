//! The example configs in pipelines/configs parse with the engine's schema and say what
//! their comments promise.

use sensorium_engine::config::{AudioBackend, Config, RtspTransport, SourceConfig};
use sensorium_engine::QueueMode;

fn load(name: &str) -> Config {
    let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str::<Config>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn test_scene_config() {
    let c = load("test.toml");
    assert_eq!(c.streams.len(), 1);
    assert_eq!((c.engine.window, c.engine.stride), (10, 5));
    assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
    let SourceConfig::Test(t) = &c.streams[0].source else {
        panic!("{:?}", c.streams[0].source)
    };
    assert_eq!((t.pattern.as_str(), t.duration_s), ("ball", Some(60.0)));
    assert!(t.is_live);
}

#[test]
fn file_config() {
    let c = load("file.toml");
    assert_eq!(c.streams[0].mode, Some(QueueMode::Lossless));
    let SourceConfig::File(f) = &c.streams[0].source else {
        panic!()
    };
    assert_eq!(f.path.to_str(), Some("media/clip.mkv"));
    assert!(!f.looping && f.video && f.audio);
}

#[test]
fn rtsp_config_keeps_the_password_secret() {
    let c = load("rtsp.toml");
    let SourceConfig::Rtsp(r) = &c.streams[0].source else {
        panic!()
    };
    assert_eq!(r.transport, RtspTransport::Tcp);
    assert_eq!(
        (r.latency_ms, r.reconnect.initial_ms, r.reconnect.max_ms),
        (200, 500, 30_000)
    );
    assert_eq!(r.reconnect.max_attempts, None);
    assert_eq!(r.password.as_ref().map(|p| p.expose()), Some("change-me"));
    assert!(!format!("{c:?}").contains("change-me"));
}

#[test]
fn synthetic_config() {
    let c = load("synthetic.toml");
    assert_eq!((c.engine.window, c.engine.stride), (10, 5));
    let SourceConfig::Synthetic(s) = &c.streams[0].source else {
        panic!("{:?}", c.streams[0].source)
    };
    assert_eq!((s.freq, s.duration_s, s.chunk_ms), (440.0, Some(30.0), 20));
    assert!(s.is_live && s.video && s.audio);
    assert_eq!(c.streams[0].mode, Some(QueueMode::Realtime));
}

#[test]
fn webcam_config() {
    let c = load("webcam.toml");
    let s = &c.streams[0];
    assert_eq!(
        (s.fps, s.width, s.height),
        (Some(4.0), Some(336), Some(336))
    );
    let SourceConfig::Camera(cam) = &s.source else {
        panic!()
    };
    assert_eq!(cam.device, "/dev/video0");
    assert_eq!(
        cam.microphone.as_ref().map(|m| m.backend),
        Some(AudioBackend::Pulse)
    );
}

#[test]
fn test_scene_config_runs() {
    use sensorium_engine::{bounded, SourceEvent, SourceFactory, SourceParams};
    let c = load("test.toml");
    let params = SourceParams {
        fps: c.engine.fps,
        width: c.engine.width,
        height: c.engine.height,
        mode: QueueMode::Realtime,
    };
    let (tx, rx) = bounded(c.engine.queue_capacity, params.mode);
    let mut h = sensorium_pipelines::Sources::new()
        .start(&c.streams[0], &params, tx)
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let frame = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(SourceEvent::Video(v)) => break v,
            Ok(SourceEvent::Audio(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    h.stop();
    assert_eq!(
        (frame.width, frame.height, frame.rgb.len()),
        (224, 224, 224 * 224 * 3)
    );
}
