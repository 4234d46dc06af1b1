//! The one thread per source that owns its pipeline: it runs the bus loop, turns bus errors
//! into typed errors and `SourceEvent::Error`, EOS into `SourceEvent::Eos`, loops files and
//! reconnects RTSP with exponential backoff, and always leaves the pipeline in `Null`.
//!
//! Nothing here is shared between sources (no global main loop, no shared bus), so one
//! source failing, looping or reconnecting cannot affect another.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use sensorium_engine::config::ReconnectConfig;
use sensorium_engine::status::StreamState;
use sensorium_engine::{QueueSender, SourceEvent, SourceHandle, SourceParams};

use crate::appsink::{Emitter, StopSignal, WAKE_MESSAGE};
use crate::error::PipelineError;
use crate::redact::Redactor;

/// How long the bus loop sleeps between checks of its stop flag and the stall watchdog.
const BUS_POLL: Duration = Duration::from_millis(250);

/// At most one warning per source in this interval about failed connection attempts; the
/// ones in between are counted in the next warning (and all in the metrics).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// How far before its declared duration a finite input may end without being called
/// truncated (containers round durations; the last frame's slot may be cut by `videorate`).
const TRUNCATION_SLACK: Duration = Duration::from_secs(1);

/// Builds one session's pipeline, wired to the emitter; called again for each reconnect.
pub(crate) type BuildFn =
    Box<dyn FnMut(&Arc<Emitter>) -> Result<gst::Pipeline, PipelineError> + Send>;

/// What to do when a session ends.
pub(crate) enum OnEnd {
    /// Report EOS / the error and finish.
    Finish,
    /// A finite media input (file, URI, not looping): as `Finish`, but an EOS that comes
    /// well before the duration the container declares is a truncated input, reported as
    /// an error naming it (the data before the cut has been delivered).
    FinishMedia,
    /// At EOS seek back to the start (running time keeps increasing); errors finish.
    Loop,
    /// After EOS, an error or a stall, connect again with backoff.
    Reconnect(ReconnectConfig),
}

/// Everything the source thread needs.
pub(crate) struct SourceSpec {
    /// The stream name, for the thread name.
    pub stream: String,
    /// What the user would recognise as the input (path, URL without credentials, device).
    pub input: String,
    pub redactor: Redactor,
    pub build: BuildFn,
    pub on_end: OnEnd,
}

/// Handle to a running source; stopping joins its thread.
pub struct GstSourceHandle {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl GstSourceHandle {
    /// Stops the source: its pipeline goes to `Null`, its thread ends, nothing more is
    /// sent. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        self.stop.request();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SourceHandle for GstSourceHandle {
    fn stop(&mut self) {
        GstSourceHandle::stop(self);
    }
}

impl Drop for GstSourceHandle {
    fn drop(&mut self) {
        GstSourceHandle::stop(self);
    }
}

/// Builds and starts the first session synchronously (so configuration errors come back to
/// the caller), then hands the pipeline to the source thread.
pub(crate) fn spawn(
    mut spec: SourceSpec,
    params: &SourceParams,
    out: QueueSender<SourceEvent>,
) -> Result<GstSourceHandle, PipelineError> {
    let stop = Arc::new(StopSignal::default());
    let emitter = Arc::new(Emitter::new(out, stop.clone(), params, &spec.stream));
    emitter.rebase(None);
    let pipeline = (spec.build)(&emitter)?;
    stop.set_bus(pipeline.bus());
    if pipeline.set_state(gst::State::Playing).is_err() {
        let message = bus_error_text(&pipeline, &spec.redactor)
            .unwrap_or_else(|| "state change to PLAYING failed".into());
        let _ = pipeline.set_state(gst::State::Null);
        return Err(PipelineError::StateChange {
            input: spec.input,
            message,
        });
    }
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("source-{}", spec.stream))
        .spawn(move || {
            let mut run = Run {
                spec,
                emitter,
                stop: thread_stop,
                failures: 0,
                reported: None,
                unreported: 0,
            };
            run.run(pipeline);
        })
        .map_err(|e| PipelineError::Build {
            input: "source thread".into(),
            message: e.to_string(),
        })?;
    Ok(GstSourceHandle {
        stop,
        thread: Some(thread),
    })
}

enum Outcome {
    Stopped,
    Eos,
    Error(PipelineError),
    Stalled,
}

struct Run {
    spec: SourceSpec,
    emitter: Arc<Emitter>,
    stop: Arc<StopSignal>,
    /// Consecutive connection attempts that produced no data.
    failures: u32,
    /// When a failed attempt was last reported, and how many failed since without a report.
    reported: Option<Instant>,
    unreported: u32,
}

impl Run {
    fn run(&mut self, first: gst::Pipeline) {
        let mut current = Some(first);
        while let Some(pipeline) = current.take() {
            let outcome = self.bus_loop(&pipeline);
            current = match (outcome, &self.spec.on_end) {
                (Outcome::Stopped, _) => {
                    self.teardown(pipeline);
                    None
                }
                (Outcome::Eos, OnEnd::Loop) if self.emitter.session_samples() > 0 => {
                    self.emitter.rebase(None);
                    match pipeline.seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                        gst::ClockTime::ZERO,
                    ) {
                        Ok(()) => Some(pipeline),
                        Err(_) => {
                            self.teardown(pipeline);
                            self.emitter.send_final(SourceEvent::Error {
                                message: format!(
                                    "{}: cannot seek back to the start to loop",
                                    self.spec.input
                                ),
                            });
                            None
                        }
                    }
                }
                (Outcome::Eos, OnEnd::FinishMedia) => {
                    let truncated = self.truncation(&pipeline);
                    self.teardown(pipeline);
                    self.emitter.send_final(match truncated {
                        Some(e) => SourceEvent::Error {
                            message: e.to_string(),
                        },
                        None => SourceEvent::Eos,
                    });
                    None
                }
                (Outcome::Eos, OnEnd::Finish | OnEnd::Loop) => {
                    self.teardown(pipeline);
                    self.emitter.send_final(SourceEvent::Eos);
                    None
                }
                (Outcome::Error(e), OnEnd::Finish | OnEnd::FinishMedia | OnEnd::Loop) => {
                    self.teardown(pipeline);
                    self.emitter.send_final(SourceEvent::Error {
                        message: e.to_string(),
                    });
                    None
                }
                (Outcome::Stalled, OnEnd::Finish | OnEnd::FinishMedia | OnEnd::Loop) => {
                    // Only reconnecting sources run the watchdog.
                    Some(pipeline)
                }
                (outcome, OnEnd::Reconnect(cfg)) => {
                    let cfg = cfg.clone();
                    self.teardown(pipeline);
                    self.reconnect(cfg, outcome)
                }
            };
        }
        self.stop.set_bus(None);
    }

    /// At EOS of a finite input: `Some` when the data ended more than
    /// [`TRUNCATION_SLACK`] (or two frames, if longer) before the container's declared
    /// duration. Inputs without a known duration are never called truncated.
    fn truncation(&self, pipeline: &gst::Pipeline) -> Option<PipelineError> {
        let duration = pipeline.query_duration::<gst::ClockTime>()?.nseconds();
        let end = self.emitter.last_end();
        let slack = (TRUNCATION_SLACK.as_nanos() as u64).max(2 * self.emitter.frame_ns());
        (end.saturating_add(slack) < duration).then(|| PipelineError::Truncated {
            input: self.spec.input.clone(),
            at_s: end as f64 / 1e9,
            duration_s: duration as f64 / 1e9,
        })
    }

    /// Stops a session: a lossless send waiting for room gives up, then the pipeline
    /// goes to `Null` (which waits for its streaming threads).
    fn teardown(&self, pipeline: gst::Pipeline) {
        self.emitter.end_session();
        self.stop.set_bus(None);
        let _ = pipeline.set_state(gst::State::Null);
        self.emitter.new_session();
    }

    /// Connects again until a session starts, the source gives up, or it is stopped.
    fn reconnect(&mut self, cfg: ReconnectConfig, outcome: Outcome) -> Option<gst::Pipeline> {
        let eos = matches!(outcome, Outcome::Eos);
        let mut last = match outcome {
            Outcome::Stopped => return None,
            Outcome::Eos => "end of stream".to_string(),
            Outcome::Error(e) => e.to_string(),
            Outcome::Stalled => format!("no data for {} ms", cfg.stall_ms),
        };
        let mut had_data = self.emitter.session_samples() > 0;
        if !cfg.enabled {
            let ev = if eos {
                SourceEvent::Eos
            } else {
                SourceEvent::Error { message: last }
            };
            self.emitter.send_final(ev);
            return None;
        }
        // The give-up message names the URL once, at its start.
        let prefix = format!("{}: ", self.spec.input);
        if let Some(rest) = last.strip_prefix(&prefix) {
            last = rest.to_string();
        }
        loop {
            if had_data {
                self.failures = 0;
            } else {
                self.failures += 1;
            }
            if cfg.max_attempts.is_some_and(|m| self.failures >= m) {
                let e = PipelineError::ReconnectGaveUp {
                    url: self.spec.input.clone(),
                    attempts: self.failures,
                    last,
                };
                self.emitter.send_final(SourceEvent::Error {
                    message: self.spec.redactor.apply(&e.to_string()),
                });
                return None;
            }
            let delay = backoff(&cfg, self.failures);
            self.report_failure(had_data, &last, delay);
            if self.stop.wait(delay) {
                return None;
            }
            self.emitter.rebase(Some(format!(
                "reconnected to {} after: {last}",
                self.spec.input
            )));
            let pipeline = match (self.spec.build)(&self.emitter) {
                Ok(p) => p,
                Err(e) => {
                    self.emitter.send_final(SourceEvent::Error {
                        message: self.spec.redactor.apply(&e.to_string()),
                    });
                    return None;
                }
            };
            self.stop.set_bus(pipeline.bus());
            if self.stop.is_set() {
                self.teardown(pipeline);
                return None;
            }
            if pipeline.set_state(gst::State::Playing).is_ok() {
                return Some(pipeline);
            }
            last = bus_error_text(&pipeline, &self.spec.redactor)
                .unwrap_or_else(|| "state change to PLAYING failed".into());
            self.teardown(pipeline);
            had_data = false;
        }
    }

    /// Never silent: a lost session or a failed attempt is counted, shown in the stream's
    /// state, and logged at once with the next backoff (rate-limited to one line per
    /// [`REPORT_INTERVAL`], which then counts the attempts it did not show).
    fn report_failure(&mut self, lost: bool, why: &str, retry_in: Duration) {
        self.emitter.count_error();
        StreamState::Reconnecting.set(self.emitter.stream());
        let what = if lost {
            "connection lost"
        } else {
            "cannot connect"
        };
        sensorium_engine::status::stream(self.emitter.stream())
            .source_error(&format!("{}: {what}: {why}", self.spec.input));
        if self.reported.is_some_and(|t| t.elapsed() < REPORT_INTERVAL) {
            self.unreported += 1;
            return;
        }
        let skipped = std::mem::take(&mut self.unreported);
        let more = match skipped {
            0 => String::new(),
            n => format!(" ({n} more failed attempt(s) since the last report)"),
        };
        let (stream, input) = (self.emitter.stream(), &self.spec.input);
        let retry_ms = retry_in.as_millis() as u64;
        if lost {
            tracing::warn!(
                stream,
                input = %input,
                retry_in_ms = retry_ms,
                "stream '{stream}': {input}: connection lost ({why}); reconnecting in {}{more}",
                human(retry_in)
            );
        } else {
            tracing::warn!(
                stream,
                input = %input,
                attempt = self.failures,
                retry_in_ms = retry_ms,
                "stream '{stream}': {input}: connection attempt {} failed ({why}); next attempt in {}{more}",
                self.failures,
                human(retry_in)
            );
        }
        self.reported = Some(Instant::now());
    }

    fn bus_loop(&self, pipeline: &gst::Pipeline) -> Outcome {
        let Some(bus) = pipeline.bus() else {
            return Outcome::Error(PipelineError::Build {
                input: self.spec.input.clone(),
                message: "pipeline has no bus".into(),
            });
        };
        // A reconnecting source that produces nothing for `stall_ms` is treated as lost.
        let watchdog = match &self.spec.on_end {
            OnEnd::Reconnect(cfg) => Some(Duration::from_millis(cfg.stall_ms)),
            _ => None,
        };
        loop {
            if self.stop.is_set() {
                return Outcome::Stopped;
            }
            if let Some(msg) =
                bus.timed_pop(gst::ClockTime::from_nseconds(BUS_POLL.as_nanos() as u64))
            {
                match msg.view() {
                    gst::MessageView::Eos(_) => return Outcome::Eos,
                    gst::MessageView::Error(err) => {
                        return Outcome::Error(stream_error(
                            &self.spec.input,
                            &self.spec.redactor,
                            err,
                        ))
                    }
                    gst::MessageView::Application(a)
                        if a.structure().is_some_and(|s| s.name() == WAKE_MESSAGE) => {}
                    _ => {}
                }
            }
            if watchdog.is_some_and(|stall| self.emitter.idle_for() > stall) {
                return Outcome::Stalled;
            }
        }
    }
}

/// Delay before connection attempt number `failures + 1`: `initial * 2^(failures - 1)`,
/// at most `max_ms`; right after a working session was lost, `initial`.
pub(crate) fn backoff(cfg: &ReconnectConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    let ms = cfg
        .initial_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.max_ms.max(cfg.initial_ms));
    Duration::from_millis(ms)
}

/// `500 ms`, `2 s`, `1.5 s`.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms} ms"),
        _ if ms.is_multiple_of(1000) => format!("{} s", ms / 1000),
        _ => format!("{:.1} s", d.as_secs_f64()),
    }
}

/// A bus error as a typed error naming the element and the input, credentials masked.
fn stream_error(input: &str, redactor: &Redactor, err: &gst::message::Error) -> PipelineError {
    let element = err
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    let mut message = err.error().to_string();
    if let Some(debug) = err.debug() {
        // The debug text starts with source locations and an element path; its last line is
        // the part a user can act on (e.g. "streaming stopped, reason not-negotiated").
        let tail = debug.rsplit('\n').next().unwrap_or("").trim();
        if !tail.is_empty() && !tail.contains(".c(") && tail != message {
            message = format!("{message} ({tail})");
        }
    }
    PipelineError::Stream {
        input: input.into(),
        element: redactor.apply(&element),
        message: redactor.apply(&message),
    }
}

/// The first error waiting on the pipeline's bus, as text.
fn bus_error_text(pipeline: &gst::Pipeline, redactor: &Redactor) -> Option<String> {
    let bus = pipeline.bus()?;
    // Not `timed_pop_filtered(ZERO, ..)`: it gives up after the first non-matching message.
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(
                stream_error("", redactor, err)
                    .to_string()
                    .trim_start_matches(": ")
                    .to_string(),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = ReconnectConfig {
            enabled: true,
            initial_ms: 100,
            max_ms: 1000,
            max_attempts: None,
            ..ReconnectConfig::default()
        };
        let ms: Vec<u128> = (0..7).map(|f| backoff(&cfg, f).as_millis()).collect();
        assert_eq!(ms, vec![100, 100, 200, 400, 800, 1000, 1000]);
    }
}
