//! `file` and `uri`: anything `uridecodebin` decodes, a local file checked up front.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

use sensorium_engine::SourceParams;

use crate::appsink::video_caps;
use crate::error::PipelineError;
use crate::graph::{make, new_pipeline, DecodeTargets};
use crate::redact::{strip_userinfo, Redactor};
use crate::runner::{OnEnd, SourceSpec};

/// A local file; checked before any pipeline is built.
///
/// ```text
/// gst-launch-1.0 uridecodebin uri=file:///abs/path.mkv name=d \
///   d. ! queue ! videoconvert ! videoscale ! videorate \
///     ! video/x-raw,format=RGB,width=W,height=H,framerate=FPS ! appsink sync=false \
///   d. ! queue ! audioconvert ! audioresample \
///     ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(super) fn file_spec(
    stream: &str,
    path: &Path,
    looping: bool,
    video: bool,
    audio: bool,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    if !path.is_file() {
        return Err(PipelineError::FileNotFound { path: path.into() });
    }
    let abs = path
        .canonicalize()
        .map_err(|_| PipelineError::FileNotFound { path: path.into() })?;
    let uri = glib::filename_to_uri(&abs, None).map_err(|e| PipelineError::InvalidUri {
        uri: abs.display().to_string(),
        reason: e.to_string(),
    })?;
    let input = path.display().to_string();
    decode_spec(
        stream,
        uri.to_string(),
        input,
        Redactor::default(),
        looping,
        video,
        audio,
        params,
    )
}

/// Any URI `uridecodebin` handles; `file://` URIs are checked like files.
///
/// ```text
/// gst-launch-1.0 uridecodebin uri=URI name=d d. ! (video branch as file) d. ! (audio branch)
/// ```
pub(super) fn uri_spec(
    stream: &str,
    uri: &str,
    looping: bool,
    video: bool,
    audio: bool,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    let shown = strip_userinfo(uri);
    let redactor = Redactor::new(uri, None, None);
    if !uri.contains("://") {
        return Err(PipelineError::InvalidUri {
            uri: shown,
            reason: "not a URI (use kind = \"file\" with path = ... for local files)".into(),
        });
    }
    if uri.starts_with("file:") {
        let (path, _) = glib::filename_from_uri(uri).map_err(|e| PipelineError::InvalidUri {
            uri: shown.clone(),
            reason: e.to_string(),
        })?;
        if !path.is_file() {
            return Err(PipelineError::FileNotFound { path });
        }
    } else if gst::Element::make_from_uri(gst::URIType::Src, uri, None).is_err() {
        return Err(PipelineError::InvalidUri {
            uri: shown,
            reason: "no installed GStreamer source handles this protocol".into(),
        });
    }
    decode_spec(
        stream,
        uri.to_owned(),
        shown,
        redactor,
        looping,
        video,
        audio,
        params,
    )
}

#[allow(clippy::too_many_arguments)]
fn decode_spec(
    stream: &str,
    uri: String,
    input: String,
    redactor: Redactor,
    looping: bool,
    video: bool,
    audio: bool,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    if !video && !audio {
        return Err(PipelineError::BadParams(format!(
            "{input}: both video and audio are turned off"
        )));
    }
    video_caps(params)?;
    let (params, name, build_input) = (params.clone(), stream.to_owned(), input.clone());
    let build = move |emitter: &Arc<_>| {
        let input = &build_input;
        let pipeline = new_pipeline(&name);
        let dec = make("uridecodebin", input)?;
        dec.set_property("uri", &uri);
        pipeline.add(&dec).map_err(|e| PipelineError::Build {
            input: input.clone(),
            message: e.to_string(),
        })?;
        let targets = Arc::new(DecodeTargets {
            pipeline: pipeline.downgrade(),
            params: params.clone(),
            emitter: Arc::clone(emitter),
            input: input.clone(),
            want_video: video,
            want_audio: audio,
            live: false,
            video_linked: AtomicBool::new(false),
            audio_linked: AtomicBool::new(false),
        });
        let t = targets.clone();
        dec.connect_pad_added(move |_, pad| t.link_pad(pad));
        dec.connect_no_more_pads(move |_| targets.check_any_linked());
        Ok(pipeline)
    };
    Ok(SourceSpec {
        stream: stream.into(),
        input,
        redactor,
        build: Box::new(build),
        on_end: if looping {
            OnEnd::Loop
        } else {
            OnEnd::FinishMedia
        },
    })
}
