//! sensorium-engine: the media-agnostic core of sensorium.
//!
//! Frame and window types, the per-stream audio-video synchroniser, the window assembler,
//! stage threads joined by bounded queues, the configuration schema, metrics and sinks.
//! Nothing here links GStreamer, CUDA or model code: sources push [`SourceEvent`]s in,
//! models are reached through small traits.

pub mod config;
pub mod error;
pub mod frame;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod rng;
pub mod runtime;
pub use runtime::{report, stop};
pub mod scene;
pub mod sink;
pub mod source;
pub mod status;
pub mod sync;

pub mod view;
pub mod window;

pub use config::load::{ConfigError, ResolvedStream};
pub use config::Config;
pub use error::Error;
pub use frame::{
    AudioChunk, DistillFeatures, EncodedFrame, EncoderInput, FrameFeatures, FrameTiming,
    SourceEvent, StreamId, SyncedFrame, VideoFrame, Window, AUDIO_RATE,
};
pub use model::{FrameEncoder, StageError, WindowModel};
pub use queue::{bounded, QueueMode, QueueReceiver, QueueSender, Recv};
pub use runtime::{RunReport, Runtime, StreamEnd, StreamReport};
pub use sink::{JsonLinesSink, MemorySink, RecordKind, RecordOutput, SinkError, WindowSink};
pub use source::{SourceFactory, SourceHandle, SourceParams, SourceStartError};
pub use stop::StopToken;
pub use sync::{SyncConfig, SyncStats, Synchroniser};
pub use view::{Interest, Subscription, ViewEvent, ViewHub};
pub use window::{WindowAssembler, WindowOrigin};
