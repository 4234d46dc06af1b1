//! Realtime mode with the real GStreamer test source and a window model far slower than the
//! stream: the model holds its first window until the source has finished, so every later
//! window can only reach it through the bounded realtime queue. Capture must not wait for
//! the model (every frame of the stream is synced), drops are counted exactly, queues stay
//! within their capacity. Counts only; the one wait is a hang guard.

mod common;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use sensorium_engine::config::StreamConfig;
use sensorium_engine::model::StageError;
use sensorium_engine::{
    Config, MemorySink, QueueSender, Runtime, SourceEvent, SourceFactory, SourceHandle,
    SourceParams, SourceStartError, StreamEnd, Window, WindowModel,
};
use sensorium_pipelines::Sources;
use serde_json::{Map, Value};

use common::*;

/// The real factory; the handle it returns reports when the engine stops the source,
/// which it does only after the source's end of stream was taken off its queue.
struct Signalling {
    done: Sender<()>,
}

struct Handle {
    inner: Box<dyn SourceHandle>,
    done: Sender<()>,
}

impl SourceHandle for Handle {
    fn stop(&mut self) {
        self.inner.stop();
        let _ = self.done.send(());
    }
}

impl SourceFactory for Signalling {
    fn start(
        &self,
        stream: &StreamConfig,
        params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<Box<dyn SourceHandle>, SourceStartError> {
        let inner = Sources::new().start(stream, params, out)?;
        Ok(Box::new(Handle {
            inner,
            done: self.done.clone(),
        }))
    }
}

/// Holds its first call until the source has finished; later calls return at once.
struct GatedModel {
    gate: Receiver<()>,
    open: bool,
    calls: Arc<Mutex<Vec<u64>>>,
}

impl WindowModel for GatedModel {
    fn name(&self) -> &str {
        "gated"
    }
    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        if !self.open {
            self.gate.recv_timeout(HANG_GUARD).map_err(|_| {
                StageError::new("gated", "the source never finished: capture was blocked")
            })?;
            self.open = true;
        }
        if let Ok(mut c) = self.calls.lock() {
            c.extend(windows.iter().map(|w| w.index));
        }
        Ok(windows.iter().map(|_| Map::new()).collect())
    }
}

#[test]
fn slow_model_drops_windows_and_never_blocks_capture() {
    // 5 s of live test pattern at 4 fps: 20 frames, one window each. Queues of 8: nearly
    // all frames are complete before the end of stream, so windows 1..~19 meet a queue of
    // 8 in front of the held model.
    let capacity = 8;
    let config: Config = toml::from_str(&format!(
        "[engine]\nfps = 4.0\nwidth = 64\nheight = 48\nwindow = 1\nstride = 1\n\
         queue_capacity = {capacity}\nbatch = 1\n\
         [[stream]]\nname = \"live\"\nmode = \"realtime\"\n\
         [stream.source]\nkind = \"test\"\npattern = \"ball\"\nis_live = true\nduration_s = 5.0\n"
    ))
    .expect("config");
    let (done, gate) = channel();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let model = GatedModel {
        gate,
        open: false,
        calls: calls.clone(),
    };
    let sink = MemorySink::default();
    let report = Runtime::new(config, Arc::new(Signalling { done }))
        .with_model(Box::new(model))
        .with_sink(Box::new(sink.clone()))
        .run()
        .expect("runtime");
    let r = report.stream("live").expect("report");
    assert_eq!(r.model_error, None, "the source waited for the model");
    assert_eq!(r.end, StreamEnd::Eos);
    // Capture kept up: the source reached its end while the model was held (else the
    // model would have timed out above), and the grid has all frames of the 5 s. On a
    // loaded machine the realtime source queue may itself drop a burst: every video frame
    // either reached the synchroniser or is counted as dropped there.
    // The grid starts at the first picture, which a live source stamps a few ms after its
    // first audio, so the last audio may open a 21st frame.
    assert!(r.frames == 20 || r.frames == 21, "{:?}", r.sync);
    assert_eq!(r.windows, r.frames);
    let sync_drops = r.dropped_at.get("sync").copied().unwrap_or(0);
    assert!(
        r.sync.video_in + sync_drops >= 20,
        "{:?} {:?}",
        r.sync,
        r.dropped_at
    );
    // The model saw window 0, then only what the queue held when it woke up; the rest was
    // dropped in front of it and counted.
    let model_drops = r.dropped_at.get("model").copied().unwrap_or(0);
    assert!(model_drops >= 1, "{:?}", r.dropped_at);
    assert_eq!(r.windows_written + model_drops, r.windows, "{r:?}");
    assert_eq!(r.dropped_at.values().sum::<u64>(), r.dropped);
    assert!(r.max_queue_depth <= capacity, "depth {}", r.max_queue_depth);
    let written = sink.records.lock().clone();
    assert_eq!(written.len() as u64, r.windows_written);
    let idx: Vec<u64> = written.iter().map(|w| u(&w["index"])).collect();
    assert_eq!(idx[0], 0);
    assert!(idx.windows(2).all(|p| p[0] < p[1]), "{idx:?}");
    assert_eq!(
        *calls.lock().unwrap(),
        idx,
        "the model saw exactly what was written"
    );
}
