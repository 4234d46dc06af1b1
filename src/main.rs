//! The `sensorium` command line: parses, builds the engine from a config, maps errors to
//! exit codes. All behaviour lives in the library crates.

fn main() -> anyhow::Result<()> {
    Ok(())
}
