//! Command line: argument parsing (clap derive), building the engine from a config, and the
//! mapping of every outcome to a documented exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use parking_lot::Mutex;
use sensorium_models::distill::eval::{self, EvalConfig};
use sensorium_models::distill::labelled::LabelledSpec;
use sensorium_models::distill::{DistillConfig, DistillError, Selection};
use sensorium_models::stack::ModelStack;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use sensorium_engine::{metrics, Config, Runtime, RuntimeError, StopToken, StreamEnd, ViewHub};

use crate::answers::Answers;
use crate::output::SharedOut;
use crate::sources;
use sensorium_models::setup::{self as model_cfg, ModelSetup};

/// Exit codes (also in README.md and `--help`).
pub mod code {
    pub const OK: u8 = 0;
    /// Usage or config error: malformed TOML, unknown source kind, invalid field.
    pub const USAGE: u8 = 2;
    /// Source or input error: missing file, non-media, unreachable URL; also when any
    /// stream failed during the run.
    pub const SOURCE: u8 = 3;
    /// A model failed to load (missing checkpoint, wrong tensor shape; the message names the
    /// file and tensor) or failed while running (frame encoder, window model, LLM).
    pub const MODEL: u8 = 4;
    /// Writing the output failed.
    pub const OUTPUT: u8 = 5;
    /// Interrupted, but the shutdown did not finish within `[engine] shutdown_timeout_ms`
    /// (the error names the stages still running); the last windows may be missing.
    pub const SHUTDOWN_TIMEOUT: u8 = 6;
    /// `cluster`/`worker`: the NATS server is unreachable, refused the credentials, or its
    /// JetStream failed.
    pub const CLUSTER: u8 = 7;
    /// Interrupted (Ctrl-C or SIGTERM) after a clean shutdown.
    pub const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "\
Exit codes:
  0    ok
  2    usage or config error (malformed TOML, unknown source kind, invalid field)
  3    source/input error (missing file, non-media, unreachable URL), or a stream failed
  4    model error (checkpoint missing or wrong: names file and tensor; or a model failed)
  5    output I/O error
  6    interrupted, but the shutdown did not finish within [engine] shutdown_timeout_ms
       (the error names what was still running)
  7    cluster: NATS unreachable, credentials refused, or JetStream failed
  130  interrupted (Ctrl-C or SIGTERM), after flushing the last windows; a second
       signal exits at once";

#[derive(Parser, Debug)]
#[command(
    name = "sensorium",
    version,
    about = "Streaming real-time audio-visual perception engine",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level of sensorium's own messages (error, warn, info, debug, trace, off);
    /// default: `RUST_LOG` if set (full filter syntax), else info.
    #[arg(long, global = true, value_enum)]
    log_level: Option<crate::logging::LogLevel>,
    /// `text` (`sensorium: ...` lines) or `json` (one JSON object per event) on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: crate::logging::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the streams of a config (or one source) and print one JSON line per window.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Validate a config and print it resolved (defaults filled in, secrets redacted).
    #[command(after_help = EXIT_CODES)]
    Check {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Describe the media at a URI or path (streams, formats, duration).
    #[command(after_help = EXIT_CODES)]
    Probe {
        /// File path, file://, rtsp://, http(s):// URI.
        uri: String,
    },
    /// Evaluate online distillation on synthetic labelled scenes: per-class student accuracy
    /// before/after, and difficulty-aware vs uniform selection at equal update budgets.
    #[command(name = "distill-eval", after_help = EXIT_CODES)]
    DistillEval(DistillEvalArgs),
    /// Train the causal Q-Former (and LoRA on the LLM, or the whole LLM) on a manifest of
    /// clips with questions and answers (`[train]` of the config).
    #[command(after_help = EXIT_CODES)]
    Train {
        /// Run config with `[engine]`, `[models]`, `[llm]` and `[train]`.
        #[arg(long, short)]
        config: PathBuf,
        /// Output directory (overrides `train.output`).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Optimizer steps (overrides `train.steps` / `train.epochs`).
        #[arg(long)]
        steps: Option<u64>,
        /// Continue the run saved in the output directory's `state/`.
        #[arg(long)]
        resume: bool,
    },
    /// Run a config's streams for a while and report latency per stage (p50/p95/p99/max),
    /// decode speed, drops, CPU and peak RSS; as a table, JSON and a PNG.
    #[command(after_help = EXIT_CODES)]
    Bench {
        /// Config file (TOML), as for `run`; its sources decide live or as fast as possible.
        #[arg(long, short)]
        config: PathBuf,
        /// Stop after this many seconds (default: when the streams end).
        #[arg(long)]
        duration: Option<f64>,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write latency histograms and the latency timeline here (PNG).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// A question asked on every window (repeatable), as for `run`.
        #[arg(long, short = 'q')]
        question: Vec<String>,
    },
    /// A cluster of workers sharing streams through NATS JetStream: add, remove, status.
    #[command(after_help = EXIT_CODES)]
    Cluster {
        #[command(subcommand)]
        command: crate::cluster::ClusterCommand,
    },
    /// Join a cluster: claim streams (leases in JetStream KV), run them, publish their
    /// windows and answers to JetStream, answer questions by request/reply.
    #[command(after_help = EXIT_CODES)]
    Worker(crate::cluster::WorkerArgs),
    /// Answer every question of a manifest through the live inference path (greedy) and
    /// print exact-match accuracy per task and overall.
    #[command(after_help = EXIT_CODES)]
    Eval {
        /// Run config with `[models]` (a trained `qformer`) and `[llm]`; with `--bench`
        /// optional (the default model, or `--model`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Questions to answer (JSON Lines, the training manifest format).
        #[arg(long, short, required_unless_present = "bench")]
        manifest: Option<PathBuf>,
        /// A generated benchmark instead of a manifest: `scenes` (held-out scene streams).
        #[arg(long, value_parser = ["scenes"], conflicts_with = "manifest")]
        bench: Option<String>,
        /// Questions of the benchmark.
        #[arg(long, default_value_t = 1000)]
        questions: usize,
        /// First held-out stream seed of the benchmark (at least 1000000000: lower seeds
        /// may be training seeds).
        #[arg(long, default_value_t = sensorium_models::train::scenes::HELD_OUT_SEEDS)]
        seed: u64,
        /// A model bundle directory instead of the default model (`--bench` without
        /// `--config`).
        #[arg(long)]
        model: Option<PathBuf>,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum WorldArg {
    /// GStreamer test patterns with their sounds (8 classes; needs gst-launch-1.0).
    TestSources,
    /// The default model's scene world: sounding objects, one class per shape.
    Scenes,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SelectionArg {
    Weighted,
    Hard,
}

#[derive(Args, Debug)]
struct DistillEvalArgs {
    /// Config whose `[distill]` section sets the training knobs (lr, temperature, batch,
    /// difficulty...). Its `classes`, `teacher` and `features` are not used: the classes are
    /// the synthetic scenes' and the features come from `--audio` / `--vision` (else the
    /// stand-in extractors).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The labelled clips: GStreamer's test sources (8 classes) or the scene world's
    /// sounding objects (circle <-> high tone, square <-> clicks, triangle <-> noise; 2 s
    /// clips; the circle is the hard class). With `scenes`, `--audio default-model/audio
    /// --vision default-model/vision` distils on the default model's own encoders.
    #[arg(long, value_enum, default_value = "test-sources")]
    world: WorldArg,
    /// Difficulty-aware arm (the other arm is always uniform); default: the config's, else
    /// weighted.
    #[arg(long, value_enum)]
    selection: Option<SelectionArg>,
    /// Updates per arm after the warm-up.
    #[arg(long, default_value_t = 100)]
    budget: u64,
    /// Uniform updates before the arms split (a stand-in for a pretrained student).
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Runs (seeds 1..=N), averaged.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// SNR (dB) of the noise buried in the hard classes' sound.
    #[arg(long, default_value_t = -20.0, allow_hyphen_values = true)]
    snr: f64,
    /// Clips per class (1 s each; 2 s in `scenes`), of which `--test-clips` are held out.
    #[arg(long, default_value_t = 40)]
    clips: usize,
    #[arg(long, default_value_t = 16)]
    test_clips: usize,
    /// Labelled frames per class to fit the teacher (when no `--teacher`).
    #[arg(long, default_value_t = 2)]
    teacher_frames: usize,
    /// Teacher file over the teacher modality's features, instead of fitting one.
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Whisper checkpoint directory: audio features from the real encoder (mean-pooled
    /// tokens) instead of the stand-in log-mel statistics.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// CLIP or SigLIP checkpoint directory: visual features from the real tower (patch
    /// tokens mean-pooled) instead of the stand-in colour grid.
    #[arg(long)]
    vision: Option<PathBuf>,
    /// Where the generated clips are cached (default: the system temp dir).
    #[arg(long)]
    cache: Option<PathBuf>,
}

#[derive(Args, Debug, Default)]
#[group(required = true, multiple = false)]
pub(crate) struct Input {
    /// Config file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// One source instead of a config: a file path, file://, rtsp://, any URI, `test:`
    /// (`test:PATTERN` picks a videotestsrc pattern), `synthetic:` (`synthetic:gradient`;
    /// generated without GStreamer), or `scene:SEED` (the default model's world, live).
    #[arg(long, short)]
    source: Option<String>,
}

#[derive(Args, Debug, Default)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    input: Input,
    /// Output file for the JSON lines (`-` is stdout); overrides `[output] path`.
    #[arg(long, short)]
    output: Option<String>,
    /// Prometheus listen address (`host:port` or a port); overrides `[metrics] listen`.
    #[arg(long)]
    metrics: Option<String>,
    /// Serve the live web view, `GET /api/streams` and `POST /ask` here (`host:port` or a
    /// port; loopback unless `[http] token` is set); overrides `[http] listen`.
    #[arg(long)]
    http: Option<String>,
    /// Where the Q-Former runs: auto (CUDA when present, else CPU), cpu, cuda, cuda:N;
    /// overrides `[engine] device`.
    #[arg(long)]
    device: Option<String>,
    /// A question asked on every window (repeatable). Without `[models]`/`[llm]` the
    /// default model answers it.
    #[arg(long, short = 'q')]
    question: Vec<String>,
    /// A model bundle directory (`bundle.toml` + its parts) instead of the default model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// `text` (answers, readable) or `json` (JSON lines); default: text on a terminal, JSON
    /// lines to files and pipes.
    #[arg(long, value_enum)]
    format: Option<crate::output::Format>,
    /// No token echo on stdout (`bench` prints its own report).
    #[arg(skip)]
    quiet: bool,
}

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

pub(crate) trait WithCode<T> {
    fn code(self, code: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            code,
            error: e.into(),
        })
    }
}

/// Parses the command line and runs it. Errors go to stderr, one line each.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::OK
            });
        }
    };
    if let Some(problem) = crate::logging::init(cli.log_level, cli.log_format) {
        tracing::warn!("{problem}");
    }
    match run(cli) {
        Ok(c) => ExitCode::from(c),
        Err(f) => {
            tracing::error!(exit_code = f.code, "{:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Check { file } => {
            let config = Config::load(&file).code(code::USAGE)?;
            let setup =
                ModelSetup::parse(&config, &file.display().to_string()).code(code::USAGE)?;
            let train =
                crate::train::parse(&config, &file.display().to_string()).code(code::USAGE)?;
            let mut resolved = config.resolved();
            setup.resolve_into(&mut resolved);
            if let Some(t) = train {
                resolved.train = toml::Table::try_from(&t).ok();
            }
            print!("{}", resolved.to_toml_redacted());
            Ok(code::OK)
        }
        Command::DistillEval(args) => distill_eval(args),
        Command::Probe { uri } => {
            let text = sources::probe(&uri).code(code::SOURCE)?;
            println!("{text}");
            Ok(code::OK)
        }
        Command::Run(args) => run_streams(args),
        Command::Cluster { command } => crate::cluster::cluster(command),
        Command::Worker(args) => crate::cluster::worker(args),
        Command::Bench {
            config,
            duration,
            json,
            plot,
            question,
        } => bench(config, duration, json, plot, question),
        Command::Train {
            config,
            output,
            steps,
            resume,
        } => crate::train::train(&config, output, steps, resume),
        Command::Eval {
            config,
            manifest,
            bench,
            questions,
            seed,
            model,
            json,
        } => match (bench, manifest, config) {
            (Some(_), _, config) => {
                crate::train::eval_scenes(config.as_deref(), model, questions, seed, json)
            }
            (None, Some(m), Some(c)) => crate::train::eval(&c, &m, json),
            (None, _, None) => {
                Err(anyhow!("eval: --config FILE is required with --manifest")).code(code::USAGE)
            }
            (None, None, Some(_)) => {
                Err(anyhow!("eval: give --manifest FILE or --bench scenes")).code(code::USAGE)
            }
        },
    }
}

/// What `sensorium bench` asks of a run: a time limit, and the run's report back.
#[derive(Default)]
pub(crate) struct BenchHook {
    /// Stop the streams after this long (as Ctrl-C would; not an interruption).
    pub limit: Option<std::time::Duration>,
    /// Set when the limit, not the streams' end or the user, stopped the run.
    pub limited: Arc<std::sync::atomic::AtomicBool>,
    pub report: Option<sensorium_engine::RunReport>,
}

fn run_streams(args: RunArgs) -> Result<u8, Failure> {
    run_streams_with(args, None)
}

pub(crate) fn run_streams_with(args: RunArgs, hook: Option<&mut BenchHook>) -> Result<u8, Failure> {
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
pub(crate) fn interrupt_token() -> Result<StopToken, Failure> {
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
pub(crate) fn prepare(
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
pub(crate) struct ClusterTap {
    pub origin: sensorium_engine::WindowOrigin,
    pub asks: Arc<Mutex<Option<sensorium_models::llm::ServiceHandle>>>,
    /// The first failure of the run (source, model), for the stream's `failed` reason.
    pub failure: Arc<Mutex<Option<String>>>,
}

/// Runs a prepared config until its streams end or `shutdown` fires; the exit code.
pub(crate) fn execute(
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
        Err(e @ RuntimeError::ShutdownTimeout { .. }) => {
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
        Err(RuntimeError::Output(e)) => return Err(e).code(code::OUTPUT),
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
    let failure = (report.sink_error.clone())
        .or_else(|| records.failure())
        .or_else(|| out.failure());
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

fn bench(
    config: PathBuf,
    duration: Option<f64>,
    json: Option<PathBuf>,
    plot: Option<PathBuf>,
    question: Vec<String>,
) -> Result<u8, Failure> {
    let limit = match duration {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            return Err(anyhow!(
                "--duration: {d} is not a positive number of seconds"
            ))
            .code(code::USAGE)
        }
        d => d.map(std::time::Duration::from_secs_f64),
    };
    let output = std::env::temp_dir().join(format!("sensorium-bench-{}.jsonl", std::process::id()));
    let args = RunArgs {
        input: Input {
            config: Some(config.clone()),
            source: None,
        },
        output: Some(output.display().to_string()),
        format: Some(crate::output::Format::Json),
        quiet: true,
        question,
        ..RunArgs::default()
    };
    let mut hook = BenchHook {
        limit,
        ..BenchHook::default()
    };
    let progress = crate::bench::Progress::start(limit);
    let t0 = std::time::Instant::now();
    let result = run_streams_with(args, Some(&mut hook));
    let wall = t0.elapsed().as_secs_f64();
    progress.finish();
    let used = crate::bench::usage();
    let lines = crate::bench::read_lines(&output);
    let _ = std::fs::remove_file(&output);
    let code = result?;
    let lines = lines.code(code::OUTPUT)?;
    let Some(run) = hook.report else {
        return Err(anyhow!("bench: the run produced no report")).code(code::USAGE);
    };
    let report = crate::bench::report(&config, duration, wall, &lines, &run, used);
    print!("{}", crate::bench::table(&report));
    if let Some(path) = &json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .with_context(|| format!("--json {}", path.display()))
            .code(code::OUTPUT)?;
    }
    if let Some(path) = &plot {
        crate::bench::plot(path, &lines).code(code::OUTPUT)?;
    }
    Ok(code)
}

fn distill_eval(args: DistillEvalArgs) -> Result<u8, Failure> {
    let mut distill = match &args.config {
        Some(path) => {
            let config = Config::load(path).code(code::USAGE)?;
            let mut t = config.distill.clone().unwrap_or_default();
            // Live-run keys that do not apply to the evaluation.
            for k in ["teacher", "features", "classes"] {
                t.remove(k);
            }
            model_cfg::distill_section(&t, &path.display().to_string()).code(code::USAGE)?
        }
        None => DistillConfig::default(),
    };
    if let Some(s) = args.selection {
        distill.difficulty.selection = match s {
            SelectionArg::Weighted => Selection::Weighted,
            SelectionArg::Hard => Selection::Hard,
        };
    }
    let cache = args
        .cache
        .unwrap_or_else(|| std::env::temp_dir().join("sensorium-distill-eval"));
    let spec = match args.world {
        WorldArg::TestSources => LabelledSpec::new(cache, args.clips, args.snr),
        WorldArg::Scenes => LabelledSpec::scenes(args.clips, args.snr),
    };
    distill.classes = spec.classes.iter().map(|c| c.name.clone()).collect();
    let cfg = EvalConfig {
        distill,
        clips: spec,
        test_clips_per_class: args.test_clips,
        teacher_frames_per_class: args.teacher_frames,
        teacher: args.teacher,
        warmup: args.warmup,
        budget: args.budget,
        seeds: (1..=args.seeds).collect(),
    };
    let extractors = model_cfg::eval_extractors(args.audio.as_deref(), args.vision.as_deref())
        .code(code::MODEL)?;
    match eval::run_with(&cfg, &extractors, crate::sources::test_media()) {
        Ok(report) => {
            println!("{report}");
            Ok(code::OK)
        }
        Err(e) => {
            let c = match &e {
                DistillError::Config { .. } | DistillError::Input { .. } => code::USAGE,
                DistillError::Tool { .. } | DistillError::Io { .. } => code::SOURCE,
                _ => code::MODEL,
            };
            Err(anyhow!("distill-eval: {e}")).code(c)
        }
    }
}
