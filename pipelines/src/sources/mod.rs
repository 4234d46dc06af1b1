//! Every source kind, one file each, behind one [`SourceFactory`]: [`Sources`].
//!
//! `synthetic` and `scene` are generated here, in Rust, and need no GStreamer; the others
//! (feature `gstreamer`, on by default) each turn their config into a [`SourceSpec`]: the
//! input's printable name, a function that builds one session's pipeline, and what to do at
//! its end. Up-front checks (file exists, device node exists, launch line parses and has its
//! appsinks) happen there, so their errors come back from `start` instead of arriving later
//! as events.

#[cfg(feature = "gstreamer")]
mod camera;
#[cfg(feature = "gstreamer")]
mod file;
#[cfg(feature = "gstreamer")]
mod launch;
#[cfg(feature = "gstreamer")]
mod microphone;
#[cfg(feature = "gstreamer")]
mod rtsp;
pub mod synthetic;
#[cfg(feature = "gstreamer")]
mod test;

use sensorium_engine::config::{SourceConfig, StreamConfig};
use sensorium_engine::{QueueSender, SourceEvent, SourceParams};
use sensorium_engine::{SourceFactory, SourceHandle, SourceStartError};

use crate::error::PipelineError;

#[cfg(feature = "gstreamer")]
use crate::runner::{self, GstSourceHandle, SourceSpec};

/// The engine's [`SourceFactory`] for every source kind (in a build without the `gstreamer`
/// feature: `synthetic` and `scene`, the others refused naming their kind).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sources;

/// Whether `source` is generated here rather than by GStreamer.
fn generated(source: &SourceConfig) -> bool {
    matches!(source, SourceConfig::Synthetic(_) | SourceConfig::Scene(_))
}

impl Sources {
    pub fn new() -> Self {
        Self
    }

    /// Starts the GStreamer source of `stream` with typed errors (the trait method wraps
    /// these into [`SourceStartError`]).
    #[cfg(feature = "gstreamer")]
    pub fn start_source(
        &self,
        stream: &StreamConfig,
        params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<GstSourceHandle, PipelineError> {
        runner::spawn(spec(stream, params)?, params, out)
    }

    /// Everything `start` checks before it runs anything (GStreamer elements installed, file
    /// or device node present, launch line parses and has its appsinks, parameters valid),
    /// without starting the source: for `sensorium check`.
    pub fn check(&self, stream: &StreamConfig, params: &SourceParams) -> Result<(), PipelineError> {
        if generated(&stream.source) {
            return Ok(()); // generated here, nothing to look for
        }
        #[cfg(feature = "gstreamer")]
        return spec(stream, params).map(|_| ());
        #[cfg(not(feature = "gstreamer"))]
        {
            let _ = params;
            Err(PipelineError::BadParams(no_gstreamer(&stream.source)))
        }
    }
}

/// Why a kind cannot run in a build without GStreamer.
#[cfg(not(feature = "gstreamer"))]
fn no_gstreamer(source: &SourceConfig) -> String {
    format!(
        "source kind '{}' needs GStreamer, which this build of sensorium does not include \
         (only 'synthetic' and 'scene' sources run)",
        source.kind()
    )
}

#[cfg(feature = "gstreamer")]
fn spec(stream: &StreamConfig, params: &SourceParams) -> Result<SourceSpec, PipelineError> {
    crate::init()?;
    let name = stream.name.as_str();
    Ok(match &stream.source {
        SourceConfig::Test(t) => test::test_spec(name, t, params)?,
        SourceConfig::File(f) => {
            file::file_spec(name, &f.path, f.looping, f.video, f.audio, params)?
        }
        SourceConfig::Uri(u) => file::uri_spec(name, &u.uri, u.looping, u.video, u.audio, params)?,
        SourceConfig::Rtsp(r) => rtsp::rtsp_spec(name, r, params)?,
        SourceConfig::Camera(c) => camera::camera_spec(name, c, params)?,
        SourceConfig::Microphone(m) => microphone::microphone_spec(name, m, params)?,
        SourceConfig::Launch(l) => launch::launch_spec(name, l, params)?,
        SourceConfig::Synthetic(_) | SourceConfig::Scene(_) => {
            return Err(PipelineError::Build {
                input: format!("stream '{name}'"),
                message: format!(
                    "a {} source is generated in Rust, not by GStreamer: start it through the \
                     SourceFactory trait",
                    stream.source.kind()
                ),
            })
        }
    })
}

impl SourceFactory for Sources {
    fn start(
        &self,
        stream: &StreamConfig,
        params: &SourceParams,
        out: QueueSender<SourceEvent>,
    ) -> Result<Box<dyn SourceHandle>, SourceStartError> {
        match &stream.source {
            SourceConfig::Synthetic(cfg) => {
                return Ok(Box::new(synthetic::start(&stream.name, cfg, params, out)?));
            }
            SourceConfig::Scene(cfg) => {
                return Ok(Box::new(synthetic::start_scene(
                    &stream.name,
                    cfg,
                    params,
                    out,
                )?));
            }
            _ => {}
        }
        #[cfg(feature = "gstreamer")]
        return self
            .start_source(stream, params, out)
            .map(|h| Box::new(h) as Box<dyn SourceHandle>)
            .map_err(|e| SourceStartError {
                stream: stream.name.clone(),
                message: e.to_string(),
            });
        #[cfg(not(feature = "gstreamer"))]
        {
            let _ = out;
            Err(SourceStartError {
                stream: stream.name.clone(),
                message: no_gstreamer(&stream.source),
            })
        }
    }
}

/// Shared by the GStreamer kinds: links two elements, naming the input on failure.
#[cfg(feature = "gstreamer")]
fn link(a: &gstreamer::Element, b: &gstreamer::Element, input: &str) -> Result<(), PipelineError> {
    use gstreamer::prelude::*;
    a.link(b).map_err(|e| PipelineError::Build {
        input: input.into(),
        message: e.to_string(),
    })
}
