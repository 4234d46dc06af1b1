//! The answer service: one thread owns the [`Answerer`] and the [`QuestionScheduler`] and
//! serves windows (scheduled questions) and live questions (stdin, HTTP) from one bounded
//! channel. Each live question carries its own event sender (as mistral.rs requests carry
//! their response sender), so answers stream back to whoever asked.
//!
//! Realtime: pushing a newer window of a stream cancels that stream's scheduled answer still
//! decoding, and scheduled questions of a window already superseded are skipped.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::Tensor;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::answerer::{AnswerRecord, Answerer, WindowMeta};
use super::error::LlmError;
use super::generate::{CancelToken, Finish, TokenEvent};
use super::schedule::QuestionScheduler;

/// What a live question gets back, in order: tokens, then `Done` or `Error`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LiveEvent {
    Token(TokenEvent),
    Done(AnswerRecord),
    /// `status` is the HTTP status that fits (404: unknown stream, 500: model failure).
    Error {
        status: u16,
        message: String,
    },
}

/// What the service produces: tokens and errors of scheduled questions, and every finished
/// answer, scheduled or live (live ones also reach their asker as [`LiveEvent`]s).
#[derive(Clone, Debug)]
pub enum ServiceOutput {
    Token {
        stream: String,
        window: u64,
        question: String,
        event: TokenEvent,
    },
    Answer(AnswerRecord),
    Error {
        stream: String,
        message: String,
    },
}

enum Request {
    Window {
        meta: WindowMeta,
        av: Tensor,
    },
    Question {
        stream: Option<String>,
        question: String,
        events: Sender<LiveEvent>,
    },
    EndStream(String),
}

#[derive(Default)]
struct Shared {
    /// Cancel token of the scheduled answer decoding now, per stream.
    inflight: HashMap<String, CancelToken>,
    /// Newest window index pushed per stream.
    latest: HashMap<String, u64>,
    /// Scheduled answers cancelled or skipped because a newer window arrived.
    stale: u64,
}

/// Cheap, clonable way into the service.
#[derive(Clone)]
pub struct ServiceHandle {
    tx: Sender<Request>,
    shared: Arc<Mutex<Shared>>,
    cancel_stale: bool,
}

impl ServiceHandle {
    /// Hands a window's AV tokens (`[n_tokens, hidden]`) to the service; blocks while its
    /// queue is full. In realtime mode a stale scheduled answer of this stream is cancelled.
    pub fn push_window(&self, mut meta: WindowMeta, av: Tensor) -> Result<(), LlmError> {
        meta.queued.get_or_insert_with(std::time::Instant::now);
        if let Ok(mut s) = self.shared.lock() {
            s.latest.insert(meta.stream.clone(), meta.index);
            if self.cancel_stale {
                if let Some(c) = s.inflight.get(&meta.stream) {
                    c.cancel();
                }
            }
        }
        self.tx
            .send(Request::Window { meta, av })
            .map_err(|_| LlmError::ServiceStopped)
    }

    /// Asks a live question about `stream` (or, if `None`, the stream that sent the newest
    /// window); events arrive on the returned receiver.
    pub fn ask(
        &self,
        stream: Option<String>,
        question: String,
    ) -> Result<Receiver<LiveEvent>, LlmError> {
        let (events, rx) = crossbeam_channel::unbounded();
        self.tx
            .send(Request::Question {
                stream,
                question,
                events,
            })
            .map_err(|_| LlmError::ServiceStopped)?;
        Ok(rx)
    }

    /// The stream ended: drop its context and schedule.
    pub fn end_stream(&self, stream: &str) -> Result<(), LlmError> {
        self.tx
            .send(Request::EndStream(stream.to_owned()))
            .map_err(|_| LlmError::ServiceStopped)
    }

    /// Scheduled answers cancelled or skipped as stale so far.
    pub fn stale_answers(&self) -> u64 {
        self.shared.lock().map(|s| s.stale).unwrap_or(0)
    }
}

/// The service thread; dropping every handle (and calling [`AnswerService::join`]) stops it.
pub struct AnswerService {
    handle: ServiceHandle,
    join: Option<JoinHandle<()>>,
}

impl AnswerService {
    /// Starts the thread. `queue` bounds pending requests; `out` receives scheduled answers
    /// (and their tokens) in order.
    pub fn spawn(
        answerer: Answerer,
        queue: usize,
        out: Box<dyn FnMut(ServiceOutput) + Send>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(queue.max(1));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let cancel_stale = answerer.config().cancel_stale;
        let scheduler = QuestionScheduler::new(answerer.config().questions.clone());
        let sh = shared.clone();
        let join = std::thread::Builder::new()
            .name("llm-answer".into())
            .spawn(move || serve(answerer, scheduler, rx, sh, out))
            .ok();
        Self {
            handle: ServiceHandle {
                tx,
                shared,
                cancel_stale,
            },
            join,
        }
    }

    pub fn handle(&self) -> ServiceHandle {
        self.handle.clone()
    }

    /// Closes this side's sender and waits for the thread (other handles must be dropped
    /// first); returns the number of scheduled answers cancelled or skipped as stale.
    pub fn join(self) -> u64 {
        let Self { handle, join } = self;
        let shared = handle.shared.clone();
        drop(handle);
        if let Some(j) = join {
            let _ = j.join();
        }
        shared.lock().map(|s| s.stale).unwrap_or(0)
    }
}

fn serve(
    mut a: Answerer,
    mut scheduler: QuestionScheduler,
    rx: Receiver<Request>,
    shared: Arc<Mutex<Shared>>,
    mut out: Box<dyn FnMut(ServiceOutput) + Send>,
) {
    let mut last_stream: Option<String> = None;
    for req in rx {
        match req {
            Request::Window { meta, av } => {
                let stream = meta.stream.clone();
                if let Err(e) = a.push_window(meta.clone(), &av) {
                    out(ServiceOutput::Error {
                        stream,
                        message: e.to_string(),
                    });
                    continue;
                }
                last_stream = Some(stream.clone());
                for q in scheduler.due(&meta) {
                    let cancel = CancelToken::new();
                    if let Ok(mut s) = shared.lock() {
                        let superseded = s.latest.get(&stream).is_some_and(|&l| l > meta.index);
                        if superseded && a.config().cancel_stale {
                            s.stale += 1;
                            metrics::counter!("llm_stale_answers_total", "stream" => stream.clone())
                                .increment(1);
                            continue;
                        }
                        s.inflight.insert(stream.clone(), cancel.clone());
                    }
                    let res = a.answer(&stream, &q, &cancel, &mut |e| {
                        out(ServiceOutput::Token {
                            stream: stream.clone(),
                            window: meta.index,
                            question: q.clone(),
                            event: e.clone(),
                        })
                    });
                    if let Ok(mut s) = shared.lock() {
                        s.inflight.remove(&stream);
                        // Only answers that actually stopped early count: a cancel that lands
                        // after the last token leaves a complete answer.
                        if matches!(&res, Ok(ans) if ans.finish == Finish::Cancelled) {
                            s.stale += 1;
                        }
                    }
                    match res {
                        Ok(ans) => {
                            record_metrics(&ans, "scheduled");
                            out(ServiceOutput::Answer(ans.record(false)))
                        }
                        Err(e) => out(ServiceOutput::Error {
                            stream: stream.clone(),
                            message: e.to_string(),
                        }),
                    }
                }
            }
            Request::Question {
                stream,
                question,
                events,
            } => {
                let Some(stream) = stream.or_else(|| last_stream.clone()) else {
                    let _ = events.send(LiveEvent::Error {
                        status: 404,
                        message: "no stream has produced a window yet".into(),
                    });
                    continue;
                };
                // A client that went away cancels its answer.
                let cancel = CancelToken::new();
                let res = a.answer(&stream, &question, &cancel, &mut |e| {
                    if events.send(LiveEvent::Token(e.clone())).is_err() {
                        cancel.cancel();
                    }
                });
                let _ = events.send(match res {
                    Ok(ans) => {
                        record_metrics(&ans, "live");
                        // The output line first: once the asker has its answer, the line
                        // is written.
                        let rec = ans.record(true);
                        out(ServiceOutput::Answer(rec.clone()));
                        LiveEvent::Done(rec)
                    }
                    Err(e @ LlmError::UnknownStream(_)) => LiveEvent::Error {
                        status: 404,
                        message: e.to_string(),
                    },
                    Err(e) => LiveEvent::Error {
                        status: 500,
                        message: e.to_string(),
                    },
                });
            }
            Request::EndStream(stream) => {
                a.end_stream(&stream);
                scheduler.end_stream(&stream);
                if last_stream.as_deref() == Some(stream.as_str()) {
                    last_stream = None;
                }
            }
        }
    }
}

/// Per-answer metrics (`metrics` facade; the engine installs the Prometheus exporter).
fn record_metrics(ans: &super::answerer::Answer, kind: &'static str) {
    let stream = ans.stream.clone();
    metrics::counter!("llm_answers_total", "stream" => stream.clone(), "kind" => kind).increment(1);
    metrics::counter!("llm_answer_tokens_total", "stream" => stream.clone())
        .increment(ans.tokens as u64);
    if ans.finish == Finish::Cancelled {
        metrics::counter!("llm_stale_answers_total", "stream" => stream.clone()).increment(1);
    }
    if let Some(d) = ans.capture_to_first_token {
        metrics::histogram!("llm_capture_to_first_token_seconds", "stream" => stream.clone())
            .record(d.as_secs_f64());
    }
    if let (Some(a), Some(b)) = (ans.first_token_at, ans.last_token_at) {
        if ans.tokens > 1 {
            let per_token = b.saturating_duration_since(a).as_secs_f64() / (ans.tokens - 1) as f64;
            metrics::histogram!("llm_seconds_per_token", "stream" => stream).record(per_token);
        }
    }
}

/// Reads live questions, one per line, until EOF: `@stream question` asks about `stream`,
/// a bare line about the stream with the newest window. `out` gets every event (print tokens
/// as they come). Runs on its own thread; returns its join handle.
pub fn spawn_line_questions<R: BufRead + Send + 'static>(
    input: R,
    handle: ServiceHandle,
    mut out: impl FnMut(&str, &LiveEvent) + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("llm-stdin".into())
        .spawn(move || {
            for line in input.lines() {
                let Ok(line) = line else { break };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let (stream, question) = match line.strip_prefix('@') {
                    Some(rest) => match rest.split_once(char::is_whitespace) {
                        Some((s, q)) => (Some(s.to_owned()), q.trim().to_owned()),
                        None => (Some(rest.to_owned()), String::new()),
                    },
                    None => (None, line.to_owned()),
                };
                if question.is_empty() {
                    out(
                        line,
                        &LiveEvent::Error {
                            status: 400,
                            message: "empty question".into(),
                        },
                    );
                    continue;
                }
                let Ok(rx) = handle.ask(stream, question) else {
                    break;
                };
                for ev in rx {
                    out(line, &ev);
                }
            }
        })
}
