//! Output sinks: one JSON object per window, written as one line and flushed at once, so
//! the lines already written stay valid if the process dies later.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};

use crate::frame::Window;
use crate::metrics as m;
use crate::view::{ViewEvent, ViewHub};

/// Writing the output failed; `target` names the file (or `stdout`).
#[derive(Debug, thiserror::Error)]
#[error("output {target}: {error}")]
pub struct SinkError {
    pub target: String,
    pub error: std::io::Error,
}

/// Where window records go.
pub trait WindowSink: Send {
    fn write(&mut self, record: &Value) -> Result<(), SinkError>;
}

/// JSON lines on any writer, flushed per line.
pub struct JsonLinesSink {
    target: String,
    out: Box<dyn Write + Send>,
}

impl JsonLinesSink {
    pub fn new(target: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            target: target.into(),
            out,
        }
    }

    /// `-` for stdout, otherwise a file (created or truncated).
    pub fn open(path: &str) -> Result<Self, SinkError> {
        if path == "-" {
            return Ok(Self::new("stdout", Box::new(std::io::stdout())));
        }
        let file = std::fs::File::create(path).map_err(|error| SinkError {
            target: path.into(),
            error,
        })?;
        Ok(Self::new(path, Box::new(file)))
    }

    /// Writes `line` and a newline in one write, and flushes.
    pub fn write_line(&mut self, mut line: String) -> Result<(), SinkError> {
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|error| SinkError {
                target: self.target.clone(),
                error,
            })
    }
}

impl WindowSink for JsonLinesSink {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        self.write_line(record.to_string())
    }
}

/// What a record is, as `sensorium_records_written_total`'s `type` label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Window,
    Answer,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Window => "window",
            Self::Answer => "answer",
        }
    }
}

/// The run's one output: every record goes through here — each window's, from the sink
/// stage, and each answer's, from the answer service (scheduled, stdin, `POST /ask`) — and is
/// counted in the sink stage's metrics (`sensorium_items_{in,out}_total{stage="sink"}`,
/// its latency, `sensorium_records_written_total{type}`). Cloning shares it; the answer
/// service may go on writing after [`Runtime::run`](crate::Runtime::run) returned (it
/// answers the windows still queued).
#[derive(Clone)]
pub struct RecordOutput(Arc<OutputInner>);

struct OutputInner {
    sink: Mutex<Box<dyn WindowSink>>,
    /// The first write error.
    error: Mutex<Option<String>>,
    /// Watchers offered every answer written (the sink stage offers windows itself).
    view: RwLock<Option<ViewHub>>,
}

impl RecordOutput {
    pub fn new(sink: Box<dyn WindowSink>) -> Self {
        Self(Arc::new(OutputInner {
            sink: Mutex::new(sink),
            error: Mutex::new(None),
            view: RwLock::new(None),
        }))
    }

    pub(crate) fn set_view(&self, view: Option<ViewHub>) {
        *self.0.view.write() = view;
    }

    /// Writes one record of `stream`, counted in the sink stage's metrics.
    pub(crate) fn write(
        &self,
        stream: &str,
        kind: RecordKind,
        record: &Value,
    ) -> Result<(), SinkError> {
        let labels = [("stage", "sink".to_string()), ("stream", stream.to_owned())];
        counter!(m::ITEMS_IN, &labels).increment(1);
        let t = Instant::now();
        let written = self.0.sink.lock().write(record);
        match &written {
            Ok(()) => {
                histogram!(m::STAGE_LATENCY, &labels).record(t.elapsed().as_secs_f64());
                counter!(m::ITEMS_OUT, &labels).increment(1);
                counter!(m::RECORDS_WRITTEN, "stream" => stream.to_owned(), "type" => kind.as_str())
                    .increment(1);
            }
            Err(e) => {
                self.0.error.lock().get_or_insert_with(|| e.to_string());
            }
        }
        written
    }

    /// Writes an answer's line (`"stream"` names its stream) and offers it to the view's
    /// watchers of that stream.
    pub fn write_answer(&self, line: &Value) -> Result<(), SinkError> {
        let stream = line["stream"].as_str().unwrap_or("");
        self.write(stream, RecordKind::Answer, line)?;
        if let Some(view) = &*self.0.view.read() {
            view.publish(ViewEvent::Answer {
                stream: stream.into(),
                record: Arc::new(line.clone()),
            });
        }
        Ok(())
    }

    /// The first write error, if a write failed (the run's exit code becomes 5).
    pub fn failure(&self) -> Option<String> {
        self.0.error.lock().clone()
    }
}

/// Keeps records in memory (tests, embedding).
#[derive(Clone, Default)]
pub struct MemorySink {
    pub records: Arc<Mutex<Vec<Value>>>,
}

impl WindowSink for MemorySink {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        self.records.lock().push(record.clone());
        Ok(())
    }
}

/// The engine's fields of a window's output line (`latency_ms` is added by the sink stage).
pub fn window_record(w: &Window) -> Map<String, Value> {
    let valid = |i: usize| w.valid.get(i).copied().unwrap_or(false);
    let audio_samples: usize = w
        .frames
        .iter()
        .enumerate()
        .filter(|(i, _)| valid(*i))
        .map(|(_, f)| f.audio.len())
        .sum();
    let v = json!({
        "stream": &*w.stream,
        "index": w.index,
        "t_start": w.t_start,
        "t_end": w.t_end,
        "frames": w.valid_frames(),
        "audio_samples": audio_samples,
        "has_video": w.frames.iter().map(|f| f.has_video).collect::<Vec<_>>(),
        "has_audio": w.frames.iter().map(|f| f.has_audio).collect::<Vec<_>>(),
        "valid": &w.valid,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Adds a model's fields to a record; the engine's own fields win on a name clash.
pub fn merge_fields(record: &mut Map<String, Value>, extra: Map<String, Value>) {
    for (k, v) in extra {
        record.entry(k).or_insert(v);
    }
}
