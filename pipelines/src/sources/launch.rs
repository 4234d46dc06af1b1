//! `launch`: a user's gst-launch line with `appsink name=video` / `appsink name=audio`.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use sensorium_engine::config::LaunchSource;
use sensorium_engine::SourceParams;

use crate::appsink::{attach_appsink, audio_caps, video_caps, SinkKind};
use crate::error::PipelineError;
use crate::graph::{converters, new_pipeline, Modality};
use crate::redact::Redactor;
use crate::runner::{OnEnd, SourceSpec};

/// A user's gst-launch description; its appsinks `video` and `audio` get the engine caps.
/// When such an appsink is already linked, the engine's converters are inserted before it,
/// so `videotestsrc ! appsink name=video` works as is.
///
/// ```text
/// gst-launch-1.0 <user description ... ! appsink name=video> [... ! appsink name=audio]
///   becomes  ... ! queue ! videoconvert ! videoscale ! videorate ! appsink name=video caps=RGB...
/// ```
pub(super) fn launch_spec(
    stream: &str,
    cfg: &LaunchSource,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    let redactor = Redactor::for_launch(&cfg.pipeline);
    let input = "launch pipeline".to_string();
    video_caps(params)?;
    // Parse once now so a bad description or missing sink fails `start`.
    let probe = parse_launch(stream, &cfg.pipeline, &redactor)?;
    find_sinks(&probe)?;
    drop(probe);
    let (desc, live, params, name, build_input, build_redactor) = (
        cfg.pipeline.clone(),
        cfg.live,
        params.clone(),
        stream.to_owned(),
        input.clone(),
        redactor.clone(),
    );
    let build = move |emitter: &Arc<_>| {
        let pipeline = parse_launch(&name, &desc, &build_redactor)?;
        let (video, audio) = find_sinks(&pipeline)?;
        for (sink, modality) in [(video, Modality::Video), (audio, Modality::Audio)] {
            if let Some(sink) = sink {
                wire_launch_sink(
                    &pipeline,
                    &sink,
                    modality,
                    &params,
                    live,
                    emitter,
                    &build_input,
                )?;
            }
        }
        Ok(pipeline)
    };
    Ok(SourceSpec {
        stream: stream.into(),
        input,
        redactor,
        build: Box::new(build),
        on_end: OnEnd::Finish,
    })
}

fn parse_launch(
    stream: &str,
    desc: &str,
    redactor: &Redactor,
) -> Result<gst::Pipeline, PipelineError> {
    let element = gst::parse::launch(desc)
        .map_err(|e| PipelineError::LaunchParse(redactor.apply(e.message())))?;
    match element.downcast::<gst::Pipeline>() {
        Ok(p) => Ok(p),
        Err(element) => {
            let p = new_pipeline(stream);
            p.add(&element)
                .map_err(|e| PipelineError::LaunchParse(e.to_string()))?;
            Ok(p)
        }
    }
}

type LaunchSinks = (Option<gst_app::AppSink>, Option<gst_app::AppSink>);

fn find_sinks(pipeline: &gst::Pipeline) -> Result<LaunchSinks, PipelineError> {
    let get = |name: &str| -> Result<Option<gst_app::AppSink>, PipelineError> {
        match pipeline.by_name(name) {
            None => Ok(None),
            Some(e) => e.downcast::<gst_app::AppSink>().map(Some).map_err(|e| {
                PipelineError::LaunchNotAppSink {
                    name: name.into(),
                    factory: e
                        .factory()
                        .map(|f| f.name().to_string())
                        .unwrap_or_default(),
                }
            }),
        }
    };
    let (video, audio) = (get("video")?, get("audio")?);
    if video.is_none() && audio.is_none() {
        return Err(PipelineError::LaunchNoSink);
    }
    Ok((video, audio))
}

fn wire_launch_sink(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    modality: Modality,
    params: &SourceParams,
    live: bool,
    emitter: &Arc<crate::appsink::Emitter>,
    input: &str,
) -> Result<(), PipelineError> {
    let caps = match modality {
        Modality::Video => video_caps(params)?,
        Modality::Audio => audio_caps(),
    };
    let build_err = |message: String| PipelineError::Build {
        input: input.into(),
        message,
    };
    let peer = sink
        .static_pad("sink")
        .and_then(|p| p.peer().map(|peer| (p, peer)));
    let Some((sinkpad, peer)) = peer else {
        // Linked later (e.g. behind a decodebin): the description must convert itself.
        let kind = match modality {
            Modality::Video => SinkKind::Video { input_end: None },
            Modality::Audio => SinkKind::Audio,
        };
        attach_appsink(sink, &caps, kind, emitter);
        return Ok(());
    };
    peer.unlink(&sinkpad)
        .map_err(|e| build_err(e.to_string()))?;
    let (chain, kind) = converters(modality, live, input)?;
    attach_appsink(sink, &caps, kind, emitter);
    pipeline
        .add_many(&chain)
        .map_err(|e| build_err(e.to_string()))?;
    gst::Element::link_many(&chain).map_err(|e| build_err(e.to_string()))?;
    let (first, last) = (&chain[0], &chain[chain.len() - 1]);
    let first_pad = first
        .static_pad("sink")
        .ok_or_else(|| build_err("queue has no sink pad".into()))?;
    peer.link(&first_pad)
        .map_err(|e| build_err(format!("{e:?}")))?;
    last.link(sink).map_err(|e| build_err(e.to_string()))?;
    Ok(())
}
