//! The local sources: test scene, file / URI, camera + microphone, and a user's launch line.
//! Each turns its config into a [`SourceSpec`]: the input's printable name, a function that
//! builds one session's pipeline, and what to do at its end. Up-front checks (file exists,
//! device node exists, launch line parses and has its appsinks) happen here, so their errors
//! come back from `start` instead of arriving later as events.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use sensorium_engine::config::{
    AudioBackend, CameraSource, LaunchSource, MicrophoneSource, TestSource,
};
use sensorium_engine::frame::AUDIO_RATE;
use sensorium_engine::SourceParams;

use crate::appsink::{attach_appsink, audio_caps, fps_fraction, video_caps, SinkKind};
use crate::error::PipelineError;
use crate::graph::{
    add_branch, add_chain, converters, make, new_pipeline, set_f64, set_nick, DecodeTargets,
    Modality,
};
use crate::redact::{strip_userinfo, Redactor};
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
pub(crate) fn test_spec(
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

fn link(a: &gst::Element, b: &gst::Element, input: &str) -> Result<(), PipelineError> {
    a.link(b).map_err(|e| PipelineError::Build {
        input: input.into(),
        message: e.to_string(),
    })
}

/// A local file; checked before any pipeline is built.
///
/// ```text
/// gst-launch-1.0 uridecodebin uri=file:///abs/path.mkv name=d \
///   d. ! queue ! videoconvert ! videoscale ! videorate \
///     ! video/x-raw,format=RGB,width=W,height=H,framerate=FPS ! appsink sync=false \
///   d. ! queue ! audioconvert ! audioresample \
///     ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(crate) fn file_spec(
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
pub(crate) fn uri_spec(
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

/// A V4L2 camera, optionally with a microphone in the same stream.
///
/// ```text
/// gst-launch-1.0 v4l2src device=/dev/video0 ! queue ! videoconvert ! videoscale \
///     ! videorate skip-to-first=true ! video/x-raw,format=RGB,... ! appsink sync=false \
///   [pulsesrc device=NAME | alsasrc device=hw:1,0 | autoaudiosrc] ! queue ! audioconvert \
///     ! audioresample ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(crate) fn camera_spec(
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

/// A microphone alone (audio-only stream).
///
/// ```text
/// gst-launch-1.0 pulsesrc device=NAME ! queue ! audioconvert ! audioresample \
///     ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! appsink sync=false
/// ```
pub(crate) fn microphone_spec(
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

fn mic_name(cfg: &MicrophoneSource) -> String {
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

fn mic_element(cfg: &MicrophoneSource, input: &str) -> Result<gst::Element, PipelineError> {
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

fn add_mic(
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

/// A user's gst-launch description; its appsinks `video` and `audio` get the engine caps.
/// When such an appsink is already linked, the engine's converters are inserted before it,
/// so `videotestsrc ! appsink name=video` works as is.
///
/// ```text
/// gst-launch-1.0 <user description ... ! appsink name=video> [... ! appsink name=audio]
///   becomes  ... ! queue ! videoconvert ! videoscale ! videorate ! appsink name=video caps=RGB...
/// ```
pub(crate) fn launch_spec(
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
