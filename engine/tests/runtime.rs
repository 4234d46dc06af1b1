//! End-to-end runs of the runtime with synthetic sources: stream isolation, realtime drops
//! without back-pressure, lossless completeness, model failures, shutdown, sink failure.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{config, Script, SynthFactory};
use sensorium_engine::model::StageError;
use sensorium_engine::{
    EncodedFrame, FrameEncoder, FrameFeatures, MemorySink, Runtime, SinkError, StreamEnd,
    SyncedFrame, Window, WindowModel, WindowSink,
};
use serde_json::{json, Map, Value};

fn records_of(sink: &MemorySink, stream: &str) -> Vec<Value> {
    sink.records
        .lock()
        .iter()
        .filter(|r| r["stream"] == stream)
        .cloned()
        .collect()
}

fn indices(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

#[test]
fn failing_stream_does_not_stop_the_other() {
    let factory = SynthFactory::default()
        .with("good", Script::frames(23))
        .with(
            "bad",
            Script {
                fail_at: Some(4),
                ..Script::frames(23)
            },
        );
    let sink = MemorySink::default();
    let report = Runtime::new(
        config(&[("good", "lossless"), ("bad", "lossless")], ""),
        Arc::new(factory),
    )
    .with_sink(Box::new(sink.clone()))
    .run()
    .unwrap();

    let good = records_of(&sink, "good");
    assert_eq!(indices(&good), vec![0, 1, 2]);
    assert_eq!(
        good.iter()
            .map(|r| r["frames"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![10, 10, 3]
    );
    assert_eq!(good[2]["audio_samples"], 3 * 8000);
    assert_eq!(good[2]["t_start"], 10_000_000_000u64);
    assert_eq!(good[2]["t_end"], 11_500_000_000u64);
    assert_eq!(good[2]["valid"].as_array().unwrap().len(), 10);
    assert_eq!(good[2]["has_video"][2], true);
    assert_eq!(good[2]["has_video"][3], false);
    assert!(good[0]["latency_ms"].as_f64().unwrap() >= 0.0);
    let g = report.stream("good").unwrap();
    assert_eq!(g.end, StreamEnd::Eos);
    assert_eq!((g.frames, g.windows_written, g.dropped), (23, 3, 0));

    let b = report.stream("bad").unwrap();
    match &b.end {
        StreamEnd::SourceFailed(m) => {
            assert!(m.contains("synthetic decoder failure at frame 4"), "{m}")
        }
        other => panic!("bad stream ended {other:?}"),
    }
    // What arrived before the failure is flushed as a padded window.
    assert_eq!(b.frames, 4);
    let bad = records_of(&sink, "bad");
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["frames"], 4);
}

#[test]
fn start_failure_is_reported_and_others_run() {
    let factory = SynthFactory::default().with("ok", Script::frames(10)).with(
        "missing",
        Script {
            start_error: Some("file 'nope.mp4' not found".into()),
            ..Script::frames(1)
        },
    );
    let sink = MemorySink::default();
    let report = Runtime::new(
        config(&[("ok", "lossless"), ("missing", "lossless")], ""),
        Arc::new(factory),
    )
    .with_sink(Box::new(sink.clone()))
    .run()
    .unwrap();
    assert_eq!(
        report.stream("missing").unwrap().end,
        StreamEnd::StartFailed("stream 'missing': file 'nope.mp4' not found".into())
    );
    assert_eq!(indices(&records_of(&sink, "ok")), vec![0]);
    assert_eq!(report.stream("ok").unwrap().end, StreamEnd::Eos);
}

/// A model that waits, on its first call, until every source has pushed everything.
struct GatedModel {
    gate: crossbeam_channel::Receiver<String>,
    open: bool,
    streams: usize,
}

impl WindowModel for GatedModel {
    fn name(&self) -> &str {
        "gated"
    }
    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        if !self.open {
            for _ in 0..self.streams {
                self.gate
                    .recv_timeout(Duration::from_secs(120))
                    .map_err(|_| {
                        StageError::new("gated", "the source never finished: it was blocked")
                    })?;
            }
            self.open = true;
        }
        Ok(windows.iter().map(|_| Map::new()).collect())
    }
}

#[test]
fn realtime_drops_instead_of_blocking_the_producer() {
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let factory = SynthFactory {
        on_done: Some(done_tx),
        ..SynthFactory::default()
    }
    .with("cam", Script::frames(400));
    let sink = MemorySink::default();
    let model = GatedModel {
        gate: done_rx,
        open: false,
        streams: 1,
    };
    let capacity = 4;
    let report = Runtime::new(
        config(
            &[("cam", "realtime")],
            &format!("queue_capacity = {capacity}\nbatch = 1"),
        ),
        Arc::new(factory.clone()),
    )
    .with_model(Box::new(model))
    .with_sink(Box::new(sink.clone()))
    .run()
    .unwrap();

    let r = report.stream("cam").unwrap();
    assert_eq!(
        r.model_error, None,
        "the producer had to wait for the model"
    );
    let pushed = factory.pushed("cam");
    // 400 frames: 400 video + 400 * 5 audio chunks + EOS, each pushed by exactly one call
    // that returned at once.
    let events = 400 + 400 * 5 + 1;
    assert!(pushed.done.load(Ordering::Acquire));
    assert_eq!(pushed.calls.load(Ordering::Relaxed), events);
    assert_eq!(pushed.ok.load(Ordering::Relaxed), events);
    assert_eq!(r.events_sent, events);
    // The model held its first window until all 40 windows were assembled: the model queue
    // (capacity 4) kept only the newest, the rest were dropped and counted.
    assert!(r.dropped > 0);
    assert!(
        r.max_queue_depth <= capacity,
        "depth {} > {capacity}",
        r.max_queue_depth
    );
    let written = records_of(&sink, "cam");
    assert_eq!(written.len() as u64, r.windows_written);
    // Exact accounting: every assembled window was either written or dropped in front of
    // the model.
    let model_drops = r.dropped_at.get("model").copied().unwrap_or(0);
    assert_eq!(r.windows_written + model_drops, r.windows);
    assert_eq!(r.dropped_at.values().sum::<u64>(), r.dropped);
    // Drops are of whole items: every window that made it is complete and in order.
    let idx = indices(&written);
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "{idx:?}");
}

struct SlowModel;

impl WindowModel for SlowModel {
    fn name(&self) -> &str {
        "slow"
    }
    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        std::thread::sleep(Duration::from_millis(2));
        Ok(windows
            .iter()
            .map(|w| {
                let mut m = Map::new();
                m.insert("answer".into(), json!(format!("{} #{}", w.stream, w.index)));
                m
            })
            .collect())
    }
}

#[test]
fn lossless_keeps_every_window() {
    let factory = SynthFactory::default().with("a", Script::frames(95)).with(
        "b",
        Script {
            chunk: 333,
            ..Script::frames(60)
        },
    );
    let sink = MemorySink::default();
    let report = Runtime::new(
        config(
            &[("a", "lossless"), ("b", "lossless")],
            "queue_capacity = 2\nbatch = 3",
        ),
        Arc::new(factory),
    )
    .with_model(Box::new(SlowModel))
    .with_sink(Box::new(sink.clone()))
    .run()
    .unwrap();
    for (name, n) in [("a", 10u64), ("b", 6)] {
        let recs = records_of(&sink, name);
        assert_eq!(indices(&recs), (0..n).collect::<Vec<_>>(), "{name}");
        assert_eq!(recs[3]["answer"], json!(format!("{name} #3")));
        let r = report.stream(name).unwrap();
        assert_eq!(r.dropped, 0);
        assert_eq!(r.sync.late_audio_samples, 0);
        assert_eq!(r.sync.forced_frames, 0);
    }
    assert_eq!(records_of(&sink, "a")[9]["frames"], 5);
}

/// Encodes each frame as the sum of its audio; the model reports the windows' sums.
struct SumEncoder;
impl FrameEncoder for SumEncoder {
    fn name(&self) -> &str {
        "sum"
    }
    fn encode(&mut self, frames: &[&SyncedFrame]) -> Result<Vec<FrameFeatures>, StageError> {
        frames
            .iter()
            .map(|f| {
                let sum = f.audio.iter().map(|&x| x as f64).sum::<f64>();
                let t = candle_core::Tensor::new(&[sum], &candle_core::Device::Cpu)
                    .map_err(|e| StageError::new("sum", e))?;
                Ok(FrameFeatures::Encoded(EncodedFrame {
                    audio: Some(t),
                    visual: None,
                    distill: None,
                }))
            })
            .collect()
    }
}

struct PanicOn(&'static str);
impl WindowModel for PanicOn {
    fn name(&self) -> &str {
        "fragile"
    }
    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        windows
            .iter()
            .map(|w| {
                if &*w.stream == self.0 && w.index == 1 {
                    panic!("cannot handle window 1 of {}", w.stream);
                }
                let sums: Option<Vec<f64>> = w
                    .frames
                    .iter()
                    .map(|f| {
                        let t = f.features.as_ref()?.encoded()?.audio.as_ref()?;
                        t.to_vec1::<f64>().ok()?.first().copied()
                    })
                    .collect();
                let sums =
                    sums.ok_or_else(|| StageError::new("fragile", "frame without features"))?;
                let mut m = Map::new();
                m.insert("audio_sum".into(), json!(sums.iter().sum::<f64>()));
                Ok(m)
            })
            .collect()
    }
}

#[test]
fn panicking_model_fails_only_its_stream_and_features_reach_windows() {
    let factory = SynthFactory::default()
        .with("calm", Script::frames(30))
        .with("boom", Script::frames(30));
    let sink = MemorySink::default();
    let report = Runtime::new(
        config(&[("calm", "lossless"), ("boom", "lossless")], "batch = 4"),
        Arc::new(factory),
    )
    .with_encoder(Box::new(SumEncoder))
    .with_model(Box::new(PanicOn("boom")))
    .with_sink(Box::new(sink.clone()))
    .run()
    .unwrap();
    let calm = records_of(&sink, "calm");
    assert_eq!(indices(&calm), vec![0, 1, 2]);
    // Window 0 holds samples valued 1..=80000: their sum, computed through the features.
    assert_eq!(calm[0]["audio_sum"], json!(80_000.0 * 80_001.0 / 2.0));
    let boom = report.stream("boom").unwrap();
    let err = boom.model_error.as_deref().unwrap();
    assert!(
        err.contains("window model 'fragile': panicked: cannot handle window 1 of boom"),
        "{err}"
    );
    assert_eq!(indices(&records_of(&sink, "boom")), vec![0]);
    assert_eq!(report.stream("calm").unwrap().model_error, None);
}

#[test]
fn shutdown_stops_endless_streams_and_flushes() {
    let factory = SynthFactory::default().with("live", Script::endless());
    let sink = MemorySink::default();
    let rt = Runtime::new(config(&[("live", "lossless")], ""), Arc::new(factory))
        .with_sink(Box::new(sink.clone()));
    let token = rt.shutdown_token();
    let records = sink.records.clone();
    let watcher = std::thread::spawn(move || {
        while records.lock().len() < 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        token.trigger();
    });
    let report = rt.run().unwrap();
    watcher.join().unwrap();
    assert!(report.interrupted);
    let r = report.stream("live").unwrap();
    assert_eq!(r.end, StreamEnd::Stopped);
    let recs = records_of(&sink, "live");
    assert!(recs.len() >= 3);
    assert_eq!(indices(&recs), (0..recs.len() as u64).collect::<Vec<_>>());
    // Every frame the synchroniser produced is in a written window (last one padded).
    let valid: u64 = recs.iter().map(|r| r["frames"].as_u64().unwrap()).sum();
    assert_eq!(valid, r.frames);
}

/// A model that never returns from its first window (until the test process ends).
struct StuckModel(crossbeam_channel::Sender<()>);
impl WindowModel for StuckModel {
    fn name(&self) -> &str {
        "stuck"
    }
    fn process(&mut self, _: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        let _ = self.0.send(());
        loop {
            std::thread::park();
        }
    }
}

#[test]
fn a_stuck_model_cannot_hold_shutdown_past_its_deadline() {
    let factory = SynthFactory::default().with("live", Script::endless());
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let rt = Runtime::new(
        config(&[("live", "lossless")], "shutdown_timeout_ms = 300"),
        Arc::new(factory),
    )
    .with_sink(Box::new(MemorySink::default()))
    .with_model(Box::new(StuckModel(entered_tx)));
    let token = rt.shutdown_token();
    let run = std::thread::spawn(move || rt.run());
    entered
        .recv_timeout(Duration::from_secs(60))
        .expect("the model got a window");
    token.trigger();
    let err = run.join().unwrap().expect_err("shutdown cannot finish");
    assert_eq!(
        err.to_string(),
        "shutdown did not finish within 300 ms of the request: still running: sink, model"
    );
}

struct FailingSink {
    ok: usize,
    written: Arc<parking_lot::Mutex<usize>>,
}
impl WindowSink for FailingSink {
    fn write(&mut self, _: &Value) -> Result<(), SinkError> {
        let mut w = self.written.lock();
        if *w >= self.ok {
            return Err(SinkError {
                target: "out.jsonl".into(),
                error: std::io::Error::other("disk full"),
            });
        }
        *w += 1;
        Ok(())
    }
}

#[test]
fn sink_failure_stops_the_run_and_is_reported() {
    let factory = SynthFactory::default().with("live", Script::endless());
    let written = Arc::new(parking_lot::Mutex::new(0));
    let report = Runtime::new(config(&[("live", "realtime")], ""), Arc::new(factory))
        .with_sink(Box::new(FailingSink {
            ok: 2,
            written: written.clone(),
        }))
        .run()
        .unwrap();
    assert_eq!(
        report.sink_error.as_deref(),
        Some("output out.jsonl: disk full")
    );
    assert_eq!(*written.lock(), 2);
    assert!(!report.interrupted);
    assert_eq!(report.stream("live").unwrap().windows_written, 2);
}

#[test]
fn discontinuity_closes_the_window_with_and_without_encoder() {
    for encoder in [false, true] {
        let script = Script {
            disc_at: Some(5),
            ..Script::frames(23)
        };
        let factory = SynthFactory::default().with("cam", script);
        let sink = MemorySink::default();
        let mut rt = Runtime::new(config(&[("cam", "lossless")], ""), Arc::new(factory))
            .with_sink(Box::new(sink.clone()));
        if encoder {
            rt = rt.with_encoder(Box::new(SumEncoder));
        }
        let report = rt.run().unwrap();
        let recs = records_of(&sink, "cam");
        let frames: Vec<u64> = recs.iter().map(|r| r["frames"].as_u64().unwrap()).collect();
        assert_eq!(frames, vec![5, 10, 8], "encoder: {encoder}");
        assert_eq!(indices(&recs), vec![0, 1, 2]);
        assert_eq!(recs[1]["t_start"], 2_500_000_000u64);
        let r = report.stream("cam").unwrap();
        assert_eq!(r.sync.discontinuities, 1);
        assert_eq!(r.frames, 23);
    }
}

/// Adds the window's index to its record (no features needed).
struct Tag;
impl WindowModel for Tag {
    fn name(&self) -> &str {
        "tag"
    }
    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        Ok(windows
            .iter()
            .map(|w| {
                let mut m = Map::new();
                m.insert("tag".into(), json!(w.index));
                m
            })
            .collect())
    }
}

/// One expectation, one path: the runtime, with or without a frame encoder and with or
/// without a window model, writes exactly the windows that the synchroniser and assembler
/// make directly of the same events; the model only adds its fields.
#[test]
fn runtime_writes_the_same_windows_as_the_direct_path() {
    use sensorium_engine::sink::window_record;
    use sensorium_engine::{SyncConfig, Synchroniser, WindowAssembler};

    let script = Script {
        chunk: 777,
        disc_at: Some(13),
        ..Script::frames(41)
    };
    let mut sync = Synchroniser::new("cam".into(), SyncConfig::new(2.0, true, true, 500_000_000));
    let mut asm = WindowAssembler::new("cam".into(), 4, 3);
    let (mut frames, mut windows) = (Vec::new(), Vec::new());
    for ev in common::events(&script, "cam") {
        let disc = matches!(ev, sensorium_engine::SourceEvent::Discontinuity { .. });
        sync.push_event(ev, &mut frames);
        for f in frames.drain(..) {
            asm.push(f, &mut windows);
        }
        if disc {
            asm.flush(&mut windows);
        }
    }
    asm.flush(&mut windows);
    let want: Vec<Value> = windows
        .iter()
        .map(|w| Value::Object(window_record(w)))
        .collect();
    // 13 frames: windows at 0, 3, 6, 9; then 28 frames: windows at 0, 3, .., 24.
    assert_eq!(want.len(), 4 + 9);

    for (encoder, model) in [(false, false), (true, false), (false, true), (true, true)] {
        let factory = SynthFactory::default().with("cam", script.clone());
        let sink = MemorySink::default();
        let mut rt = Runtime::new(
            config(&[("cam", "lossless")], "window = 4\nstride = 3\nbatch = 5"),
            Arc::new(factory),
        )
        .with_sink(Box::new(sink.clone()));
        if encoder {
            rt = rt.with_encoder(Box::new(SumEncoder));
        }
        if model {
            rt = rt.with_model(Box::new(Tag));
        }
        rt.run().unwrap();
        let got: Vec<Value> = records_of(&sink, "cam")
            .into_iter()
            .map(|mut r| {
                let r = r.as_object_mut().unwrap();
                r.remove("latency_ms");
                // Where the time went depends on the machine, not on the path.
                let timing = r.remove("timing").unwrap();
                for k in [
                    "capture_to_sync_ms",
                    "sync_to_encoded_ms",
                    "encoded_to_model_ms",
                    "model_to_sink_ms",
                ] {
                    assert!(
                        timing[k].as_f64().is_some_and(|v| v >= 0.0),
                        "{k}: {timing}"
                    );
                }
                let tag = r.remove("tag");
                assert_eq!(tag.is_some(), model, "encoder: {encoder}, model: {model}");
                if let Some(tag) = tag {
                    assert_eq!(tag, r["index"]);
                }
                Value::Object(r.clone())
            })
            .collect();
        assert_eq!(got, want, "encoder: {encoder}, model: {model}");
    }
}
