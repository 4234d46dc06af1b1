//! The window stage (one thread, all streams): the window model, batched across streams (or
//! a pass-through).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use serde_json::Map;

use crate::frame::Window;
use crate::metrics as m;
use crate::model::WindowModel;
use crate::queue::{QueueReceiver, QueueSender};

use super::stage::{fail_stream, isolate, send, Inputs, SinkItem, StreamCtx};

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
                Some(model) => isolate(&windows, |refs| model.process(refs)),
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
