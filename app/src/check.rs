//! `sensorium check`: a config validated (every section, the model sections included) and
//! printed resolved, defaults filled in and secrets redacted.

use std::path::Path;

use sensorium_engine::Config;
use sensorium_models::setup::ModelSetup;

use crate::exit::{code, Failure, WithCode};

/// Validates `file` and prints it resolved.
pub fn check(file: &Path) -> Result<u8, Failure> {
    let origin = file.display().to_string();
    let config = Config::load(file).code(code::USAGE)?;
    let setup = ModelSetup::parse(&config, &origin).code(code::USAGE)?;
    let train = crate::train::parse(&config, &origin).code(code::USAGE)?;
    let mut resolved = config.resolved();
    setup.resolve_into(&mut resolved);
    if let Some(t) = train {
        resolved.train = toml::Table::try_from(&t).ok();
    }
    print!("{}", resolved.to_toml_redacted());
    Ok(code::OK)
}
