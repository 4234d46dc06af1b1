//! Incremental streaming for the causal Q-Former: each frame is pushed through the slot
//! layers once; its per-layer slot K/V (for later frames' causal attention) and cross K/V
//! (for the queries) are cached for as long as some window or lookback can still use them.
//!
//! Why this is exact: with the past-only mask, `Lookback` context and absolute positions, a
//! frame's slot states at every layer depend only on its own input and the states of the
//! `lookback - 1` frames before it at the previous layer, none of which change when a
//! window slides. So a sliding window only computes its new frames' rows, and the result
//! equals [`QFormer::forward_sequence`] over the stream so far (the test proves it).
//! Other configurations (FAVOR's future mask, window-local context or window-relative
//! positions) make cached states depend on the window, so each window is recomputed.
//!
//! A gap in frame indices (frames that never reached the model) restarts the lookback: the
//! cache is cleared and the next frame is treated like a stream start.

use std::collections::VecDeque;

use candle_core::Tensor;

use crate::error::{ModelError, Result};

use super::model::{FrameInput, QFormer, WindowKv};

#[derive(Debug)]
struct LayerCache {
    /// This frame's causal-attention K/V at the layer's input (`None` without causal slots).
    self_kv: Option<(Tensor, Tensor)>,
    /// This frame's cross-attention K/V of the layer's slot states.
    cross_kv: (Tensor, Tensor),
}

#[derive(Debug)]
struct CachedFrame {
    index: u64,
    valid: bool,
    layers: Vec<LayerCache>,
}

/// One frame of a window as the stream receives it.
#[derive(Clone, Debug)]
pub struct StreamFrame {
    /// Frame index within the stream.
    pub index: u64,
    /// False for padding frames of a last partial window.
    pub valid: bool,
    pub input: FrameInput,
}

/// Per-stream Q-Former state (the caches); bounded to `max(lookback, window)` frames.
#[derive(Debug, Default)]
pub struct QFormerStream {
    frames: VecDeque<CachedFrame>,
    /// Frames pushed through the slot layers (for metrics and tests).
    pub frames_computed: u64,
}

impl QFormerStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops all cached state.
    pub fn reset(&mut self) {
        self.frames.clear();
    }

    /// Number of cached frames.
    pub fn cached(&self) -> usize {
        self.frames.len()
    }

    fn push(&mut self, qf: &QFormer, f: &StreamFrame) -> Result<()> {
        if let Some(last) = self.frames.back() {
            if f.index <= last.index {
                return Ok(()); // already computed (overlapping window)
            }
            if f.index != last.index + 1 {
                self.frames.clear();
            }
        }
        let lookback = qf.cfg.lookback;
        let raw = qf.assemble(&f.input)?;
        let mut x = qf.embed(&raw, &[f.index])?;
        // Previous frames inside the lookback, oldest first.
        let prev: Vec<&CachedFrame> = self
            .frames
            .iter()
            .filter(|c| c.index + lookback as u64 > f.index)
            .collect();
        let mut valid: Vec<bool> = prev.iter().map(|c| c.valid).collect();
        valid.push(f.valid);
        let kmask = qf.key_mask(&valid)?;
        let mut layers = Vec::with_capacity(qf.layers.len());
        for (l, layer) in qf.layers.iter().enumerate() {
            let self_kv = match &layer.causal {
                Some(c) => {
                    let (k, v) = c.kv(&x)?;
                    let mut ks = Vec::with_capacity(prev.len() + 1);
                    let mut vs = Vec::with_capacity(prev.len() + 1);
                    for p in &prev {
                        let Some((pk, pv)) = &p.layers[l].self_kv else {
                            return Err(ModelError::InvalidInput(
                                "slot cache is inconsistent".into(),
                            ));
                        };
                        ks.push(pk);
                        vs.push(pv);
                    }
                    ks.push(&k);
                    vs.push(&v);
                    x = c.attend(
                        &x,
                        &Tensor::cat(&ks, 2)?,
                        &Tensor::cat(&vs, 2)?,
                        Some(&kmask),
                    )?;
                    Some((k, v))
                }
                None => None,
            };
            layers.push(LayerCache {
                self_kv,
                cross_kv: layer.cross.kv(&x)?,
            });
        }
        self.frames.push_back(CachedFrame {
            index: f.index,
            valid: f.valid,
            layers,
        });
        self.frames_computed += 1;
        Ok(())
    }

    /// The slot side of one window (frames in order, contiguous indices): incremental when
    /// the config allows it, else recomputed from the window's frames.
    pub fn window(&mut self, qf: &QFormer, frames: &[StreamFrame]) -> Result<WindowKv> {
        let k = frames.len();
        if k == 0 {
            return Err(ModelError::InvalidInput("empty window".into()));
        }
        if frames.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err(ModelError::InvalidInput(
                "window frames must have contiguous indices".into(),
            ));
        }
        if !qf.cfg.incremental() {
            let inputs: Vec<FrameInput> = frames.iter().map(|f| f.input.clone()).collect();
            let valid: Vec<bool> = frames.iter().map(|f| f.valid).collect();
            self.frames_computed += k as u64;
            return qf.window_kv_full(&inputs, &valid, frames[0].index, k);
        }
        if self
            .frames
            .back()
            .is_some_and(|b| b.index + 1 < frames[0].index)
        {
            self.frames.clear();
        }
        for f in frames {
            self.push(qf, f)?;
        }
        let keep = qf.cfg.lookback.max(k);
        while self.frames.len() > keep {
            self.frames.pop_front();
        }
        let first = frames[0].index;
        let win: Vec<&CachedFrame> = self
            .frames
            .iter()
            .filter(|c| c.index >= first && c.index < first + k as u64)
            .collect();
        if win.len() != k {
            return Err(ModelError::InvalidInput(format!(
                "window starting at frame {first} is older than the stream's cache"
            )));
        }
        let kv = (0..qf.layers.len())
            .map(|l| {
                let ks: Vec<&Tensor> = win.iter().map(|c| &c.layers[l].cross_kv.0).collect();
                let vs: Vec<&Tensor> = win.iter().map(|c| &c.layers[l].cross_kv.1).collect();
                Ok((Tensor::cat(&ks, 2)?, Tensor::cat(&vs, 2)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let valid: Vec<bool> = win.iter().map(|c| c.valid).collect();
        Ok(WindowKv {
            kv,
            mask: qf.key_mask(&valid)?,
        })
    }
}
