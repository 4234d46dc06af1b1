//! The sink stage: each window's one record, built here whatever stages it went through,
//! and written through the run's output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::histogram;
use serde_json::Value;

use crate::frame::Window;
use crate::metrics as m;
use crate::queue::QueueReceiver;
use crate::sink::{merge_fields, window_record, RecordKind, RecordOutput};
use crate::stop::StopToken;
use crate::view::ViewEvent;

use super::stage::{SinkItem, StreamCtx};

/// Writes each window's record through the run's output; on a write error stops the run and
/// discards the rest.
pub(crate) fn sink_stage(
    output: RecordOutput,
    rx: QueueReceiver<SinkItem>,
    ctxs: Vec<Arc<StreamCtx>>,
    stop: StopToken,
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
            // The output keeps the error (the run's report and exit code 5).
            Err(_) => {
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
