//! Command line: argument parsing (clap derive) and the dispatch of every subcommand; a run
//! itself is `run.rs`, the exit codes `exit.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use sensorium_models::distill::eval::{self, EvalConfig};
use sensorium_models::distill::labelled::LabelledSpec;
use sensorium_models::distill::{DistillConfig, DistillError, Selection};

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use sensorium_engine::Config;

use crate::exit::{code, Failure, WithCode};
use crate::run::{run_streams, run_streams_with, BenchHook, Input, RunArgs};
use crate::sources;
use sensorium_models::setup::{self as model_cfg, ModelSetup};

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
