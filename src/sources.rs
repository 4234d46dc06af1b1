//! The one place where the CLI picks its media sources. The GStreamer implementation lives
//! in crate `sensorium-pipelines`; until it is linked here, both functions report that
//! sources are not built in (exit code 3), never pretending to run.

use std::sync::Arc;

use anyhow::bail;
use sensorium_engine::config::StreamConfig;
use sensorium_engine::{
    QueueSender, SourceEvent, SourceFactory, SourceHandle, SourceParams, SourceStartError,
};

/// The factory that starts every stream's source.
pub fn source_factory() -> Arc<dyn SourceFactory> {
    Arc::new(NoSources)
}

/// Describes the media at `uri` (streams, caps, duration).
pub fn probe(uri: &str) -> anyhow::Result<String> {
    bail!("cannot probe '{uri}': GStreamer sources not built in")
}

struct NoSources;

impl SourceFactory for NoSources {
    fn start(
        &self,
        stream: &StreamConfig,
        _params: &SourceParams,
        _out: QueueSender<SourceEvent>,
    ) -> Result<Box<dyn SourceHandle>, SourceStartError> {
        Err(SourceStartError {
            stream: stream.name.clone(),
            message: format!(
                "cannot start {} source: GStreamer sources not built in",
                stream.source.kind()
            ),
        })
    }
}
