//! The one place where the CLI picks its media sources: the GStreamer implementation from
//! crate `sensorium-pipelines`.

use std::sync::Arc;

use anyhow::Context;
use sensorium_engine::SourceFactory;

/// The factory that starts every stream's source.
pub fn source_factory() -> Arc<dyn SourceFactory> {
    Arc::new(sensorium_pipelines::GstSourceFactory::new())
}

/// Describes the media at `uri` (streams, caps, duration).
pub fn probe(uri: &str) -> anyhow::Result<String> {
    let info = sensorium_pipelines::probe(uri).with_context(|| format!("cannot probe '{uri}'"))?;
    Ok(info.to_string())
}
