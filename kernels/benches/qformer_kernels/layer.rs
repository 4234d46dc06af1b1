//! The benchmark's layer: one causal Q-Former layer at FAVOR shapes, written once over
//! [`Backend`] ops so the CPU reference and the CUDA path run the same math: slot
//! self-attention (block-causal over frames) + FFN, then query self-attention, query
//! cross-attention over the slots, query FFN; BERT post-LayerNorm everywhere. Weights stay
//! resident on the backend.
//!
//! This is a superset of the model's layer (the model has no slot FFN; the real Q-Former on
//! these ops is `sensorium_models::qformer::KernelQFormer`, checked by
//! `models/examples/qformer_check.rs`). It lives with the benchmark because the benchmark
//! compares it op for op with the same layer in PyTorch (`kernels/tools/qformer_torch_bench.py`,
//! see `kernels/BENCHMARKS.md`); `kernels/tests/bench_layer.rs` tests it.

use cudarc::cublas::{CudaBlas, Gemm};
use rand::{Rng, SeedableRng};

use sensorium_kernels::{AttnBias, AttnParams, Backend, Buf, Causal, Elem, Error, Result, Strides};

fn shape(tensor: &'static str, msg: impl Into<String>) -> Error {
    Error::Shape {
        tensor,
        msg: msg.into(),
    }
}

/// Sizes of one layer (defaults: FAVOR's causal Q-Former).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerConfig {
    /// Slot width (FAVOR: 1536 = 768 audio + 768 visual).
    pub slot_dim: usize,
    /// Heads of the slot self-attention.
    pub slot_heads: usize,
    /// Slot FFN intermediate width.
    pub slot_ffn: usize,
    /// Query width (BERT-base hidden 768).
    pub query_dim: usize,
    /// Heads of the query attentions.
    pub query_heads: usize,
    /// Query FFN intermediate width.
    pub query_ffn: usize,
    /// Learned queries per window.
    pub n_queries: usize,
    /// Slots per frame.
    pub slots_per_frame: usize,
    /// Frames per window.
    pub frames: usize,
    /// Causal direction of the slot self-attention.
    pub causal: Causal,
    /// LayerNorm epsilon (BERT: 1e-12).
    pub eps: f32,
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            slot_dim: 1536,
            slot_heads: 12,
            slot_ffn: 3072,
            query_dim: 768,
            query_heads: 12,
            query_ffn: 3072,
            n_queries: 32,
            slots_per_frame: 32,
            frames: 10,
            causal: Causal::Past,
            eps: 1e-12,
        }
    }
}

impl LayerConfig {
    /// Slots per window.
    pub fn slots(&self) -> usize {
        self.frames * self.slots_per_frame
    }
    /// Floating-point operations of one window (GEMMs + attention, visible pairs only).
    pub fn flops_per_window(&self) -> f64 {
        let (s, ds, fs) = (
            self.slots() as f64,
            self.slot_dim as f64,
            self.slot_ffn as f64,
        );
        let (q, dq, fq) = (
            self.n_queries as f64,
            self.query_dim as f64,
            self.query_ffn as f64,
        );
        let spf = self.slots_per_frame as f64;
        let f = self.frames as f64;
        let pairs = match self.causal {
            Causal::None => s * s,
            _ => spf * spf * f * (f + 1.0) / 2.0,
        };
        let slot = 2.0 * s * ds * (3.0 * ds + ds + 2.0 * fs) + 4.0 * pairs * ds;
        let query = 2.0 * q * dq * (3.0 * dq + dq + dq + dq + 2.0 * fq)
            + 2.0 * s * ds * 2.0 * dq
            + 4.0 * q * q * dq
            + 4.0 * q * s * dq;
        slot + query
    }
    /// Minimum bytes moved per call for `batch` windows: weights once + activations in/out.
    pub fn min_bytes(&self, batch: usize, elem: usize) -> f64 {
        let (ds, dq) = (self.slot_dim, self.query_dim);
        let w = 4 * ds * ds
            + 2 * ds * self.slot_ffn
            + 6 * dq * dq
            + 2 * dq * ds
            + 2 * dq * self.query_ffn;
        let act = 2 * batch * (self.slots() * ds + self.n_queries * dq);
        ((w + act) * elem) as f64
    }
}

/// One linear layer: HF weight [out, inp] in storage type, f32 bias.
#[derive(Debug)]
pub struct Linear<T> {
    /// Weight [out, inp].
    pub w: Buf<T>,
    /// Bias [out].
    pub b: Buf<f32>,
}

/// LayerNorm parameters.
#[derive(Debug)]
pub struct Norm {
    /// Scale.
    pub gamma: Buf<f32>,
    /// Shift.
    pub beta: Buf<f32>,
}

/// Weights of one layer, resident on a backend. QKV projections are fused ([3D, D]); their
/// biases are kept split because the attention kernel adds them as it loads.
#[derive(Debug)]
pub struct LayerWeights<T> {
    /// Slot Q|K|V projection [3*slot_dim, slot_dim]; bias unused (see `slot_qkv_bias`).
    pub slot_qkv: Buf<T>,
    /// Slot Q, K, V biases.
    pub slot_qkv_bias: [Buf<f32>; 3],
    /// Slot attention output projection.
    pub slot_out: Linear<T>,
    /// LayerNorm after slot attention.
    pub slot_ln1: Norm,
    /// Slot FFN in.
    pub slot_ffn1: Linear<T>,
    /// Slot FFN out.
    pub slot_ffn2: Linear<T>,
    /// LayerNorm after slot FFN.
    pub slot_ln2: Norm,
    /// Query self-attention Q|K|V [3*query_dim, query_dim].
    pub q_qkv: Buf<T>,
    /// Its biases.
    pub q_qkv_bias: [Buf<f32>; 3],
    /// Query self-attention output.
    pub q_out: Linear<T>,
    /// LayerNorm after query self-attention.
    pub q_ln1: Norm,
    /// Cross-attention query projection [query_dim, query_dim] (bias in `x_bias[0]`).
    pub x_q: Buf<T>,
    /// Cross-attention K|V projection of the slots [2*query_dim, slot_dim].
    pub x_kv: Buf<T>,
    /// Cross-attention Q, K, V biases.
    pub x_bias: [Buf<f32>; 3],
    /// Cross-attention output.
    pub x_out: Linear<T>,
    /// LayerNorm after cross-attention.
    pub x_ln: Norm,
    /// Query FFN in.
    pub q_ffn1: Linear<T>,
    /// Query FFN out.
    pub q_ffn2: Linear<T>,
    /// LayerNorm after query FFN.
    pub q_ln2: Norm,
}

/// Deterministic random host weights (scale 1/sqrt(fan_in)), for checks and benchmarks.
pub struct HostInit {
    rng: rand::rngs::StdRng,
}

impl HostInit {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        HostInit {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }
    /// Uniform in [-a, a].
    pub fn vec<T: Elem>(&mut self, n: usize, a: f32) -> Vec<T> {
        (0..n)
            .map(|_| T::from_f32(self.rng.random_range(-a..=a)))
            .collect()
    }
}

impl<T: Elem> LayerWeights<T> {
    /// Random weights uploaded to `be`.
    pub fn random(cfg: &LayerConfig, be: &Backend, seed: u64) -> Result<Self> {
        let mut init = HostInit::new(seed);
        let mut mat = |o: usize, i: usize| -> Result<Buf<T>> {
            let a = 1.0 / (i as f32).sqrt();
            be.upload(&init.vec::<T>(o * i, a))
        };
        let (ds, dq, fs, fq) = (cfg.slot_dim, cfg.query_dim, cfg.slot_ffn, cfg.query_ffn);
        let slot_qkv = mat(3 * ds, ds)?;
        let slot_out_w = mat(ds, ds)?;
        let slot_ffn1_w = mat(fs, ds)?;
        let slot_ffn2_w = mat(ds, fs)?;
        let q_qkv = mat(3 * dq, dq)?;
        let q_out_w = mat(dq, dq)?;
        let x_q = mat(dq, dq)?;
        let x_kv = mat(2 * dq, ds)?;
        let x_out_w = mat(dq, dq)?;
        let q_ffn1_w = mat(fq, dq)?;
        let q_ffn2_w = mat(dq, fq)?;
        let mut init = HostInit::new(seed ^ 0x5eed);
        let mut vecf = |n: usize, a: f32, c: f32| -> Result<Buf<f32>> {
            let v: Vec<f32> = init.vec::<f32>(n, a).into_iter().map(|x| x + c).collect();
            be.upload(&v)
        };
        let mut norm = |n: usize| -> Result<Norm> {
            Ok(Norm {
                gamma: vecf(n, 0.1, 1.0)?,
                beta: vecf(n, 0.1, 0.0)?,
            })
        };
        let slot_ln1 = norm(ds)?;
        let slot_ln2 = norm(ds)?;
        let q_ln1 = norm(dq)?;
        let x_ln = norm(dq)?;
        let q_ln2 = norm(dq)?;
        let mut b = |n: usize| vecf(n, 0.1, 0.0);
        Ok(LayerWeights {
            slot_qkv,
            slot_qkv_bias: [b(ds)?, b(ds)?, b(ds)?],
            slot_out: Linear {
                w: slot_out_w,
                b: b(ds)?,
            },
            slot_ln1,
            slot_ffn1: Linear {
                w: slot_ffn1_w,
                b: b(fs)?,
            },
            slot_ffn2: Linear {
                w: slot_ffn2_w,
                b: b(ds)?,
            },
            slot_ln2,
            q_qkv,
            q_qkv_bias: [b(dq)?, b(dq)?, b(dq)?],
            q_out: Linear {
                w: q_out_w,
                b: b(dq)?,
            },
            q_ln1,
            x_q,
            x_kv,
            x_bias: [b(dq)?, b(dq)?, b(dq)?],
            x_out: Linear {
                w: x_out_w,
                b: b(dq)?,
            },
            x_ln,
            q_ffn1: Linear {
                w: q_ffn1_w,
                b: b(fq)?,
            },
            q_ffn2: Linear {
                w: q_ffn2_w,
                b: b(dq)?,
            },
            q_ln2,
        })
    }
}

/// Preallocated intermediates for `batch` windows (reused across calls).
#[derive(Debug)]
pub struct Scratch<T> {
    batch: usize,
    qkv: Buf<T>,
    attn: Buf<T>,
    proj: Buf<T>,
    x1: Buf<T>,
    ffn: Buf<T>,
    ffn_act: Buf<T>,
    qqkv: Buf<T>,
    qattn: Buf<T>,
    qproj: Buf<T>,
    q1: Buf<T>,
    q2: Buf<T>,
    xq: Buf<T>,
    xkv: Buf<T>,
    qffn: Buf<T>,
    qffn_act: Buf<T>,
}

impl<T: Elem> Scratch<T> {
    /// Allocates intermediates for `batch` windows.
    pub fn new(cfg: &LayerConfig, be: &Backend, batch: usize) -> Result<Self> {
        let (n, m) = (batch * cfg.slots(), batch * cfg.n_queries);
        let (ds, dq) = (cfg.slot_dim, cfg.query_dim);
        Ok(Scratch {
            batch,
            qkv: be.zeros(n * 3 * ds)?,
            attn: be.zeros(n * ds)?,
            proj: be.zeros(n * ds)?,
            x1: be.zeros(n * ds)?,
            ffn: be.zeros(n * cfg.slot_ffn)?,
            ffn_act: be.zeros(n * cfg.slot_ffn)?,
            qqkv: be.zeros(m * 3 * dq)?,
            qattn: be.zeros(m * dq)?,
            qproj: be.zeros(m * dq)?,
            q1: be.zeros(m * dq)?,
            q2: be.zeros(m * dq)?,
            xq: be.zeros(m * dq)?,
            xkv: be.zeros(n * 2 * dq)?,
            qffn: be.zeros(m * cfg.query_ffn)?,
            qffn_act: be.zeros(m * cfg.query_ffn)?,
        })
    }
}

/// Runs one layer for `batch` windows.
/// - `slots`: [batch, frames*spf, slot_dim] in, `slots_out` the same shape out;
/// - `queries`: [batch, n_queries, query_dim] in, `queries_out` out;
/// - `key_mask`: optional u8 [batch, frames] (0 = padded frame, dropped as a key).
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Elem>(
    cfg: &LayerConfig,
    be: &Backend,
    w: &LayerWeights<T>,
    s: &mut Scratch<T>,
    slots: &Buf<T>,
    queries: &Buf<T>,
    key_mask: Option<&Buf<u8>>,
    slots_out: &mut Buf<T>,
    queries_out: &mut Buf<T>,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    forward_marked(
        cfg,
        be,
        w,
        s,
        slots,
        queries,
        key_mask,
        slots_out,
        queries_out,
        &mut |_| Ok(()),
    )
}

/// [`forward`] calling `mark(step)` after each step (the benchmark records an event there).
#[allow(clippy::too_many_arguments)]
pub fn forward_marked<T: Elem>(
    cfg: &LayerConfig,
    be: &Backend,
    w: &LayerWeights<T>,
    s: &mut Scratch<T>,
    slots: &Buf<T>,
    queries: &Buf<T>,
    key_mask: Option<&Buf<u8>>,
    slots_out: &mut Buf<T>,
    queries_out: &mut Buf<T>,
    mark: &mut dyn FnMut(&'static str) -> Result<()>,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    let b = s.batch;
    let (sl, nq) = (cfg.slots(), cfg.n_queries);
    let (n, m) = (b * sl, b * nq);
    let (ds, dq, fs, fq) = (cfg.slot_dim, cfg.query_dim, cfg.slot_ffn, cfg.query_ffn);
    if ds % cfg.slot_heads != 0 || dq % cfg.query_heads != 0 {
        return Err(shape(
            "heads",
            "slot_dim/query_dim must be divisible by their head counts",
        ));
    }
    if slots.len() < n * ds || slots_out.len() < n * ds {
        return Err(shape("slots", format!("needs [{b}, {sl}, {ds}]")));
    }
    if queries.len() < m * dq || queries_out.len() < m * dq {
        return Err(shape("queries", format!("needs [{b}, {nq}, {dq}]")));
    }
    let (hs, hq) = (ds / cfg.slot_heads, dq / cfg.query_heads);

    // --- slot self-attention (block-causal over frames) ---
    be.linear(slots, &w.slot_qkv, &mut s.qkv, n, ds, 3 * ds)?;
    mark("slot qkv gemm")?;
    let mut p = AttnParams::contiguous(
        b,
        cfg.slot_heads,
        sl,
        sl,
        hs,
        cfg.causal,
        cfg.slots_per_frame,
    );
    p.q = Strides::packed(sl, hs, 3 * ds);
    p.k = p.q;
    p.v = p.q;
    p.o = Strides::packed(sl, hs, ds);
    p.offsets = [0, ds, 2 * ds, 0];
    p.key_frames = cfg.frames;
    let qkv = &s.qkv;
    be.attention(
        &p,
        qkv,
        qkv,
        qkv,
        Some(bias(&w.slot_qkv_bias)),
        key_mask,
        &mut s.attn,
    )?;
    mark("slot attention")?;
    be.linear(&s.attn, &w.slot_out.w, &mut s.proj, n, ds, ds)?;
    mark("slot out gemm")?;
    be.bias_residual_layernorm(
        &s.proj,
        Some(&w.slot_out.b),
        Some(slots),
        &w.slot_ln1.gamma,
        &w.slot_ln1.beta,
        &mut s.x1,
        n,
        ds,
        cfg.eps,
    )?;
    mark("slot ln1")?;
    ffn_block(
        be,
        Ffn {
            x: &s.x1,
            up: &w.slot_ffn1,
            down: &w.slot_ffn2,
            norm: &w.slot_ln2,
            rows: n,
            dim: ds,
            hidden: fs,
            eps: cfg.eps,
            steps: [
                "slot ffn1 gemm",
                "slot bias+gelu",
                "slot ffn2 gemm",
                "slot ln2",
            ],
        },
        (&mut s.ffn, &mut s.ffn_act, &mut s.proj),
        slots_out,
        mark,
    )?;

    // --- query self-attention ---
    be.linear(queries, &w.q_qkv, &mut s.qqkv, m, dq, 3 * dq)?;
    mark("query qkv gemm")?;
    let mut p = AttnParams::contiguous(b, cfg.query_heads, nq, nq, hq, Causal::None, 1);
    p.q = Strides::packed(nq, hq, 3 * dq);
    p.k = p.q;
    p.v = p.q;
    p.o = Strides::packed(nq, hq, dq);
    p.offsets = [0, dq, 2 * dq, 0];
    let qq = &s.qqkv;
    be.attention(
        &p,
        qq,
        qq,
        qq,
        Some(bias(&w.q_qkv_bias)),
        None,
        &mut s.qattn,
    )?;
    mark("query self-attention")?;
    be.linear(&s.qattn, &w.q_out.w, &mut s.qproj, m, dq, dq)?;
    mark("query out gemm")?;
    be.bias_residual_layernorm(
        &s.qproj,
        Some(&w.q_out.b),
        Some(queries),
        &w.q_ln1.gamma,
        &w.q_ln1.beta,
        &mut s.q1,
        m,
        dq,
        cfg.eps,
    )?;
    mark("query ln1")?;

    // --- query cross-attention over the layer's output slots ---
    be.linear(&s.q1, &w.x_q, &mut s.xq, m, dq, dq)?;
    mark("cross q gemm")?;
    be.linear(slots_out, &w.x_kv, &mut s.xkv, n, ds, 2 * dq)?;
    mark("cross kv gemm")?;
    let mut p = AttnParams::contiguous(
        b,
        cfg.query_heads,
        nq,
        sl,
        hq,
        Causal::None,
        cfg.slots_per_frame,
    );
    p.q = Strides::packed(nq, hq, dq);
    p.k = Strides::packed(sl, hq, 2 * dq);
    p.v = p.k;
    p.o = p.q;
    p.offsets = [0, 0, dq, 0];
    p.key_frames = cfg.frames;
    be.attention(
        &p,
        &s.xq,
        &s.xkv,
        &s.xkv,
        Some(bias(&w.x_bias)),
        key_mask,
        &mut s.qattn,
    )?;
    mark("cross attention")?;
    be.linear(&s.qattn, &w.x_out.w, &mut s.qproj, m, dq, dq)?;
    mark("cross out gemm")?;
    be.bias_residual_layernorm(
        &s.qproj,
        Some(&w.x_out.b),
        Some(&s.q1),
        &w.x_ln.gamma,
        &w.x_ln.beta,
        &mut s.q2,
        m,
        dq,
        cfg.eps,
    )?;
    mark("cross ln")?;

    // --- query FFN ---
    ffn_block(
        be,
        Ffn {
            x: &s.q2,
            up: &w.q_ffn1,
            down: &w.q_ffn2,
            norm: &w.q_ln2,
            rows: m,
            dim: dq,
            hidden: fq,
            eps: cfg.eps,
            steps: [
                "query ffn1 gemm",
                "query bias+gelu",
                "query ffn2 gemm",
                "query ln2",
            ],
        },
        (&mut s.qffn, &mut s.qffn_act, &mut s.qproj),
        queries_out,
        mark,
    )
}

/// One FFN sub-block: its input, weights, sizes and the names of its four steps.
struct Ffn<'a, T> {
    x: &'a Buf<T>,
    up: &'a Linear<T>,
    down: &'a Linear<T>,
    norm: &'a Norm,
    rows: usize,
    dim: usize,
    hidden: usize,
    eps: f32,
    steps: [&'static str; 4],
}

/// `out = LayerNorm(x + W2·gelu(W1·x + b1) + b2)` over `rows` rows (the FFN of both the slot
/// and the query side), with scratch `(hidden, activated, projected)`.
fn ffn_block<T: Elem>(
    be: &Backend,
    f: Ffn<'_, T>,
    (h, act, proj): (&mut Buf<T>, &mut Buf<T>, &mut Buf<T>),
    out: &mut Buf<T>,
    mark: &mut dyn FnMut(&'static str) -> Result<()>,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    be.linear(f.x, &f.up.w, h, f.rows, f.dim, f.hidden)?;
    mark(f.steps[0])?;
    be.bias_act(h, &f.up.b, act, f.hidden, true)?;
    mark(f.steps[1])?;
    be.linear(act, &f.down.w, proj, f.rows, f.hidden, f.dim)?;
    mark(f.steps[2])?;
    be.bias_residual_layernorm(
        proj,
        Some(&f.down.b),
        Some(f.x),
        &f.norm.gamma,
        &f.norm.beta,
        out,
        f.rows,
        f.dim,
        f.eps,
    )?;
    mark(f.steps[3])
}

fn bias(x: &[Buf<f32>; 3]) -> AttnBias<'_, Buf<f32>> {
    AttnBias {
        q: &x[0],
        k: &x[1],
        v: &x[2],
    }
}
