//! The bodies of the runtime's stage threads, one path for every stream: per-stream sync,
//! the frame stage (the encoder, batched across streams, or a pass-through; then the window
//! assembler), the window stage (the model, batched, or a pass-through) and the sink, which
//! builds each window's record. Kept apart from `runtime.rs`, which only wires them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Select;
use metrics::{counter, gauge, histogram};
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::frame::{SourceEvent, SyncedFrame, Window};
use crate::metrics as m;
use crate::model::{FrameEncoder, WindowModel};
use crate::queue::{Closed, QueueReceiver, QueueSender, Recv};
use crate::report::{StreamEnd, StreamReport};
use crate::sink::{merge_fields, window_record, RecordKind, RecordOutput};
use crate::source::SourceHandle;
use crate::status::StreamHealth;
use crate::stop::StopToken;
use crate::sync::Synchroniser;
use crate::view::{ViewEvent, ViewHub};
use crate::window::WindowAssembler;

/// A live stream's clock: after this long without source events, the synchroniser is
/// advanced by the wall time elapsed (not a stop poll: stopping wakes the stage at once).
const LIVE_TICK: Duration = Duration::from_millis(50);

/// One stream as the stages see it.
pub(crate) struct StreamCtx {
    pub name: String,
    pub report: Arc<Mutex<StreamReport>>,
    /// The stream's entry on the health board.
    pub health: StreamHealth,
    /// Watchers of frames, records and answers (the live view, the re-stream).
    pub view: Option<ViewHub>,
}

/// A window on its way to the sink, with what the window model added to its record.
pub(crate) struct SinkItem {
    pub stream: usize,
    pub window: Window,
    pub fields: Map<String, Value>,
    /// When the window model finished with the window.
    pub modelled: Instant,
}

/// What the sync thread sends to the encoder stage.
pub(crate) enum FrameMsg {
    Frame(SyncedFrame),
    /// A discontinuity: emit the padded partial window, start windows afresh.
    Flush,
}

/// Sends with the queue's policy, recording drops and depth for `stage` (the consumer).
fn send<T>(
    tx: &QueueSender<T>,
    item: T,
    stage: &'static str,
    ctx: &StreamCtx,
) -> Result<(), Closed> {
    let dropped = tx.send(item)?;
    let depth = tx.len();
    let labels = [("stage", stage.to_string()), ("stream", ctx.name.clone())];
    gauge!(m::QUEUE_DEPTH, &labels).set(depth as f64);
    let mut r = ctx.report.lock();
    if dropped > 0 {
        ctx.health.dropped(dropped);
        counter!(m::ITEMS_DROPPED, &labels).increment(dropped);
        r.dropped += dropped;
        *r.dropped_at.entry(stage.to_string()).or_default() += dropped;
    }
    r.max_queue_depth = r.max_queue_depth.max(depth);
    Ok(())
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Per stream: source events -> synchroniser -> the frame stage's queue.
pub(crate) fn sync_stage(
    ctx: Arc<StreamCtx>,
    rx: QueueReceiver<SourceEvent>,
    mut handle: Box<dyn SourceHandle>,
    mut sync: Synchroniser,
    dest: QueueSender<FrameMsg>,
    stop: StopToken,
    rx_mode: crate::queue::QueueMode,
) {
    gauge!(m::ACTIVE_STREAMS).increment(1.0);
    ctx.health.begin();
    m::StreamState::Connecting.set(&ctx.name);
    let mut connected = false;
    let labels = [("stage", "sync".to_string()), ("stream", ctx.name.clone())];
    // Register the drop counter at zero so that "nothing dropped" is visible as such.
    counter!(m::ITEMS_DROPPED, &labels).increment(0);
    let source_errors = counter!(m::SOURCE_ERRORS, "stream" => ctx.name.clone());
    source_errors.increment(0);
    counter!(m::RECONNECTS, "stream" => ctx.name.clone()).increment(0);
    let mut frames = Vec::new();
    let mut first_frame: Option<Instant> = None;
    let mut downstream_open = true;
    // For live (realtime) streams, running time keeps going while a source is silent: after
    // a quiet spell, advance the synchroniser by the wall time elapsed so that buffered
    // frames still leave within the latency bound.
    let live = matches!(rx_mode, crate::queue::QueueMode::Realtime);
    let mut last_event = Instant::now();
    let mut last_mark: Option<u64> = None;
    let end = loop {
        let ev = match rx.recv_until(&stop, live.then_some(LIVE_TICK)) {
            Recv::Item(ev) => ev,
            Recv::Timeout => {
                if let Some(mark) = last_mark {
                    let idle = last_event.elapsed().as_nanos() as u64;
                    sync.advance_to(mark.saturating_add(idle), &mut frames);
                    downstream_open &= forward(&ctx, &mut frames, &dest, &labels, &mut first_frame);
                }
                continue;
            }
            Recv::Stopped => break StreamEnd::Stopped,
            Recv::Closed => {
                break StreamEnd::SourceFailed("source stopped without end-of-stream".into())
            }
        };
        counter!(m::ITEMS_IN, &labels).increment(1);
        let discontinuity = matches!(ev, SourceEvent::Discontinuity { .. });
        if !connected && matches!(ev, SourceEvent::Video(_) | SourceEvent::Audio(_)) {
            // Later changes (reconnecting, connected again) are the source's to report.
            connected = true;
            m::StreamState::Connected.set(&ctx.name);
        }
        let end = match &ev {
            SourceEvent::Eos => Some(StreamEnd::Eos),
            SourceEvent::Error { message } => {
                source_errors.increment(1);
                ctx.health.source_error(message);
                Some(StreamEnd::SourceFailed(message.clone()))
            }
            _ => None,
        };
        let t = Instant::now();
        sync.push_event(ev, &mut frames);
        last_event = t;
        last_mark = sync.watermark();
        histogram!(m::STAGE_LATENCY, &labels).record(t.elapsed().as_secs_f64());
        downstream_open &= forward(&ctx, &mut frames, &dest, &labels, &mut first_frame);
        if discontinuity {
            // No window straddles a discontinuity: the partial one goes out padded.
            downstream_open &= send(&dest, FrameMsg::Flush, "encoder", &ctx).is_ok();
        }
        if let Some(end) = end {
            break end;
        }
        if !downstream_open {
            // Every consumer is gone (sink failed): nothing left to do for this stream.
            break StreamEnd::Stopped;
        }
    };
    // Close the source queue before stopping the source, so that a source blocked on a full
    // lossless queue wakes up (its send fails) instead of holding up `stop`.
    let stats = rx.stats().clone();
    drop(rx);
    handle.stop();
    sync.finish(&mut frames);
    forward(&ctx, &mut frames, &dest, &labels, &mut first_frame);
    // Closing the frame queue makes the frame stage emit this stream's partial window.
    drop(dest);
    {
        let mut r = ctx.report.lock();
        r.end = end;
        r.sync = sync.stats().clone();
        r.events_sent = stats.sent();
        r.dropped += stats.dropped();
        ctx.health.dropped(stats.dropped());
        if stats.dropped() > 0 {
            *r.dropped_at.entry("sync".into()).or_default() += stats.dropped();
        }
    }
    if stats.dropped() > 0 {
        let l = [("stage", "sync".to_string()), ("stream", ctx.name.clone())];
        counter!(m::ITEMS_DROPPED, &l).increment(stats.dropped());
    }
    let state = match &ctx.report.lock().end {
        StreamEnd::SourceFailed(_) | StreamEnd::StartFailed(_) => m::StreamState::Failed,
        _ => m::StreamState::Ended,
    };
    state.set(&ctx.name);
    gauge!(m::ACTIVE_STREAMS).decrement(1.0);
}

/// Hands synced frames on; `false` once the next stage is gone.
fn forward(
    ctx: &StreamCtx,
    frames: &mut Vec<SyncedFrame>,
    dest: &QueueSender<FrameMsg>,
    labels: &[(&'static str, String); 2],
    first: &mut Option<Instant>,
) -> bool {
    let mut open = true;
    for mut f in frames.drain(..) {
        f.timing.synced = Some(Instant::now());
        ctx.health.frame_in();
        if let Some(view) = ctx.view.as_ref().filter(|v| v.watched()) {
            view.publish(ViewEvent::Frame(Arc::new(f.clone())));
        }
        let n = {
            let mut r = ctx.report.lock();
            r.frames += 1;
            r.frames
        };
        let start = *first.get_or_insert_with(Instant::now);
        let secs = start.elapsed().as_secs_f64();
        if secs > 0.0 {
            gauge!(m::STREAM_FPS, "stream" => ctx.name.clone()).set(n as f64 / secs);
        }
        counter!(m::ITEMS_OUT, labels).increment(1);
        open &= send(dest, FrameMsg::Frame(f), "encoder", ctx).is_ok();
    }
    open
}

/// Per-stream inputs of a shared stage, polled round-robin.
struct Inputs<T> {
    list: Vec<(usize, QueueReceiver<T>)>,
    next: usize,
}

impl<T> Inputs<T> {
    /// Up to `max` items across inputs (round-robin, each input in order), and the streams
    /// whose input closed. Blocks until something is ready.
    fn gather(&mut self, max: usize) -> (Vec<(usize, T)>, Vec<usize>) {
        let mut items = Vec::new();
        let mut closed = Vec::new();
        for attempt in 0..2 {
            let mut progress = true;
            while items.len() < max && progress && !self.list.is_empty() {
                progress = false;
                for _ in 0..self.list.len() {
                    if items.len() >= max {
                        break;
                    }
                    let k = self.next % self.list.len();
                    self.next = self.next.wrapping_add(1);
                    match self.list[k].1.try_recv_or_closed() {
                        Ok(Some(item)) => {
                            items.push((self.list[k].0, item));
                            progress = true;
                        }
                        Ok(None) => {}
                        Err(Closed) => {
                            closed.push(self.list[k].0);
                            self.list.remove(k);
                            progress = true;
                            break;
                        }
                    }
                }
            }
            if !items.is_empty() || !closed.is_empty() || self.list.is_empty() || attempt == 1 {
                break;
            }
            // Wait for data or a closed input (no timer: a closing input wakes the select).
            let mut sel = Select::new();
            for (_, rx) in &self.list {
                sel.recv(rx.as_crossbeam());
            }
            let _ = sel.ready();
        }
        (items, closed)
    }
}

fn fail_stream(ctx: &StreamCtx, message: String) {
    tracing::error!("stream '{}': {message}", ctx.name);
    let mut r = ctx.report.lock();
    if r.model_error.is_none() {
        r.model_error = Some(message);
    }
}

/// Runs `f` on the whole batch; if it errors or panics, on each item alone, so that only
/// the streams whose data fails are failed. Returns one result per item.
fn isolate<I, O>(
    items: &[I],
    mut f: impl FnMut(&[&I]) -> Result<Vec<O>, String>,
) -> Vec<Result<O, String>> {
    let refs: Vec<&I> = items.iter().collect();
    let mut call = |refs: &[&I]| -> Result<Vec<O>, String> {
        match catch_unwind(AssertUnwindSafe(|| f(refs))) {
            Ok(Ok(out)) if out.len() == refs.len() => Ok(out),
            Ok(Ok(out)) => Err(format!(
                "returned {} results for {} inputs",
                out.len(),
                refs.len()
            )),
            Ok(Err(e)) => Err(e),
            Err(p) => Err(format!("panicked: {}", panic_message(&*p))),
        }
    };
    match call(&refs) {
        Ok(out) => out.into_iter().map(Ok).collect(),
        Err(e) if refs.len() == 1 => vec![Err(e)],
        Err(_) => refs
            .iter()
            .map(|r| call(std::slice::from_ref(r)).map(|mut v| v.remove(0)))
            .collect(),
    }
}

/// The frame stage: encodes frames (batched across streams; frames pass through unchanged
/// without an encoder), attaches their features and assembles each stream's windows.
pub(crate) fn encoder_stage(
    mut encoder: Option<Box<dyn FrameEncoder>>,
    inputs: Vec<(usize, QueueReceiver<FrameMsg>)>,
    mut assemblers: Vec<(WindowAssembler, QueueSender<Window>)>,
    ctxs: Vec<Arc<StreamCtx>>,
    batch: usize,
) {
    let name = encoder
        .as_ref()
        .map_or_else(|| "none".to_string(), |e| e.name().to_string());
    let mut inputs = Inputs {
        list: inputs,
        next: 0,
    };
    let mut dests: Vec<Option<(WindowAssembler, QueueSender<Window>)>> =
        assemblers.drain(..).map(Some).collect();
    let assemble = |dests: &mut Vec<Option<(WindowAssembler, QueueSender<Window>)>>,
                    s: usize,
                    frame: Option<SyncedFrame>| {
        if let Some((asm, dest)) = &mut dests[s] {
            let mut windows = Vec::new();
            match frame {
                Some(f) => asm.push(f, &mut windows),
                None => asm.flush(&mut windows),
            }
            for w in windows {
                ctxs[s].report.lock().windows += 1;
                let _ = send(dest, w, "model", &ctxs[s]);
            }
        }
    };
    loop {
        let (items, closed) = inputs.gather(batch);
        let items: Vec<(usize, FrameMsg)> = items
            .into_iter()
            .filter(|(s, _)| ctxs[*s].report.lock().model_error.is_none())
            .collect();
        // Encode the batch's frames together, then assemble in arrival order (a flush
        // marker sits between the frames it separates).
        let frames: Vec<&SyncedFrame> = items
            .iter()
            .filter_map(|(_, m)| match m {
                FrameMsg::Frame(f) => Some(f),
                FrameMsg::Flush => None,
            })
            .collect();
        let t = Instant::now();
        let mut results = match &mut encoder {
            Some(enc) if !frames.is_empty() => isolate(&frames, |refs| {
                let refs: Vec<&SyncedFrame> = refs.iter().map(|f| **f).collect();
                enc.encode(&refs).map_err(|e| e.to_string())
            })
            .into_iter()
            .map(|r| r.map(Some))
            .collect(),
            _ => vec![Ok(None); frames.len()],
        }
        .into_iter();
        let secs = t.elapsed().as_secs_f64();
        for (s, msg) in items {
            let mut frame = match msg {
                FrameMsg::Flush => {
                    if ctxs[s].report.lock().model_error.is_none() {
                        assemble(&mut dests, s, None);
                    }
                    continue;
                }
                FrameMsg::Frame(f) => f,
            };
            let ctx = &ctxs[s];
            let labels = [
                ("stage", "encoder".to_string()),
                ("stream", ctx.name.clone()),
            ];
            counter!(m::ITEMS_IN, &labels).increment(1);
            histogram!(m::STAGE_LATENCY, &labels).record(secs);
            match results.next() {
                Some(Ok(features)) => {
                    counter!(m::ITEMS_OUT, &labels).increment(1);
                    frame.timing.encoded = Some(Instant::now());
                    ctx.health.frame_out();
                    if ctx.report.lock().model_error.is_none() {
                        if features.is_some() {
                            frame.features = features;
                        }
                        assemble(&mut dests, s, Some(frame));
                    }
                }
                Some(Err(e)) => fail_stream(ctx, format!("frame encoder '{name}': {e}")),
                None => fail_stream(ctx, format!("frame encoder '{name}': no result")),
            }
        }
        for s in closed {
            if ctxs[s].report.lock().model_error.is_none() {
                assemble(&mut dests, s, None);
            }
            dests[s] = None;
        }
        if inputs.list.is_empty() {
            break;
        }
    }
}

/// The window stage: runs the window model (batched across streams; without one, windows
/// pass through) and hands windows with the model's fields to the sink.
pub(crate) fn model_stage(
    mut model: Option<Box<dyn WindowModel>>,
    inputs: Vec<(usize, QueueReceiver<Window>)>,
    ctxs: Vec<Arc<StreamCtx>>,
    sink: QueueSender<SinkItem>,
    batch: usize,
) {
    let name = model
        .as_ref()
        .map_or_else(|| "none".to_string(), |m| m.name().to_string());
    let mut inputs = Inputs {
        list: inputs,
        next: 0,
    };
    loop {
        let (items, closed) = inputs.gather(batch);
        let (streams, windows): (Vec<usize>, Vec<Window>) = items
            .into_iter()
            .filter(|(s, _)| ctxs[*s].report.lock().model_error.is_none())
            .unzip();
        if !windows.is_empty() {
            let t = Instant::now();
            let results = match &mut model {
                Some(model) => isolate(&windows, |refs| {
                    model.process(refs).map_err(|e| e.to_string())
                }),
                None => windows.iter().map(|_| Ok(Map::new())).collect(),
            };
            let secs = t.elapsed().as_secs_f64();
            let modelled = Instant::now();
            for ((s, window), res) in streams.into_iter().zip(windows).zip(results) {
                let ctx = &ctxs[s];
                let labels = [("stage", "model".to_string()), ("stream", ctx.name.clone())];
                counter!(m::ITEMS_IN, &labels).increment(1);
                histogram!(m::STAGE_LATENCY, &labels).record(secs);
                match res {
                    Ok(fields) => {
                        counter!(m::ITEMS_OUT, &labels).increment(1);
                        let item = SinkItem {
                            stream: s,
                            window,
                            fields,
                            modelled,
                        };
                        let _ = send(&sink, item, "sink", ctx);
                    }
                    Err(e) => {
                        fail_stream(ctx, format!("window model '{name}': {e}"));
                        if let Some(model) = &mut model {
                            let _ = catch_unwind(AssertUnwindSafe(|| model.end_stream(&ctx.name)));
                        }
                    }
                }
            }
        }
        for s in closed {
            let stream = ctxs[s].name.clone();
            if let Some(model) = &mut model {
                let _ = catch_unwind(AssertUnwindSafe(|| model.end_stream(&stream)));
            }
        }
        if inputs.list.is_empty() {
            break;
        }
    }
}

/// Writes each window's record through the run's output; on a write error stops the run and
/// discards the rest.
pub(crate) fn sink_stage(
    output: RecordOutput,
    rx: QueueReceiver<SinkItem>,
    ctxs: Vec<Arc<StreamCtx>>,
    stop: StopToken,
    error: Arc<Mutex<Option<String>>>,
) {
    let mut failed = false;
    while let Some(item) = rx.recv() {
        if failed {
            continue;
        }
        let Some(ctx) = ctxs.get(item.stream) else {
            continue;
        };
        // The window's one record: built here, whatever stages it went through.
        let mut record = window_record(&item.window);
        merge_fields(&mut record, item.fields);
        let written = Instant::now();
        let latency = item
            .window
            .newest_capture()
            .map(|c| written.saturating_duration_since(c));
        record.insert(
            "latency_ms".into(),
            latency.map_or(Value::Null, |d| ms(d.as_secs_f64())),
        );
        record.insert(
            "timing".into(),
            timing(&item.window, item.modelled, written),
        );
        let latency = latency.map(|d| d.as_secs_f64());
        let record = Value::Object(record);
        match output.write(&ctx.name, RecordKind::Window, &record) {
            Ok(()) => {
                if let Some(s) = latency {
                    histogram!(m::WINDOW_LATENCY, "stream" => ctx.name.clone()).record(s);
                }
                ctx.report.lock().windows_written += 1;
                ctx.health.window(latency.map(Duration::from_secs_f64));
                if let Some(view) = &ctx.view {
                    view.publish(ViewEvent::Window {
                        stream: item.window.stream.clone(),
                        record: Arc::new(record),
                    });
                }
            }
            Err(e) => {
                *error.lock() = Some(e.to_string());
                failed = true;
                stop.trigger();
            }
        }
    }
}

/// Milliseconds as a JSON number, to the microsecond.
fn ms(secs: f64) -> Value {
    serde_json::Number::from_f64((secs * 1e3 * 1000.0).round() / 1000.0)
        .map_or(Value::Null, Value::Number)
}

/// The record's `timing`: where the window's newest valid frame spent its time, ms:
/// `capture_to_sync` (source + synchroniser), `sync_to_encoded` (frame queue + encoder),
/// `encoded_to_model` (window assembly, window queue + window model: the Q-Former's tokens),
/// `model_to_sink` (sink queue + record). A stage that did not see the frame is `null`.
fn timing(w: &Window, modelled: Instant, written: Instant) -> Value {
    let newest = w
        .frames
        .iter()
        .zip(&w.valid)
        .filter(|(_, v)| **v)
        .map(|(f, _)| f)
        .max_by_key(|f| f.timing.synced);
    let span = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => ms(b.saturating_duration_since(a).as_secs_f64()),
        _ => Value::Null,
    };
    let (captured, synced, encoded) = newest.map_or((None, None, None), |f| {
        (f.captured, f.timing.synced, f.timing.encoded)
    });
    serde_json::json!({
        "capture_to_sync_ms": span(captured, synced),
        "sync_to_encoded_ms": span(synced, encoded),
        "encoded_to_model_ms": span(encoded, Some(modelled)),
        "model_to_sink_ms": span(Some(modelled), Some(written)),
    })
}
