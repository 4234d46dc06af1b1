//! Logs: every library crate reports through `tracing`; the binary installs one subscriber
//! that writes to stderr, either as the plain `sensorium: ...` lines users and scripts know
//! (warnings marked `warning:`) or as one JSON object per event for log shippers.
//!
//! The level comes from `--log-level`, else `RUST_LOG` (full `EnvFilter` syntax), else
//! `info`. The plain level names apply to sensorium's own crates; other crates log warnings
//! and errors only, unless `RUST_LOG` says otherwise.

use std::fmt;

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `sensorium: message` lines (warnings as `sensorium: warning: message`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields (`stream`, `attempt`, `retry_in_ms`, ...).
    Json,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// The crates whose events the plain level names select.
const OWN_CRATES: [&str; 5] = [
    "sensorium",
    "sensorium_engine",
    "sensorium_models",
    "sensorium_pipelines",
    "sensorium_kernels",
];

fn directives(level: LogLevel) -> String {
    let mut d = String::from(if level == LogLevel::Off {
        "off"
    } else {
        "warn"
    });
    for c in OWN_CRATES {
        d.push_str(&format!(",{c}={}", level.name()));
    }
    d
}

/// Installs the global subscriber. Returns a description of a bad `RUST_LOG` (the default
/// level is used then), for the caller to report once logging works.
pub fn init(level: Option<LogLevel>, format: LogFormat) -> Option<String> {
    let mut problem = None;
    let filter = match (level, std::env::var("RUST_LOG")) {
        (Some(l), _) => EnvFilter::new(directives(l)),
        (None, Ok(v)) if !v.trim().is_empty() => match EnvFilter::try_new(&v) {
            Ok(f) => f,
            Err(e) => {
                problem = Some(format!("RUST_LOG={v:?} ignored: {e}"));
                EnvFilter::new(directives(LogLevel::Info))
            }
        },
        _ => EnvFilter::new(directives(LogLevel::Info)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.event_format(Plain).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // Already installed (a second call in one process): the first one stands.
    let _ = installed;
    problem
}

/// The plain format: `sensorium: [warning: ]message`, nothing else (fields are for JSON).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let marker = match *event.metadata().level() {
            Level::WARN => "warning: ",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
            _ => "",
        };
        write!(w, "sensorium: {marker}")?;
        let mut message = Message(&mut w, Ok(()));
        event.record(&mut message);
        message.1?;
        writeln!(w)
    }
}

struct Message<'a, 'w>(&'a mut Writer<'w>, fmt::Result);

impl Visit for Message<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.1 = write!(self.0, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_levels_select_our_crates_and_keep_others_at_warn() {
        assert_eq!(
            directives(LogLevel::Debug),
            "warn,sensorium=debug,sensorium_engine=debug,sensorium_models=debug,\
             sensorium_pipelines=debug,sensorium_kernels=debug"
        );
        assert!(directives(LogLevel::Off).starts_with("off,"));
        for l in [LogLevel::Off, LogLevel::Error, LogLevel::Trace] {
            assert!(EnvFilter::try_new(directives(l)).is_ok());
        }
    }
}
