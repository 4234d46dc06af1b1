//! Exit codes and the error that carries one.

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

/// The exit code of an error of the models crate, from its boundary enum: config and
/// usage 2, input (manifest, media, the scene tool) 3, a model 4, output 5, interrupted 130.
pub fn models_code(e: &sensorium_models::Error) -> u8 {
    use sensorium_models::distill::DistillError;
    use sensorium_models::setup::SetupError;
    use sensorium_models::train::TrainError;
    use sensorium_models::Error;
    match e {
        Error::Train(TrainError::Config { .. }) => code::USAGE,
        Error::Train(TrainError::Manifest { .. } | TrainError::Media { .. }) => code::SOURCE,
        Error::Train(TrainError::Output { .. } | TrainError::State { .. }) => code::OUTPUT,
        Error::Train(TrainError::Interrupted { .. }) => code::INTERRUPTED,
        Error::Distill(DistillError::Config { .. } | DistillError::Input { .. }) => code::USAGE,
        Error::Distill(DistillError::Tool { .. } | DistillError::Io { .. }) => code::SOURCE,
        Error::Setup(SetupError::Load { .. } | SetupError::Mismatch(_)) => code::MODEL,
        Error::Setup(_) => code::USAGE,
        _ => code::MODEL,
    }
}

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

pub trait WithCode<T> {
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
