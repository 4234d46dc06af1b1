//! The causal Q-Former on the fused kernels of crate `sensorium-kernels` (CUDA when a device
//! is present, the kernels' CPU references otherwise): the same math as [`QFormer`] (the
//! candle path, which matches the PyTorch reference), with every layer's weights uploaded
//! once and the streaming caches resident on the backend.
//!
//! What runs where: the per-frame front end (modality projections, zero padding,
//! `ln_video`, position embedding) and the query LayerNorm of the learned tokens reuse the
//! candle code on the CPU (a few MFLOP per frame) so that it stays one definition; every
//! Q-Former layer and `llama_proj` run on the backend.
//!
//! Streaming keeps, per layer, a ring of the last `lookback` frames' fused slot Q|K|V rows
//! (a new frame's slot attention reads the whole ring, with a key mask selecting the frames
//! inside the lookback; key order does not matter to softmax) and a ring of the last
//! `max(lookback, k)` frames' cross-attention K|V rows, from which a window's keys are copied
//! in frame order. Non-incremental configurations recompute each window, like the candle
//! path.

use candle_core::{DType as CDType, Device, Tensor};
use cudarc::cublas::{CudaBlas, Gemm};
use sensorium_kernels::{AttnBias, AttnParams, Backend, Buf, Causal, Elem, Strides};

use crate::checkpoint::{LayerNorm, Linear};
use crate::error::{ModelError, Result};
use crate::ops::Activation;

use super::backend::{FullPlan, QFormerBackend};
use super::blocks::BertAttention;
use super::config::{MaskDirection, QFormerConfig};
use super::input::{CachedFrame, FrameInput, QFormerOutput, StreamFrame};
use super::model::QFormer;

fn host<T: Elem>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.flatten_all()?
        .to_dtype(CDType::F32)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(T::from_f32)
        .collect())
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(CDType::F32)?.to_vec1::<f32>()?)
}

/// A linear layer resident on the backend: weight [out, inp], f32 bias [out].
struct KLinear<T> {
    w: Buf<T>,
    b: Buf<f32>,
}

impl<T: Elem> KLinear<T> {
    fn new(be: &Backend, l: &Linear, what: &str) -> Result<Self> {
        let bias = l
            .bias
            .as_ref()
            .ok_or_else(|| ModelError::InvalidInput(format!("{what}: linear without bias")))?;
        Ok(Self {
            w: be.upload(&host::<T>(&l.weight)?)?,
            b: be.upload(&host_f32(bias)?)?,
        })
    }
}

struct KNorm {
    g: Buf<f32>,
    b: Buf<f32>,
}

impl KNorm {
    fn new(be: &Backend, n: &LayerNorm) -> Result<Self> {
        Ok(Self {
            g: be.upload(&host_f32(&n.weight)?)?,
            b: be.upload(&host_f32(&n.bias)?)?,
        })
    }
}

/// A `BertAttention` on the backend. Self-attention: `qkv` is the fused [3W, W] projection;
/// cross-attention: `q` is [W, W] and `kv` the fused [2W, Wkv] projection of the keys.
struct KAttention<T> {
    q: Option<Buf<T>>,
    proj: Buf<T>,
    bias: [Buf<f32>; 3],
    dense: KLinear<T>,
    ln: KNorm,
    heads: usize,
    width: usize,
}

impl<T: Elem> KAttention<T> {
    fn new(be: &Backend, a: &BertAttention, cross: bool, what: &str) -> Result<Self> {
        let bias = |l: &Linear, n: &str| -> Result<Buf<f32>> {
            let b = l.bias.as_ref().ok_or_else(|| {
                ModelError::InvalidInput(format!("{what}.{n}: linear without bias"))
            })?;
            Ok(be.upload(&host_f32(b)?)?)
        };
        let (q, proj) = if cross {
            (
                Some(be.upload(&host::<T>(&a.query.weight)?)?),
                Tensor::cat(&[&a.key.weight, &a.value.weight], 0)?,
            )
        } else {
            (
                None,
                Tensor::cat(&[&a.query.weight, &a.key.weight, &a.value.weight], 0)?,
            )
        };
        Ok(Self {
            q,
            proj: be.upload(&host::<T>(&proj)?)?,
            bias: [
                bias(&a.query, "query")?,
                bias(&a.key, "key")?,
                bias(&a.value, "value")?,
            ],
            dense: KLinear::new(be, &a.dense, what)?,
            ln: KNorm::new(be, &a.ln)?,
            heads: a.heads,
            width: a.query.weight.dim(0)?,
        })
    }

    fn attn_bias(&self) -> AttnBias<'_, Buf<f32>> {
        AttnBias {
            q: &self.bias[0],
            k: &self.bias[1],
            v: &self.bias[2],
        }
    }
}

struct KLayer<T> {
    causal: Option<KAttention<T>>,
    attention: KAttention<T>,
    cross: KAttention<T>,
    ffn_in: KLinear<T>,
    ffn_out: KLinear<T>,
    ffn_ln: KNorm,
}

/// The causal Q-Former over [`Backend`] ops; `T` is the storage type on the device (f32,
/// f16 or bf16; arithmetic is f32).
pub struct KernelQFormer<T: Elem> {
    /// The candle model: config, front end, and the source of the uploaded weights.
    pub qf: QFormer,
    be: Backend,
    layers: Vec<KLayer<T>>,
    /// `bert.embeddings.LayerNorm(video_query_tokens)` [Q, H] on the host.
    query0: Vec<T>,
    llama: KLinear<T>,
    llm_width: usize,
}

/// A window's slot side on the backend: per layer the cross-attention K|V rows
/// [k*S, 2H] in frame order, and one validity byte per frame.
pub struct KWindow<T> {
    kv: Vec<Buf<T>>,
    mask: Vec<u8>,
}

impl<T: Elem> KWindow<T> {
    /// Frames in the window.
    pub fn frames(&self) -> usize {
        self.mask.len()
    }
}

impl<T: Elem> KernelQFormer<T>
where
    CudaBlas: Gemm<T>,
{
    /// Uploads the weights of `qf` (loaded on the CPU) to `be` once.
    pub fn new(qf: QFormer, be: Backend) -> Result<Self> {
        let act = Activation::from_hf(&qf.cfg.hidden_act);
        if act != Some(Activation::GeluErf) {
            return Err(ModelError::InvalidInput(format!(
                "hidden_act {:?} has no fused kernel (only \"gelu\", the erf form)",
                qf.cfg.hidden_act
            )));
        }
        let layers = qf
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(KLayer {
                    causal: l
                        .causal
                        .as_ref()
                        .map(|c| KAttention::new(&be, c, false, &format!("layer {i} causal")))
                        .transpose()?,
                    attention: KAttention::new(&be, &l.attention, false, "attention")?,
                    cross: KAttention::new(&be, &l.cross, true, "crossattention")?,
                    ffn_in: KLinear::new(&be, &l.ffn.intermediate, "intermediate_query")?,
                    ffn_out: KLinear::new(&be, &l.ffn.output, "output_query")?,
                    ffn_ln: KNorm::new(&be, &l.ffn.ln)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let query0 = host::<T>(&qf.query_ln.forward(&qf.query_tokens)?)?;
        let llama = KLinear::new(&be, &qf.llama_proj, "llama_proj")?;
        let llm_width = qf.llama_proj.weight.dim(0)?;
        Ok(Self {
            qf,
            be,
            layers,
            query0,
            llama,
            llm_width,
        })
    }

    /// The backend the layers run on.
    pub fn backend(&self) -> &Backend {
        &self.be
    }

    fn eps(&self) -> f32 {
        self.qf.cfg.layer_norm_eps as f32
    }

    /// Front end on the host, uploaded: `[n*S, Ws]` slot states for frames at `positions`.
    fn embed(&self, frames: &[&FrameInput], positions: &[u64]) -> Result<Buf<T>> {
        let raw = frames
            .iter()
            .map(|f| self.qf.assemble(f))
            .collect::<Result<Vec<_>>>()?;
        let x = self.qf.embed(&Tensor::cat(&raw, 0)?, positions)?;
        Ok(self.be.upload(&host::<T>(&x)?)?)
    }

    /// `LN(dense(attn) + b + residual)`: the output half of a `BertAttention`.
    fn attn_out(
        &self,
        a: &KAttention<T>,
        attn: &Buf<T>,
        res: &Buf<T>,
        rows: usize,
    ) -> Result<Buf<T>> {
        let w = a.width;
        let mut h = self.be.zeros::<T>(rows * w)?;
        self.be.linear(attn, &a.dense.w, &mut h, rows, w, w)?;
        let mut out = self.be.zeros::<T>(rows * w)?;
        self.be.bias_residual_layernorm(
            &h,
            Some(&a.dense.b),
            Some(res),
            &a.ln.g,
            &a.ln.b,
            &mut out,
            rows,
            w,
            self.eps(),
        )?;
        Ok(out)
    }

    /// Causal slot self-attention over a whole frame sequence `x` [n*S, W] (band = frames a
    /// row may see in its mask direction, counting its own).
    fn slot_layer_full(
        &self,
        a: &KAttention<T>,
        x: &Buf<T>,
        valid: &[bool],
        band: usize,
    ) -> Result<Buf<T>> {
        let (n, s, w) = (valid.len(), self.qf.cfg.slots_per_frame, a.width);
        let rows = n * s;
        let hd = w / a.heads;
        let mut qkv = self.be.zeros::<T>(rows * 3 * w)?;
        self.be.linear(x, &a.proj, &mut qkv, rows, w, 3 * w)?;
        let mut attn = self.be.zeros::<T>(rows * w)?;
        let causal = match self.qf.cfg.mask {
            MaskDirection::Past => Causal::Past,
            MaskDirection::Future => Causal::Future,
        };
        let flags = |v: &[bool]| -> Vec<u8> { v.iter().map(|b| u8::from(*b)).collect() };
        if band >= n {
            let mut p = AttnParams::contiguous(1, a.heads, rows, rows, hd, causal, s);
            p.q = Strides::packed(rows, hd, 3 * w);
            (p.k, p.v) = (p.q, p.q);
            p.o = Strides::packed(rows, hd, w);
            p.offsets = [0, w, 2 * w, 0];
            p.key_frames = n;
            let mask = self.be.upload(&flags(valid))?;
            self.be.attention(
                &p,
                &qkv,
                &qkv,
                &qkv,
                Some(a.attn_bias()),
                Some(&mask),
                &mut attn,
            )?;
        } else {
            // A band narrower than the sequence: one call per query frame over its
            // contiguous range of visible key frames.
            for i in 0..n {
                let (lo, hi) = match self.qf.cfg.mask {
                    MaskDirection::Past => (i + 1 - band.min(i + 1), i + 1),
                    MaskDirection::Future => (i, (i + band).min(n)),
                };
                let kv_rows = (hi - lo) * s;
                let mut p = AttnParams::contiguous(1, a.heads, s, kv_rows, hd, Causal::None, s);
                p.q = Strides::packed(s, hd, 3 * w);
                p.k = Strides::packed(kv_rows, hd, 3 * w);
                p.v = p.k;
                p.o = Strides::packed(s, hd, w);
                p.offsets = [
                    i * s * 3 * w,
                    lo * s * 3 * w + w,
                    lo * s * 3 * w + 2 * w,
                    i * s * w,
                ];
                p.key_frames = hi - lo;
                let mask = self.be.upload(&flags(&valid[lo..hi]))?;
                self.be.attention(
                    &p,
                    &qkv,
                    &qkv,
                    &qkv,
                    Some(a.attn_bias()),
                    Some(&mask),
                    &mut attn,
                )?;
            }
        }
        self.attn_out(a, &attn, x, rows)
    }
}

/// The kernels backend's per-stream cache (see the module docs): per layer with causal slots
/// a ring of the last `lookback` frames' slot Q|K|V rows (frame `j` at ring slot
/// `j % lookback`), and per layer a ring of the last `max(lookback, k)` frames' cross K|V
/// rows (frame `j` at `j % cap`). Which frames the rings hold is the stream's business
/// ([`super::QFormerStream`]); a cleared cache keeps its buffers for reuse.
pub struct KCache<T> {
    slot_rings: Vec<Buf<T>>,
    cross_rings: Vec<Buf<T>>,
    /// Frames each cross ring holds (0 until the first window).
    cap: usize,
}

impl<T> Default for KCache<T> {
    fn default() -> Self {
        Self {
            slot_rings: Vec::new(),
            cross_rings: Vec::new(),
            cap: 0,
        }
    }
}

/// A stream on the kernels backend.
pub type KStream<T> = super::QFormerStream<KernelQFormer<T>>;

impl<T: Elem> QFormerBackend for KernelQFormer<T>
where
    CudaBlas: Gemm<T>,
{
    type Cache = KCache<T>;
    type Window = KWindow<T>;

    fn config(&self) -> &QFormerConfig {
        &self.qf.cfg
    }

    fn reserve(&self, cache: &mut KCache<T>, k: usize) -> Result<()> {
        let cfg = &self.qf.cfg;
        let (s, ws, h) = (cfg.slots_per_frame, cfg.slot_width(), cfg.hidden_size);
        let l = cfg.lookback;
        if cache.slot_rings.is_empty() {
            for layer in &self.layers {
                if layer.causal.is_some() {
                    cache.slot_rings.push(self.be.zeros::<T>(l * s * 3 * ws)?);
                }
            }
        }
        let cap = l.max(k);
        if cache.cap < cap {
            if cache.cap != 0 {
                return Err(ModelError::InvalidInput(format!(
                    "window of {k} frames exceeds this stream's cache of {} frames (set by its \
                     first window); start a new stream to change the window length",
                    cache.cap
                )));
            }
            cache.cross_rings = (0..self.layers.len())
                .map(|_| self.be.zeros::<T>(cap * s * 2 * h))
                .collect::<std::result::Result<_, _>>()?;
            cache.cap = cap;
        }
        Ok(())
    }

    fn push_frame(
        &self,
        cache: &mut KCache<T>,
        prev: &[CachedFrame],
        f: &StreamFrame,
    ) -> Result<()> {
        let cfg = &self.qf.cfg;
        let (s, ws, h, l) = (
            cfg.slots_per_frame,
            cfg.slot_width(),
            cfg.hidden_size,
            cfg.lookback,
        );
        if cache.cap == 0 {
            return Err(ModelError::InvalidInput("stream cache not reserved".into()));
        }
        let slot = (f.index % l as u64) as usize;
        // Key mask over the lookback ring: the frames inside the lookback that are valid.
        let mut mask = vec![0u8; l];
        for c in prev.iter().chain(std::iter::once(&CachedFrame {
            index: f.index,
            valid: f.valid,
        })) {
            mask[(c.index % l as u64) as usize] = u8::from(c.valid);
        }
        let mask = self.be.upload(&mask)?;
        let mut x = self.embed(&[&f.input], &[f.index])?;
        let cslot = (f.index % cache.cap as u64) as usize;
        let mut ring = 0;
        for (li, layer) in self.layers.iter().enumerate() {
            if let Some(a) = &layer.causal {
                let buf = &mut cache.slot_rings[ring];
                ring += 1;
                self.be
                    .linear_rows(&x, 0, &a.proj, buf, slot * s, s, ws, 3 * ws)?;
                let hd = ws / a.heads;
                let kv_rows = l * s;
                let mut p = AttnParams::contiguous(1, a.heads, s, kv_rows, hd, Causal::None, s);
                p.q = Strides::packed(s, hd, 3 * ws);
                p.k = Strides::packed(kv_rows, hd, 3 * ws);
                p.v = p.k;
                p.o = Strides::packed(s, hd, ws);
                p.offsets = [slot * s * 3 * ws, ws, 2 * ws, 0];
                p.key_frames = l;
                let mut attn = self.be.zeros::<T>(s * ws)?;
                let buf = &cache.slot_rings[ring - 1];
                self.be.attention(
                    &p,
                    buf,
                    buf,
                    buf,
                    Some(a.attn_bias()),
                    Some(&mask),
                    &mut attn,
                )?;
                x = self.attn_out(a, &attn, &x, s)?;
            }
            self.be.linear_rows(
                &x,
                0,
                &layer.cross.proj,
                &mut cache.cross_rings[li],
                cslot * s,
                s,
                ws,
                2 * h,
            )?;
        }
        Ok(())
    }

    fn clear(&self, _cache: &mut KCache<T>) {
        // The rings are addressed by frame index and masked by the stream's list of cached
        // frames: nothing to drop.
    }

    fn gather(&self, cache: &KCache<T>, window: &[CachedFrame]) -> Result<KWindow<T>> {
        let cfg = &self.qf.cfg;
        let per = cfg.slots_per_frame * 2 * cfg.hidden_size;
        let cap = cache.cap.max(1) as u64;
        let kv = cache
            .cross_rings
            .iter()
            .map(|ring| {
                let mut out = self.be.zeros::<T>(window.len() * per)?;
                for (i, c) in window.iter().enumerate() {
                    let slot = (c.index % cap) as usize;
                    self.be.copy(ring, slot * per, &mut out, i * per, per)?;
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KWindow {
            kv,
            mask: window.iter().map(|c| u8::from(c.valid)).collect(),
        })
    }

    fn slot_side(&self, plan: &FullPlan<'_>) -> Result<KWindow<T>> {
        let cfg = &self.qf.cfg;
        let (k, ctx) = (plan.k, plan.context());
        let refs: Vec<&FrameInput> = plan.frames.iter().collect();
        let mut x = self.embed(&refs, &plan.positions)?;
        let (s, ws, h) = (cfg.slots_per_frame, cfg.slot_width(), cfg.hidden_size);
        let mut kv = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            if let Some(c) = &layer.causal {
                x = self.slot_layer_full(c, &x, plan.valid, plan.band)?;
            }
            let mut out = self.be.zeros::<T>(k * s * 2 * h)?;
            self.be.linear_rows(
                &x,
                ctx * s,
                &layer.cross.proj,
                &mut out,
                0,
                k * s,
                ws,
                2 * h,
            )?;
            kv.push(out);
        }
        Ok(KWindow {
            kv,
            mask: plan.valid[ctx..].iter().map(|b| u8::from(*b)).collect(),
        })
    }

    fn query_batch(&self, windows: &[&KWindow<T>]) -> Result<QFormerOutput> {
        let Some(first) = windows.first() else {
            return Err(ModelError::InvalidInput("no windows to run".into()));
        };
        let kf = first.frames();
        if let Some(w) = windows.iter().find(|w| w.frames() != kf) {
            return Err(ModelError::InvalidInput(format!(
                "windows in one batch must have equal length ({} vs {kf} frames)",
                w.frames()
            )));
        }
        let cfg = &self.qf.cfg;
        let (b, nq, h, s) = (
            windows.len(),
            cfg.num_query_tokens,
            cfg.hidden_size,
            cfg.slots_per_frame,
        );
        let (m, ks) = (b * nq, kf * s);
        let be = &self.be;
        let per = ks * 2 * h;
        let mut kvs = Vec::with_capacity(self.layers.len());
        for l in 0..self.layers.len() {
            if b == 1 {
                kvs.push(None);
                continue;
            }
            let mut buf = be.zeros::<T>(b * per)?;
            for (i, w) in windows.iter().enumerate() {
                be.copy(&w.kv[l], 0, &mut buf, i * per, per)?;
            }
            kvs.push(Some(buf));
        }
        let mask: Vec<u8> = windows
            .iter()
            .flat_map(|w| w.mask.iter().copied())
            .collect();
        let mask = be.upload(&mask)?;
        let mut x = be.upload(&self.query0.repeat(b))?;
        for (l, layer) in self.layers.iter().enumerate() {
            // (b) query self-attention
            let a = &layer.attention;
            let hd = h / a.heads;
            let mut qkv = be.zeros::<T>(m * 3 * h)?;
            be.linear(&x, &a.proj, &mut qkv, m, h, 3 * h)?;
            let mut p = AttnParams::contiguous(b, a.heads, nq, nq, hd, Causal::None, 1);
            p.q = Strides::packed(nq, hd, 3 * h);
            (p.k, p.v) = (p.q, p.q);
            p.o = Strides::packed(nq, hd, h);
            p.offsets = [0, h, 2 * h, 0];
            let mut attn = be.zeros::<T>(m * h)?;
            be.attention(&p, &qkv, &qkv, &qkv, Some(a.attn_bias()), None, &mut attn)?;
            let x1 = self.attn_out(a, &attn, &x, m)?;
            // (c) cross-attention to the windows' slot states
            let c = &layer.cross;
            let hd = h / c.heads;
            let mut cq = be.zeros::<T>(m * h)?;
            let wq = c
                .q
                .as_ref()
                .ok_or_else(|| ModelError::InvalidInput("cross-attention without query".into()))?;
            be.linear(&x1, wq, &mut cq, m, h, h)?;
            let kv = kvs[l].as_ref().unwrap_or(&windows[0].kv[l]);
            let mut p = AttnParams::contiguous(b, c.heads, nq, ks, hd, Causal::None, s);
            p.q = Strides::packed(nq, hd, h);
            p.k = Strides::packed(ks, hd, 2 * h);
            p.v = p.k;
            p.o = p.q;
            p.offsets = [0, 0, h, 0];
            p.key_frames = kf;
            be.attention(&p, &cq, kv, kv, Some(c.attn_bias()), Some(&mask), &mut attn)?;
            let x2 = self.attn_out(c, &attn, &x1, m)?;
            // (d) query FFN
            let inter = cfg.intermediate_size;
            let mut f = be.zeros::<T>(m * inter)?;
            be.linear(&x2, &layer.ffn_in.w, &mut f, m, h, inter)?;
            let mut fa = be.zeros::<T>(m * inter)?;
            be.bias_act(&f, &layer.ffn_in.b, &mut fa, inter, true)?;
            let mut o = be.zeros::<T>(m * h)?;
            be.linear(&fa, &layer.ffn_out.w, &mut o, m, inter, h)?;
            x = be.zeros::<T>(m * h)?;
            be.bias_residual_layernorm(
                &o,
                Some(&layer.ffn_out.b),
                Some(&x2),
                &layer.ffn_ln.g,
                &layer.ffn_ln.b,
                &mut x,
                m,
                h,
                self.eps(),
            )?;
        }
        let lw = self.llm_width;
        let mut y = be.zeros::<T>(m * lw)?;
        be.linear(&x, &self.llama.w, &mut y, m, h, lw)?;
        let mut proj = be.zeros::<T>(m * lw)?;
        be.bias_act(&y, &self.llama.b, &mut proj, lw, false)?;
        let f32s = |v: Vec<T>| -> Vec<f32> { v.into_iter().map(Elem::to_f32).collect() };
        let hidden = Tensor::from_vec(f32s(be.download(&x)?), (b, nq, h), &Device::Cpu)?;
        let projected = Tensor::from_vec(f32s(be.download(&proj)?), (b, nq, lw), &Device::Cpu)?;
        Ok(QFormerOutput { hidden, projected })
    }
}
