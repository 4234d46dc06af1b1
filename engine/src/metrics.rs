//! Metric names and the Prometheus exporter. Stages record through the `metrics` facade
//! (a no-op until a recorder is installed), so the engine and its tests run the same code
//! whether or not anything scrapes it.
//!
//! Labels: `stage` (`source`, `sync`, `encoder`, `model`, `sink`) and `stream`.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
pub use metrics_exporter_prometheus::PrometheusHandle;

/// Histogram: time a stage spent on one item or batch, seconds (`stage`, `stream`).
pub const STAGE_LATENCY: &str = "sensorium_stage_latency_seconds";
/// Histogram: capture of a window's newest data to the window's output line, seconds.
pub const WINDOW_LATENCY: &str = "sensorium_window_latency_seconds";
/// Gauge: items waiting in the queue in front of a stage (`stage`, `stream`).
pub const QUEUE_DEPTH: &str = "sensorium_queue_depth";
/// Counter: items a stage took in (`stage`, `stream`).
pub const ITEMS_IN: &str = "sensorium_items_in_total";
/// Counter: items a stage handed on (`stage`, `stream`).
pub const ITEMS_OUT: &str = "sensorium_items_out_total";
/// Counter: records the sink stage wrote (`stream`, `type`: `window` or `answer`). Windows
/// and answers are the sink stage's items (`ITEMS_IN`/`ITEMS_OUT` with `stage="sink"`
/// count both); this tells them apart.
pub const RECORDS_WRITTEN: &str = "sensorium_records_written_total";
/// Counter: items dropped in front of a stage by a realtime queue, or late data dropped by
/// the synchroniser (`stage`, `stream`).
pub const ITEMS_DROPPED: &str = "sensorium_items_dropped_total";
/// Gauge: synced frames per second of wall time (`stream`).
pub const STREAM_FPS: &str = "sensorium_stream_fps";
/// Gauge: streams currently running.
pub const ACTIVE_STREAMS: &str = "sensorium_active_streams";

/// Gauge: 1 for the state a stream is in, 0 for the others (`stream`, `state`: connecting,
/// connected, reconnecting, ended, failed).
pub const STREAM_STATE: &str = "sensorium_stream_state";
/// Counter: failed connection attempts and lost sessions of a source, and its final error
/// (`stream`).
pub const SOURCE_ERRORS: &str = "sensorium_source_errors_total";
/// Counter: sessions a reconnecting source started again after losing one (`stream`).
pub const RECONNECTS: &str = "sensorium_reconnects_total";

/// Every metric name, for docs and tests.
pub const ALL: [&str; 12] = [
    STAGE_LATENCY,
    WINDOW_LATENCY,
    QUEUE_DEPTH,
    ITEMS_IN,
    ITEMS_OUT,
    RECORDS_WRITTEN,
    ITEMS_DROPPED,
    STREAM_FPS,
    ACTIVE_STREAMS,
    STREAM_STATE,
    SOURCE_ERRORS,
    RECONNECTS,
];

/// The recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A global recorder is already installed in this process.
    #[error("metrics recorder: {0}")]
    Install(String),
}

/// Latency buckets, seconds: 100 µs .. 30 s.
const BUCKETS: [f64; 14] = [
    1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// Installs the Prometheus recorder as the process's global recorder (once per process)
/// and returns the handle that renders its text (`GET /metrics` of sensorium's HTTP server,
/// which owns listening, limits and authentication).
pub fn install_prometheus() -> Result<PrometheusHandle, crate::Error> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    describe();
    Ok(handle)
}

/// Registers help texts and units (shown by the exporter).
pub fn describe() {
    describe_histogram!(
        STAGE_LATENCY,
        Unit::Seconds,
        "Time a stage spent per item or batch"
    );
    describe_histogram!(
        WINDOW_LATENCY,
        Unit::Seconds,
        "Capture of a window's newest data to its output line"
    );
    describe_gauge!(QUEUE_DEPTH, "Items waiting in front of a stage");
    describe_counter!(ITEMS_IN, "Items taken in by a stage");
    describe_counter!(ITEMS_OUT, "Items handed on by a stage");
    describe_counter!(
        RECORDS_WRITTEN,
        "Records written by the sink stage (type: window or answer)"
    );
    describe_counter!(ITEMS_DROPPED, "Items dropped in front of a stage");
    describe_gauge!(STREAM_FPS, "Synced frames per second of wall time");
    describe_gauge!(ACTIVE_STREAMS, "Streams currently running");
    describe_gauge!(
        STREAM_STATE,
        "1 for the state each stream is in (connecting, connected, reconnecting, ended, failed)"
    );
    describe_counter!(
        SOURCE_ERRORS,
        "Failed connection attempts, lost sessions and final errors of a source"
    );
    describe_counter!(
        RECONNECTS,
        "Sessions a source started again after losing one"
    );
}
