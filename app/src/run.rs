//! `sensorium run` (and the cluster worker's and `bench`'s runs): a config's streams through
//! the engine with the model stack, the answer service, the servers and the output; the
//! exit code of a run.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use sensorium_models::stack::ModelStack;

use anyhow::{anyhow, Context};
use clap::Args;
use sensorium_engine::{
    metrics, Config, Error as EngineError, Runtime, StopToken, StreamEnd, ViewHub,
};

use crate::answers::Answers;
use crate::exit::{code, Failure, WithCode};
use crate::output::SharedOut;
use crate::sources;
use sensorium_models::setup::{self as model_cfg, ModelSetup};

#[derive(Args, Debug, Default)]
#[group(required = true, multiple = false)]
pub struct Input {
    /// Config file (TOML).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// One source instead of a config: a file path, file://, rtsp://, any URI, `test:`
    /// (`test:PATTERN` picks a videotestsrc pattern), `synthetic:` (`synthetic:gradient`;
    /// generated without GStreamer), or `scene:SEED` (the default model's world, live).
    #[arg(long, short)]
    pub source: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: Input,
    /// Output file for the JSON lines (`-` is stdout); overrides `[output] path`.
    #[arg(long, short)]
    pub output: Option<String>,
    /// Prometheus listen address (`host:port` or a port); overrides `[metrics] listen`.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Serve the live web view, `GET /api/streams` and `POST /ask` here (`host:port` or a
    /// port; loopback unless `[http] token` is set); overrides `[http] listen`.
    #[arg(long)]
    pub http: Option<String>,
    /// Where the Q-Former runs: auto (CUDA when present, else CPU), cpu, cuda, cuda:N;
    /// overrides `[engine] device`.
    #[arg(long)]
    pub device: Option<String>,
    /// A question asked on every window (repeatable). Without `[models]`/`[llm]` the
    /// default model answers it.
    #[arg(long, short = 'q')]
    pub question: Vec<String>,
    /// A model bundle directory (`bundle.toml` + its parts) instead of the default model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// `text` (answers, readable) or `json` (JSON lines); default: text on a terminal, JSON
    /// lines to files and pipes.
    #[arg(long, value_enum)]
    pub format: Option<crate::output::Format>,
    /// No token echo on stdout (`bench` prints its own report).
    #[arg(skip)]
    pub quiet: bool,
}

/// What `sensorium bench` asks of a run: a time limit, and the run's report back.
#[derive(Default)]
pub struct BenchHook {
    /// Stop the streams after this long (as Ctrl-C would; not an interruption).
    pub limit: Option<std::time::Duration>,
    /// Set when the limit, not the streams' end or the user, stopped the run.
    pub limited: Arc<std::sync::atomic::AtomicBool>,
    pub report: Option<sensorium_engine::RunReport>,
}

pub fn run_streams(args: RunArgs) -> Result<u8, Failure> {
    run_streams_with(args, None)
}

pub fn run_streams_with(args: RunArgs, hook: Option<&mut BenchHook>) -> Result<u8, Failure> {
    let mut config = match (&args.input.config, &args.input.source) {
        (Some(path), _) => Config::load(path).code(code::USAGE)?,
        (None, Some(uri)) => Config::for_source(uri).code(code::USAGE)?,
        (None, None) => {
            return Err(anyhow!("give --config FILE or --source URI")).code(code::USAGE)
        }
    };
    if let Some(o) = &args.output {
        config.output.path = o.clone();
    }
    if let Some(m) = &args.metrics {
        config.metrics.listen = Some(m.clone());
    }
    if let Some(h) = &args.http {
        config.http.listen = Some(h.clone());
    }
    if let Some(d) = &args.device {
        config.engine.device = d.clone();
    }
    sensorium_models::bundle::add_questions(&mut config, &args.question).code(code::USAGE)?;
    let explicit = args.input.config.as_ref().map(|p| {
        let table = std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .unwrap_or_default();
        (p.display().to_string(), table)
    });
    let origin = match &args.input.config {
        Some(p) => p.display().to_string(),
        None => "--source".into(),
    };
    prepare(
        &mut config,
        args.model.as_deref(),
        explicit.as_ref().map(|(o, t)| (o.as_str(), t)),
    )?;

    let shutdown = interrupt_token()?;
    let interrupted = shutdown.clone();
    if let Some(h) = hook.as_deref() {
        if let Some(limit) = h.limit {
            let (user, limited) = (interrupted.clone(), h.limited.clone());
            std::thread::Builder::new()
                .name("bench-timer".into())
                .spawn(move || {
                    if !user.wait(limit) {
                        limited.store(true, std::sync::atomic::Ordering::SeqCst);
                        user.trigger();
                    }
                })
                .context("cannot start the bench timer")
                .code(code::USAGE)?;
        }
    }
    let out = SharedOut::open_as(&config.output.path, args.format).code(code::OUTPUT)?;
    let out = if args.quiet { out.quiet() } else { out };
    execute(config, &origin, out, shutdown, None, hook)
}

/// A token that Ctrl-C or SIGTERM fires; a second one exits at once (130).
pub fn interrupt_token() -> Result<StopToken, Failure> {
    let token = StopToken::new();
    let fire = token.clone();
    let mut presses = 0u32;
    ctrlc::set_handler(move || {
        presses += 1;
        if presses > 1 {
            // A second Ctrl-C: the user does not want to wait for the flush.
            std::process::exit(i32::from(code::INTERRUPTED));
        }
        fire.trigger();
    })
    .context("cannot install the Ctrl-C handler")
    .code(code::USAGE)?;
    Ok(token)
}

/// Questions without a model of their own get the default model (or `model`); then the
/// config is checked as a whole. `explicit`: the config file's own table (what the user
/// set wins over the bundle's settings).
pub fn prepare(
    config: &mut Config,
    model: Option<&std::path::Path>,
    explicit: Option<(&str, &toml::Table)>,
) -> Result<(), Failure> {
    let own_llm = config.llm.as_ref().is_some_and(|l| l.contains_key("model"));
    if model.is_some() || (config.models.is_none() && config.llm.is_some() && !own_llm) {
        let dir = model
            .map(|m| m.to_path_buf())
            .unwrap_or_else(sensorium_models::bundle::default_dir);
        let b = sensorium_models::bundle::Bundle::load(&dir).code(code::MODEL)?;
        b.apply(config, explicit).code(code::USAGE)?;
    }
    config.validate("<command line>").code(code::USAGE)?;
    if config.streams.is_empty() {
        return Err(anyhow!(
            "field `stream`: at least one [[stream]] is required to run"
        ))
        .code(code::USAGE);
    }
    Ok(())
}

/// What a cluster worker adds to a run: where records also go, where the window numbering
/// continues, and a slot for the answer service (live questions from the bus).
pub struct ClusterTap {
    pub origin: sensorium_engine::WindowOrigin,
    pub asks: Arc<Mutex<Option<sensorium_models::llm::ServiceHandle>>>,
    /// The first failure of the run (source, model), for the stream's `failed` reason.
    pub failure: Arc<Mutex<Option<String>>>,
}

/// Runs a prepared config until its streams end or `shutdown` fires; the exit code.
pub fn execute(
    mut config: Config,
    origin: &str,
    out: SharedOut,
    shutdown: StopToken,
    cluster: Option<ClusterTap>,
    hook: Option<&mut BenchHook>,
) -> Result<u8, Failure> {
    let interrupted = shutdown.clone();
    let setup = ModelSetup::parse(&config, origin).code(code::USAGE)?;
    if let Ok(token) = std::env::var(sensorium_server::run::TOKEN_ENV) {
        config.http.token = Some(sensorium_engine::config::Secret::new(token));
        config.validate("<environment>").code(code::USAGE)?;
    }
    let recorder = match &config.metrics.listen {
        Some(_) => Some(metrics::install_prometheus().code(code::USAGE)?),
        None => None,
    };

    let loaded = model_cfg::load(&setup, &config).code(code::MODEL)?;
    let llm_listen = loaded
        .answerer
        .as_ref()
        .and_then(|a| a.config().http.listen.clone());
    // Someone may watch: the live view (wherever the HTTP server listens).
    let view = (sensorium_server::run::http_listen(&config, llm_listen.clone()).is_some()
        || config.output.rtsp.is_some())
    .then(|| {
        // Known to the view before its server answers the first request.
        let hub = ViewHub::new();
        hub.set_streams(config.streams.iter().map(|s| s.name.clone()).collect());
        hub
    });
    let restream = match &view {
        Some(hub) => sources::restream(&config, hub).code(code::USAGE)?,
        None => None,
    };
    let mut runtime = Runtime::new(config.clone(), sources::source_factory())
        .with_shutdown(shutdown)
        .with_sink(out.sink());
    let records = runtime.output().code(code::OUTPUT)?;
    if let Some(v) = &view {
        runtime = runtime.with_view(v.clone());
    }
    if let Some(c) = &cluster {
        for s in &config.streams {
            runtime = runtime.with_origin(&s.name, c.origin);
        }
    }
    let answers = match loaded.answerer {
        Some(a) => Some(
            Answers::start(
                a,
                config.engine.queue_capacity,
                records.clone(),
                out.echo_tokens(),
                view.clone(),
            )
            .code(code::USAGE)?,
        ),
        None => None,
    };
    if let (Some(c), Some(a)) = (&cluster, &answers) {
        *c.asks.lock() = Some(a.handle());
    }
    let servers = sensorium_server::run::start(
        &config,
        llm_listen,
        answers.as_ref().map(|a| a.handle()),
        recorder,
        view,
    )
    .code(code::USAGE)?;
    let distill = loaded.distill.map(|d| Arc::new(Mutex::new(Some(d))));
    if let Some(enc) = loaded.encoder {
        runtime = runtime.with_encoder(Box::new(enc));
    }
    if loaded.qformer.is_some() || distill.is_some() {
        let stack = ModelStack::new(
            loaded.qformer,
            answers.as_ref().map(|a| a.handle()),
            distill.clone(),
        )
        .map_err(|e| anyhow!(e))
        .code(code::USAGE)?;
        runtime = runtime.with_model(Box::new(stack));
    }
    let grace = std::time::Duration::from_millis(config.engine.shutdown_timeout_ms);
    let report = match runtime.run() {
        Err(e @ EngineError::ShutdownTimeout { .. }) => {
            // The stuck stages may hold the answer service: the process exit ends both.
            std::mem::forget(answers);
            return Err(e).code(code::SHUTDOWN_TIMEOUT);
        }
        r => r,
    };
    // No more live questions: the servers (and the cluster's asks) hold answer-service
    // handles.
    if let Some(c) = &cluster {
        c.asks.lock().take();
    }
    drop(servers);
    drop(restream);
    // Every window is in the service's queue now: answer them before reporting (after an
    // interrupt, within the shutdown deadline).
    let deadline = interrupted
        .is_triggered()
        .then(|| std::time::Instant::now() + grace);
    let answered = match answers.map(|a| a.finish(deadline)).transpose() {
        Ok(a) => a,
        Err(e) => return Err(e).code(code::SHUTDOWN_TIMEOUT),
    };
    let report = match report {
        Ok(r) => r,
        Err(EngineError::Output(e)) => return Err(e).code(code::OUTPUT),
        Err(e) => return Err(e).code(code::USAGE),
    };

    let mut exit = code::OK;
    let mut raise = |c: u8| {
        // Precedence: output > source > model > interrupted.
        let rank = |c: u8| match c {
            code::OUTPUT => 4,
            code::SOURCE => 3,
            code::MODEL => 2,
            code::INTERRUPTED => 1,
            _ => 0,
        };
        if rank(c) > rank(exit) {
            exit = c;
        }
    };
    let failed = |m: &str| {
        if let Some(c) = &cluster {
            c.failure.lock().get_or_insert_with(|| m.to_owned());
        }
    };
    for s in &report.streams {
        match &s.end {
            StreamEnd::StartFailed(m) => {
                tracing::error!("{m}");
                failed(m);
                raise(code::SOURCE);
                continue;
            }
            StreamEnd::SourceFailed(m) => {
                tracing::error!("stream '{}': {m}", s.name);
                failed(m);
                raise(code::SOURCE);
            }
            _ => {}
        }
        if let Some(m) = &s.model_error {
            tracing::error!("stream '{}': {m}", s.name);
            failed(m);
            raise(code::MODEL);
        }
        tracing::info!(
            "stream '{}': {} frames, {} windows written, {} items dropped",
            s.name,
            s.frames,
            s.windows_written,
            s.dropped
        );
    }
    if let Some(a) = &answered {
        tracing::info!(
            "llm: {} scheduled answers, {} stale (cancelled or skipped), {} errors",
            a.answers,
            a.stale,
            a.errors
        );
        if a.errors > 0 {
            raise(code::MODEL);
        }
    }
    if let Some(stage) = distill.and_then(|d| d.lock().take()) {
        let version = stage.student_version();
        match stage.shutdown() {
            Ok(s) => tracing::info!(
                "distill: {} updates from {} pairs ({} below confidence_gate), live student version {version}{}",
                s.step,
                s.pairs,
                s.gated,
                s.checkpoint
                    .map(|p| format!(", checkpoint {}", p.display()))
                    .unwrap_or_default()
            ),
            Err(e) => {
                tracing::error!("distill: {e}");
                raise(code::MODEL);
            }
        }
    }
    // Window and answer lines alike: the output keeps its first write error.
    let failure = records.failure();
    if let Some(e) = &failure {
        tracing::error!("{e}");
        raise(code::OUTPUT);
    }
    let limited = hook
        .as_deref()
        .is_some_and(|h| h.limited.load(std::sync::atomic::Ordering::SeqCst));
    if report.interrupted && !limited {
        raise(code::INTERRUPTED);
    }
    if let Some(h) = hook {
        h.report = Some(report);
    }
    Ok(exit)
}
