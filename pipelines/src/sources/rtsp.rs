//! The RTSP camera source: `rtspsrc` with the configured transport, latency and credentials,
//! one `decodebin` per RTP stream, and the engine branches behind them. Reconnects (with
//! exponential backoff, a re-based timeline and a `Discontinuity` event) are run by the
//! source thread in [`crate::runner`]; this file only builds one session's pipeline.
//!
//! Credentials go to `rtspsrc` as `user-id`/`user-pw` properties and nowhere else: the
//! input name shown in errors is the URL without userinfo, and every error text passes
//! through a [`Redactor`] that masks the user name and password.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use sensorium_engine::config::{RtspSource, RtspTransport};
use sensorium_engine::SourceParams;

use crate::appsink::video_caps;
use crate::error::PipelineError;
use crate::graph::{make, new_pipeline, post_error, set_nick, DecodeTargets};
use crate::redact::{strip_userinfo, Redactor};
use crate::runner::{OnEnd, SourceSpec};

/// An RTSP camera.
///
/// ```text
/// gst-launch-1.0 rtspsrc location=rtsp://host:554/path protocols=tcp latency=200 \
///     user-id=USER user-pw=PASSWORD name=src \
///   src. ! decodebin ! queue ! videoconvert ! videoscale ! videorate skip-to-first=true \
///     ! video/x-raw,format=RGB,width=W,height=H,framerate=FPS ! appsink sync=false \
///   src. ! decodebin ! queue ! audioconvert ! audioresample \
///     ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(crate) fn rtsp_spec(
    stream: &str,
    cfg: &RtspSource,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    let shown = strip_userinfo(&cfg.url);
    let redactor = Redactor::new(
        &cfg.url,
        cfg.user.as_deref(),
        cfg.password.as_ref().map(|p| p.expose()),
    );
    if !(cfg.url.starts_with("rtsp://")
        || cfg.url.starts_with("rtsps://")
        || cfg.url.starts_with("rtspt://")
        || cfg.url.starts_with("rtspu://"))
    {
        return Err(PipelineError::InvalidUri {
            uri: shown,
            reason: "an RTSP URL starts with rtsp://".into(),
        });
    }
    if !cfg.video && !cfg.audio {
        return Err(PipelineError::BadParams(format!(
            "{shown}: both video and audio are turned off"
        )));
    }
    video_caps(params)?;
    make("rtspsrc", &shown)?;
    make("decodebin", &shown)?;
    let (cfg_b, params, name, input) = (
        cfg.clone(),
        params.clone(),
        stream.to_owned(),
        shown.clone(),
    );
    let build = move |emitter: &Arc<_>| {
        let cfg = &cfg_b;
        let pipeline = new_pipeline(&name);
        let src = make("rtspsrc", &input)?;
        src.set_property("location", &cfg.url);
        src.set_property("latency", cfg.latency_ms);
        let protocols = match cfg.transport {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        };
        set_nick(&src, "protocols", protocols, "RTSP transport")?;
        if let Some(user) = &cfg.user {
            src.set_property("user-id", user);
        }
        if let Some(pw) = &cfg.password {
            src.set_property("user-pw", pw.expose());
        }
        pipeline.add(&src).map_err(|e| PipelineError::Build {
            input: input.clone(),
            message: e.to_string(),
        })?;
        let (want_video, want_audio) = (cfg.video, cfg.audio);
        // Only SETUP the streams we use: saves the camera's bandwidth and our decoding.
        src.connect("select-stream", false, move |args| {
            let media = args
                .get(2)
                .and_then(|v| v.get::<gst::Caps>().ok())
                .and_then(|c| c.structure(0).and_then(|s| s.get::<String>("media").ok()));
            let keep = match media.as_deref() {
                Some("video") => want_video,
                Some("audio") => want_audio,
                _ => false,
            };
            Some(keep.to_value())
        });
        let targets = Arc::new(DecodeTargets {
            pipeline: pipeline.downgrade(),
            params: params.clone(),
            emitter: Arc::clone(emitter),
            input: input.clone(),
            want_video,
            want_audio,
            live: true,
            video_linked: AtomicBool::new(false),
            audio_linked: AtomicBool::new(false),
        });
        let weak = pipeline.downgrade();
        let pad_input = input.clone();
        src.connect_pad_added(move |_, pad| {
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if let Err(e) = add_decoder(&pipeline, pad, &targets, &pad_input) {
                post_error(&pipeline, &e.to_string());
            }
        });
        Ok(pipeline)
    };
    Ok(SourceSpec {
        stream: stream.into(),
        input: shown,
        redactor,
        build: Box::new(build),
        on_end: OnEnd::Reconnect(cfg.reconnect.clone()),
    })
}

/// One RTP stream of the camera: `rtspsrc pad ! decodebin`, whose raw pad goes to the
/// engine branch for its modality.
fn add_decoder(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    targets: &Arc<DecodeTargets>,
    input: &str,
) -> Result<(), PipelineError> {
    let err = |message: String| PipelineError::Build {
        input: input.into(),
        message,
    };
    let dec = make("decodebin", input)?;
    pipeline.add(&dec).map_err(|e| err(e.to_string()))?;
    let t = targets.clone();
    dec.connect_pad_added(move |_, pad| t.link_pad(pad));
    dec.sync_state_with_parent()
        .map_err(|e| err(e.to_string()))?;
    let sink = dec
        .static_pad("sink")
        .ok_or_else(|| err("decodebin has no sink pad".into()))?;
    pad.link(&sink)
        .map(|_| ())
        .map_err(|e| err(format!("cannot link RTP stream to decodebin: {e:?}")))
}
