//! GPU-vs-CPU checks of every kernel on fresh random inputs at sizes crossing warp and block
//! boundaries, with outputs poisoned with NaN first; used by the binary and the GPU tests.

use std::sync::Arc;

use rand::{Rng, SeedableRng};

use crate::cpu;
use crate::cuda::{AttnKernel, Gpu, LnVariant};
use crate::dtype::{DType, Elem};
use crate::error::Result;

use crate::params::{AttnBias, AttnParams, Causal};

/// One comparison's outcome.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// What was compared.
    pub name: String,
    /// ||gpu - cpu|| / ||cpu||; NaN when the GPU output held NaN.
    pub rel_err: f64,
    /// Tolerance used.
    pub tol: f64,
}

impl CheckResult {
    /// NaN never passes.
    pub fn passed(&self) -> bool {
        self.rel_err.is_finite() && self.rel_err <= self.tol
    }
}

/// Relative L2 error; NaN/inf anywhere in `out` gives NaN.
pub fn rel_err<T: Elem>(out: &[T], reference: &[T]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (o, r) in out.iter().zip(reference) {
        let (o, r) = (o.to_f32() as f64, r.to_f32() as f64);
        if !o.is_finite() {
            return f64::NAN;
        }
        num += (o - r) * (o - r);
        den += r * r;
    }
    if out.len() != reference.len() {
        return f64::NAN;
    }
    (num / den.max(1e-300)).sqrt()
}

/// Tolerance of a storage type: 1e-5 for f32, 1e-2 for 16-bit storage.
pub fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 1e-5,
        _ => 1e-2,
    }
}

fn rand_vec<T: Elem>(rng: &mut impl Rng, n: usize) -> Vec<T> {
    (0..n)
        .map(|_| T::from_f32(rng.random_range(-1.0f32..1.0)))
        .collect()
}

/// Attention case: batch, heads, frames, spf, head_dim, causal, with key mask, incremental.
#[derive(Debug, Clone, Copy)]
pub struct AttnCase {
    /// Windows.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Frames in the key sequence.
    pub frames: usize,
    /// Slots per frame.
    pub spf: usize,
    /// Head dim.
    pub hd: usize,
    /// Direction.
    pub causal: Causal,
    /// Use a key mask dropping random frames.
    pub mask: bool,
    /// Query rows: None = all slots (self-attention), Some(n) = n cross-attention queries.
    pub queries: Option<usize>,
    /// Incremental: only the last frame's rows as queries (q_offset = (frames-1)*spf).
    pub incremental: bool,
}

/// Runs one attention case on the GPU and the CPU reference.
pub fn check_attention<T: Elem>(
    g: &Arc<Gpu>,
    which: AttnKernel,
    c: AttnCase,
    seed: u64,
) -> Result<CheckResult> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let kv = c.frames * c.spf;
    let (q_len, causal, q_off) = match (c.queries, c.incremental) {
        (Some(n), _) => (n, Causal::None, 0),
        (None, true) => (c.spf, c.causal, (c.frames - 1) * c.spf),
        (None, false) => (kv, c.causal, 0),
    };
    let mut p = AttnParams::contiguous(c.batch, c.heads, q_len, kv, c.hd, causal, c.spf);
    p.q_offset = q_off;
    p.scale = 1.0 / (c.hd as f32).sqrt();
    let q: Vec<T> = rand_vec(&mut rng, c.batch * c.heads * q_len * c.hd);
    let k: Vec<T> = rand_vec(&mut rng, c.batch * c.heads * kv * c.hd);
    let v: Vec<T> = rand_vec(&mut rng, c.batch * c.heads * kv * c.hd);
    let bq: Vec<f32> = rand_vec(&mut rng, c.heads * c.hd);
    let bk: Vec<f32> = rand_vec(&mut rng, c.heads * c.hd);
    let bv: Vec<f32> = rand_vec(&mut rng, c.heads * c.hd);
    let mask: Vec<u8> = (0..c.batch * c.frames)
        .map(|_| u8::from(rng.random_bool(0.7)))
        .collect();
    let mut reference = vec![T::default(); q.len()];
    let hb = AttnBias {
        q: &bq[..],
        k: &bk[..],
        v: &bv[..],
    };
    cpu::attention(
        &p,
        &q,
        &k,
        &v,
        Some(hb),
        c.mask.then_some(&mask[..]),
        &mut reference,
    )?;

    let (dq, dk, dv) = (g.upload(&q)?, g.upload(&k)?, g.upload(&v)?);
    let (dbq, dbk, dbv, dm) = (
        g.upload(&bq)?,
        g.upload(&bk)?,
        g.upload(&bv)?,
        g.upload(&mask)?,
    );
    let mut out = g.zeros::<T>(q.len())?;
    g.fill_nan(&mut out)?;
    let db = AttnBias {
        q: &dbq,
        k: &dbk,
        v: &dbv,
    };
    g.attention_with(
        which,
        &p,
        &dq,
        &dk,
        &dv,
        Some(db),
        c.mask.then_some(&dm),
        &mut out,
    )?;
    let got = g.download(&out)?;
    let name = format!(
        "attention[{:?}] {} b{} h{} frames{} spf{} hd{} {:?}{}{}{}",
        which,
        T::DTYPE.name(),
        c.batch,
        c.heads,
        c.frames,
        c.spf,
        c.hd,
        causal,
        if c.mask { " +mask" } else { "" },
        c.queries.map_or(String::new(), |n| format!(" cross q{n}")),
        if c.incremental { " incremental" } else { "" }
    );
    Ok(CheckResult {
        name,
        rel_err: rel_err(&got, &reference),
        tol: tol(T::DTYPE),
    })
}

/// LayerNorm (with bias and residual) and bias+GELU at width `dim`.
pub fn check_norm_act<T: Elem>(
    g: &Arc<Gpu>,
    rows: usize,
    dim: usize,
    seed: u64,
) -> Result<Vec<CheckResult>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let x: Vec<T> = rand_vec(&mut rng, rows * dim);
    let r: Vec<T> = rand_vec(&mut rng, rows * dim);
    let b: Vec<f32> = rand_vec(&mut rng, dim);
    let gm: Vec<f32> = rand_vec(&mut rng, dim);
    let bt: Vec<f32> = rand_vec(&mut rng, dim);
    let mut ref_ln = vec![T::default(); rows * dim];
    cpu::bias_residual_layernorm(
        &x,
        Some(&b),
        Some(&r),
        &gm,
        &bt,
        &mut ref_ln,
        rows,
        dim,
        1e-12,
    )?;
    let mut ref_act = vec![T::default(); rows * dim];
    cpu::bias_act(&x, &b, &mut ref_act, dim, true)?;
    let (dx, dr, db, dg, dbt) = (
        g.upload(&x)?,
        g.upload(&r)?,
        g.upload(&b)?,
        g.upload(&gm)?,
        g.upload(&bt)?,
    );
    let mut out = g.zeros::<T>(rows * dim)?;
    g.fill_nan(&mut out)?;
    g.bias_residual_layernorm(
        &dx,
        Some(&db),
        Some(&dr),
        &dg,
        &dbt,
        &mut out,
        rows,
        dim,
        1e-12,
    )?;
    let ln = g.download(&out)?;
    g.fill_nan(&mut out)?;
    g.bias_act(&dx, &db, &mut out, dim, true)?;
    let act = g.download(&out)?;
    let t = tol(T::DTYPE);
    Ok(vec![
        CheckResult {
            name: format!("bias_residual_layernorm {} {rows}x{dim}", T::DTYPE.name()),
            rel_err: rel_err(&ln, &ref_ln),
            tol: t,
        },
        CheckResult {
            name: format!("bias_gelu {} {rows}x{dim}", T::DTYPE.name()),
            rel_err: rel_err(&act, &ref_act),
            tol: t,
        },
    ])
}

/// The full sweep the binary's `check` runs.
pub fn run_all(g: &Arc<Gpu>) -> Result<Vec<CheckResult>> {
    let mut res = Vec::new();
    let mut seed = 1u64;
    let mut next = || {
        seed += 1;
        seed
    };
    for dt in DType::ALL {
        for &spf in &[1usize, 7, 32, 33] {
            for &frames in &[1usize, 3, 10, 17] {
                for causal in [Causal::Past, Causal::Future] {
                    let c = AttnCase {
                        batch: 2,
                        heads: 2,
                        frames,
                        spf,
                        hd: 64,
                        causal,
                        mask: frames == 10,
                        queries: None,
                        incremental: false,
                    };
                    res.extend(attn_dt(g, dt, c, next())?);
                }
                let inc = AttnCase {
                    batch: 2,
                    heads: 2,
                    frames,
                    spf,
                    hd: 64,
                    causal: Causal::Past,
                    mask: false,
                    queries: None,
                    incremental: true,
                };
                res.extend(attn_dt(g, dt, inc, next())?);
                let cross = AttnCase {
                    batch: 3,
                    heads: 2,
                    frames,
                    spf,
                    hd: 64,
                    causal: Causal::None,
                    mask: true,
                    queries: Some(32),
                    incremental: false,
                };
                res.extend(attn_dt(g, dt, cross, next())?);
            }
        }
        let fav = AttnCase {
            batch: 2,
            heads: 12,
            frames: 10,
            spf: 32,
            hd: 128,
            causal: Causal::Past,
            mask: true,
            queries: None,
            incremental: false,
        };
        res.extend(attn_dt(g, dt, fav, next())?);
        for v in [LnVariant::WarpPerRow, LnVariant::BlockPerRow] {
            g.set_ln_variant(v);
            for &(rows, dim) in &[
                (3usize, 33usize),
                (17, 768),
                (5, 1536),
                (2, 3072),
                (9, 8192),
            ] {
                let mut r = match dt {
                    DType::F32 => check_norm_act::<f32>(g, rows, dim, next())?,
                    DType::F16 => check_norm_act::<half::f16>(g, rows, dim, next())?,
                    DType::BF16 => check_norm_act::<half::bf16>(g, rows, dim, next())?,
                };
                r.iter_mut()
                    .for_each(|c| c.name = format!("{} [{v:?}]", c.name));
                res.extend(r);
            }
        }
        g.set_ln_variant(LnVariant::BlockPerRow);
    }
    Ok(res)
}

/// Runs a case through the CUDA-core kernel and, for 16-bit storage, the tensor-core kernel.
fn attn_dt(g: &Arc<Gpu>, dt: DType, c: AttnCase, seed: u64) -> Result<Vec<CheckResult>> {
    let mut kernels = vec![AttnKernel::Scalar];
    if dt != DType::F32
        && g.tensor_core_ok(
            dt,
            &AttnParams::contiguous(1, 1, 1, 1, c.hd, Causal::None, 1),
        )
    {
        kernels.push(AttnKernel::TensorCore);
    }
    let mut out = Vec::new();
    for k in kernels {
        out.push(match dt {
            DType::F32 => check_attention::<f32>(g, k, c, seed),
            DType::F16 => check_attention::<half::f16>(g, k, c, seed),
            DType::BF16 => check_attention::<half::bf16>(g, k, c, seed),
        }?);
    }
    Ok(out)
}
