//! What a run reports: the types the runtime's wiring (`mod.rs`) and its stage threads
//! (`*_stage.rs`) share, so neither imports the other's.

use crate::sync::SyncStats;

/// How a stream's source side ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Still running (only seen while the runtime runs).
    Running,
    /// The source reached end of stream.
    Eos,
    /// Shutdown was requested.
    Stopped,
    /// The factory could not start the source; the message names the input.
    StartFailed(String),
    /// The source failed while running; the message names the input (not the stream).
    SourceFailed(String),
}

/// What happened to one stream.
#[derive(Clone, Debug)]
pub struct StreamReport {
    pub name: String,
    pub end: StreamEnd,
    /// The frame encoder or window model failed on this stream's data (its windows stop).
    pub model_error: Option<String>,
    pub frames: u64,
    /// Windows assembled.
    pub windows: u64,
    /// Windows written by the sink.
    pub windows_written: u64,
    /// Items (events, frames, windows) dropped by realtime queues of this stream.
    pub dropped: u64,
    /// The same drops by the stage the queue feeds (`sync`: source events, `encoder`:
    /// frames, `model`: windows).
    pub dropped_at: std::collections::BTreeMap<String, u64>,
    /// Deepest any queue of this stream was right after a send.
    pub max_queue_depth: usize,
    /// Source events the source queue accepted.
    pub events_sent: u64,
    pub sync: SyncStats,
}

impl StreamReport {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            end: StreamEnd::Running,
            model_error: None,
            frames: 0,
            windows: 0,
            windows_written: 0,
            dropped: 0,
            dropped_at: Default::default(),
            max_queue_depth: 0,
            events_sent: 0,
            sync: SyncStats::default(),
        }
    }
}

/// The outcome of [`Runtime::run`](crate::Runtime::run).
#[derive(Clone, Debug)]
pub struct RunReport {
    pub streams: Vec<StreamReport>,
    /// Writing the output failed (the run stopped there).
    pub sink_error: Option<String>,
    /// Shutdown was requested through the [`Shutdown`] token.
    pub interrupted: bool,
}

impl RunReport {
    pub fn stream(&self, name: &str) -> Option<&StreamReport> {
        self.streams.iter().find(|s| s.name == name)
    }
}
