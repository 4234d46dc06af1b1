//! The live web view: an index of streams and a page per stream, served from assets built
//! into the binary (no CDN, no network), fed by the engine's [`ViewHub`]:
//!
//! - `GET /` and `GET /streams/{name}`: the pages; `GET /assets/...`: their script and style;
//! - `GET /api/streams`, `GET /api/streams/{name}`: health as JSON (the engine's board);
//! - `GET /api/streams/{name}/events`: server-sent events: `frame` (the picture as the model
//!   sees it, JPEG; the audio's level and log-mel columns from sensorium's own Whisper front
//!   end), `window` (each record), `token` / `answer` (scheduled answers as they decode),
//!   `health` (every second);
//! - `GET /streams/{name}/mjpeg`: the pictures as `multipart/x-mixed-replace` (for players
//!   and `<img>` tags).
//!
//! Each viewer has its own bounded queue in the hub: a viewer that reads slowly, or never,
//! loses frames alone (counted: `sensorium_view_events_dropped_total`); the pipeline never
//! waits. Each frame is rendered (JPEG, log-mel) once, whatever the number of viewers.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::stream;
use parking_lot::Mutex;
use sensorium_engine::frame::SyncedFrame;
use sensorium_engine::status;
use sensorium_engine::view::{Interest, Subscription, ViewEvent, ViewHub};
use sensorium_models::audio::mel::LogMel;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{json_error, Ctx};

pub use sensorium_engine::view::VIEW_DROPPED;
/// Gauge: viewers connected (`stream`).
pub const VIEWERS: &str = "sensorium_viewers";

/// Events one viewer may have queued, of which frames at most `VIEWER_FRAMES` (a viewer
/// that falls further behind skips pictures, never records or answers).
const VIEWER_QUEUE: usize = 64;
const VIEWER_FRAMES: usize = 8;
/// Mel bands drawn on the page.
const N_MELS: usize = 80;
const JPEG_QUALITY: u8 = 80;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const STREAM_HTML: &str = include_str!("../assets/stream.html");
const VIEW_JS: &str = include_str!("../assets/view.js");
const VIEW_CSS: &str = include_str!("../assets/view.css");

/// What the view keeps between requests: the hub and the latest rendered frame per stream.
pub(crate) struct View {
    hub: ViewHub,
    mel: LogMel,
    rendered: Mutex<HashMap<String, Arc<Rendered>>>,
}

/// One frame as the page draws it.
pub(crate) struct Rendered {
    index: u64,
    jpeg: Option<Bytes>,
    /// The `frame` event's JSON (JPEG and mel columns base64).
    event: String,
}

impl View {
    pub(crate) fn new(hub: ViewHub) -> Self {
        Self {
            hub,
            mel: LogMel::new(N_MELS),
            rendered: Mutex::new(HashMap::new()),
        }
    }

    fn known(&self, stream: &str) -> bool {
        self.hub.streams().iter().any(|s| s == stream)
    }

    /// `frame` rendered once: the first viewer to need it encodes, the others reuse it.
    fn render(&self, frame: &SyncedFrame) -> Arc<Rendered> {
        if let Some(r) = self.rendered.lock().get(&*frame.stream) {
            if r.index == frame.index {
                return r.clone();
            }
        }
        let r = Arc::new(render(&self.mel, frame));
        self.rendered
            .lock()
            .insert(frame.stream.to_string(), r.clone());
        r
    }
}

fn render(mel: &LogMel, f: &SyncedFrame) -> Rendered {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (jpeg, width, height) = match &f.video {
        Some(v) => (encode_jpeg(&v.rgb, v.width, v.height), v.width, v.height),
        None => (None, 0, 0),
    };
    let (level_db, peak_db) = levels(&f.audio);
    // The log-mel of the frame's own samples: [N_MELS, cols], row-major, as the encoder's
    // front end computes it; shown as bytes 0..=255 over [-1, 1.5] (the front end's range).
    let (mel_b64, cols) = match mel.compute(&f.audio) {
        Ok(m) => {
            let cols = m.len() / N_MELS;
            let bytes: Vec<u8> = m
                .iter()
                .map(|v| (((v + 1.0) / 2.5).clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect();
            (Some(b64.encode(bytes)), cols)
        }
        Err(_) => (None, 0),
    };
    let event = json!({
        "index": f.index,
        "t": f.t,
        "duration": f.duration,
        "has_video": f.has_video,
        "has_audio": f.has_audio,
        "width": width,
        "height": height,
        "jpeg": jpeg.as_ref().map(|j| b64.encode(j)),
        "level_db": level_db,
        "peak_db": peak_db,
        "mel": mel_b64,
        "mel_cols": cols,
        "n_mels": N_MELS,
    })
    .to_string();
    Rendered {
        index: f.index,
        jpeg,
        event,
    }
}

fn encode_jpeg(rgb: &[u8], width: u32, height: u32) -> Option<Bytes> {
    let (w, h) = (u16::try_from(width).ok()?, u16::try_from(height).ok()?);
    if rgb.len() != usize::from(w) * usize::from(h) * 3 {
        return None;
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY)
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .ok()?;
    Some(Bytes::from(out))
}

/// RMS and peak level in dBFS (floored at -100).
fn levels(samples: &[f32]) -> (f64, f64) {
    if samples.is_empty() {
        return (-100.0, -100.0);
    }
    let sq: f64 = samples.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    let rms = (sq / samples.len() as f64).sqrt();
    let peak = samples.iter().map(|s| s.abs()).fold(0f32, f32::max);
    let db = |v: f64| (20.0 * v.max(1e-5).log10()).max(-100.0);
    let r = |v: f64| (v * 10.0).round() / 10.0;
    (r(db(rms)), r(db(f64::from(peak))))
}

fn view(ctx: &Ctx) -> Option<&View> {
    ctx.view.as_ref()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", VIEW_JS)
}

pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", VIEW_CSS)
}

fn unknown(stream: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        &format!("no stream named '{stream}' (GET /api/streams lists them)"),
    )
}

pub(crate) async fn page(State(ctx): State<Arc<Ctx>>, Path(stream): Path<String>) -> Response {
    match view(&ctx) {
        Some(v) if v.known(&stream) => asset("text/html; charset=utf-8", STREAM_HTML),
        _ => unknown(&stream),
    }
}

fn health(stream: &str) -> Value {
    match status::get(stream) {
        Some(h) => serde_json::to_value(h).unwrap_or(Value::Null),
        // Configured but not started yet.
        None => json!({ "stream": stream, "state": "connecting" }),
    }
}

pub(crate) async fn streams(State(ctx): State<Arc<Ctx>>) -> Response {
    let Some(v) = view(&ctx) else {
        return json_error(StatusCode::NOT_FOUND, "no view here");
    };
    let list: Vec<Value> = v.hub.streams().iter().map(|s| health(s)).collect();
    axum::Json(json!({ "streams": list })).into_response()
}

pub(crate) async fn stream_health(
    State(ctx): State<Arc<Ctx>>,
    Path(stream): Path<String>,
) -> Response {
    match view(&ctx) {
        Some(v) if v.known(&stream) => axum::Json(health(&stream)).into_response(),
        _ => unknown(&stream),
    }
}

/// A viewer's subscription, woken through a [`Notify`] (the hub calls it from the engine's
/// threads; a wake-up before the viewer waits is kept as a permit, so none is lost).
struct Feed {
    ctx: Arc<Ctx>,
    stream: String,
    sub: Subscription,
    notify: Arc<Notify>,
}

impl Feed {
    /// A viewer of `stream`; `None` when there is no view or no such stream.
    fn open(ctx: Arc<Ctx>, stream: String, frames: bool) -> Option<Self> {
        let view = ctx.view.as_ref().filter(|v| v.known(&stream))?;
        let notify = Arc::new(Notify::new());
        let n = notify.clone();
        let sub = view.hub.subscribe(
            Interest {
                stream: Some(stream.clone()),
                frames,
                capacity: VIEWER_QUEUE,
                max_frames: VIEWER_FRAMES,
            },
            Some(Arc::new(move || n.notify_one())),
        );
        metrics::gauge!(VIEWERS, "stream" => stream.clone()).increment(1.0);
        Some(Self {
            ctx,
            sub,
            stream,
            notify,
        })
    }

    /// Events dropped for this viewer so far (the hub counts them into [`VIEW_DROPPED`]).
    fn drops(&self) -> u64 {
        self.sub.dropped()
    }

    /// Up to `max` queued events; waits for the next one when none is queued.
    async fn next_batch(&mut self, max: usize) -> Vec<ViewEvent> {
        loop {
            let mut out = Vec::new();
            while out.len() < max {
                match self.sub.try_recv() {
                    Some(ev) => out.push(ev),
                    None => break,
                }
            }
            if !out.is_empty() {
                if !self.sub.is_empty() {
                    // More left: make sure the next wait returns at once.
                    self.notify.notify_one();
                }
                return out;
            }
            self.notify.notified().await;
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        metrics::gauge!(VIEWERS, "stream" => self.stream.clone()).decrement(1.0);
    }
}

fn sse_json(name: &str, v: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .data(serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
}

pub(crate) async fn events(State(ctx): State<Arc<Ctx>>, Path(stream): Path<String>) -> Response {
    let Some(feed) = Feed::open(ctx, stream.clone(), true) else {
        return unknown(&stream);
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = (feed, tick, VecDeque::<Event>::new());
    let body = stream::unfold(state, |(mut feed, mut tick, mut pending)| async move {
        loop {
            if let Some(e) = pending.pop_front() {
                return Some((Ok::<_, Infallible>(e), (feed, tick, pending)));
            }
            tokio::select! {
                batch = feed.next_batch(16) => {
                    for ev in batch {
                        pending.push_back(sse_event(&feed, ev));
                    }
                }
                _ = tick.tick() => {
                    let mut h = health(&feed.stream);
                    if let Value::Object(m) = &mut h {
                        m.insert("viewer_dropped".into(), feed.drops().into());
                    }
                    pending.push_back(sse_json("health", &h));
                }
            }
        }
    });
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse_event(feed: &Feed, ev: ViewEvent) -> Event {
    match ev {
        ViewEvent::Frame(f) => {
            let r = match feed.ctx.view.as_ref() {
                Some(v) => v.render(&f),
                None => Arc::new(render(&LogMel::new(N_MELS), &f)),
            };
            Event::default().event("frame").data(r.event.clone())
        }
        ViewEvent::Window { record, .. } => sse_json("window", &*record),
        ViewEvent::Token {
            window,
            question,
            index,
            text,
            ..
        } => sse_json(
            "token",
            &json!({ "window": window, "question": &*question, "index": index, "text": text }),
        ),
        ViewEvent::Answer { record, .. } => sse_json("answer", &*record),
    }
}

const BOUNDARY: &str = "sensorium-frame";

pub(crate) async fn mjpeg(State(ctx): State<Arc<Ctx>>, Path(stream): Path<String>) -> Response {
    let Some(feed) = Feed::open(ctx, stream.clone(), true) else {
        return unknown(&stream);
    };
    let body = stream::unfold(feed, |mut feed| async move {
        loop {
            for ev in feed.next_batch(1).await {
                let ViewEvent::Frame(f) = ev else { continue };
                let view = feed.ctx.view.as_ref()?;
                let Some(jpeg) = view.render(&f).jpeg.clone() else {
                    continue;
                };
                let mut part = format!(
                    "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )
                .into_bytes();
                part.extend_from_slice(&jpeg);
                part.extend_from_slice(b"\r\n");
                return Some((Ok::<_, Infallible>(Bytes::from(part)), feed));
            }
        }
    });
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-cache".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn levels_of_a_full_scale_sine_and_silence() {
        let sine: Vec<f32> = (0..1600)
            .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16000.0).sin())
            .collect();
        let (rms, peak) = levels(&sine);
        assert!((rms - -3.0).abs() < 0.1, "rms {rms}");
        assert!(peak.abs() < 0.1, "peak {peak}");
        assert_eq!(levels(&[0.0; 100]), (-100.0, -100.0));
    }

    #[test]
    fn a_frame_renders_to_jpeg_and_mel_columns() {
        let rgb: Vec<u8> = (0..32 * 24 * 3).map(|i| (i % 251) as u8).collect();
        let f = SyncedFrame {
            stream: "s".into(),
            index: 3,
            t: 300_000_000,
            duration: 100_000_000,
            video: Some(sensorium_engine::VideoFrame {
                pts: 300_000_000,
                width: 32,
                height: 24,
                rgb: rgb.into(),
                captured: Instant::now(),
            }),
            audio: vec![0.1f32; 1600].into(),
            has_video: true,
            has_audio: true,
            captured: None,
            features: None,
            timing: Default::default(),
        };
        let r = render(&LogMel::new(N_MELS), &f);
        let jpeg = r.jpeg.expect("jpeg");
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG start of image");
        let v: Value = serde_json::from_str(&r.event).unwrap();
        assert_eq!(v["mel_cols"], 10, "1600 samples / hop 160");
        assert_eq!(v["width"], 32);
        let mel = base64::engine::general_purpose::STANDARD
            .decode(v["mel"].as_str().unwrap())
            .unwrap();
        assert_eq!(mel.len(), N_MELS * 10);
    }
}
