//! sensorium-cluster: many sensorium workers sharing a fleet of streams through NATS
//! JetStream.
//!
//! The desired state (which streams exist, with their configs) lives in a JetStream KV
//! bucket; workers claim streams with leases (KV revisions compared-and-set, renewed every
//! tick), balance by capacity, and run each stream with the ordinary engine through a
//! [`StreamRunner`] the binary provides. Window records and answers go to JetStream subjects
//! with a per-subject expected-last-sequence, so a worker that lost its lease cannot append
//! after its successor (fencing at the store), and the lease's own deadline stops it before
//! the successor may even start (see [`lease`]). Live questions arrive by request/reply.
//!
//! One process stays exactly as it is: nothing here is used unless the binary runs
//! `sensorium worker` or `sensorium cluster ...`.

pub mod admin;
pub mod balance;
pub mod connect;
pub mod lease;
pub mod names;
pub mod publish;
pub mod spec;
pub mod worker;

pub use admin::{ClusterStatus, StreamStatus, WorkerStatus};
pub use connect::NatsOptions;
pub use names::{Kind, Names};
pub use spec::StreamSpec;
pub use worker::{RunSpec, RunningStream, StreamRunner, WorkerOptions, WorkerReport};

/// What can go wrong talking to a cluster; each kind has its own exit code in the binary.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A bad argument, config or name (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// `cluster add` of a stream the cluster already has (exit code 2).
    #[error("stream '{stream}' is already in cluster '{cluster}' (from {origin}); `sensorium cluster remove {stream}` first")]
    Duplicate {
        stream: String,
        cluster: String,
        origin: String,
    },
    /// A stream `cluster remove` was asked for that the cluster does not have (exit code 2).
    #[error("cluster '{cluster}' has no stream '{stream}'")]
    NoSuchStream { stream: String, cluster: String },
    /// The NATS server cannot be reached (exit code 7). The URL has no credentials in it.
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The NATS server refused the credentials (exit code 7).
    #[error("NATS at {url} refused the credentials: {reason}")]
    Auth { url: String, reason: String },
    /// The server answered, but JetStream failed (not enabled, out of storage...) (exit
    /// code 7).
    #[error("NATS JetStream: {0}")]
    JetStream(String),
}

/// Registers the help texts of the cluster's metrics (a worker's `--metrics`).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("sensorium_cluster_streams", "Streams this worker holds");
    describe_gauge!(
        "sensorium_cluster_load",
        "Cost of the active streams this worker holds"
    );
    describe_gauge!(
        "sensorium_cluster_target",
        "This worker's share of the cluster's cost"
    );
    describe_gauge!("sensorium_cluster_workers", "Live workers this worker sees");
    describe_counter!("sensorium_cluster_claims_total", "Leases claimed");
    describe_counter!("sensorium_cluster_releases_total", "Leases given back");
    describe_counter!(
        "sensorium_cluster_leases_lost_total",
        "Leases another worker took while this one held them (the stream stopped here)"
    );
    describe_counter!(
        "sensorium_cluster_published_total",
        "Records acknowledged by JetStream"
    );
    describe_counter!(
        "sensorium_cluster_publish_retries_total",
        "Publishes not acknowledged and tried again"
    );
    describe_counter!(
        "sensorium_cluster_publish_dropped_total",
        "Records dropped past the buffer bound while NATS was away"
    );
}

/// Milliseconds since the Unix epoch (status fields only; leases never compare wall
/// clocks).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
