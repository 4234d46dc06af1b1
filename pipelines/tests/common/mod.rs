//! Shared helpers for the pipelines integration tests: making short media files with
//! GStreamer itself, starting a source from a config snippet, and collecting its events.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use sensorium_engine::config::{SourceConfig, StreamConfig};
use sensorium_engine::{bounded, QueueMode, QueueReceiver, SourceEvent, SourceParams};
use sensorium_pipelines::{GstSourceFactory, GstSourceHandle, PipelineError};

/// Only a guard against hangs; tests never assert on time.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub fn init() {
    gst::init().expect("gstreamer init");
}

/// Runs a gst-launch description to EOS (panics on error: test set-up only).
pub fn run_to_eos(desc: &str) {
    init();
    let pipeline = gst::parse::launch(desc).expect("parse test pipeline");
    pipeline
        .set_state(gst::State::Playing)
        .expect("play test pipeline");
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(120),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("test pipeline finished");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!(
            "test media pipeline failed: {} ({:?})",
            e.error(),
            e.debug()
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
}

/// 320x240 ball pattern at 10 fps, `secs` long, H.264.
fn video_part(secs: u32) -> String {
    format!(
        "videotestsrc pattern=ball num-buffers={} ! video/x-raw,width=320,height=240,framerate=10/1 \
         ! x264enc speed-preset=ultrafast key-int-max=10 bframes=0 ! h264parse",
        secs * 10
    )
}

/// 440 Hz sine at 48 kHz mono, `secs` long, Opus.
fn audio_part(secs: u32) -> String {
    format!(
        "audiotestsrc wave=sine freq=440 volume=0.5 samplesperbuffer=960 num-buffers={} \
         ! audio/x-raw,rate=48000,channels=1 ! opusenc",
        secs * 50
    )
}

/// Matroska with H.264 video + Opus audio.
pub fn make_av_mkv(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "matroskamux name=m ! filesink location={} {} ! queue ! m. {} ! queue ! m.",
        path.display(),
        video_part(secs),
        audio_part(secs)
    ));
}

/// Matroska with H.264 video only.
pub fn make_video_mkv(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "{} ! matroskamux ! filesink location={}",
        video_part(secs),
        path.display()
    ));
}

/// Ogg with Opus audio only.
pub fn make_audio_ogg(path: &Path, secs: u32) {
    run_to_eos(&format!(
        "{} ! oggmux ! filesink location={}",
        audio_part(secs),
        path.display()
    ));
}

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
    let h = GstSourceFactory::new().start_source(stream, params, tx)?;
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
