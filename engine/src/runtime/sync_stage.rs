//! The per-stream sync stage: source events through the synchroniser to the frame stage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};

use crate::frame::{SourceEvent, SyncedFrame};
use crate::metrics as m;
use crate::queue::{QueueReceiver, QueueSender, Recv};
use crate::report::StreamEnd;
use crate::source::SourceHandle;
use crate::stop::StopToken;
use crate::sync::Synchroniser;
use crate::view::ViewEvent;

use super::stage::{send, FrameMsg, StreamCtx};

/// A live stream's clock: after this long without source events, the synchroniser is
/// advanced by the wall time elapsed (not a stop poll: stopping wakes the stage at once).
const LIVE_TICK: Duration = Duration::from_millis(50);

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
    crate::status::StreamState::Connecting.set(&ctx.name);
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
            crate::status::StreamState::Connected.set(&ctx.name);
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
        StreamEnd::SourceFailed(_) | StreamEnd::StartFailed(_) => {
            crate::status::StreamState::Failed
        }
        _ => crate::status::StreamState::Ended,
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
