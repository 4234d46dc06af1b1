//! The run's one output, shared by the engine's window lines and the LLM's answer lines (both
//! JSON lines, one object per line, flushed per line so lines never interleave), and the
//! plain-text token echo: answer tokens go to stdout as they come, but only when the JSON
//! lines go to a file (on stdout they would break the JSON lines).

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use sensorium_engine::{JsonLinesSink, SinkError, StopToken, WindowSink};
use serde_json::Value;

/// How the run's lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON lines (window records and answers): for files and programs.
    Json,
    /// Readable answers only: `[scene 00:12.5] What do you see? → a red circle moving left`.
    Text,
}

/// The run's writer, shared between threads (and, in a cluster worker, between the runs of
/// its streams): the engine's JSON-lines sink, with the text format, the added fields and
/// the tap on top.
#[derive(Clone)]
pub struct SharedOut {
    to_stdout: bool,
    format: Format,
    /// Echo answer tokens to stdout (when writing to a file; not under `bench`).
    echo: bool,
    out: Arc<Mutex<JsonLinesSink>>,
    /// Added to every record (a cluster worker's `worker` and `epoch`).
    fields: Arc<serde_json::Map<String, Value>>,
    /// Also receives every record (a cluster worker publishes them).
    tap: Option<Tap>,
}

/// Where a cluster worker's copy of each record goes.
pub type Tap = Arc<dyn Fn(sensorium_cluster::Kind, &Value) + Send + Sync>;

impl SharedOut {
    /// `-` for stdout, otherwise a file (created or truncated). Without a `format`, text on
    /// a terminal and JSON lines anywhere else.
    pub fn open_as(path: &str, format: Option<Format>) -> Result<Self, SinkError> {
        use std::io::IsTerminal;
        let mut me = Self::open(path)?;
        me.format = format.unwrap_or(if me.to_stdout && std::io::stdout().is_terminal() {
            Format::Text
        } else {
            Format::Json
        });
        Ok(me)
    }

    /// `-` for stdout, `none` for nowhere, otherwise a file (created or truncated); JSON
    /// lines.
    pub fn open(path: &str) -> Result<Self, SinkError> {
        let out = match path {
            "none" => JsonLinesSink::new("nowhere", Box::new(std::io::sink())),
            _ => JsonLinesSink::open(path)?,
        };
        Ok(Self {
            to_stdout: path == "-",
            echo: path != "-",
            format: Format::Json,
            out: Arc::new(Mutex::new(out)),
            fields: Arc::default(),
            tap: None,
        })
    }

    /// Adds `fields` to every record and hands each record to `tap` as well.
    pub fn tapped(mut self, fields: serde_json::Map<String, Value>, tap: Tap) -> Self {
        self.fields = Arc::new(fields);
        self.tap = Some(tap);
        self
    }

    /// Whether answer tokens may be echoed to stdout (the JSON lines go elsewhere).
    pub fn echo_tokens(&self) -> bool {
        self.echo
    }

    /// No token echo on stdout.
    pub fn quiet(mut self) -> Self {
        self.echo = false;
        self
    }

    pub fn write_line(&self, record: &Value) -> Result<(), SinkError> {
        let decorated;
        let record = if self.fields.is_empty() {
            record
        } else {
            let mut r = record.clone();
            if let Value::Object(m) = &mut r {
                for (k, v) in self.fields.iter() {
                    m.insert(k.clone(), v.clone());
                }
            }
            decorated = r;
            &decorated
        };
        if let Some(tap) = &self.tap {
            let kind = if record["type"] == "answer" {
                sensorium_cluster::Kind::Answers
            } else {
                sensorium_cluster::Kind::Windows
            };
            tap(kind, record);
        }
        let line = match self.format {
            Format::Json => record.to_string(),
            Format::Text => match text_line(record) {
                Some(l) => l,
                None => return Ok(()),
            },
        };
        // A failed write is recorded by the run's output (engine::RecordOutput).
        self.out.lock().write_line(line)
    }

    /// The engine's sink writing into this output.
    pub fn sink(&self) -> Box<dyn WindowSink> {
        Box::new(SharedSink(self.clone()))
    }
}

/// An answer record as one readable line (`None` for window records).
pub fn text_line(record: &Value) -> Option<String> {
    if record["type"] != "answer" {
        return None;
    }
    let t = record["t_end_ns"].as_u64().unwrap_or(0) as f64 / 1e9;
    let (m, s) = ((t / 60.0).floor(), t % 60.0);
    Some(format!(
        "[{} {m:02}:{s:04.1}] {} → {}",
        record["stream"].as_str().unwrap_or("?"),
        record["question"].as_str().unwrap_or(""),
        record["answer"].as_str().unwrap_or("")
    ))
}

struct SharedSink(SharedOut);

impl WindowSink for SharedSink {
    fn write(&mut self, record: &Value) -> Result<(), SinkError> {
        self.0.write_line(record)
    }
}

/// Prints answer tokens to stdout as they come (when [`SharedOut::echo_tokens`]).
pub fn echo(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Lines of stdin as a `BufRead` that reports end of input once `stop` fires, so the
/// live-question thread (which owns a handle into the answer service) ends with the run even
/// when stdin stays open. A helper thread does the blocking reads.
pub struct StdinLines {
    rx: crossbeam_channel::Receiver<String>,
    stop: StopToken,
    buf: Vec<u8>,
    pos: usize,
}

impl StdinLines {
    pub fn spawn(stop: StopToken) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(16);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            rx,
            stop,
            buf: Vec::new(),
            pos: 0,
        })
    }
}

impl std::io::Read for StdinLines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            // A line, the end of stdin, or the stop token: whichever comes first.
            crossbeam_channel::select! {
                recv(self.rx) -> line => match line {
                    Ok(line) => {
                        self.buf = line.into_bytes();
                        self.buf.push(b'\n');
                        self.pos = 0;
                    }
                    Err(_) => return Ok(0),
                },
                recv(self.stop.fired()) -> _ => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
