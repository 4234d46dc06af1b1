//! The one place where the CLI picks its media sources: crate `sensorium-pipelines`, with
//! its GStreamer kinds (feature `gstreamer`, on by default) or, without it, the generated
//! kinds alone (`synthetic`, `scene`).

use std::sync::Arc;

use sensorium_engine::SourceFactory;

/// The factory that starts every stream's source.
pub fn source_factory() -> Arc<dyn SourceFactory> {
    Arc::new(sensorium_pipelines::Sources::new())
}

/// GStreamer's test sources for the distillation's test-sources clip world (none in a build
/// without GStreamer: that world then says so).
pub fn test_media() -> Option<&'static dyn sensorium_engine::source::TestMedia> {
    #[cfg(feature = "gstreamer")]
    return Some(&sensorium_pipelines::render::GstTestMedia);
    #[cfg(not(feature = "gstreamer"))]
    None
}

/// Describes the media at `uri` (streams, caps, duration).
#[cfg(feature = "gstreamer")]
pub fn probe(uri: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let shown = sensorium_engine::config::load::redact_url(uri);
    let info =
        sensorium_pipelines::probe(uri).with_context(|| format!("cannot probe '{shown}'"))?;
    Ok(info.to_string())
}

/// Describes the media at `uri`: needs GStreamer, absent from this build.
#[cfg(not(feature = "gstreamer"))]
pub fn probe(uri: &str) -> anyhow::Result<String> {
    let uri = sensorium_engine::config::load::redact_url(uri);
    anyhow::bail!(
        "cannot probe '{uri}': this build of sensorium has no GStreamer (built without the \
         `gstreamer` feature)"
    )
}

/// The annotated RTSP re-stream of `[output] rtsp`, fed by `hub`; stops when dropped.
#[cfg(feature = "gstreamer")]
pub fn restream(
    config: &sensorium_engine::Config,
    hub: &sensorium_engine::ViewHub,
) -> anyhow::Result<Option<Box<dyn std::any::Any>>> {
    let Some(spec) = &config.output.rtsp else {
        return Ok(None);
    };
    let streams: Vec<_> = config
        .resolved_streams()
        .into_iter()
        .map(|r| (r.config.name.clone(), r.params.clone()))
        .collect();
    let r = sensorium_pipelines::restream::Restream::start(spec, &streams, hub.clone())?;
    for (stream, url) in r.urls() {
        tracing::info!("stream '{stream}' re-served on {url}");
    }
    Ok(Some(Box::new(r)))
}

/// `[output] rtsp` needs GStreamer, absent from this build.
#[cfg(not(feature = "gstreamer"))]
pub fn restream(
    config: &sensorium_engine::Config,
    _hub: &sensorium_engine::ViewHub,
) -> anyhow::Result<Option<Box<dyn std::any::Any>>> {
    match &config.output.rtsp {
        None => Ok(None),
        Some(_) => anyhow::bail!(
            "output.rtsp: this build of sensorium has no GStreamer (built without the \
             `gstreamer` feature)"
        ),
    }
}
