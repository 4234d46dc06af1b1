//! CPU references of every kernel, same signatures as the CUDA launches: plain loops, f32
//! storage conversions identical to the GPU's, f64 accumulation for softmax and norms.

use crate::dtype::Elem;
use crate::error::{shape, Result};
use crate::params::{AttnBias, AttnParams};

/// Fused block-causal attention (see [`AttnParams`]); `key_mask` is u8 [batch, key_frames].
/// A row with no visible key is written as zeros.
pub fn attention<T: Elem>(
    p: &AttnParams,
    q: &[T],
    k: &[T],
    v: &[T],
    bias: Option<AttnBias<'_, [f32]>>,
    key_mask: Option<&[u8]>,
    out: &mut [T],
) -> Result<()> {
    let bias_len = bias.map(|b| b.q.len().min(b.k.len()).min(b.v.len()));
    p.validate(
        q.len(),
        k.len(),
        v.len(),
        out.len(),
        bias_len,
        key_mask.map(<[u8]>::len),
    )?;
    let hd = p.head_dim;
    let mut scores = vec![0f64; p.kv_len];
    let mut qrow = vec![0f64; hd];
    let mut acc = vec![0f64; hd];
    for b in 0..p.batch {
        for h in 0..p.heads {
            let bq = |d: usize| bias.map_or(0.0, |bb| bb.q[h * hd + d] as f64);
            let bk = |d: usize| bias.map_or(0.0, |bb| bb.k[h * hd + d] as f64);
            let bv = |d: usize| bias.map_or(0.0, |bb| bb.v[h * hd + d] as f64);
            for i in 0..p.q_len {
                let qb = p.offsets[0] + b * p.q.batch + h * p.q.head + i * p.q.row;
                for (d, x) in qrow.iter_mut().enumerate() {
                    *x = (q[qb + d].to_f32() as f64 + bq(d)) * p.scale as f64;
                }
                let mut mx = f64::NEG_INFINITY;
                for (j, s) in scores.iter_mut().enumerate() {
                    let masked =
                        key_mask.is_some_and(|m| m[b * p.key_frames + j / p.slots_per_frame] == 0);
                    if masked || !p.visible(i, j) {
                        *s = f64::NEG_INFINITY;
                        continue;
                    }
                    let kb = p.offsets[1] + b * p.k.batch + h * p.k.head + j * p.k.row;
                    let dot: f64 = (0..hd)
                        .map(|d| qrow[d] * (k[kb + d].to_f32() as f64 + bk(d)))
                        .sum();
                    *s = dot;
                    mx = mx.max(dot);
                }
                acc.iter_mut().for_each(|a| *a = 0.0);
                let mut l = 0f64;
                if mx > f64::NEG_INFINITY {
                    for (j, s) in scores.iter().enumerate() {
                        if *s == f64::NEG_INFINITY {
                            continue;
                        }
                        let w = (s - mx).exp();
                        l += w;
                        let vb = p.offsets[2] + b * p.v.batch + h * p.v.head + j * p.v.row;
                        for (d, a) in acc.iter_mut().enumerate() {
                            *a += w * (v[vb + d].to_f32() as f64 + bv(d));
                        }
                    }
                }
                let ob = p.offsets[3] + b * p.o.batch + h * p.o.head + i * p.o.row;
                for d in 0..hd {
                    let y = if l > 0.0 { acc[d] / l } else { 0.0 };
                    out[ob + d] = T::from_f32(y as f32);
                }
            }
        }
    }
    Ok(())
}

/// out = LayerNorm(x + bias + residual) * gamma + beta over rows of `dim`.
#[allow(clippy::too_many_arguments)]
pub fn bias_residual_layernorm<T: Elem>(
    x: &[T],
    bias: Option<&[f32]>,
    residual: Option<&[T]>,
    gamma: &[f32],
    beta: &[f32],
    out: &mut [T],
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    check_ln(
        x.len(),
        bias.map(<[f32]>::len),
        residual.map(<[T]>::len),
        gamma.len(),
        beta.len(),
        out.len(),
        rows,
        dim,
    )?;
    let mut y = vec![0f64; dim];
    for r in 0..rows {
        let base = r * dim;
        for d in 0..dim {
            let mut t = x[base + d].to_f32() as f64;
            if let Some(b) = bias {
                t += b[d] as f64;
            }
            if let Some(res) = residual {
                t += res[base + d].to_f32() as f64;
            }
            y[d] = t;
        }
        let mean = y.iter().sum::<f64>() / dim as f64;
        let var = y.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / dim as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for d in 0..dim {
            let o = (y[d] - mean) * rstd * gamma[d] as f64 + beta[d] as f64;
            out[base + d] = T::from_f32(o as f32);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn check_ln(
    x: usize,
    bias: Option<usize>,
    residual: Option<usize>,
    gamma: usize,
    beta: usize,
    out: usize,
    rows: usize,
    dim: usize,
) -> Result<()> {
    let n = rows * dim;
    if dim == 0 || dim > 8192 {
        return Err(shape(
            "dim",
            format!("LayerNorm width {dim} outside 1..=8192"),
        ));
    }
    for (name, have, need) in [
        ("x", x, n),
        ("out", out, n),
        ("gamma", gamma, dim),
        ("beta", beta, dim),
    ] {
        if have < need {
            return Err(shape(name, format!("needs {need} elements, has {have}")));
        }
    }
    if bias.is_some_and(|b| b < dim) {
        return Err(shape("bias", format!("needs {dim} elements")));
    }
    if residual.is_some_and(|r| r < n) {
        return Err(shape("residual", format!("needs {n} elements")));
    }
    Ok(())
}

/// BERT's GELU, erf form.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// erf to ~1e-15 (series for small |x|, continued fraction via erfc for large).
pub fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Maclaurin series: erf x = 2/sqrt(pi) sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = ax;
        let mut sum = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc by Lentz's continued fraction.
        let x2 = ax * ax;
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for i in 1..200 {
            let a = i as f64 / 2.0;
            d = ax + a * d;
            d = 1.0 / d;
            c = ax + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// out[i] = act(x[i] + bias[i % dim]) with act = GELU (erf) when `gelu_on`.
pub fn bias_act<T: Elem>(
    x: &[T],
    bias: &[f32],
    out: &mut [T],
    dim: usize,
    gelu_on: bool,
) -> Result<()> {
    check_bias_act(x.len(), bias.len(), out.len(), dim)?;
    for (i, (o, xi)) in out.iter_mut().zip(x).enumerate() {
        let y = xi.to_f32() as f64 + bias[i % dim] as f64;
        *o = T::from_f32(if gelu_on { gelu(y) } else { y } as f32);
    }
    Ok(())
}

pub(crate) fn check_bias_act(x: usize, bias: usize, out: usize, dim: usize) -> Result<()> {
    if dim == 0 || x % dim != 0 {
        return Err(shape(
            "x",
            format!("length {x} is not a multiple of dim {dim}"),
        ));
    }
    if bias < dim {
        return Err(shape("bias", format!("needs {dim} elements, has {bias}")));
    }
    if out < x {
        return Err(shape("out", format!("needs {x} elements, has {out}")));
    }
    Ok(())
}

/// y[rows, out] = x[rows, inp] W^T with W HF-style [out, inp]; f32 accumulation.
pub fn linear<T: Elem>(
    x: &[T],
    w: &[T],
    y: &mut [T],
    rows: usize,
    inp: usize,
    outd: usize,
) -> Result<()> {
    check_linear(x.len(), w.len(), y.len(), rows, inp, outd)?;
    let wf: Vec<f32> = w.iter().map(|t| t.to_f32()).collect();
    let mut xr = vec![0f32; inp];
    for r in 0..rows {
        for (d, t) in xr.iter_mut().enumerate() {
            *t = x[r * inp + d].to_f32();
        }
        for o in 0..outd {
            let wr = &wf[o * inp..(o + 1) * inp];
            // 8 partial sums so the loop vectorises.
            let mut s = [0f32; 8];
            let mut ch = xr.chunks_exact(8).zip(wr.chunks_exact(8));
            for (a, b) in &mut ch {
                for l in 0..8 {
                    s[l] += a[l] * b[l];
                }
            }
            let tail: f32 = xr
                .chunks_exact(8)
                .remainder()
                .iter()
                .zip(wr.chunks_exact(8).remainder())
                .map(|(a, b)| a * b)
                .sum();
            y[r * outd + o] = T::from_f32(s.iter().sum::<f32>() + tail);
        }
    }
    Ok(())
}

pub(crate) fn check_linear(
    x: usize,
    w: usize,
    y: usize,
    rows: usize,
    inp: usize,
    outd: usize,
) -> Result<()> {
    for (name, have, need) in [
        ("x", x, rows * inp),
        ("weight", w, inp * outd),
        ("y", y, rows * outd),
    ] {
        if have < need {
            return Err(shape(name, format!("needs {need} elements, has {have}")));
        }
    }
    Ok(())
}
