//! Turning an encoder's token sequence into a fixed number of per-frame slots: keep all,
//! adaptive average pooling (PyTorch `adaptive_avg_pool1d` bins), zero padding (FAVOR pads
//! Whisper's 25 tokens per frame to 32), or the CLS token.

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// How an encoder's `[T, D]` tokens become per-frame slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "slots")]
pub enum SlotMode {
    /// All tokens as they are (CLS excluded for vision towers).
    All,
    /// Adaptive average pooling to exactly `n` slots (`n <= T`; padded with zeros if `T < n`).
    Pool(usize),
    /// Zero-pad to `n` slots when `T <= n`, else adaptive-pool to `n` (FAVOR's audio 25 -> 32).
    Pad(usize),
    /// Only the CLS token (vision towers that have one; 1 slot).
    Cls,
}

/// `adaptive_avg_pool1d` bin of output `i` of `n` over `len` inputs.
pub fn pool_bin(i: usize, n: usize, len: usize) -> (usize, usize) {
    let start = (i * len) / n;
    let end = ((i + 1) * len).div_ceil(n);
    (start, end)
}

/// Adaptive average pooling of `[B, T, D]` over T to `[B, n, D]`.
pub fn adaptive_pool(x: &Tensor, n: usize) -> Result<Tensor> {
    let (_, t, _) = x.dims3()?;
    if n == 0 || t == 0 {
        return Err(ModelError::InvalidInput(format!(
            "cannot pool {t} tokens into {n} slots"
        )));
    }
    let rows = (0..n)
        .map(|i| {
            let (s, e) = pool_bin(i, n, t);
            x.narrow(1, s, e - s)?.mean_keepdim(1)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&rows, 1)?)
}

/// Zero-pads `[B, T, D]` to `[B, n, D]` (`T <= n`).
pub fn pad_to(x: &Tensor, n: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    if t >= n {
        return Ok(x.narrow(1, 0, n)?);
    }
    let z = Tensor::zeros((b, n - t, d), x.dtype(), x.device())?;
    Ok(Tensor::cat(&[x, &z], 1)?)
}

/// Applies a [`SlotMode`] to tokens `[B, T, D]`; `cls` is the CLS token `[B, D]` if any.
pub fn to_slots(x: &Tensor, cls: Option<&Tensor>, mode: SlotMode) -> Result<Tensor> {
    let t = x.dim(1)?;
    match mode {
        SlotMode::All => Ok(x.clone()),
        SlotMode::Pool(n) if t >= n => adaptive_pool(x, n),
        SlotMode::Pool(n) | SlotMode::Pad(n) if t <= n => pad_to(x, n),
        SlotMode::Pad(n) => adaptive_pool(x, n),
        SlotMode::Pool(n) => adaptive_pool(x, n),
        SlotMode::Cls => match cls {
            Some(c) => Ok(c.unsqueeze(1)?),
            None => Err(ModelError::InvalidInput(
                "slot mode \"cls\" needs a tower with a CLS token (CLIP); SigLIP has none".into(),
            )),
        },
    }
}

/// L2 norm over the last axis, averaged: a cheap summary reported per window.
pub fn mean_norm(x: &Tensor) -> Result<f32> {
    Ok(x.sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .flatten_all()?
        .mean(0)?
        .to_scalar::<f32>()?)
}
