//! `test`: GStreamer's test pattern and tone (`videotestsrc` + `audiotestsrc`).

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use sensorium_engine::config::TestSource;
use sensorium_engine::frame::AUDIO_RATE;
use sensorium_engine::SourceParams;

use super::link;
use crate::appsink::{fps_fraction, video_caps};
use crate::error::PipelineError;
use crate::graph::{add_branch, add_chain, make, new_pipeline, set_f64, set_nick, Modality};
use crate::redact::Redactor;
use crate::runner::{OnEnd, SourceSpec};

/// Audio samples per `audiotestsrc` buffer (50 ms at 16 kHz).
const TEST_AUDIO_CHUNK: u32 = AUDIO_RATE / 20;

/// Test scene: a pattern and a tone, live or as fast as possible, optionally finite.
///
/// ```text
/// gst-launch-1.0 \
///   videotestsrc pattern=smpte is-live=true [num-buffers=ceil(duration*fps)] \
///     ! video/x-raw,width=W,height=H,framerate=FPS ! queue ! videoconvert ! videoscale \
///     ! videorate ! video/x-raw,format=RGB,width=W,height=H,framerate=FPS ! appsink sync=false \
///   audiotestsrc wave=sine freq=440 volume=0.5 is-live=true samplesperbuffer=800 \
///     [num-buffers=ceil(duration*20)] ! audio/x-raw,rate=16000,channels=1 ! queue \
///     ! audioconvert ! audioresample ! audio/x-raw,format=F32LE,rate=16000,channels=1 \
///     ! appsink sync=false
/// ```
pub(super) fn test_spec(
    stream: &str,
    cfg: &TestSource,
    params: &SourceParams,
) -> Result<SourceSpec, PipelineError> {
    let input = format!("test source (pattern {}, wave {})", cfg.pattern, cfg.wave);
    if !cfg.video && !cfg.audio {
        return Err(PipelineError::BadParams(
            "test source has both video and audio turned off".into(),
        ));
    }
    if let Some(d) = cfg.duration_s {
        if !(d.is_finite() && d > 0.0) {
            return Err(PipelineError::BadParams(format!(
                "test source duration_s {d} must be > 0"
            )));
        }
    }
    let fps = fps_fraction(params.fps)?;
    video_caps(params)?;
    let (cfg, params, name) = (cfg.clone(), params.clone(), stream.to_owned());
    // Validate the pattern / wave nicks once, up front.
    check_test_nicks(&cfg)?;
    let build_input = input.clone();
    let build = move |emitter: &Arc<_>| {
        let input = &build_input;
        let pipeline = new_pipeline(&name);
        // src ! capsfilter caps=CAPS ! (the modality's branch to its appsink)
        let attach = |src: &gst::Element, caps: &gst::Caps, modality: Modality| {
            let filter = make("capsfilter", input)?;
            filter.set_property("caps", caps);
            add_chain(&pipeline, &[src, &filter], input)?;
            let first = add_branch(
                pipeline.upcast_ref(),
                modality,
                &params,
                cfg.is_live,
                emitter,
                input,
            )?;
            link(&filter, &first, input)
        };
        if cfg.video {
            let src = make("videotestsrc", input)?;
            set_nick(&src, "pattern", &cfg.pattern, "test source pattern")?;
            src.set_property("is-live", cfg.is_live);
            if let Some(d) = cfg.duration_s {
                let n = (d * params.fps - 1e-9).ceil().max(1.0) as i32;
                src.set_property("num-buffers", n);
            }
            let caps = gst::Caps::builder("video/x-raw")
                .field("width", params.width as i32)
                .field("height", params.height as i32)
                .field("framerate", fps)
                .build();
            attach(&src, &caps, Modality::Video)?;
        }
        if cfg.audio {
            let src = make("audiotestsrc", input)?;
            set_nick(&src, "wave", &cfg.wave, "test source wave")?;
            set_f64(&src, "freq", cfg.freq, "test source freq")?;
            set_f64(&src, "volume", cfg.volume, "test source volume")?;
            src.set_property("is-live", cfg.is_live);
            src.set_property("samplesperbuffer", TEST_AUDIO_CHUNK as i32);
            if let Some(d) = cfg.duration_s {
                let per_s = (AUDIO_RATE / TEST_AUDIO_CHUNK) as f64;
                let n = (d * per_s - 1e-9).ceil().max(1.0) as i32;
                src.set_property("num-buffers", n);
            }
            let caps = gst::Caps::builder("audio/x-raw")
                .field("rate", AUDIO_RATE as i32)
                .field("channels", 1i32)
                .build();
            attach(&src, &caps, Modality::Audio)?;
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

fn check_test_nicks(cfg: &TestSource) -> Result<(), PipelineError> {
    let input = "test source";
    if cfg.video {
        set_nick(
            &make("videotestsrc", input)?,
            "pattern",
            &cfg.pattern,
            "test source pattern",
        )?;
    }
    if cfg.audio {
        let src = make("audiotestsrc", input)?;
        set_nick(&src, "wave", &cfg.wave, "test source wave")?;
        set_f64(&src, "freq", cfg.freq, "test source freq")?;
        set_f64(&src, "volume", cfg.volume, "test source volume")?;
    }
    Ok(())
}
