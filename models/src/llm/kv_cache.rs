//! A preallocated, truncatable KV cache: one fixed `[1, kv_heads, capacity, head_dim]` buffer
//! per layer for keys and one for values, written in place.
//!
//! Preallocation caps memory for always-on streams (the cache never grows past `capacity`),
//! and truncation is how a cached prefix (system prompt, stream context) is "restored": the
//! first `len` positions stay valid, later ones are simply overwritten by the next forward.

use candle_core::{DType, Device, Result, Tensor};

/// Keys and values of every layer, `len` positions valid.
#[derive(Debug)]
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (1, kv_heads, capacity, head_dim);
        let mut k = Vec::with_capacity(layers);
        let mut v = Vec::with_capacity(layers);
        for _ in 0..layers {
            k.push(Tensor::zeros(shape, dtype, device)?);
            v.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(Self {
            k,
            v,
            len: 0,
            capacity,
        })
    }

    /// Positions currently valid.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fixed number of positions the buffers hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by the buffers (constant for the cache's life).
    pub fn bytes(&self) -> usize {
        self.k
            .iter()
            .chain(self.v.iter())
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }

    /// Keeps the first `len` positions (no-op when `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Writes `k`, `v` (`[1, kv_heads, seq, head_dim]`) of `layer` at position `len` and
    /// returns the valid keys/values `[.., len + seq, ..]`. The caller advances with
    /// [`KvCache::advance`] once every layer has appended.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        if self.len + seq > self.capacity {
            candle_core::bail!(
                "KV cache full: {} + {} positions > capacity {}",
                self.len,
                seq,
                self.capacity
            );
        }
        self.k[layer].slice_set(&k.contiguous()?, 2, self.len)?;
        self.v[layer].slice_set(&v.contiguous()?, 2, self.len)?;
        let total = self.len + seq;
        Ok((
            self.k[layer].narrow(2, 0, total)?,
            self.v[layer].narrow(2, 0, total)?,
        ))
    }

    pub fn advance(&mut self, seq: usize) {
        self.len += seq;
    }
}
