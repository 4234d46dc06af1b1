//! Incremental streaming for the causal Q-Former, on either backend: each frame is pushed
//! through the slot layers once; its per-layer slot K/V (for later frames' causal attention)
//! and cross K/V (for the queries) stay in the backend's cache for as long as some window or
//! lookback can still use them.
//!
//! Why this is exact: with the past-only mask, `Lookback` context and absolute positions, a
//! frame's slot states at every layer depend only on its own input and the states of the
//! `lookback - 1` frames before it at the previous layer, none of which change when a
//! window slides. So a sliding window only computes its new frames' rows, and the result
//! equals [`QFormerBackend::forward_sequence`] over the stream so far (the tests prove it on
//! both backends). Other configurations (FAVOR's future mask, window-local context or
//! window-relative positions) make cached states depend on the window, so each window is
//! recomputed.
//!
//! A gap in frame indices (frames that never reached the model) restarts the lookback: the
//! cache is cleared and the next frame is treated like a stream start.

use std::collections::VecDeque;

use crate::error::{ModelError, Result};

use super::backend::{FullPlan, QFormerBackend};
use super::config::AudioSync;
use super::input::{pool_window_audio, CachedFrame, FrameInput, StreamFrame};

/// Per-stream Q-Former state: which frames are cached (bounded to `max(lookback, window)`)
/// and the backend's cache of their K/V.
pub struct QFormerStream<B: QFormerBackend> {
    frames: VecDeque<CachedFrame>,
    cache: B::Cache,
    /// Frames pushed through the slot layers (for metrics and tests).
    pub frames_computed: u64,
}

impl<B: QFormerBackend> Default for QFormerStream<B> {
    fn default() -> Self {
        Self {
            frames: VecDeque::new(),
            cache: B::Cache::default(),
            frames_computed: 0,
        }
    }
}

impl<B: QFormerBackend> QFormerStream<B> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached frames.
    pub fn cached(&self) -> usize {
        self.frames.len()
    }

    fn clear(&mut self, b: &B) {
        self.frames.clear();
        b.clear(&mut self.cache);
    }

    /// Pushes the frames of `frames` the cache does not hold yet (they follow its last
    /// frame: the caller cleared the cache on a gap) in one call to the backend.
    fn push(&mut self, b: &B, frames: &[StreamFrame], keep: usize) -> Result<()> {
        let last = self.frames.back().map(|c| c.index);
        // Window frames are contiguous: the ones not cached yet are a suffix.
        let fresh = frames
            .iter()
            .position(|f| last.is_none_or(|l| f.index > l))
            .unwrap_or(frames.len());
        let new = &frames[fresh..];
        let Some(first) = new.first() else {
            return Ok(()); // all computed already (overlapping window)
        };
        if last.is_some_and(|l| first.index != l + 1) {
            self.clear(b);
        }
        let lookback = b.config().lookback as u64;
        let prev: Vec<CachedFrame> = self
            .frames
            .iter()
            .filter(|c| c.index + lookback > first.index)
            .copied()
            .collect();
        b.push_frames(&mut self.cache, &prev, new)?;
        for f in new {
            self.frames.push_back(CachedFrame {
                index: f.index,
                valid: f.valid,
            });
        }
        self.frames_computed += new.len() as u64;
        while self.frames.len() > keep {
            if let Some(old) = self.frames.pop_front() {
                b.evict(&mut self.cache, old.index);
            }
        }
        Ok(())
    }

    /// The slot side of one window (frames in order, contiguous indices): incremental when
    /// the config allows it, else recomputed from the window's frames. With
    /// [`AudioSync::Window`] the window's audio is pooled first.
    pub fn window(&mut self, b: &B, frames: &[StreamFrame]) -> Result<B::Window> {
        let k = frames.len();
        if k == 0 {
            return Err(ModelError::InvalidInput("empty window".into()));
        }
        if frames.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(ModelError::InvalidInput(
                "window frames must have contiguous indices".into(),
            ));
        }
        let cfg = b.config();
        let pooled;
        let frames = if cfg.audio_sync == AudioSync::Window {
            let inputs: Vec<FrameInput> = frames.iter().map(|f| f.input.clone()).collect();
            let valid: Vec<bool> = frames.iter().map(|f| f.valid).collect();
            pooled = pool_window_audio(&inputs, &valid, k)?
                .into_iter()
                .zip(frames)
                .map(|(input, f)| StreamFrame {
                    index: f.index,
                    valid: f.valid,
                    input,
                })
                .collect::<Vec<_>>();
            &pooled[..]
        } else {
            frames
        };
        let first = frames[0].index;
        if !cfg.incremental() {
            let inputs: Vec<FrameInput> = frames.iter().map(|f| f.input.clone()).collect();
            let valid: Vec<bool> = frames.iter().map(|f| f.valid).collect();
            self.frames_computed += k as u64;
            return b.slot_side(&FullPlan::new(cfg, &inputs, &valid, first, k)?);
        }
        if self.frames.back().is_some_and(|c| c.index + 1 < first) {
            self.clear(b);
        }
        b.reserve(&mut self.cache, k)?;
        let keep = cfg.lookback.max(k);
        self.push(b, frames, keep)?;
        let win: Vec<CachedFrame> = self
            .frames
            .iter()
            .filter(|c| c.index >= first && c.index < first + k as u64)
            .copied()
            .collect();
        if win.len() != k {
            return Err(ModelError::InvalidInput(format!(
                "window starting at frame {first} is older than the stream's cache"
            )));
        }
        b.gather(&self.cache, &win)
    }
}
