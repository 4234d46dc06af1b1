//! What each `sensorium` subcommand does, as a library: the binary (`src/`) parses the
//! command line, sets up logging and turns a [`exit::Failure`] into its exit code; everything
//! else lives here, testable without the binary.
//!
//! - [`run`]: a run's composition — the config (or one `--source`), the engine's runtime,
//!   the model stack (`sensorium_models::setup`), the answers ([`answers`]) and the output
//!   ([`output`]).
//! - [`bench`]: `sensorium bench`, a run with a latency report per stage, as a table, JSON
//!   and a PNG.
//! - [`train`]: `sensorium train` and `sensorium eval`, the glue to
//!   `sensorium_models::train`.
//! - [`distill_eval`]: `sensorium distill-eval`.
//! - [`cluster`]: `sensorium cluster` and `sensorium worker` (NATS JetStream).
//! - [`check`]: `sensorium check`, a config validated and printed resolved.
//! - [`sources`]: the one place that picks the media sources (with or without GStreamer).

pub mod answers;
pub mod bench;
pub mod check;
pub mod cluster;
pub mod distill_eval;
pub mod exit;
pub mod output;
pub mod run;
pub mod sources;
pub mod train;
