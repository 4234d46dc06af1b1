//! Shared helpers for the pipelines integration tests: starting a source from a config
//! snippet and collecting its events. Media files and the RTSP server come from the crate's
//! `testutil` module (shared with the workspace's end-to-end tests).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use sensorium_engine::config::{SourceConfig, StreamConfig};
use sensorium_engine::{bounded, QueueMode, QueueReceiver, SourceEvent, SourceParams};
use sensorium_pipelines::{GstSourceHandle, PipelineError, Sources};

#[allow(unused_imports)]
pub use sensorium_pipelines::testutil::*;

/// Only a guard against hangs; tests never assert on time.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub fn params(fps: f64, mode: QueueMode) -> SourceParams {
    SourceParams {
        fps,
        width: 64,
        height: 48,
        mode,
    }
}

/// A stream config from a `[stream.source]` TOML body.
pub fn stream(source_toml: &str) -> StreamConfig {
    let source: SourceConfig = toml::from_str(source_toml).expect("source toml");
    StreamConfig {
        name: "s".into(),
        source,
        mode: None,
        fps: None,
        width: None,
        height: None,
    }
}

pub fn start(
    stream: &StreamConfig,
    params: &SourceParams,
    capacity: usize,
) -> Result<(GstSourceHandle, QueueReceiver<SourceEvent>), PipelineError> {
    let (tx, rx) = bounded(capacity, params.mode);
    let h = Sources::new().start_source(stream, params, tx)?;
    Ok((h, rx))
}

/// Events until (and including) the first Eos or Error; panics if neither comes in time.
pub fn collect(rx: &QueueReceiver<SourceEvent>) -> Vec<SourceEvent> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "source hung: no Eos/Error within {HANG_GUARD:?}"
        );
        match rx.recv_timeout(left) {
            Ok(ev) => {
                let end = matches!(ev, SourceEvent::Eos | SourceEvent::Error { .. });
                out.push(ev);
                if end {
                    return out;
                }
            }
            Err(true) => panic!("queue disconnected before Eos/Error"),
            Err(false) => {}
        }
    }
}

pub struct Split {
    pub video_pts: Vec<u64>,
    pub audio: Vec<(u64, usize)>,
    pub discontinuities: usize,
    pub last: Option<SourceEvent>,
}

pub fn split(events: &[SourceEvent]) -> Split {
    let mut s = Split {
        video_pts: vec![],
        audio: vec![],
        discontinuities: 0,
        last: events.last().cloned(),
    };
    for e in events {
        match e {
            SourceEvent::Video(v) => s.video_pts.push(v.pts),
            SourceEvent::Audio(a) => s.audio.push((a.pts, a.samples.len())),
            SourceEvent::Discontinuity { .. } => s.discontinuities += 1,
            _ => {}
        }
    }
    s
}

pub fn error_message(ev: &Option<SourceEvent>) -> String {
    match ev {
        Some(SourceEvent::Error { message }) => message.clone(),
        other => panic!("expected SourceEvent::Error, got {other:?}"),
    }
}
