//! `sensorium probe URI`: what is in a media file or stream (container, duration, video and
//! audio streams), read with the GStreamer Discoverer without decoding it all.

use std::fmt;
use std::path::Path;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::Serialize;

use crate::error::PipelineError;
use crate::redact::{strip_userinfo, Redactor};

/// How long the Discoverer may take on one input.
const PROBE_TIMEOUT_S: u64 = 15;

/// What [`probe`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeInfo {
    /// The probed URI (without credentials).
    pub uri: String,
    /// Container format, e.g. "Matroska"; `None` for an elementary stream.
    pub container: Option<String>,
    /// Duration in ns, when known (not for live streams).
    pub duration_ns: Option<u64>,
    pub seekable: bool,
    pub live: bool,
    pub video: Vec<VideoStreamInfo>,
    pub audio: Vec<AudioStreamInfo>,
}

/// One video stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VideoStreamInfo {
    /// Codec description, e.g. "H.264 (High Profile)".
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames per second; `None` for variable or unknown rate.
    pub fps: Option<f64>,
    /// Bits per second when the container says so.
    pub bitrate: Option<u32>,
}

/// One audio stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudioStreamInfo {
    /// Codec description, e.g. "Opus".
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
    pub bitrate: Option<u32>,
    pub language: Option<String>,
}

impl fmt::Display for ProbeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "uri:       {}", self.uri)?;
        writeln!(
            f,
            "container: {}",
            self.container.as_deref().unwrap_or("(none)")
        )?;
        match self.duration_ns {
            Some(d) => writeln!(f, "duration:  {:.3} s", d as f64 / 1e9)?,
            None => writeln!(f, "duration:  unknown")?,
        }
        writeln!(f, "seekable:  {}  live: {}", self.seekable, self.live)?;
        if self.video.is_empty() {
            writeln!(f, "video:     none")?;
        }
        for (i, v) in self.video.iter().enumerate() {
            let fps = v
                .fps
                .map(|x| format!("{x:.3} fps"))
                .unwrap_or_else(|| "variable fps".into());
            writeln!(f, "video #{i}:  {} {}x{} {fps}", v.codec, v.width, v.height)?;
        }
        if self.audio.is_empty() {
            writeln!(f, "audio:     none")?;
        }
        for (i, a) in self.audio.iter().enumerate() {
            writeln!(
                f,
                "audio #{i}:  {} {} Hz, {} channel(s)",
                a.codec, a.sample_rate, a.channels
            )?;
        }
        Ok(())
    }
}

/// Probes a local path or a URI (`file://`, `rtsp://`, `http://`...).
pub fn probe(uri_or_path: &str) -> Result<ProbeInfo, PipelineError> {
    crate::init()?;
    let redactor = Redactor::new(uri_or_path, None, None);
    let shown = strip_userinfo(uri_or_path);
    let uri = if uri_or_path.contains("://") {
        uri_or_path.to_owned()
    } else {
        let path = Path::new(uri_or_path);
        if !path.is_file() {
            return Err(PipelineError::FileNotFound { path: path.into() });
        }
        let abs = path
            .canonicalize()
            .map_err(|_| PipelineError::FileNotFound { path: path.into() })?;
        glib::filename_to_uri(&abs, None)
            .map_err(|e| PipelineError::InvalidUri {
                uri: shown.clone(),
                reason: e.to_string(),
            })?
            .to_string()
    };
    let fail = |message: String| PipelineError::Probe {
        input: shown.clone(),
        message: redactor.apply(&message),
    };
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_seconds(PROBE_TIMEOUT_S))
        .map_err(|e| fail(e.to_string()))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| fail(e.to_string()))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::MissingPlugins => {
            return Err(fail(format!(
                "missing GStreamer plugins: {}",
                info.missing_elements_installer_details().join(", ")
            )))
        }
        pbutils::DiscovererResult::Timeout => {
            return Err(fail(format!("timed out after {PROBE_TIMEOUT_S} s")))
        }
        other => return Err(fail(format!("discoverer result {other:?}"))),
    }
    let container = info.stream_info().and_then(|s| {
        s.downcast::<pbutils::DiscovererContainerInfo>()
            .ok()
            .and_then(|c| c.caps())
            .map(|caps| pbutils::pb_utils_get_codec_description(&caps).to_string())
    });
    let video = info
        .video_streams()
        .iter()
        .map(|v| {
            let rate = v.framerate();
            let fps = (rate.numer() > 0 && rate.denom() > 0)
                .then(|| rate.numer() as f64 / rate.denom() as f64);
            VideoStreamInfo {
                codec: codec_of(v.upcast_ref()),
                width: v.width(),
                height: v.height(),
                fps,
                bitrate: (v.bitrate() > 0).then(|| v.bitrate()),
            }
        })
        .collect();
    let audio = info
        .audio_streams()
        .iter()
        .map(|a| AudioStreamInfo {
            codec: codec_of(a.upcast_ref()),
            sample_rate: a.sample_rate(),
            channels: a.channels(),
            bitrate: (a.bitrate() > 0).then(|| a.bitrate()),
            language: a.language().map(|l| l.to_string()),
        })
        .collect();
    Ok(ProbeInfo {
        uri: strip_userinfo(&uri),
        container,
        duration_ns: info.duration().map(|d| d.nseconds()),
        seekable: info.is_seekable(),
        live: info.is_live(),
        video,
        audio,
    })
}

fn codec_of(s: &pbutils::DiscovererStreamInfo) -> String {
    s.caps()
        .map(|c| pbutils::pb_utils_get_codec_description(&c).to_string())
        .unwrap_or_else(|| "unknown".into())
}
