//! The frame stage (one thread, all streams): the frame encoder, batched across streams (or
//! a pass-through), then each stream's window assembler.

use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};

use crate::frame::{SyncedFrame, Window};
use crate::metrics as m;
use crate::model::FrameEncoder;
use crate::queue::{QueueReceiver, QueueSender};
use crate::window::WindowAssembler;

use super::stage::{fail_stream, isolate, send, FrameMsg, Inputs, StreamCtx};

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
                enc.encode(&refs)
            })
            .into_iter()
            .map(|r| r.map(Some))
            .collect::<Vec<_>>(),
            _ => frames.iter().map(|_| Ok(None)).collect(),
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
                            frame.features = features.map(Arc::new);
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
