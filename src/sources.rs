//! The one place where the CLI picks its media sources: the GStreamer implementation from
//! crate `sensorium-pipelines` (feature `gstreamer`, on by default), or without it the
//! engine's own `synthetic` source alone.

use std::sync::Arc;

use sensorium_engine::SourceFactory;

/// The factory that starts every stream's source.
#[cfg(feature = "gstreamer")]
pub fn source_factory() -> Arc<dyn SourceFactory> {
    Arc::new(sensorium_pipelines::GstSourceFactory::new())
}

/// The factory that starts every stream's source: `synthetic` ones only in this build.
#[cfg(not(feature = "gstreamer"))]
pub fn source_factory() -> Arc<dyn SourceFactory> {
    Arc::new(sensorium_engine::SyntheticFactory)
}

/// Describes the media at `uri` (streams, caps, duration).
#[cfg(feature = "gstreamer")]
pub fn probe(uri: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let shown = sensorium_engine::config_load::redact_url(uri);
    let info =
        sensorium_pipelines::probe(uri).with_context(|| format!("cannot probe '{shown}'"))?;
    Ok(info.to_string())
}

/// Describes the media at `uri`: needs GStreamer, absent from this build.
#[cfg(not(feature = "gstreamer"))]
pub fn probe(uri: &str) -> anyhow::Result<String> {
    let uri = sensorium_engine::config_load::redact_url(uri);
    anyhow::bail!(
        "cannot probe '{uri}': this build of sensorium has no GStreamer (built without the \
         `gstreamer` feature)"
    )
}
