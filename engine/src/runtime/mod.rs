//! The runtime: starts every stream's source and the stage threads, joined by bounded
//! queues, runs until every stream has ended (EOS, error) or shutdown is requested, and
//! returns what happened to each stream.
//!
//! ```text
//! source ─q─▶ sync thread ─q─▶ frame stage ─────────────q─▶ window stage ──────────q─▶ sink
//!  (per stream)  (per stream)   (all streams: encoder,       (all streams: model,      (builds
//!                               batched, or pass-through;    batched, or pass-through)  each
//!                               window assembler)                                       record)
//! ```
//! One path whatever is configured: without an encoder frames pass through the frame stage
//! unchanged, without a model windows pass through the window stage; each window's record
//! is built once, in the sink.
//! Every queue but the sink's is per stream and uses the stream's mode (realtime: drop the
//! oldest, never block; lossless: back-pressure), so streams are isolated: a stream that
//! ends, fails or is slowed down by its own data does not hold up another. A model that
//! errors or panics fails only the streams whose windows it failed on.
//!
//! Files: this one wires the stages; `sync_stage.rs`, `frame_stage.rs`, `window_stage.rs`
//! and `sink_stage.rs` are the threads' bodies, `stage.rs` what they share, `report.rs` what
//! a run reports, `stop.rs` the one stop token every wait selects on.

use std::sync::Arc;

use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;

mod frame_stage;
pub mod report;
mod sink_stage;
mod stage;
pub mod stop;
mod sync_stage;
mod window_stage;

pub use report::{RunReport, StreamEnd, StreamReport};

use crate::config::Config;
use crate::error::Error;
use crate::model::{FrameEncoder, WindowModel};
use crate::queue::{bounded, QueueMode};
use crate::sink::{JsonLinesSink, RecordOutput, WindowSink};
use crate::source::SourceFactory;
use crate::sync::Synchroniser;
use crate::view::ViewHub;
use crate::window::{WindowAssembler, WindowOrigin};
use stage::StreamCtx;
use stop::StopToken;

/// A configured engine. Build with [`Runtime::new`], add the optional stages, then
/// [`run`](Runtime::run) (blocks until every stream ended or shutdown).
pub struct Runtime {
    config: Config,
    factory: Arc<dyn SourceFactory>,
    encoder: Option<Box<dyn FrameEncoder>>,
    model: Option<Box<dyn WindowModel>>,
    output: Option<RecordOutput>,
    shutdown: StopToken,
    view: Option<ViewHub>,
    origins: std::collections::HashMap<String, WindowOrigin>,
}

impl Runtime {
    pub fn new(config: Config, factory: Arc<dyn SourceFactory>) -> Self {
        Self {
            config,
            factory,
            encoder: None,
            model: None,
            output: None,
            shutdown: StopToken::new(),
            view: None,
            origins: Default::default(),
        }
    }

    /// Runs `encoder` once per synced frame, batched across streams.
    pub fn with_encoder(mut self, encoder: Box<dyn FrameEncoder>) -> Self {
        self.encoder = Some(encoder);
        self
    }

    /// Runs `model` once per window, batched across streams.
    pub fn with_model(mut self, model: Box<dyn WindowModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// Writes records here instead of `[output] path`.
    pub fn with_sink(mut self, sink: Box<dyn WindowSink>) -> Self {
        self.output = Some(RecordOutput::new(sink));
        self
    }

    /// The run's output (opening `[output] path` unless [`with_sink`](Self::with_sink) gave
    /// one): the answer service writes its answer lines here, through the sink stage's
    /// metrics.
    pub fn output(&mut self) -> Result<RecordOutput, Error> {
        if let Some(o) = &self.output {
            return Ok(o.clone());
        }
        let o = RecordOutput::new(Box::new(JsonLinesSink::open(&self.config.output.path)?));
        self.output = Some(o.clone());
        Ok(o)
    }

    /// Offers every stream's frames, window records (and, through the answer service's
    /// owner, answers) to `view`'s watchers; never waits for them.
    pub fn with_view(mut self, view: ViewHub) -> Self {
        self.view = Some(view);
        self
    }

    /// Numbers `stream`'s windows from `origin.index` and shifts their times by
    /// `origin.t_ns` (a stream continued from where another process left it).
    pub fn with_origin(mut self, stream: &str, origin: WindowOrigin) -> Self {
        self.origins.insert(stream.to_owned(), origin);
        self
    }

    pub fn with_shutdown(mut self, shutdown: StopToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The token that stops this runtime: sources are stopped, buffered frames flushed and
    /// the padded last windows written.
    pub fn shutdown_token(&self) -> StopToken {
        self.shutdown.clone()
    }

    /// Runs every stream to its end. Per-stream failures are in the report, not errors.
    pub fn run(mut self) -> Result<RunReport, Error> {
        self.config.validate("<config>")?;
        let output = self.output()?;
        output.set_view(self.view.clone());
        let cfg = &self.config;
        let cap = cfg.engine.queue_capacity;
        let batch = cfg.engine.batch;
        // The stages' token: fires on the user's shutdown and on a sink failure.
        let stop = self.shutdown.child();
        let resolved = cfg.resolved_streams();
        let reports: Vec<Arc<Mutex<StreamReport>>> = resolved
            .iter()
            .map(|r| Arc::new(Mutex::new(StreamReport::new(&r.config.name))))
            .collect();

        if let Some(view) = &self.view {
            view.set_streams(resolved.iter().map(|r| r.config.name.clone()).collect());
        }
        let ctxs: Vec<Arc<StreamCtx>> = resolved
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Arc::new(StreamCtx {
                    name: r.config.name.clone(),
                    report: reports[i].clone(),
                    health: crate::status::stream(&r.config.name),
                    view: self.view.clone(),
                })
            })
            .collect();
        let n = resolved.len().max(1);
        let (sink_tx, sink_rx) = bounded(cap * n, QueueMode::Lossless);
        let mut threads = Stages::new();
        {
            let (ctxs, stop, output) = (ctxs.clone(), stop.clone(), output.clone());
            threads.spawn("sink", move || {
                sink_stage::sink_stage(output, sink_rx, ctxs, stop)
            })?;
        }

        // Per-stream queues into the shared stages are created up front so the stage
        // threads know all their inputs.
        let mut window_inputs = Vec::new();
        let mut frame_inputs = Vec::new();
        let mut assemblers = Vec::new();
        let mut frame_dests = Vec::new();
        // A pass-through stage never falls behind: its queue keeps everything (back-pressure
        // then comes from the sink, as it would without the stage); a real encoder or model
        // gets the stream's own mode (realtime: drop the oldest).
        let mode = |r: &crate::config::load::ResolvedStream, real: bool| {
            if real {
                r.params.mode
            } else {
                QueueMode::Lossless
            }
        };
        for (i, r) in resolved.iter().enumerate() {
            let (wtx, wrx) = bounded(cap, mode(r, self.model.is_some()));
            window_inputs.push((i, wrx));
            let asm = WindowAssembler::new(
                r.config.name.as_str().into(),
                cfg.engine.window,
                cfg.engine.stride,
            )
            .starting_at(
                self.origins
                    .get(&r.config.name)
                    .copied()
                    .unwrap_or_default(),
            );
            assemblers.push((asm, wtx));
            let (ftx, frx) = bounded(cap, mode(r, self.encoder.is_some()));
            frame_inputs.push((i, frx));
            frame_dests.push(Some(ftx));
        }
        {
            let (model, ctxs) = (self.model, ctxs.clone());
            threads.spawn("model", move || {
                window_stage::model_stage(model, window_inputs, ctxs, sink_tx, batch)
            })?;
        }
        {
            let (encoder, ctxs) = (self.encoder, ctxs.clone());
            threads.spawn("encoder", move || {
                frame_stage::encoder_stage(encoder, frame_inputs, assemblers, ctxs, batch)
            })?;
        }

        for (i, r) in resolved.iter().enumerate() {
            let ctx = ctxs[i].clone();
            let dest = frame_dests[i].take();
            let (tx, rx) = bounded(cap, r.params.mode);
            let handle = match self.factory.start(&r.config, &r.params, tx) {
                Ok(h) => h,
                Err(e) => {
                    ctx.report.lock().end = StreamEnd::StartFailed(e.to_string());
                    ctx.health.begin();
                    ctx.health.source_error(&e.message);
                    crate::status::StreamState::Failed.set(&r.config.name);
                    // Dropping `dest` closes this stream's stage inputs.
                    continue;
                }
            };
            let sync = Synchroniser::new(r.config.name.as_str().into(), r.sync.clone());
            let stop = stop.clone();
            let mode = r.params.mode;
            let Some(dest) = dest else { continue };
            threads.spawn(&format!("sync-{}", r.config.name), move || {
                sync_stage::sync_stage(ctx, rx, handle, sync, dest, stop, mode)
            })?;
        }
        drop(frame_dests);

        let grace = std::time::Duration::from_millis(cfg.engine.shutdown_timeout_ms);
        threads.join(&self.shutdown, grace)?;
        let streams = reports.iter().map(|r| r.lock().clone()).collect();
        Ok(RunReport {
            streams,
            sink_error: output.failure(),
            interrupted: self.shutdown.is_triggered(),
        })
    }
}

/// The stage threads of one run, each announcing its end on a channel (also when it
/// panics), so that joining can give up once a requested shutdown takes too long.
struct Stages {
    threads: Vec<(String, std::thread::JoinHandle<()>)>,
    done_tx: Sender<usize>,
    done_rx: Receiver<usize>,
}

/// Sends its thread's index when dropped: at the end of the body or while unwinding.
struct Done(Sender<usize>, usize);

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

impl Stages {
    fn new() -> Self {
        let (done_tx, done_rx) = unbounded();
        Self {
            threads: Vec::new(),
            done_tx,
            done_rx,
        }
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let done = Done(self.done_tx.clone(), self.threads.len());
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _done = done;
                f()
            })
            .map_err(|error| Error::Thread {
                name: name.into(),
                error,
            })?;
        self.threads.push((name.to_owned(), handle));
        Ok(())
    }

    /// Waits for every thread; once `shutdown` has fired, for at most `grace` more, then
    /// names the threads still running (they are left behind, detached).
    fn join(self, shutdown: &StopToken, grace: std::time::Duration) -> Result<(), Error> {
        let mut running = vec![true; self.threads.len()];
        let mut left = self.threads.len();
        let mut deadline = None;
        while left > 0 {
            let next = match deadline {
                Some(at) => match self.done_rx.recv_deadline(at) {
                    Ok(i) => Some(i),
                    Err(_) => {
                        let running = self
                            .threads
                            .iter()
                            .zip(&running)
                            .filter(|(_, r)| **r)
                            .map(|((name, _), _)| name.clone())
                            .collect();
                        return Err(Error::ShutdownTimeout {
                            after_ms: grace.as_millis() as u64,
                            running,
                        });
                    }
                },
                None => crossbeam_channel::select! {
                    recv(self.done_rx) -> i => i.ok(),
                    recv(shutdown.fired()) -> _ => {
                        deadline = Some(Instant::now() + grace);
                        None
                    }
                },
            };
            if let Some(i) = next {
                if std::mem::replace(&mut running[i], false) {
                    left -= 1;
                }
            }
        }
        for (name, t) in self.threads {
            // Stage bodies catch model panics themselves; a panic here is an engine bug,
            // reported rather than propagated so the other streams' results survive.
            if let Err(p) = t.join() {
                tracing::error!(
                    "stage thread {name} panicked: {}",
                    stage::panic_message(&*p)
                );
            }
        }
        Ok(())
    }
}
