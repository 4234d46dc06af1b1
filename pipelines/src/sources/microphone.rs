//! `microphone`: an audio-only stream from PulseAudio, ALSA or the default device.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use sensorium_engine::config::{AudioBackend, MicrophoneSource};
use sensorium_engine::SourceParams;

use super::link;
use crate::error::PipelineError;
use crate::graph::{add_branch, add_chain, make, new_pipeline, Modality};
use crate::redact::Redactor;
use crate::runner::{OnEnd, SourceSpec};

/// A microphone alone (audio-only stream).
///
/// ```text
/// gst-launch-1.0 pulsesrc device=NAME ! queue ! audioconvert ! audioresample \
///     ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(super) fn microphone_spec(
    stream: &str,
    cfg: &MicrophoneSource,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    let input = mic_name(cfg);
    mic_element(cfg, &input)?;
    let (cfg, params, name, build_input) = (
        cfg.clone(),
        params.clone(),
        stream.to_owned(),
        input.clone(),
    );
    let build = move |emitter: &Arc<_>| {
        let pipeline = new_pipeline(&name);
        add_mic(&pipeline, &cfg, &params, emitter, &build_input)?;
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

pub(super) fn mic_name(cfg: &MicrophoneSource) -> String {
    let backend = match cfg.backend {
        AudioBackend::Auto => "auto",
        AudioBackend::Pulse => "pulse",
        AudioBackend::Alsa => "alsa",
    };
    match &cfg.device {
        Some(d) => format!("microphone {d} ({backend})"),
        None => format!("default microphone ({backend})"),
    }
}

pub(super) fn mic_element(
    cfg: &MicrophoneSource,
    input: &str,
) -> Result<gst::Element, PipelineError> {
    let factory = match cfg.backend {
        AudioBackend::Auto => {
            if cfg.device.is_some() {
                return Err(PipelineError::BadParams(format!(
                    "{input}: a microphone device needs backend = \"pulse\" or \"alsa\" \
                     (autoaudiosrc picks its own device)"
                )));
            }
            "autoaudiosrc"
        }
        AudioBackend::Pulse => "pulsesrc",
        AudioBackend::Alsa => "alsasrc",
    };
    let src = make(factory, input)?;
    if let Some(d) = &cfg.device {
        src.set_property("device", d);
    }
    Ok(src)
}

pub(super) fn add_mic(
    pipeline: &gst::Pipeline,
    cfg: &MicrophoneSource,
    params: &SourceParams,
    emitter: &Arc<crate::appsink::Emitter>,
    input: &str,
) -> Result<(), PipelineError> {
    let src = mic_element(cfg, input)?;
    add_chain(pipeline, &[&src], input)?;
    let first = add_branch(
        pipeline.upcast_ref(),
        Modality::Audio,
        params,
        true,
        emitter,
        input,
    )?;
    link(&src, &first, input)
}
