//! What the runtime's stage threads share: the stream context, the items between stages,
//! the policy-aware send with its metrics, round-robin inputs, failure isolation.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Select;
use metrics::{counter, gauge};
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::frame::{SyncedFrame, Window};
use crate::metrics as m;
use crate::model::StageError;
use crate::queue::{Closed, QueueReceiver, QueueSender};
use crate::report::StreamReport;
use crate::status::StreamHealth;
use crate::view::ViewHub;

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
pub(super) fn send<T>(
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

/// Per-stream inputs of a shared stage, polled round-robin.
pub(super) struct Inputs<T> {
    pub list: Vec<(usize, QueueReceiver<T>)>,
    pub next: usize,
}

impl<T> Inputs<T> {
    /// Up to `max` items across inputs (round-robin, each input in order), and the streams
    /// whose input closed. Blocks until something is ready.
    pub fn gather(&mut self, max: usize) -> (Vec<(usize, T)>, Vec<usize>) {
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

pub(super) fn fail_stream(ctx: &StreamCtx, message: String) {
    tracing::error!("stream '{}': {message}", ctx.name);
    let mut r = ctx.report.lock();
    if r.model_error.is_none() {
        r.model_error = Some(message);
    }
}

/// Why an item of a batch failed: the model's typed error, a panic, or a result count that
/// does not match the inputs.
#[derive(Debug)]
pub(super) enum ItemFailure {
    Stage(StageError),
    Panic(String),
    Count { got: usize, want: usize },
}

impl std::fmt::Display for ItemFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stage(e) => write!(f, "{e}"),
            Self::Panic(m) => write!(f, "panicked: {m}"),
            Self::Count { got, want } => write!(f, "returned {got} results for {want} inputs"),
        }
    }
}

/// Runs `f` on the whole batch; if it errors or panics, on each item alone, so that only
/// the streams whose data fails are failed. Returns one result per item.
pub(super) fn isolate<I, O>(
    items: &[I],
    mut f: impl FnMut(&[&I]) -> Result<Vec<O>, StageError>,
) -> Vec<Result<O, ItemFailure>> {
    let refs: Vec<&I> = items.iter().collect();
    let mut call = |refs: &[&I]| -> Result<Vec<O>, ItemFailure> {
        match catch_unwind(AssertUnwindSafe(|| f(refs))) {
            Ok(Ok(out)) if out.len() == refs.len() => Ok(out),
            Ok(Ok(out)) => Err(ItemFailure::Count {
                got: out.len(),
                want: refs.len(),
            }),
            Ok(Err(e)) => Err(ItemFailure::Stage(e)),
            Err(p) => Err(ItemFailure::Panic(panic_message(&*p))),
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
