//! The health board: each stream's state, last error and recent rates, kept in the process
//! beside the metrics recorder (and, like it, process-wide, so the GStreamer sources can
//! report a reconnect without a handle into the runtime). The live view's health panel and
//! `GET /api/streams` read [`snapshot`]; the stages write through a [`StreamHealth`] handle
//! each (one lookup per stream, then a short lock per event).
//!
//! Rates are over the last [`RATE_SPAN`] of wall time, latencies over the last
//! [`LATENCY_SPAN`], so a stream that stalls shows it within seconds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::STREAM_STATE;

/// Span of the fps figures.
pub const RATE_SPAN: Duration = Duration::from_secs(5);
/// Span of the latency percentiles.
pub const LATENCY_SPAN: Duration = Duration::from_secs(60);

static BOARD: LazyLock<Mutex<BTreeMap<String, StreamHealth>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// One stream's entry on the board (cheap to clone: a shared handle).
#[derive(Clone)]
pub struct StreamHealth(Arc<Mutex<Entry>>);

struct Entry {
    state: StreamState,
    since: Instant,
    error: Option<String>,
    reconnects: u64,
    source_errors: u64,
    frames_in: u64,
    frames_out: u64,
    windows: u64,
    dropped: u64,
    last_window: Option<Instant>,
    ins: VecDeque<Instant>,
    outs: VecDeque<Instant>,
    latencies: VecDeque<(Instant, f64)>,
}

impl Entry {
    fn new() -> Self {
        Self {
            state: StreamState::Connecting,
            since: Instant::now(),
            error: None,
            reconnects: 0,
            source_errors: 0,
            frames_in: 0,
            frames_out: 0,
            windows: 0,
            dropped: 0,
            last_window: None,
            ins: VecDeque::new(),
            outs: VecDeque::new(),
            latencies: VecDeque::new(),
        }
    }
}

/// What the board shows of one stream (`GET /api/streams`; the health panel).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HealthSnapshot {
    pub stream: String,
    /// connecting, connected, reconnecting, ended, failed.
    pub state: &'static str,
    /// Seconds in this state.
    pub state_for_s: f64,
    /// The last source error (redacted like every log line), if any.
    pub error: Option<String>,
    pub reconnects: u64,
    pub source_errors: u64,
    /// Synced frames handed on per second over the last 5 s.
    pub fps_in: f64,
    /// Frames through the frame stage (encoded or passed through) per second, last 5 s.
    pub fps_out: f64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub windows: u64,
    /// Items dropped by this stream's realtime queues and late data dropped by the
    /// synchroniser.
    pub dropped: u64,
    /// Capture of a window's newest data to its record, over the last minute (ms).
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Seconds since the last window record (none yet: `null`).
    pub last_window_s: Option<f64>,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, span: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) > span) {
        q.pop_front();
    }
}

/// The `p`-quantile (0..=1) of `v` by the nearest-rank rule; `None` for no values.
pub fn quantile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn rate(q: &VecDeque<Instant>, now: Instant) -> f64 {
    // Over the span the samples cover (a young stream is not averaged over 5 s of nothing).
    match q.front() {
        Some(first) if q.len() > 1 => {
            let secs = now.duration_since(*first).as_secs_f64().max(1e-3);
            (q.len() - 1) as f64 / secs
        }
        _ => 0.0,
    }
}

/// `stream`'s entry, created on first use.
pub fn stream(name: &str) -> StreamHealth {
    BOARD
        .lock()
        .entry(name.to_owned())
        .or_insert_with(|| StreamHealth(Arc::new(Mutex::new(Entry::new()))))
        .clone()
}

/// Every stream on the board, by name.
pub fn snapshot() -> Vec<HealthSnapshot> {
    let entries: Vec<(String, StreamHealth)> = BOARD
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    entries.into_iter().map(|(k, h)| h.snapshot(&k)).collect()
}

/// One stream's snapshot, if it is on the board.
pub fn get(name: &str) -> Option<HealthSnapshot> {
    let h = BOARD.lock().get(name).cloned()?;
    Some(h.snapshot(name))
}

impl StreamHealth {
    /// A new run of the stream: counters and error cleared, state `connecting`.
    pub fn begin(&self) {
        *self.0.lock() = Entry::new();
    }

    pub(crate) fn set_state(&self, state: StreamState) {
        let mut e = self.0.lock();
        if e.state != state {
            e.state = state;
            e.since = Instant::now();
        }
    }

    /// A failed attempt, a lost session or the final error of the source.
    pub fn source_error(&self, message: &str) {
        let mut e = self.0.lock();
        e.source_errors += 1;
        e.error = Some(message.to_owned());
    }

    /// The source started a new session after losing one.
    pub fn reconnected(&self) {
        self.0.lock().reconnects += 1;
    }

    pub fn frame_in(&self) {
        let now = Instant::now();
        let mut e = self.0.lock();
        e.frames_in += 1;
        e.ins.push_back(now);
        prune(&mut e.ins, now, RATE_SPAN);
    }

    pub fn frame_out(&self) {
        let now = Instant::now();
        let mut e = self.0.lock();
        e.frames_out += 1;
        e.outs.push_back(now);
        prune(&mut e.outs, now, RATE_SPAN);
    }

    pub fn dropped(&self, n: u64) {
        self.0.lock().dropped += n;
    }

    /// A window's record was written, `latency` after its newest data was captured.
    pub fn window(&self, latency: Option<Duration>) {
        let now = Instant::now();
        let mut e = self.0.lock();
        e.windows += 1;
        e.last_window = Some(now);
        if let Some(l) = latency {
            e.latencies.push_back((now, l.as_secs_f64() * 1e3));
        }
        while e
            .latencies
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > LATENCY_SPAN)
        {
            e.latencies.pop_front();
        }
    }

    pub fn snapshot(&self, name: &str) -> HealthSnapshot {
        let now = Instant::now();
        let mut e = self.0.lock();
        prune(&mut e.ins, now, RATE_SPAN);
        prune(&mut e.outs, now, RATE_SPAN);
        let mut lat: Vec<f64> = e
            .latencies
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= LATENCY_SPAN)
            .map(|(_, l)| *l)
            .collect();
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        // A stream that is not running has no current rate.
        let running = matches!(e.state, StreamState::Connected);
        HealthSnapshot {
            stream: name.to_owned(),
            state: e.state.name(),
            state_for_s: round(now.duration_since(e.since).as_secs_f64()),
            error: e.error.clone(),
            reconnects: e.reconnects,
            source_errors: e.source_errors,
            fps_in: if running {
                round(rate(&e.ins, now))
            } else {
                0.0
            },
            fps_out: if running {
                round(rate(&e.outs, now))
            } else {
                0.0
            },
            frames_in: e.frames_in,
            frames_out: e.frames_out,
            windows: e.windows,
            dropped: e.dropped,
            latency_p50_ms: quantile(&mut lat, 0.5).map(round),
            latency_p95_ms: quantile(&mut lat, 0.95).map(round),
            last_window_s: e
                .last_window
                .map(|t| round(now.duration_since(t).as_secs_f64())),
        }
    }
}

/// Where a stream is in its life: on the health board and as [`STREAM_STATE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Started, no data yet.
    Connecting,
    /// Data arriving.
    Connected,
    /// The source lost its input and is connecting again (with backoff).
    Reconnecting,
    /// Ended normally (end of stream, or stopped).
    Ended,
    /// Ended with an error.
    Failed,
}

impl StreamState {
    pub const ALL: [StreamState; 5] = [
        Self::Connecting,
        Self::Connected,
        Self::Reconnecting,
        Self::Ended,
        Self::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
            Self::Ended => "ended",
            Self::Failed => "failed",
        }
    }

    /// Sets `stream`'s state gauge: 1 for `self`, 0 for every other state, so a query for
    /// `sensorium_stream_state == 1` shows each stream once. Also the stream's state on the
    /// health board.
    pub fn set(self, stream: &str) {
        self::stream(stream).set_state(self);
        for s in Self::ALL {
            metrics::gauge!(STREAM_STATE, "stream" => stream.to_owned(), "state" => s.name())
                .set(if s == self { 1.0 } else { 0.0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut v, 0.95), Some(95.0));
        assert_eq!(quantile(&mut v, 1.0), Some(100.0));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }

    #[test]
    fn the_board_follows_a_stream() {
        let h = stream("status-test-a");
        h.begin();
        StreamState::Connected.set("status-test-a");
        for _ in 0..3 {
            h.frame_in();
        }
        h.frame_out();
        h.dropped(2);
        h.window(Some(Duration::from_millis(40)));
        h.window(Some(Duration::from_millis(20)));
        StreamState::Reconnecting.set("status-test-a");
        h.source_error("rtsp://cam: connection refused");
        h.reconnected();
        let s = get("status-test-a").unwrap();
        assert_eq!(s.state, "reconnecting");
        assert_eq!(
            (s.frames_in, s.frames_out, s.windows, s.dropped),
            (3, 1, 2, 2)
        );
        assert_eq!((s.reconnects, s.source_errors), (1, 1));
        assert_eq!(s.error.as_deref(), Some("rtsp://cam: connection refused"));
        assert_eq!(s.latency_p50_ms, Some(20.0));
        assert_eq!(s.latency_p95_ms, Some(40.0));
        assert_eq!(s.fps_in, 0.0, "not connected: no current rate");
        // A new run starts clean.
        h.begin();
        let s = get("status-test-a").unwrap();
        assert_eq!((s.state, s.frames_in, s.error), ("connecting", 0, None));
        assert!(snapshot().iter().any(|s| s.stream == "status-test-a"));
        assert_eq!(get("status-test-none"), None);
    }
}
