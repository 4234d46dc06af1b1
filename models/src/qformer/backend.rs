//! The seam between the Q-Former's window and streaming logic, written once (here and in
//! [`super::stream`]), and the two backends that hold its tensors:
//!
//! - candle ([`super::QFormer`]): tensors on the CPU or a CUDA device, differentiable for training;
//! - the fused kernels ([`super::fused::KernelQFormer`]): weights and streaming caches
//!   resident on a [`sensorium_kernels::Backend`] (CUDA, or the kernels' CPU references).
//!
//! What is decided here, once, for both: the argument checks, which frames enter the slot
//! layers and at which positions ([`FullPlan`]), coarse audio pooling, and (in
//! [`super::QFormerStream`]) which frames are cached, when a gap restarts the lookback, and
//! which cached frames make a window. A backend only computes: one frame through the slot
//! layers against its cached predecessors, a window gathered from its cache, a window
//! recomputed from a plan, and the queries over a batch of windows.

use crate::error::{ModelError, Result};

use super::config::{AudioSync, PositionMode, QFormerConfig, SlotContext};
use super::input::{pool_window_audio, CachedFrame, FrameInput, QFormerOutput, StreamFrame};

/// A window's slot side recomputed from a frame sequence: the frames that enter the slot
/// layers (the window's last `k`, preceded by its context) with their position indices.
#[derive(Debug)]
pub struct FullPlan<'a> {
    /// Frames through the slot layers, oldest first.
    pub frames: &'a [FrameInput],
    /// One validity flag per frame.
    pub valid: &'a [bool],
    /// Position index of each frame (see [`PositionMode`]).
    pub positions: Vec<u64>,
    /// The window is the last `k` frames.
    pub k: usize,
    /// Frames a slot row may attend in its mask direction, counting its own
    /// (`usize::MAX`: the whole sequence).
    pub band: usize,
}

impl<'a> FullPlan<'a> {
    /// Checks the arguments and decides which frames enter the slot layers: with
    /// [`SlotContext::Window`] only the last `k` (FAVOR); with `Lookback` all of them.
    pub fn new(
        cfg: &QFormerConfig,
        frames: &'a [FrameInput],
        valid: &'a [bool],
        first_index: u64,
        k: usize,
    ) -> Result<Self> {
        let n = frames.len();
        if n == 0 || k == 0 || k > n || valid.len() != n {
            return Err(ModelError::InvalidInput(format!(
                "forward_sequence needs 1 <= k <= frames ({k}, {n}) and one flag per frame ({})",
                valid.len()
            )));
        }
        let start = match cfg.context {
            SlotContext::Window => n - k,
            SlotContext::Lookback => 0,
        };
        let (frames, valid) = (&frames[start..], &valid[start..]);
        let first = first_index + start as u64;
        let n = frames.len();
        let positions = (0..n as u64)
            .map(|i| match cfg.positions {
                PositionMode::Absolute => first + i,
                PositionMode::Window => i.saturating_sub((n - k) as u64),
            })
            .collect();
        let band = match cfg.context {
            SlotContext::Lookback => cfg.lookback,
            SlotContext::Window => usize::MAX,
        };
        Ok(Self {
            frames,
            valid,
            positions,
            k,
            band,
        })
    }

    /// Frames before the window (its context).
    pub fn context(&self) -> usize {
        self.frames.len() - self.k
    }
}

/// What a Q-Former backend computes; everything else is decided once, above and in
/// [`super::QFormerStream`].
pub trait QFormerBackend {
    /// Per-stream storage of the cached frames' per-layer K/V.
    type Cache: Default;
    /// A window's slot side, ready for the queries.
    type Window;

    /// The model's configuration.
    fn config(&self) -> &QFormerConfig;

    /// Readies `cache` for windows of `k` frames (and the lookback).
    fn reserve(&self, _cache: &mut Self::Cache, _k: usize) -> Result<()> {
        Ok(())
    }

    /// Pushes `frame` through the slot layers and caches its per-layer K/V; `prev` are the
    /// cached frames inside its lookback, oldest first (contiguous, ending just before it).
    fn push_frame(
        &self,
        cache: &mut Self::Cache,
        prev: &[CachedFrame],
        frame: &StreamFrame,
    ) -> Result<()>;

    /// Pushes a contiguous run of new frames (the first follows `prev`'s last, if any)
    /// through the slot layers; `prev` are the cached frames inside the first one's
    /// lookback. The default pushes them one by one; a backend may run them as one batch.
    fn push_frames(
        &self,
        cache: &mut Self::Cache,
        prev: &[CachedFrame],
        frames: &[StreamFrame],
    ) -> Result<()> {
        let lookback = self.config().lookback as u64;
        let mut window: Vec<CachedFrame> = prev.to_vec();
        for f in frames {
            window.retain(|c| c.index + lookback > f.index);
            self.push_frame(cache, &window, f)?;
            window.push(CachedFrame {
                index: f.index,
                valid: f.valid,
            });
        }
        Ok(())
    }

    /// Drops frame `index` from the cache (no window or lookback reaches it any more).
    fn evict(&self, _cache: &mut Self::Cache, _index: u64) {}

    /// Drops every cached frame.
    fn clear(&self, cache: &mut Self::Cache);

    /// A window of cached frames (in order, all present in the cache).
    fn gather(&self, cache: &Self::Cache, window: &[CachedFrame]) -> Result<Self::Window>;

    /// A window's slot side recomputed from `plan`.
    fn slot_side(&self, plan: &FullPlan<'_>) -> Result<Self::Window>;

    /// The queries over windows of equal length, one output row per window.
    fn query_batch(&self, windows: &[&Self::Window]) -> Result<QFormerOutput>;

    /// Reference (non-incremental) slot side: pushes `frames` (a contiguous run of one
    /// stream; `first_index` = stream index of `frames[0]`) through the slot layers at once
    /// and keeps the last `k` frames' K/V. With [`SlotContext::Window`] only the last `k`
    /// frames are used at all (FAVOR); with `Lookback`, give the frames from the stream start
    /// (or at least `layers * (lookback - 1)` frames before the window) to get exactly what
    /// streaming computes. With [`AudioSync::Window`] each run of `k` frames gets its mean
    /// audio first.
    fn window_full(
        &self,
        frames: &[FrameInput],
        valid: &[bool],
        first_index: u64,
        k: usize,
    ) -> Result<Self::Window> {
        let pooled;
        let frames = if self.config().audio_sync == AudioSync::Window {
            pooled = pool_window_audio(frames, valid, k)?;
            &pooled[..]
        } else {
            frames
        };
        self.slot_side(&FullPlan::new(
            self.config(),
            frames,
            valid,
            first_index,
            k,
        )?)
    }

    /// [`Self::window_full`], then the queries: the reference that streaming must equal.
    fn forward_sequence(
        &self,
        frames: &[FrameInput],
        valid: &[bool],
        first_index: u64,
        k: usize,
    ) -> Result<QFormerOutput> {
        let w = self.window_full(frames, valid, first_index, k)?;
        self.query_batch(&[&w])
    }
}
