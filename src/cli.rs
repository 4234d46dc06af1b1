//! Command line: argument parsing (clap derive), building the engine from a config, and the
//! mapping of every outcome to a documented exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use sensorium_engine::config::{FileSource, SourceConfig, StreamConfig, TestSource, UriSource};
use sensorium_engine::config::{ReconnectConfig, RtspSource, RtspTransport};
use sensorium_engine::{metrics, Config, Runtime, RuntimeError, Shutdown, StreamEnd};

use crate::sources;

/// Exit codes (also in README.md and `--help`).
pub mod code {
    pub const OK: u8 = 0;
    /// Usage or config error: malformed TOML, unknown source kind, invalid field.
    pub const USAGE: u8 = 2;
    /// Source or input error: missing file, non-media, unreachable URL; also when any
    /// stream failed during the run.
    pub const SOURCE: u8 = 3;
    /// A model failed (frame encoder or window model).
    pub const MODEL: u8 = 4;
    /// Writing the output failed.
    pub const OUTPUT: u8 = 5;
    /// Interrupted (Ctrl-C) after a clean shutdown.
    pub const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "\
Exit codes:
  0    ok
  2    usage or config error (malformed TOML, unknown source kind, invalid field)
  3    source/input error (missing file, non-media, unreachable URL), or a stream failed
  4    model error
  5    output I/O error
  130  interrupted (Ctrl-C), after flushing the last windows";

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
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Input {
    /// Config file (TOML).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// One source instead of a config: a file path, file://, rtsp://, any URI, or `test:`
    /// (`test:PATTERN` picks a videotestsrc pattern).
    #[arg(long, short)]
    source: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    input: Input,
    /// Output file for the JSON lines (`-` is stdout); overrides `[output] path`.
    #[arg(long, short)]
    output: Option<String>,
    /// Prometheus listen address (`host:port` or a port); overrides `[metrics] listen`.
    #[arg(long)]
    metrics: Option<String>,
    /// Where the Q-Former runs: auto (CUDA when present, else CPU), cpu, cuda, cuda:N;
    /// overrides `[engine] device`.
    #[arg(long)]
    device: Option<String>,
}

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

trait WithCode<T> {
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
    match run(cli) {
        Ok(c) => ExitCode::from(c),
        Err(f) => {
            eprintln!("sensorium: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Check { file } => {
            let config = Config::load(&file).code(code::USAGE)?;
            print!("{}", config.resolved().to_toml_redacted());
            Ok(code::OK)
        }
        Command::Probe { uri } => {
            let text = sources::probe(&uri).code(code::SOURCE)?;
            println!("{text}");
            Ok(code::OK)
        }
        Command::Run(args) => run_streams(args),
    }
}

fn run_streams(args: RunArgs) -> Result<u8, Failure> {
    let mut config = match (&args.input.config, &args.input.source) {
        (Some(path), _) => Config::load(path).code(code::USAGE)?,
        (None, Some(uri)) => config_for_source(uri).code(code::USAGE)?,
        (None, None) => {
            return Err(anyhow!("give --config FILE or --source URI")).code(code::USAGE)
        }
    };
    if let Some(o) = args.output {
        config.output.path = o;
    }
    if let Some(m) = args.metrics {
        config.metrics.listen = Some(m);
    }
    if let Some(d) = args.device {
        config.engine.device = d;
    }
    config.validate("<command line>").code(code::USAGE)?;
    check_inputs(&config).code(code::SOURCE)?;
    if let Some(listen) = &config.metrics.listen {
        let addr = metrics::install_prometheus(listen).code(code::USAGE)?;
        eprintln!("sensorium: metrics on http://{addr}/metrics");
    }

    let shutdown = Shutdown::new();
    let token = shutdown.clone();
    let mut presses = 0u32;
    ctrlc::set_handler(move || {
        presses += 1;
        if presses > 1 {
            // A second Ctrl-C: the user does not want to wait for the flush.
            std::process::exit(i32::from(code::INTERRUPTED));
        }
        token.trigger();
    })
    .context("cannot install the Ctrl-C handler")
    .code(code::USAGE)?;

    let runtime = Runtime::new(config, sources::source_factory()).with_shutdown(shutdown);
    let report = match runtime.run() {
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
    for s in &report.streams {
        match &s.end {
            StreamEnd::StartFailed(m) => {
                eprintln!("sensorium: {m}");
                raise(code::SOURCE);
                continue;
            }
            StreamEnd::SourceFailed(m) => {
                eprintln!("sensorium: {m}");
                raise(code::SOURCE);
            }
            _ => {}
        }
        if let Some(m) = &s.model_error {
            eprintln!("sensorium: stream '{}': {m}", s.name);
            raise(code::MODEL);
        }
        eprintln!(
            "sensorium: stream '{}': {} frames, {} windows written, {} items dropped",
            s.name, s.frames, s.windows_written, s.dropped
        );
    }
    if let Some(e) = &report.sink_error {
        eprintln!("sensorium: {e}");
        raise(code::OUTPUT);
    }
    if report.interrupted {
        raise(code::INTERRUPTED);
    }
    Ok(exit)
}

/// Inputs that can be checked before starting anything: local files must exist.
fn check_inputs(config: &Config) -> anyhow::Result<()> {
    for s in &config.streams {
        if let SourceConfig::File(f) = &s.source {
            if !f.path.is_file() {
                return Err(anyhow!(
                    "stream '{}': input file '{}' not found",
                    s.name,
                    f.path.display()
                ));
            }
        }
    }
    Ok(())
}

/// A one-stream config for `run --source URI`.
pub fn config_for_source(uri: &str) -> anyhow::Result<Config> {
    let source = if let Some(pattern) = uri.strip_prefix("test:") {
        let mut t = TestSource::default();
        if !pattern.is_empty() {
            t.pattern = pattern.into();
        }
        SourceConfig::Test(t)
    } else if let Some(path) = uri.strip_prefix("file://") {
        SourceConfig::File(FileSource {
            path: Path::new(path).to_path_buf(),
            looping: false,
            video: true,
            audio: true,
        })
    } else if uri.to_ascii_lowercase().starts_with("rtsp") && uri.contains("://") {
        SourceConfig::Rtsp(RtspSource {
            url: uri.into(),
            transport: RtspTransport::default(),
            latency_ms: 200,
            user: None,
            password: None,
            reconnect: ReconnectConfig::default(),
            video: true,
            audio: true,
        })
    } else if uri.contains("://") {
        SourceConfig::Uri(UriSource {
            uri: uri.into(),
            looping: false,
            video: true,
            audio: true,
        })
    } else {
        SourceConfig::File(FileSource {
            path: uri.into(),
            looping: false,
            video: true,
            audio: true,
        })
    };
    let config = Config {
        engine: Default::default(),
        output: Default::default(),
        metrics: Default::default(),
        streams: vec![StreamConfig {
            name: "source".into(),
            source,
            mode: None,
            fps: None,
            width: None,
            height: None,
        }],
    };
    config.validate("--source").map_err(|e| anyhow!(e))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(uri: &str) -> SourceConfig {
        config_for_source(uri).unwrap().streams.remove(0).source
    }

    #[test]
    fn source_shorthand_picks_the_kind() {
        assert!(matches!(kind_of("test:"), SourceConfig::Test(t) if t.pattern == "smpte"));
        assert!(matches!(kind_of("test:ball"), SourceConfig::Test(t) if t.pattern == "ball"));
        assert!(
            matches!(kind_of("file:///data/a.mp4"), SourceConfig::File(f) if f.path == Path::new("/data/a.mp4"))
        );
        assert!(
            matches!(kind_of("clip.mkv"), SourceConfig::File(f) if f.path == Path::new("clip.mkv"))
        );
        assert!(
            matches!(kind_of("rtsp://cam:554/live"), SourceConfig::Rtsp(r) if r.url == "rtsp://cam:554/live")
        );
        assert!(
            matches!(kind_of("https://x/y.webm"), SourceConfig::Uri(u) if u.uri == "https://x/y.webm")
        );
    }
}
