//! `camera`: a V4L2 camera, optionally with a microphone in the same stream.

use std::path::Path;
use std::sync::Arc;

use gstreamer::prelude::*;

use sensorium_engine::config::CameraSource;
use sensorium_engine::SourceParams;

use super::link;
use crate::appsink::video_caps;
use crate::error::PipelineError;
use crate::graph::{add_branch, add_chain, make, new_pipeline, Modality};
use crate::redact::Redactor;
use crate::runner::{OnEnd, SourceSpec};

use super::microphone::{add_mic, mic_element, mic_name};

/// A V4L2 camera, optionally with a microphone in the same stream.
///
/// ```text
/// gst-launch-1.0 v4l2src device=/dev/video0 ! queue ! videoconvert ! videoscale \
///     ! videorate skip-to-first=true ! video/x-raw,format=RGB,... ! appsink sync=false \
///   [pulsesrc device=NAME | alsasrc device=hw:1,0 | autoaudiosrc] ! queue ! audioconvert \
///     ! audioresample ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(super) fn camera_spec(
    stream: &str,
    cfg: &CameraSource,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    if cfg.device.starts_with('/') && !Path::new(&cfg.device).exists() {
        return Err(PipelineError::DeviceNotFound {
            device: cfg.device.clone(),
        });
    }
    let input = match &cfg.microphone {
        Some(m) => format!("camera {} + {}", cfg.device, mic_name(m)),
        None => format!("camera {}", cfg.device),
    };
    video_caps(params)?;
    make("v4l2src", &input)?;
    if let Some(m) = &cfg.microphone {
        mic_element(m, &input)?;
    }
    let (cfg, params, name, build_input) = (
        cfg.clone(),
        params.clone(),
        stream.to_owned(),
        input.clone(),
    );
    let build = move |emitter: &Arc<_>| {
        let input = &build_input;
        let pipeline = new_pipeline(&name);
        let src = make("v4l2src", input)?;
        src.set_property("device", &cfg.device);
        add_chain(&pipeline, &[&src], input)?;
        let first = add_branch(
            pipeline.upcast_ref(),
            Modality::Video,
            &params,
            true,
            emitter,
            input,
        )?;
        link(&src, &first, input)?;
        if let Some(m) = &cfg.microphone {
            add_mic(&pipeline, m, &params, emitter, input)?;
        }
        Ok(pipeline)
    };
    Ok(SourceSpec {
        stream: stream.into(),
        input,
        redactor: Redactor::default(),
        build: Box::new(build),
        on_end: OnEnd::Finish,
    })
}
