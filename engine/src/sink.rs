//! Output sinks: one JSON object per window, written as one line and flushed at once, so
//! the lines already written stay valid if the process dies later.

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::frame::Window;

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
}

impl WindowSink for JsonLinesSink {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        let mut line = record.to_string();
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
