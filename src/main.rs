//! The `sensorium` command line: parses, builds the engine from a config, maps errors to
//! exit codes. All behaviour lives in the library crates; `cli.rs` holds the glue.

mod answers;
mod bundle;
mod cli;
mod models;
mod output;
mod sources;
mod train;

fn main() -> std::process::ExitCode {
    cli::main()
}
