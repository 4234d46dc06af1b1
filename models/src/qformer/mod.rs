//! Causal Q-Former after FAVOR (`BriansIDP/AudioVisualLLM`, `model/Qformer.py` and
//! `model/openllama.py`): per-frame slots `[audio ; visual]`, block-causal slot
//! self-attention over frames, learned queries cross-attending to the window's slots, and a
//! projection to the LLM width; plus incremental streaming with per-layer caches.

pub mod backend;
pub mod blocks;
pub mod config;
pub mod fused;
pub mod input;
pub mod model;
pub mod runner;
pub mod stream;

pub use backend::{FullPlan, QFormerBackend};
pub use config::{AudioSync, MaskDirection, PositionMode, QFormerConfig, SlotContext};
pub use fused::{KCache, KStream, KWindow, KernelQFormer};
pub use input::{pool_window_audio, CachedFrame, FrameInput, QFormerOutput, StreamFrame};
pub use model::{CandleCache, QFormer, WindowKv};
pub use runner::{QFormerRunner, RunnerStream, RunnerWindow, StoragePrecision, Variant};
pub use stream::QFormerStream;
