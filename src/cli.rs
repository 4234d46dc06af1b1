//! Command line: argument parsing (clap derive) and the dispatch of every subcommand to the
//! `sensorium-app` crate, where the work is done; the exit codes are `sensorium_app::exit`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use sensorium_app::check::check;
use sensorium_app::exit::{code, Failure, WithCode};
use sensorium_app::run::{run_streams, RunArgs};
use sensorium_app::{bench, cluster, distill_eval, sources, train};

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
    DistillEval(distill_eval::DistillEvalArgs),
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
        command: cluster::ClusterCommand,
    },
    /// Join a cluster: claim streams (leases in JetStream KV), run them, publish their
    /// windows and answers to JetStream, answer questions by request/reply.
    #[command(after_help = EXIT_CODES)]
    Worker(cluster::WorkerArgs),
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
        Command::Check { file } => check(&file),
        Command::DistillEval(args) => distill_eval::distill_eval(args),
        Command::Probe { uri } => {
            let text = sources::probe(&uri).code(code::SOURCE)?;
            println!("{text}");
            Ok(code::OK)
        }
        Command::Run(args) => run_streams(args),
        Command::Cluster { command } => cluster::cluster(command),
        Command::Worker(args) => cluster::worker(args),
        Command::Bench {
            config,
            duration,
            json,
            plot,
            question,
        } => bench::command(config, duration, json, plot, question),
        Command::Train {
            config,
            output,
            steps,
            resume,
        } => train::train(&config, output, steps, resume),
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
                train::eval_scenes(config.as_deref(), model, questions, seed, json)
            }
            (None, Some(m), Some(c)) => train::eval(&c, &m, json),
            (None, _, None) => {
                Err(anyhow!("eval: --config FILE is required with --manifest")).code(code::USAGE)
            }
            (None, None, Some(_)) => {
                Err(anyhow!("eval: give --manifest FILE or --bench scenes")).code(code::USAGE)
            }
        },
    }
}
