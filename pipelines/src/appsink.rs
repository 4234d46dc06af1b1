//! From appsink samples to engine events: the engine caps (RGB W x H at a fixed rate, F32LE
//! mono 16 kHz), the conversion branches that produce them, and the [`Emitter`] that stamps
//! each sample with the stream's running time (re-based after loops and reconnects so it only
//! ever increases) and pushes it into the stream's queue.
//!
//! The appsink callbacks run on GStreamer streaming threads. They only map the buffer, copy it
//! and hand it to the queue: a realtime queue drops its oldest item instead of blocking, so a
//! live capture never stalls; a lossless queue makes the callback wait, which back-pressures
//! file decoding. The wait also ends when the source's stop token (or the session's, at a
//! teardown) fires, so stopping a source is always prompt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use sensorium_engine::frame::NS_PER_SEC;
use sensorium_engine::metrics as m;
use sensorium_engine::status::StreamState;
use sensorium_engine::{AudioChunk, QueueSender, SourceEvent, SourceParams, StopToken, VideoFrame};

use crate::error::PipelineError;

/// Name of the application message that wakes a bus loop to look at its stop flag.
pub(crate) const WAKE_MESSAGE: &str = "sensorium-wake";

/// A stop request shared by a source's handle, its bus thread and its streaming threads: the
/// source's [`StopToken`], plus a wake-up for the GStreamer bus loop (a `gst::Bus` is not a
/// channel a `select!` can wait on, so the loop pops it with a timeout and a stop request
/// posts an application message to wake it at once).
#[derive(Default)]
pub(crate) struct StopSignal {
    token: StopToken,
    /// The bus of the pipeline running now, so a stop request can wake its loop.
    bus: Mutex<Option<gst::Bus>>,
}

impl StopSignal {
    pub(crate) fn is_set(&self) -> bool {
        self.token.is_triggered()
    }

    pub(crate) fn token(&self) -> &StopToken {
        &self.token
    }

    pub(crate) fn request(&self) {
        self.token.trigger();
        self.wake();
    }

    /// Posts a wake-up on the current bus (if any) so its loop re-checks its flags.
    pub(crate) fn wake(&self) {
        let bus = self.bus.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(bus) = bus {
            let _ = bus.post(gst::message::Application::new(gst::Structure::new_empty(
                WAKE_MESSAGE,
            )));
        }
    }

    pub(crate) fn set_bus(&self, bus: Option<gst::Bus>) {
        *self.bus.lock().unwrap_or_else(|p| p.into_inner()) = bus;
    }

    /// Sleeps for `d` unless stopped first; returns whether a stop was requested.
    pub(crate) fn wait(&self, d: Duration) -> bool {
        self.token.wait(d)
    }
}

/// Running-time bookkeeping of one stream across pipeline sessions.
#[derive(Debug, Default)]
struct Timeline {
    /// Added to every running time of the current session.
    offset: u64,
    /// End of the latest data emitted (video pts + one frame, audio pts + its length).
    last_end: u64,
    last_video: Option<u64>,
    last_audio: Option<u64>,
    /// Where the next audio chunk starts when its buffer has no timestamp.
    audio_end: u64,
    /// A discontinuity to announce before the first data of the next session.
    pending: Option<String>,
    /// Samples emitted in the current session.
    session_samples: u64,
    /// Anything emitted since the source started (a discontinuity before that means nothing).
    emitted_any: bool,
    /// When the current session started or last produced data (stall watchdog).
    last_activity: Option<Instant>,
}

/// Per-stream counters (the `metrics` facade; exported by the engine's Prometheus sink).
struct SourceMetrics {
    video_frames: metrics::Counter,
    audio_samples: metrics::Counter,
    dropped: metrics::Counter,
    discontinuities: metrics::Counter,
    errors: metrics::Counter,
    reconnects: metrics::Counter,
}

impl SourceMetrics {
    fn new(stream: &str) -> Self {
        let s = stream.to_owned();
        Self {
            video_frames: metrics::counter!("sensorium_source_video_frames_total", "stream" => s.clone()),
            audio_samples: metrics::counter!("sensorium_source_audio_samples_total", "stream" => s.clone()),
            dropped: metrics::counter!("sensorium_source_dropped_total", "stream" => s.clone()),
            discontinuities: metrics::counter!("sensorium_source_discontinuities_total", "stream" => s.clone()),
            errors: metrics::counter!(m::SOURCE_ERRORS, "stream" => s.clone()),
            reconnects: metrics::counter!(m::RECONNECTS, "stream" => s),
        }
    }
}

/// What the streaming threads share with the bus thread of one source.
pub(crate) struct Emitter {
    stream: String,
    out: QueueSender<SourceEvent>,
    metrics: SourceMetrics,
    pub(crate) stop: Arc<StopSignal>,
    /// The current session's token (a child of the source's): fired while a session is torn
    /// down, so a waiting lossless send gives up; replaced by a fresh one afterwards.
    session: Mutex<StopToken>,
    frame_ns: u64,
    state: Mutex<Timeline>,
}

impl Emitter {
    pub(crate) fn new(
        out: QueueSender<SourceEvent>,
        stop: Arc<StopSignal>,
        params: &SourceParams,
        stream: &str,
    ) -> Self {
        Self {
            stream: stream.to_owned(),
            out,
            metrics: SourceMetrics::new(stream),
            session: Mutex::new(stop.token().child()),
            stop,
            frame_ns: (NS_PER_SEC as f64 / params.fps).round() as u64,
            state: Mutex::new(Timeline::default()),
        }
    }

    fn timeline(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one event with the queue's policy; `Err` tells the caller to stop producing.
    fn send(&self, ev: SourceEvent) -> Result<(), gst::FlowError> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match &ev {
            SourceEvent::Video(_) => self.metrics.video_frames.increment(1),
            SourceEvent::Audio(a) => self.metrics.audio_samples.increment(a.samples.len() as u64),
            SourceEvent::Discontinuity { .. } => self.metrics.discontinuities.increment(1),
            // The final error is counted by the engine, for every kind of source.
            SourceEvent::Error { .. } | SourceEvent::Eos => {}
        }
        // A lossless send waits for room, or gives up when the session's token fires.
        match self.out.send_until(ev, &session) {
            Ok(dropped) => {
                self.metrics.dropped.increment(dropped);
                Ok(())
            }
            // The session ended (teardown, or the source is stopping) while a lossless send
            // waited: drop the event, the source itself lives on.
            Err(_) if !self.out.is_closed() => Err(gst::FlowError::Flushing),
            Err(_closed) => {
                // Nobody listens any more: shut this source down.
                self.stop.request();
                Err(gst::FlowError::Flushing)
            }
        }
    }

    /// Sends a final event (EOS, error) from the bus thread.
    pub(crate) fn send_final(&self, ev: SourceEvent) {
        let _g = self.timeline();
        let _ = self.send(ev);
    }

    /// Starts a new session: later running times are offset past everything emitted so far,
    /// and `reason` (if any) is announced as a discontinuity before the next data (unless
    /// nothing was ever emitted: a camera that never delivered has no timeline to break).
    pub(crate) fn rebase(&self, reason: Option<String>) {
        let mut t = self.timeline();
        t.offset = t.last_end;
        t.audio_end = t.last_end;
        if reason.is_some() && t.emitted_any {
            t.pending = reason;
        }
        t.session_samples = 0;
        t.last_activity = Some(Instant::now());
    }

    /// Ends the current session's sends: a lossless send waiting for room gives up (while a
    /// session is torn down). [`Self::new_session`] lets sends through again.
    pub(crate) fn end_session(&self) {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .trigger();
    }

    pub(crate) fn new_session(&self) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = self.stop.token().child();
    }

    /// Running time of the end of the latest data emitted (ns).
    pub(crate) fn last_end(&self) -> u64 {
        self.timeline().last_end
    }

    /// Length of one video frame at the stream's rate (ns).
    pub(crate) fn frame_ns(&self) -> u64 {
        self.frame_ns
    }

    /// Samples emitted since the last [`rebase`](Self::rebase).
    pub(crate) fn session_samples(&self) -> u64 {
        self.timeline().session_samples
    }

    /// Time since the session started or last produced a sample.
    pub(crate) fn idle_for(&self) -> Duration {
        self.timeline()
            .last_activity
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    /// The stream's name (metric labels, log lines).
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// Counts a failed connection attempt or a lost session (`sensorium_source_errors_total`).
    pub(crate) fn count_error(&self) {
        self.metrics.errors.increment(1);
    }

    fn emit(
        &self,
        t: &mut Timeline,
        ev: SourceEvent,
        end: u64,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if t.session_samples == 0 {
            // The first data of a session: the source is (again) connected.
            if t.emitted_any {
                self.metrics.reconnects.increment(1);
                sensorium_engine::status::stream(&self.stream).reconnected();
            }
            StreamState::Connected.set(&self.stream);
        }
        if let Some(reason) = t.pending.take() {
            self.send(SourceEvent::Discontinuity { reason })?;
        }
        self.send(ev)?;
        t.last_end = t.last_end.max(end);
        t.session_samples += 1;
        t.emitted_any = true;
        t.last_activity = Some(Instant::now());
        Ok(gst::FlowSuccess::Ok)
    }

    fn on_video(
        &self,
        sink: &gst_app::AppSink,
        input_end: Option<&AtomicU64>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let captured = Instant::now();
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
        let Some((buf_pts, rt)) = running_time(&sample) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        // At EOS videorate repeats the last frame into the slot that starts where the media
        // ends (a 4 s file at 2 fps would get a ninth frame at 4.0 s): a frame that starts
        // at or after the end of everything decoded so far shows nothing new.
        let end = input_end.map_or(0, |e| e.load(Ordering::Acquire));
        if end > 0 && buf_pts.nseconds() >= end {
            return Ok(gst::FlowSuccess::Ok);
        }
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let info =
            gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|_| gst::FlowError::Error)?;
        let (w, h) = (info.width() as usize, info.height() as usize);
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
        let row = w * 3;
        let mut rgb = Vec::with_capacity(row * h);
        for y in 0..h {
            let start = y * stride;
            let Some(line) = data.get(start..start + row) else {
                return Err(gst::FlowError::Error);
            };
            rgb.extend_from_slice(line);
        }
        let mut t = self.timeline();
        let pts = t.offset + rt;
        if t.last_video.is_some_and(|last| pts <= last) {
            // Never let time run backwards inside the engine.
            return Ok(gst::FlowSuccess::Ok);
        }
        t.last_video = Some(pts);
        let ev = SourceEvent::Video(VideoFrame {
            pts,
            width: w as u32,
            height: h as u32,
            rgb: rgb.into(),
            captured,
        });
        self.emit(&mut t, ev, pts + self.frame_ns)
    }

    fn on_audio(&self, sink: &gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> {
        let captured = Instant::now();
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
        let Some(buffer) = sample.buffer() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let samples: Vec<f32> = map
            .as_slice()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        drop(map);
        if samples.is_empty() {
            return Ok(gst::FlowSuccess::Ok);
        }
        let rt = running_time(&sample);
        let mut t = self.timeline();
        let pts = match rt {
            Some((_, rt)) => t.offset + rt,
            None => t.audio_end,
        };
        if t.last_audio.is_some_and(|last| pts <= last) {
            return Ok(gst::FlowSuccess::Ok);
        }
        let len_ns = samples.len() as u64 * NS_PER_SEC / sensorium_engine::AUDIO_RATE as u64;
        t.last_audio = Some(pts);
        t.audio_end = pts + len_ns;
        let ev = SourceEvent::Audio(AudioChunk {
            pts,
            samples: samples.into(),
            captured,
        });
        self.emit(&mut t, ev, pts + len_ns)
    }
}

/// The sample's buffer timestamp and its running time in the segment, ns; `None` outside
/// the segment.
fn running_time(sample: &gst::Sample) -> Option<(gst::ClockTime, u64)> {
    let pts = sample.buffer()?.pts()?;
    let seg = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    if seg.stop().is_some_and(|stop| pts >= stop) {
        return None;
    }
    seg.to_running_time(pts).map(|t| (pts, t.nseconds()))
}

/// `video/x-raw,format=RGB,width=W,height=H,framerate=F,pixel-aspect-ratio=1/1`.
pub(crate) fn video_caps(params: &SourceParams) -> Result<gst::Caps, PipelineError> {
    let fps = fps_fraction(params.fps)?;
    if params.width == 0 || params.height == 0 || params.width > 16384 || params.height > 16384 {
        return Err(PipelineError::BadParams(format!(
            "frame size {}x{} is outside 1..=16384",
            params.width, params.height
        )));
    }
    Ok(gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", params.width as i32)
        .field("height", params.height as i32)
        .field("framerate", fps)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build())
}

/// `audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved`.
pub(crate) fn audio_caps() -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("rate", sensorium_engine::AUDIO_RATE as i32)
        .field("channels", 1i32)
        .field("layout", "interleaved")
        .build()
}

pub(crate) fn fps_fraction(fps: f64) -> Result<gst::Fraction, PipelineError> {
    if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
        return Err(PipelineError::BadParams(format!(
            "fps {fps} is outside (0, 1000]"
        )));
    }
    gst::Fraction::approximate_f64(fps)
        .ok_or_else(|| PipelineError::BadParams(format!("fps {fps} has no rational form")))
}

/// Which engine appsink a callback feeds.
pub(crate) enum SinkKind {
    /// Video; `input_end` tracks the end (pts + duration) of the newest frame that entered
    /// videorate, so the sink can drop videorate's padding frame at EOS.
    Video {
        input_end: Option<Arc<AtomicU64>>,
    },
    Audio,
}

/// Points an appsink at the emitter: engine caps on the sink, one callback per sample.
pub(crate) fn attach_appsink(
    sink: &gst_app::AppSink,
    caps: &gst::Caps,
    kind: SinkKind,
    emitter: &Arc<Emitter>,
) {
    sink.set_caps(Some(caps));
    // No clock sync: files run as fast as the consumer allows, live sources are paced by
    // their own clock; waiting in the sink would only add latency.
    sink.set_sync(false);
    sink.set_property("emit-signals", false);
    let em = emitter.clone();
    let callbacks = match kind {
        SinkKind::Video { input_end } => gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| em.on_video(s, input_end.as_deref()))
            .build(),
        SinkKind::Audio => gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| em.on_audio(s))
            .build(),
    };
    sink.set_callbacks(callbacks);
}

/// Tracks the end of the newest buffer flowing through `pad` (see [`SinkKind::Video`]).
pub(crate) fn track_input_end(pad: &gst::Pad) -> Arc<AtomicU64> {
    let end = Arc::new(AtomicU64::new(0));
    let e = end.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buf) = info.buffer() {
            if let (Some(p), Some(d)) = (buf.pts(), buf.duration()) {
                e.fetch_max((p + d).nseconds(), Ordering::AcqRel);
            }
        }
        gst::PadProbeReturn::Ok
    });
    end
}
