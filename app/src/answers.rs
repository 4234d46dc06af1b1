//! The LLM side of `sensorium run`: the answer service writing one line per answer —
//! scheduled, stdin, `POST /ask` — through the engine's output (the sink stage's metrics
//! count it; the view's watchers get it), echoing tokens to stdout as they come (when the
//! output is a file), and the stdin question input (`POST /ask`: `sensorium_server::run`),
//! with an orderly stop after the engine finished: inputs closed first, then every queued
//! window answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use sensorium_engine::{RecordOutput, StopToken, ViewEvent, ViewHub};
use sensorium_models::llm::{
    spawn_line_questions, AnswerService, Answerer, LiveEvent, ServiceHandle, ServiceOutput,
};

use crate::output::echo;

/// The running answer service and its inputs.
pub struct Answers {
    service: AnswerService,
    stdin: Option<(StopToken, JoinHandle<()>)>,
    errors: Arc<AtomicU64>,
    answers: Arc<AtomicU64>,
}

/// What the service did, for the run summary and the exit code.
pub struct AnswersSummary {
    pub answers: u64,
    pub errors: u64,
    pub stale: u64,
}

impl Answers {
    /// Starts the service (queue: `queue` windows/questions) writing its answers to `out`;
    /// scheduled answers are also offered token by token to `view`'s watchers, and their
    /// tokens echoed on stdout when `echo_on`.
    pub fn start(
        answerer: Answerer,
        queue: usize,
        out: RecordOutput,
        echo_on: bool,
        view: Option<ViewHub>,
    ) -> anyhow::Result<Self> {
        let cfg = answerer.config().clone();
        let errors = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(AtomicU64::new(0));
        let (e2, a2) = (errors.clone(), answers.clone());
        let service = AnswerService::spawn(
            answerer,
            queue,
            Box::new(move |ev| match ev {
                ServiceOutput::Token {
                    stream,
                    window,
                    question,
                    event,
                } => {
                    if echo_on {
                        if event.index == 0 {
                            echo(&format!("[{stream} #{window}] {question}\n"));
                        }
                        echo(&event.text);
                    }
                    if let Some(v) = &view {
                        v.publish(ViewEvent::Token {
                            stream: stream.as_str().into(),
                            window,
                            question: question.as_str().into(),
                            index: event.index,
                            text: event.text,
                        });
                    }
                }
                ServiceOutput::Answer(rec) => {
                    // A live answer's tokens were echoed (and it is counted) by its asker.
                    if !rec.live {
                        if echo_on {
                            echo("\n");
                        }
                        a2.fetch_add(1, Ordering::Relaxed);
                    }
                    // A failed write is recorded by the output (exit code 5).
                    let _ = out.write_answer(&rec.line());
                }
                ServiceOutput::Error { stream, message } => {
                    e2.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("llm: stream '{stream}': {message}");
                }
            }),
        );
        let mut me = Self {
            service,
            stdin: None,
            errors,
            answers,
        };
        if cfg.stdin {
            let stop = StopToken::new();
            let lines = crate::output::StdinLines::spawn(stop.clone())
                .context("cannot start the stdin reader")?;
            let e3 = me.errors.clone();
            let join = spawn_line_questions(
                std::io::BufReader::new(lines),
                me.service.handle(),
                move |line, ev| match ev {
                    LiveEvent::Token(t) if echo_on => {
                        if t.index == 0 {
                            echo(&format!("[{line}]\n"));
                        }
                        echo(&t.text);
                    }
                    LiveEvent::Token(_) => {}
                    LiveEvent::Done(_) => {
                        if echo_on {
                            echo("\n");
                        }
                    }
                    LiveEvent::Error { status, message } => {
                        // A question about an unknown stream is the asker's mistake, not a
                        // model failure; only model failures (500) count for the exit code.
                        if *status >= 500 {
                            e3.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::error!("question {line:?}: {message}");
                    }
                },
            )
            .context("cannot start the stdin question thread")?;
            me.stdin = Some((stop, join));
        }
        Ok(me)
    }

    pub fn handle(&self) -> ServiceHandle {
        self.service.handle()
    }

    /// After the engine finished: closes the question inputs, then answers every window
    /// still queued and stops the service.
    /// `deadline`: after an interrupt, how long the service may take to answer what is
    /// queued; past it the error names the service (its thread is left to the process exit).
    pub fn finish(self, deadline: Option<std::time::Instant>) -> anyhow::Result<AnswersSummary> {
        let Self {
            service,
            stdin,
            errors,
            answers,
            ..
        } = self;
        if let Some((stop, join)) = stdin {
            stop.trigger();
            let _ = join.join();
        }
        let stale = match deadline {
            None => service.join(),
            Some(at) => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                std::thread::spawn(move || {
                    let _ = tx.send(service.join());
                });
                rx.recv_deadline(at).map_err(|_| {
                    anyhow::anyhow!(
                        "shutdown did not finish in time: still running: llm answer service"
                    )
                })?
            }
        };
        Ok(AnswersSummary {
            answers: answers.load(Ordering::Relaxed),
            errors: errors.load(Ordering::Relaxed),
            stale,
        })
    }
}
