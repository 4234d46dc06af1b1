//! The numeric building blocks shared by every model here (linear, LayerNorm, GELU
//! variants, multi-head attention with an additive mask), written once with the exact
//! math that the CUDA kernels in crate `kernels` implement, so that a kernel can replace
//! one function without changing results beyond float rounding.

use candle_core::{DType, Result, Tensor, D};

mod grad;

/// Additive mask value for disallowed attention entries: the most negative f32, as HF's
/// `invert_attention_mask` uses. Finite (not -inf) so that a row whose keys are all masked
/// gives a uniform softmax instead of NaN, exactly like HF.
pub const MASK_NEG: f32 = f32::MIN;

/// `x W^T + b` over the last axis of `x` (any rank >= 2).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims();
    let last = dims[dims.len() - 1];
    let rows = x.elem_count() / last.max(1);
    let y = x.reshape((rows, last))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) if grad::applies(&y) => grad::add_row(&y, b)?,
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims.to_vec();
    let n = out.len();
    out[n - 1] = w.dim(0)?;
    y.reshape(out)
}

/// `x W^T` for a weight that is not being trained, inside a training graph: the same
/// product as [`linear`], but the backward pass computes only `x`'s gradient. candle 0.11.1's
/// matmul backward always computes (and keeps) the right-hand side's gradient too, which for
/// a frozen LLM is the cost and memory of training every weight. Outside a training graph it
/// is [`linear`]. CPU, f32.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.track_op() || w.track_op() {
        return linear(x, w, None);
    }
    let dims = x.dims();
    let last = dims[dims.len() - 1];
    let rows = x.elem_count() / last.max(1);
    let y = x
        .reshape((rows, last))?
        .apply_op1(FrozenMatmul(w.clone()))?;
    let mut out = dims.to_vec();
    let n = out.len();
    out[n - 1] = w.dim(0)?;
    y.reshape(out)
}

/// `x [rows, in] -> x W^T [rows, out]` with a backward for `x` only.
struct FrozenMatmul(Tensor);

impl candle_core::CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let data = storage.as_slice::<f32>()?;
        let x = match layout.contiguous_offsets() {
            Some((a, b)) => {
                Tensor::from_slice(&data[a..b], layout.shape(), &candle_core::Device::Cpu)?
            }
            None => candle_core::bail!("frozen-matmul: non-contiguous input"),
        };
        let y = x.matmul(&self.0.t()?)?;
        let shape = y.shape().clone();
        Ok((
            candle_core::CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?),
            shape,
        ))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.0)?))
    }
}

/// 1-D convolution `x [B, Cin, T]` * `w [Cout, Cin, K]` (+ `b [Cout]`), zero padding `pad`:
/// candle's kernel for inference; inside a training graph an im2col product, because
/// candle 0.11.1's `conv1d` backward gives wrong kernel gradients once the batch has more
/// than one element (it is right for batch 1; found by `train_gradients`).
pub fn conv1d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    pad: usize,
    stride: usize,
) -> Result<Tensor> {
    let y = if x.track_op() || w.track_op() {
        let (bsz, cin, t) = x.dims3()?;
        let (cout, _, k) = w.dims3()?;
        let x = x.pad_with_zeros(2, pad, pad)?;
        let out = (t + 2 * pad - k) / stride + 1;
        // cols[b, c, j, o] = x[b, c, o * stride + j]
        let cols = (0..k)
            .map(|j| {
                let span = x.narrow(2, j, (out - 1) * stride + 1)?;
                if stride == 1 {
                    Ok(span)
                } else {
                    span.pad_with_zeros(2, 0, stride - 1)?
                        .reshape((bsz, cin, out, stride))?
                        .narrow(3, 0, 1)?
                        .squeeze(3)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let cols = Tensor::stack(&cols, 2)?.reshape((bsz, cin * k, out))?;
        let y = cols
            .transpose(1, 2)?
            .contiguous()?
            .reshape((bsz * out, cin * k))?
            .matmul(&w.reshape((cout, cin * k))?.t()?)?;
        y.reshape((bsz, out, cout))?.transpose(1, 2)?.contiguous()?
    } else {
        x.conv1d(w, pad, stride, 1, 1)?
    };
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1))?),
        None => Ok(y),
    }
}

/// LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * w + b`, biased variance,
/// accumulated in f32. Inside a training graph, one fused op with its own backward.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if grad::applies(x) && w.dtype() == DType::F32 && b.dtype() == DType::F32 {
        return x.contiguous()?.apply_op3(
            &w.contiguous()?,
            &b.contiguous()?,
            grad::LayerNorm { eps: eps as f32 },
        );
    }
    let dt = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    y.broadcast_mul(w)?.broadcast_add(b)?.to_dtype(dt)
}

/// Exact GELU `x * Phi(x)` (PyTorch `gelu`, HF `"gelu"`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// Tanh-approximated GELU (HF `"gelu_pytorch_tanh"`, `"gelu_new"`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// CLIP's `x * sigmoid(1.702 x)` (HF `"quick_gelu"`).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if grad::applies(x) {
        return x.contiguous()?.apply_op1(grad::QuickGelu);
    }
    x * candle_nn::ops::sigmoid(&(x * 1.702)?)?
}

/// An activation named as in HF configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    GeluErf,
    GeluTanh,
    QuickGelu,
}

impl Activation {
    /// Parses HF `hidden_act` / `activation_function` values.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Self::GeluTanh),
            "quick_gelu" => Some(Self::QuickGelu),
            _ => None,
        }
    }

    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluErf => gelu_erf(x),
            Self::GeluTanh => gelu_tanh(x),
            Self::QuickGelu => quick_gelu(x),
        }
    }
}

/// Splits `[B, T, H*Dh]` into heads `[B, H, T, Dh]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    x.reshape((b, t, heads, d / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// Merges heads `[B, H, T, Dh]` back into `[B, T, H*Dh]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, t, h * dh))
}

/// Scaled dot-product attention on head-split tensors: `softmax(q k^T * scale + mask) v`.
/// `q`: `[B, H, Tq, Dh]`, `k`, `v`: `[B, H, Tk, Dh]`, `mask` broadcastable to
/// `[B, H, Tq, Tk]` with 0 for allowed and [`MASK_NEG`] for disallowed entries.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f64,
) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    softmax_last(&scores)?.matmul(&v.contiguous()?)
}

/// Softmax over the last axis: candle's fused kernel for inference, and the composed
/// (differentiable) form when `x` is part of a training graph. candle 0.11.1's fused
/// `softmax_last_dim` records no backward, so everything upstream of it would silently get
/// no gradient; on the CPU in f32 the training form is one fused op with its own backward.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if grad::applies(x) {
        x.contiguous()?.apply_op1(grad::Softmax)
    } else if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Relative error `max|a - b| / max(max|b|, floor)` used by every fixture comparison.
pub fn max_rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let den = b.iter().map(|y| y.abs()).fold(0f32, f32::max).max(floor);
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    num / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The training form of `conv1d` computes what candle's kernel computes.
    #[test]
    fn im2col_conv1d_equals_the_kernel() {
        let dev = Device::Cpu;
        for stride in [1, 2] {
            let x = Tensor::randn(0f32, 1.0, (2, 5, 9), &dev).unwrap();
            let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 5, 3), &dev).unwrap()).unwrap();
            let b = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
            let train = conv1d(&x, w.as_tensor(), Some(&b), 1, stride).unwrap();
            let infer = conv1d(&x, &w.as_tensor().detach(), Some(&b), 1, stride).unwrap();
            assert_eq!(train.dims(), infer.dims());
            let a = train.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let e = infer.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(max_rel_err(&a, &e, 1.0) < 1e-5, "stride {stride}");
        }
    }
}
