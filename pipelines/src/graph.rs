//! Building blocks shared by all sources: element creation with a clear error, checked
//! enum/flags properties, the conversion branches ending in the engine's appsinks, and the
//! linking of dynamically appearing decoder pads (uridecodebin, decodebin).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use sensorium_engine::SourceParams;

use crate::appsink::{attach_appsink, audio_caps, track_input_end, video_caps, Emitter, SinkKind};
use crate::error::PipelineError;

pub(crate) fn make(factory: &str, input: &str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| PipelineError::MissingElement {
            element: factory.into(),
            input: input.into(),
        })
}

/// Which conversion branch to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Modality {
    Video,
    Audio,
}

/// The engine's conversion chain for a modality, not yet added to a bin:
/// `queue ! videoconvert ! videoscale ! videorate` or `queue ! audioconvert ! audioresample`,
/// and the sink kind that goes behind it.
pub(crate) fn converters(
    modality: Modality,
    live: bool,
    input: &str,
) -> Result<(Vec<gst::Element>, SinkKind), PipelineError> {
    let mut chain = vec![make("queue", input)?];
    let kind = match modality {
        Modality::Video => {
            chain.push(make("videoconvert", input)?);
            chain.push(make("videoscale", input)?);
            let rate = make("videorate", input)?;
            // A live stream's first frame arrives long after its segment start; without this
            // videorate would fill the gap with copies of that first frame.
            rate.set_property("skip-to-first", live);
            let input_end = rate.static_pad("sink").map(|p| track_input_end(&p));
            chain.push(rate);
            SinkKind::Video { input_end }
        }
        Modality::Audio => {
            chain.push(make("audioconvert", input)?);
            chain.push(make("audioresample", input)?);
            SinkKind::Audio
        }
    };
    Ok((chain, kind))
}

/// Adds the conversion chain and an engine appsink to `bin`, linked and in the bin's state;
/// returns the branch's first element for the caller to link into.
pub(crate) fn add_branch(
    bin: &gst::Bin,
    modality: Modality,
    params: &SourceParams,
    live: bool,
    emitter: &Arc<Emitter>,
    input: &str,
) -> Result<gst::Element, PipelineError> {
    let build_err = |e: gst::glib::BoolError| PipelineError::Build {
        input: input.into(),
        message: e.to_string(),
    };
    let caps = match modality {
        Modality::Video => video_caps(params)?,
        Modality::Audio => audio_caps(),
    };
    let (mut chain, kind) = converters(modality, live, input)?;
    let sink = gst_app::AppSink::builder()
        .name(match modality {
            Modality::Video => "sensorium-video",
            Modality::Audio => "sensorium-audio",
        })
        .build();
    attach_appsink(&sink, &caps, kind, emitter);
    chain.push(sink.upcast());
    bin.add_many(&chain).map_err(build_err)?;
    gst::Element::link_many(&chain).map_err(build_err)?;
    for e in &chain {
        e.sync_state_with_parent().map_err(build_err)?;
    }
    Ok(chain.swap_remove(0))
}

/// Sets an enum or flags property from its nick, with an error naming the bad value instead
/// of the panic `set_property_from_str` would give.
pub(crate) fn set_nick(
    element: &gst::Element,
    property: &str,
    nick: &str,
    what: &str,
) -> Result<(), PipelineError> {
    let bad = |choices: Vec<String>| {
        PipelineError::BadParams(format!(
            "{what} '{nick}' is not one of: {}",
            choices.join(", ")
        ))
    };
    let pspec = element
        .find_property(property)
        .ok_or_else(|| bad(Vec::new()))?;
    let t = pspec.value_type();
    let value = if let Some(class) = glib::EnumClass::with_type(t) {
        class.to_value_by_nick(nick).ok_or_else(|| {
            bad(class
                .values()
                .iter()
                .map(|v| v.nick().to_string())
                .collect())
        })?
    } else if let Some(class) = glib::FlagsClass::with_type(t) {
        class.to_value_by_nick(nick).ok_or_else(|| {
            bad(class
                .values()
                .iter()
                .map(|v| v.nick().to_string())
                .collect())
        })?
    } else {
        return Err(bad(Vec::new()));
    };
    element.set_property_from_value(property, &value);
    Ok(())
}

/// Sets a double property after checking it against the property's own range (an
/// out-of-range value would otherwise be a GLib critical and be ignored).
pub(crate) fn set_f64(
    element: &gst::Element,
    property: &str,
    value: f64,
    what: &str,
) -> Result<(), PipelineError> {
    let pspec = element
        .find_property(property)
        .ok_or_else(|| PipelineError::BadParams(format!("{what}: no such property")))?;
    if let Some(d) = pspec.downcast_ref::<glib::ParamSpecDouble>() {
        if !(value.is_finite() && value >= d.minimum() && value <= d.maximum()) {
            return Err(PipelineError::BadParams(format!(
                "{what} {value} is outside {}..={}",
                d.minimum(),
                d.maximum()
            )));
        }
    }
    element.set_property(property, value);
    Ok(())
}

/// Which decoded streams a source wants, and which it has linked so far.
pub(crate) struct DecodeTargets {
    pub pipeline: glib::WeakRef<gst::Pipeline>,
    pub params: SourceParams,
    pub emitter: Arc<Emitter>,
    pub input: String,
    pub want_video: bool,
    pub want_audio: bool,
    pub live: bool,
    pub video_linked: AtomicBool,
    pub audio_linked: AtomicBool,
}

impl DecodeTargets {
    /// Links a new raw pad from a decoder: the first video and the first audio stream go to
    /// the engine branches; anything else (unwanted modality, second track, subtitles) is
    /// consumed by a fakesink so the decoder never sees `not-linked`.
    pub(crate) fn link_pad(&self, pad: &gst::Pad) {
        let Some(pipeline) = self.pipeline.upgrade() else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let modality = if name.starts_with("video/")
            && self.want_video
            && !self.video_linked.swap(true, Ordering::AcqRel)
        {
            Some(Modality::Video)
        } else if name.starts_with("audio/")
            && self.want_audio
            && !self.audio_linked.swap(true, Ordering::AcqRel)
        {
            Some(Modality::Audio)
        } else {
            None
        };
        let result = match modality {
            Some(m) => add_branch(
                pipeline.upcast_ref(),
                m,
                &self.params,
                self.live,
                &self.emitter,
                &self.input,
            ),
            None => add_fakesink(pipeline.upcast_ref(), &self.input),
        }
        .and_then(|first| {
            let sinkpad = first
                .static_pad("sink")
                .ok_or_else(|| PipelineError::Build {
                    input: self.input.clone(),
                    message: "branch has no sink pad".into(),
                })?;
            pad.link(&sinkpad)
                .map(|_| ())
                .map_err(|e| PipelineError::Build {
                    input: self.input.clone(),
                    message: format!("cannot link decoded {name} stream: {e:?}"),
                })
        });
        if let Err(e) = result {
            post_error(&pipeline, &e.to_string());
        }
    }

    /// Called once the decoder has exposed all its pads: no usable stream is an error.
    pub(crate) fn check_any_linked(&self) {
        let Some(pipeline) = self.pipeline.upgrade() else {
            return;
        };
        if !self.video_linked.load(Ordering::Acquire) && !self.audio_linked.load(Ordering::Acquire)
        {
            let wanted = match (self.want_video, self.want_audio) {
                (true, true) => "video or audio",
                (true, false) => "video",
                _ => "audio",
            };
            let e = PipelineError::NoStreams {
                input: self.input.clone(),
                wanted: wanted.into(),
            };
            post_error(&pipeline, &e.to_string());
        }
    }
}

/// Puts an error on the pipeline's bus, to be reported by the bus loop like any other.
pub(crate) fn post_error(pipeline: &gst::Pipeline, text: &str) {
    let msg = gst::message::Error::builder(gst::CoreError::Failed, text)
        .src(pipeline)
        .build();
    let _ = pipeline.post_message(msg);
}

fn add_fakesink(bin: &gst::Bin, input: &str) -> Result<gst::Element, PipelineError> {
    let sink = make("fakesink", input)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    bin.add(&sink).map_err(|e| PipelineError::Build {
        input: input.into(),
        message: e.to_string(),
    })?;
    let _ = sink.sync_state_with_parent();
    Ok(sink)
}

/// A new empty pipeline named after the stream.
pub(crate) fn new_pipeline(stream: &str) -> gst::Pipeline {
    gst::Pipeline::with_name(&format!("sensorium-{stream}"))
}

/// Adds a static element chain to a pipeline and links it.
pub(crate) fn add_chain(
    pipeline: &gst::Pipeline,
    chain: &[&gst::Element],
    input: &str,
) -> Result<(), PipelineError> {
    let err = |e: glib::BoolError| PipelineError::Build {
        input: input.into(),
        message: e.to_string(),
    };
    pipeline.add_many(chain.iter().copied()).map_err(err)?;
    gst::Element::link_many(chain.iter().copied()).map_err(err)
}
