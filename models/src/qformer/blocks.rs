//! The Q-Former's blocks, shaped like BLIP-2/FAVOR `Qformer.py` (a modified HF BERT):
//! `BertAttention` = `self.{query,key,value}` + `output.{dense,LayerNorm}` (post-LN
//! residual), and the query feed-forward `intermediate_query.dense` ->
//! `output_query.{dense,LayerNorm}`. K/V projection is split from the attention so that the
//! streaming path can cache it.

use candle_core::Tensor;

use crate::checkpoint::{LayerNorm, Linear, Weights};
use crate::error::Result;
use crate::ops::{self, Activation};

/// HF `BertAttention` (self or cross): `LN(dense(MHA(q_in, kv_in)) + q_in)`.
#[derive(Debug)]
pub struct BertAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub dense: Linear,
    pub ln: LayerNorm,
    pub heads: usize,
}

impl BertAttention {
    /// `q_width` is the width of the attending states (and the output), `kv_width` that of
    /// the attended states.
    pub fn new(
        vb: &Weights,
        q_width: usize,
        kv_width: usize,
        heads: usize,
        eps: f64,
    ) -> Result<Self> {
        let s = vb.pp("self");
        let o = vb.pp("output");
        Ok(Self {
            query: s.linear(q_width, q_width, true, "query")?,
            key: s.linear(kv_width, q_width, true, "key")?,
            value: s.linear(kv_width, q_width, true, "value")?,
            dense: o.linear(q_width, q_width, true, "dense")?,
            ln: o.layer_norm(q_width, eps, "LayerNorm")?,
            heads,
        })
    }

    /// Head-split keys and values `[B, heads, T, dh]` of the attended states `[B, T, W]`.
    pub fn kv(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            ops::split_heads(&self.key.forward(x)?, self.heads)?,
            ops::split_heads(&self.value.forward(x)?, self.heads)?,
        ))
    }

    /// Attends `x` `[B, Tq, W]` over precomputed head-split `k`, `v` with an additive mask.
    pub fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let q = ops::split_heads(&self.query.forward(x)?, self.heads)?;
        let dh = q.dim(3)?;
        let o = ops::attention(&q, k, v, mask, 1.0 / (dh as f64).sqrt())?;
        let h = self.dense.forward(&ops::merge_heads(&o)?)?;
        self.ln.forward(&(h + x)?)
    }

    /// Full block on `x` attending `kv_in`.
    pub fn forward(
        &self,
        x: &Tensor,
        kv_in: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (k, v) = self.kv(kv_in)?;
        self.attend(x, &k, &v, mask)
    }
}

/// The query feed-forward: `LN(output_query.dense(act(intermediate_query.dense(x))) + x)`.
#[derive(Debug)]
pub struct QueryFfn {
    pub intermediate: Linear,
    pub output: Linear,
    pub ln: LayerNorm,
    pub act: Activation,
}

impl QueryFfn {
    pub fn new(
        vb: &Weights,
        hidden: usize,
        inter: usize,
        eps: f64,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            intermediate: vb.linear(hidden, inter, true, "intermediate_query.dense")?,
            output: vb.linear(inter, hidden, true, "output_query.dense")?,
            ln: vb.layer_norm(hidden, eps, "output_query.LayerNorm")?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self
            .output
            .forward(&self.act.forward(&self.intermediate.forward(x)?)?)?;
        self.ln.forward(&(h + x)?)
    }
}

/// One Q-Former layer: optional causal slot self-attention, query self-attention, query
/// cross-attention to the slots, query FFN.
#[derive(Debug)]
pub struct QFormerLayer {
    /// `causal_attention` (slot self-attention, slot width), when `causal_slots`.
    pub causal: Option<BertAttention>,
    /// `attention` (query self-attention).
    pub attention: BertAttention,
    /// `crossattention` (queries -> slots).
    pub cross: BertAttention,
    pub ffn: QueryFfn,
}
