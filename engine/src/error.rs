//! The one error of `sensorium-engine` at its boundary: what [`crate::Runtime`] and the
//! process-wide set-up ([`crate::metrics::install_prometheus`]) return. Each variant keeps
//! the part's own error typed. What fails one stream while the others run (a source that
//! does not start, a model stage's [`crate::StageError`]) is not an `Error`: it ends that
//! stream and is reported in its [`crate::StreamReport`].

use crate::config::load::ConfigError;
use crate::metrics::MetricsError;
use crate::sink::SinkError;

/// The engine could not start, or did not stop in time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The output could not be opened.
    #[error(transparent)]
    Output(#[from] SinkError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The operating system refused a thread.
    #[error("cannot start stage thread {name}: {error}")]
    Thread { name: String, error: std::io::Error },
    /// Shutdown was requested but stages were still busy `[engine] shutdown_timeout_ms`
    /// later (a model stuck on a window, a sink blocked on its output): they are abandoned.
    #[error(
        "shutdown did not finish within {} ms of the request: still running: {}",
        after_ms,
        running.join(", ")
    )]
    ShutdownTimeout { after_ms: u64, running: Vec<String> },
}
