//! The decoder-only transformer shared by Qwen2/Qwen2.5 and LLaMA-family checkpoints, dense
//! (safetensors f32/bf16) or quantised (GGUF), taking input *embeddings* so that audio-visual
//! tokens can stand in for text tokens.
//!
//! Follows candle-transformers 0.11.1 `models/qwen2.rs` and `models/quantized_qwen2.rs` (same
//! block structure and HF tensor names through `vb.pp`), rewritten because those take token
//! ids only and keep a growing, non-truncatable cache. Here the KV cache is preallocated
//! ([`KvCache`]) and truncating it restores a cached prefix.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::error::{CandleCtx, LlmError};
use super::hf_config::{DecoderConfig, RopeStyle};
use super::kv_cache::KvCache;
use super::q4_vnni::PackedQ4_0;

/// Rows (prompt positions) from which a quantised layer dequantises its weight for one GEMM.
const PREFILL_DEQUANT_ROWS: usize = 32;

/// A linear layer whose weight is dense or quantised; `y = x W^T + b`.
#[derive(Debug)]
pub(crate) struct Lin {
    w: Weight,
    b: Option<Tensor>,
    /// A LoRA adapter on this layer (PEFT's `lora_A`, `lora_B`), applied unmerged so that
    /// serving computes exactly what training did.
    lora: Option<LoraWeights>,
}

/// A linear layer's weight: candle's (dense or quantised) or q4_0 repacked for VNNI.
#[derive(Debug)]
enum Weight {
    Candle(QMatMul),
    Q4Vnni(Arc<PackedQ4_0>),
}

/// One layer's LoRA pair: `y += scale * B (A dropout(x))`, `A` `[r, in]`, `B` `[out, r]`.
#[derive(Clone, Debug)]
pub struct LoraWeights {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// Dropout on the LoRA input during training (PEFT's `lora_dropout`), drawn from a seeded
/// generator so a run is reproducible.
pub struct LoraDropout {
    pub p: f32,
    pub rng: rand::rngs::StdRng,
}

impl LoraDropout {
    fn apply(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        use rand::Rng;
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x * mask
    }
}

impl Lin {
    pub(crate) fn new(w: QMatMul, b: Option<Tensor>) -> Self {
        Self {
            w: Weight::Candle(w),
            b,
            lora: None,
        }
    }

    /// A q4_0 weight repacked for the VNNI kernel (CPU).
    pub(crate) fn packed(w: Arc<PackedQ4_0>, b: Option<Tensor>) -> Self {
        Self {
            w: Weight::Q4Vnni(w),
            b,
            lora: None,
        }
    }

    /// `(out, in)` of the dense or quantised weight (`(0, 0)` for one that is not 2-D).
    fn shape(&self) -> (usize, usize) {
        let d = match &self.w {
            Weight::Candle(QMatMul::QTensor(q)) => q.shape().dims().to_vec(),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims().to_vec(),
            Weight::Q4Vnni(p) => p.dims().to_vec(),
        };
        match d[..] {
            [out, inp] => (out, inp),
            _ => (0, 0),
        }
    }

    fn dense(vb: &VarBuilder, out: usize, inp: usize, bias: bool) -> candle_core::Result<Self> {
        let w = vb.get((out, inp), "weight")?;
        let b = if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        };
        Ok(Self::new(QMatMul::Tensor(w), b))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(x, None)
    }

    fn forward_with(
        &self,
        x: &Tensor,
        dropout: Option<&mut LoraDropout>,
    ) -> candle_core::Result<Tensor> {
        let y = self.base(x)?;
        match &self.lora {
            None => Ok(y),
            Some(l) => {
                let xin = match dropout {
                    Some(d) => d.apply(x)?,
                    None => x.clone(),
                };
                let a = l.a.to_dtype(x.dtype())?;
                let b = l.b.to_dtype(x.dtype())?;
                let h = crate::ops::linear(&crate::ops::linear(&xin, &a, None)?, &b, None)?;
                y + (h * l.scale)?
            }
        }
    }

    fn base(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = match &self.w {
            Weight::Candle(w) => w,
            Weight::Q4Vnni(p) => {
                let y = if x.track_op() {
                    // A training graph: the dequantised weight, frozen (rare: LoRA on q4_0).
                    let (n, k) = p.shape();
                    let w = Tensor::from_vec(p.dequantize(), (n, k), x.device())?;
                    crate::ops::frozen_linear(x, &w.to_dtype(x.dtype())?)?
                } else {
                    q4_matmul(p, x)?
                };
                return match &self.b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                };
            }
        };
        let y = match w {
            // Long prompts: candle's quantised CPU matmul is a per-row vec-dot (and rounds the
            // activations to q8); dequantising the weight once per call and running one f32
            // GEMM is several times faster for prefill. Decoding (one row) keeps the kernel.
            QMatMul::QTensor(q)
                if x.dims().iter().rev().nth(1).copied().unwrap_or(1) >= PREFILL_DEQUANT_ROWS =>
            {
                let w = q.dequantize(x.device())?.to_dtype(x.dtype())?;
                x.broadcast_matmul(&w.t()?)?
            }
            // Training graphs: one 2-D GEMM on the flattened rows, and for a frozen weight a
            // backward that does not compute the weight's gradient (see `ops::frozen_linear`).
            QMatMul::Tensor(w) if x.track_op() => crate::ops::frozen_linear(x, w)?,
            _ => w.forward(x)?,
        };
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Lin {
    /// The outputs of layers that share input `x` (q/k/v, gate/up) through one VNNI call —
    /// one rounding of `x`, one wake of the thread pool — when every layer is a q4_0 VNNI
    /// weight without LoRA and `x` is not part of a training graph; `None` otherwise.
    fn forward_shared(lins: &[&Lin], x: &Tensor) -> candle_core::Result<Option<Vec<Tensor>>> {
        let mut ws = Vec::with_capacity(lins.len());
        for l in lins {
            match &l.w {
                Weight::Q4Vnni(p) if l.lora.is_none() && !x.track_op() => ws.push(p.as_ref()),
                _ => return Ok(None),
            }
        }
        let Some(k) = ws.first().map(|w| w.shape().1) else {
            return Ok(None);
        };
        if ws.iter().any(|w| w.shape().1 != k) || x.dims().last() != Some(&k) {
            return Ok(None);
        }
        let m = x.elem_count() / k;
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut ys: Vec<Vec<f32>> = ws.iter().map(|w| vec![0f32; m * w.shape().0]).collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        PackedQ4_0::matmul_many(&ws, &xs, m, &mut outs);
        let mut res = Vec::with_capacity(ys.len());
        for ((y, w), l) in ys.into_iter().zip(&ws).zip(lins) {
            let mut dims = x.dims().to_vec();
            if let Some(last) = dims.last_mut() {
                *last = w.shape().0;
            }
            let y = Tensor::from_vec(y, dims, x.device())?.to_dtype(x.dtype())?;
            res.push(match &l.b {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            });
        }
        Ok(Some(res))
    }
}

/// `x [.., k] · Wᵀ` through the VNNI q4_0 kernel (f32 inside, `x`'s dtype out).
fn q4_matmul(p: &PackedQ4_0, x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, k) = p.shape();
    let mut dims = x.dims().to_vec();
    match dims.last_mut() {
        Some(last) if *last == k => *last = n,
        _ => candle_core::bail!("q4_0 linear: input {:?}, weight [{n}, {k}]", x.dims()),
    }
    let m = x.elem_count() / k;
    let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut y = vec![0f32; m * n];
    p.matmul(&xs, m, &mut y);
    Tensor::from_vec(y, dims, x.device())?.to_dtype(x.dtype())
}

/// Self-attention with grouped KV heads (`self_attn.{q,k,v,o}_proj`).
#[derive(Debug)]
pub(crate) struct Attention {
    pub(crate) q: Lin,
    pub(crate) k: Lin,
    pub(crate) v: Lin,
    pub(crate) o: Lin,
}

/// SwiGLU MLP (`mlp.{gate,up,down}_proj`).
#[derive(Debug)]
pub(crate) struct Mlp {
    pub(crate) gate: Lin,
    pub(crate) up: Lin,
    pub(crate) down: Lin,
}

/// One decoder layer (`model.layers.N`).
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) attn: Attention,
    pub(crate) mlp: Mlp,
    pub(crate) input_norm: Tensor,
    pub(crate) post_norm: Tensor,
}

/// Precomputed rotary tables, `[positions, head_dim / 2]`.
#[derive(Debug)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl Rope {
    fn new(
        cfg: &DecoderConfig,
        positions: usize,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let d = cfg.head_dim;
        let mut inv: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / d as f32))
            .collect();
        if let Some(s) = &cfg.rope_scaling {
            // LLaMA 3.1 frequency scaling, as in candle-transformers models/llama.rs.
            let low = s.original_max_position_embeddings as f32 / s.low_freq_factor;
            let high = s.original_max_position_embeddings as f32 / s.high_freq_factor;
            for f in inv.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                if wavelen < high {
                    continue;
                }
                if wavelen > low {
                    *f /= s.factor;
                } else {
                    let smooth = (s.original_max_position_embeddings as f32 / wavelen
                        - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        let inv = Tensor::from_vec(inv, (1, d / 2), dev)?;
        let t = Tensor::arange(0u32, positions as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = t.matmul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            style: cfg.rope_style,
        })
    }

    fn apply(&self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let x = x.contiguous()?;
        // The fused kernels record no backward (candle 0.11.1): training graphs take the
        // composed forms, which compute the same rotation.
        match (self.style, x.track_op()) {
            (RopeStyle::Halves, false) => candle_nn::rotary_emb::rope(&x, &cos, &sin),
            (RopeStyle::Halves, true) => candle_nn::rotary_emb::rope_slow(&x, &cos, &sin),
            (RopeStyle::Interleaved, false) => candle_nn::rotary_emb::rope_i(&x, &cos, &sin),
            (RopeStyle::Interleaved, true) => candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin),
        }
    }
}

/// The token embedding table `[vocab, hidden]`.
#[derive(Debug)]
pub(crate) enum Embedding {
    /// Dense, in the compute dtype.
    Dense(Tensor),
    /// Quantised (GGUF, CPU), as stored: the rows looked up are dequantised, as llama.cpp
    /// does, instead of a dense f32 copy of the whole vocabulary at load. A tied head shares
    /// the same blocks.
    Quantized(Arc<QTensor>),
    /// q4_0 repacked for the VNNI kernel (see [`super::q4_vnni`]); a tied head shares it.
    Q4Vnni(Arc<PackedQ4_0>),
}

impl Embedding {
    fn dims(&self) -> &[usize] {
        match self {
            Embedding::Dense(t) => t.dims(),
            Embedding::Quantized(q) => q.shape().dims(),
            Embedding::Q4Vnni(p) => p.dims(),
        }
    }

    /// Rows `tokens` (`< vocab`, checked by the caller) as `[n, hidden]`.
    fn rows(&self, tokens: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Dense(t) => t.index_select(&Tensor::new(tokens, device)?, 0),
            Embedding::Q4Vnni(p) => {
                let (_, h) = p.shape();
                let mut rows = Vec::with_capacity(tokens.len() * h);
                for &t in tokens {
                    p.dequantize_row(t as usize, &mut rows);
                }
                Tensor::from_vec(rows, (tokens.len(), h), device)
            }
            Embedding::Quantized(q) => {
                let (_, h) = q.shape().dims2()?;
                let dtype = q.dtype();
                // Whole blocks per row: checked when the table is kept quantised.
                let row = h / dtype.block_size() * dtype.type_size();
                let data = q.data()?;
                let mut bytes = Vec::with_capacity(row * tokens.len());
                for &t in tokens {
                    let at = t as usize * row;
                    bytes.extend_from_slice(&data[at..at + row]);
                }
                candle_core::quantized::ggml_file::qtensor_from_ggml(
                    dtype,
                    &bytes,
                    vec![tokens.len(), h],
                    device,
                )?
                .dequantize(device)
            }
        }
    }
}

/// A loaded decoder with its KV cache: one type for every supported format.
#[derive(Debug)]
pub struct Decoder {
    cfg: DecoderConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Lin,
    rope: Rope,
    cache: KvCache,
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// Assembles a decoder from loaded parts; `cache_cap` positions of KV are preallocated.
    #[allow(clippy::too_many_arguments)] // one argument per part of the checkpoint
    pub(crate) fn from_parts(
        cfg: DecoderConfig,
        embed: Embedding,
        blocks: Vec<Block>,
        norm: Tensor,
        lm_head: Lin,
        cache_cap: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        check_parts(&cfg, &embed, &blocks, &norm)?;
        // Positions never pass the cache capacity: the cache is the whole context.
        let rope = Rope::new(&cfg, cache_cap, dtype, device)?;
        let cache = KvCache::new(
            cfg.num_hidden_layers,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cache_cap,
            dtype,
            device,
        )?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            cache,
            dtype,
            device: device.clone(),
        })
    }

    /// Loads HF safetensors (HF tensor names) with `vb` at compute dtype `vb.dtype()`.
    pub fn from_var_builder(
        cfg: DecoderConfig,
        vb: VarBuilder,
        cache_cap: usize,
    ) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let m = vb.pp("model");
        let embed = m.get((cfg.vocab_size, h), "embed_tokens.weight")?;
        let mut blocks = Vec::new(); // not sized from the config: a hostile one lies
        for l in 0..cfg.num_hidden_layers {
            let b = m.pp(format!("layers.{l}"));
            let a = b.pp("self_attn");
            let bias = cfg.attention_bias;
            let attn = Attention {
                q: Lin::dense(&a.pp("q_proj"), nh * hd, h, bias)?,
                k: Lin::dense(&a.pp("k_proj"), nkv * hd, h, bias)?,
                v: Lin::dense(&a.pp("v_proj"), nkv * hd, h, bias)?,
                o: Lin::dense(&a.pp("o_proj"), h, nh * hd, false)?,
            };
            let p = b.pp("mlp");
            let mlp = Mlp {
                gate: Lin::dense(&p.pp("gate_proj"), i, h, false)?,
                up: Lin::dense(&p.pp("up_proj"), i, h, false)?,
                down: Lin::dense(&p.pp("down_proj"), h, i, false)?,
            };
            blocks.push(Block {
                attn,
                mlp,
                input_norm: b.get(h, "input_layernorm.weight")?,
                post_norm: b.get(h, "post_attention_layernorm.weight")?,
            });
        }
        let norm = m.get(h, "norm.weight")?;
        let lm_head = if cfg.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            Lin::new(QMatMul::Tensor(embed.clone()), None)
        } else {
            Lin::dense(&vb.pp("lm_head"), cfg.vocab_size, h, false)?
        };
        let dtype = vb.dtype();
        let device = vb.device().clone();
        Self::from_parts(
            cfg,
            Embedding::Dense(embed),
            blocks,
            norm,
            lm_head,
            cache_cap,
            dtype,
            &device,
        )
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// dtype of activations, embeddings and the KV cache.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Positions held in the KV cache now.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Fixed KV capacity (positions).
    pub fn cache_capacity(&self) -> usize {
        self.cache.capacity()
    }

    /// Bytes of the preallocated KV buffers.
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Forgets cached positions from `len` on (restores a cached prefix of length `len`).
    pub fn truncate_cache(&mut self, len: usize) {
        self.cache.truncate(len);
    }

    /// Embedding rows of `tokens`: `[n, hidden]` in the compute dtype.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor, LlmError> {
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(LlmError::Tokenizer {
                source_name: "decoder".into(),
                message: format!("token id {bad} >= vocab_size {}", self.cfg.vocab_size),
            });
        }
        self.embed
            .rows(tokens, &self.device)
            .and_then(|e| e.to_dtype(self.dtype))
            .ctx(|| "embedding lookup".into())
    }

    /// Runs `embeds` (`[seq, hidden]`) at positions `pos..pos + seq`, appending to the KV
    /// cache (which is first truncated to `pos`), and returns f32 logits `[seq, vocab]` when
    /// `all_logits`, else `[1, vocab]` for the last position only.
    pub fn forward_embeds(
        &mut self,
        embeds: &Tensor,
        pos: usize,
        all_logits: bool,
    ) -> Result<Tensor, LlmError> {
        if pos > self.cache.len() {
            return Err(LlmError::Candle {
                context: "decoder forward".into(),
                source: candle_core::Error::Msg(format!(
                    "position {pos} is past the cached {} positions",
                    self.cache.len()
                )),
            });
        }
        self.cache.truncate(pos);
        let (seq, h) = embeds
            .dims2()
            .ctx(|| "input embeddings must be [seq, hidden]".into())?;
        if h != self.cfg.hidden_size {
            return Err(LlmError::Candle {
                context: "decoder forward".into(),
                source: candle_core::Error::Msg(format!(
                    "input embeddings have width {h}, the model's hidden_size is {}",
                    self.cfg.hidden_size
                )),
            });
        }
        self.forward_inner(embeds, pos, seq, all_logits)
            .ctx(|| format!("decoder forward of {seq} positions at {pos}"))
    }

    /// Token-id convenience over [`Decoder::forward_embeds`].
    pub fn forward_tokens(
        &mut self,
        tokens: &[u32],
        pos: usize,
        all_logits: bool,
    ) -> Result<Tensor, LlmError> {
        let e = self.embed(tokens)?;
        self.forward_embeds(&e, pos, all_logits)
    }

    fn forward_inner(
        &mut self,
        embeds: &Tensor,
        pos: usize,
        seq: usize,
        all_logits: bool,
    ) -> candle_core::Result<Tensor> {
        let x = embeds.to_dtype(self.dtype)?.unsqueeze(0)?;
        let mut parts = Parts {
            cfg: &self.cfg,
            blocks: &self.blocks,
            rope: &self.rope,
            device: &self.device,
            dtype: self.dtype,
        };
        let x = parts.blocks(x, pos, seq, Some(&mut self.cache), None)?;
        self.cache.advance(seq);
        let x = if all_logits {
            x
        } else {
            x.narrow(1, seq - 1, 1)?
        };
        parts.head(&x, &self.norm, &self.lm_head)
    }

    /// Training forward: `embeds` (`[seq, hidden]`, positions `0..seq`) through every layer
    /// with the differentiable forms of RMSNorm, RoPE and softmax whenever the inputs or
    /// weights are part of a training graph, without touching the KV cache. Returns f32
    /// logits `[seq, vocab]` for every position. `dropout` is the LoRA input dropout.
    pub fn forward_train(
        &self,
        embeds: &Tensor,
        dropout: Option<&mut LoraDropout>,
    ) -> Result<Tensor, LlmError> {
        // A batch of one: no padding, the same shapes and products as a lone sequence.
        let logits = self.forward_train_batch(std::slice::from_ref(embeds), dropout)?;
        logits.squeeze(0).ctx(|| "decoder training forward".into())
    }

    /// [`Self::forward_train`] over several sequences at once: each of `inputs` (`[len_i,
    /// hidden]`, positions `0..len_i`) is right-padded to the longest and the batch goes
    /// through every layer as one; the causal mask keeps padding out of every real position.
    /// Returns f32 logits `[batch, longest, vocab]`; rows past `len_i` are padding.
    pub fn forward_train_batch(
        &self,
        inputs: &[Tensor],
        dropout: Option<&mut LoraDropout>,
    ) -> Result<Tensor, LlmError> {
        let bad = |m: String| LlmError::Candle {
            context: "decoder training forward".into(),
            source: candle_core::Error::Msg(m),
        };
        let mut longest = 0;
        for e in inputs {
            let (seq, h) = e
                .dims2()
                .ctx(|| "input embeddings must be [seq, hidden]".into())?;
            if h != self.cfg.hidden_size {
                return Err(bad(format!(
                    "input embeddings have width {h}, the model's hidden_size is {}",
                    self.cfg.hidden_size
                )));
            }
            longest = longest.max(seq);
        }
        if inputs.is_empty() || longest == 0 || longest > self.cache.capacity() {
            return Err(bad(format!(
                "{} sequences, the longest {longest} positions: a training batch needs 1..={} \
                 (llm.max_context_tokens)",
                inputs.len(),
                self.cache.capacity()
            )));
        }
        let run = || -> candle_core::Result<Tensor> {
            let rows = inputs
                .iter()
                .map(|e| {
                    let e = e.to_dtype(self.dtype)?;
                    let pad = longest - e.dim(0)?;
                    if pad == 0 {
                        Ok(e)
                    } else {
                        e.pad_with_zeros(0, 0, pad)
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let x = Tensor::stack(&rows, 0)?;
            let mut parts = Parts {
                cfg: &self.cfg,
                blocks: &self.blocks,
                rope: &self.rope,
                device: &self.device,
                dtype: self.dtype,
            };
            let x = parts.blocks(x, 0, longest, None, dropout)?;
            let logits = parts.head(&x, &self.norm, &self.lm_head)?;
            // `head` drops a batch of one; keep the batch axis whatever its size.
            if logits.rank() == 2 {
                logits.unsqueeze(0)
            } else {
                Ok(logits)
            }
        };
        run().ctx(|| {
            format!(
                "decoder training forward of {} sequences of up to {longest} positions",
                inputs.len()
            )
        })
    }

    /// Attaches LoRA pairs to the attention projections named in `targets` (`q_proj`,
    /// `k_proj`, `v_proj`, `o_proj`; also `gate_proj`, `up_proj`, `down_proj`), keyed by PEFT's
    /// module path `model.layers.{i}.self_attn.q_proj`. Every named layer must be present
    /// with shapes that fit.
    pub fn set_lora(
        &mut self,
        pairs: &std::collections::HashMap<String, LoraWeights>,
    ) -> Result<(), LlmError> {
        let mut used = 0;
        for (l, blk) in self.blocks.iter_mut().enumerate() {
            for (name, lin) in blk.linears_mut() {
                let key = format!("model.layers.{l}.{name}");
                let Some(p) = pairs.get(&key) else { continue };
                let (out, inp) = lin.shape();
                let (ra, ia) = p.a.dims2().ctx(|| format!("{key}.lora_A"))?;
                let (ob, rb) = p.b.dims2().ctx(|| format!("{key}.lora_B"))?;
                if ia != inp || ob != out || ra != rb {
                    return Err(LlmError::Candle {
                        context: format!("LoRA {key}"),
                        source: candle_core::Error::Msg(format!(
                            "lora_A {:?} / lora_B {:?} do not fit the layer [{out}, {inp}]",
                            p.a.dims(),
                            p.b.dims()
                        )),
                    });
                }
                lin.lora = Some(p.clone());
                used += 1;
            }
        }
        if used != pairs.len() {
            let layers = self.blocks.len();
            let fits = |k: &str| {
                k.strip_prefix("model.layers.")
                    .and_then(|r| r.split_once('.'))
                    .is_some_and(|(l, n)| {
                        l.parse::<usize>().is_ok_and(|l| l < layers) && LINEAR_NAMES.contains(&n)
                    })
            };
            let stray = pairs.keys().find(|k| !fits(k)).cloned().unwrap_or_default();
            return Err(LlmError::Candle {
                context: "LoRA adapter".into(),
                source: candle_core::Error::Msg(format!(
                    "module {stray:?} is not a linear layer of this model"
                )),
            });
        }
        Ok(())
    }

    /// `(out, in)` of layer `layer`'s linear `name` (e.g. `self_attn.q_proj`).
    pub fn linear_shape(&self, layer: usize, name: &str) -> Option<(usize, usize)> {
        let blk = self.blocks.get(layer)?;
        blk.linears()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, l)| l.shape())
    }

    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }
}

/// The parts' shapes against the config, before anything is sized from the config (the KV
/// cache, the rotary tables): a checkpoint whose header disagrees with its own tensors is
/// refused naming the part, instead of allocating what the header claims.
fn check_parts(
    cfg: &DecoderConfig,
    embed: &Embedding,
    blocks: &[Block],
    norm: &Tensor,
) -> candle_core::Result<()> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (
        cfg.num_attention_heads.saturating_mul(cfg.head_dim),
        cfg.num_key_value_heads.saturating_mul(cfg.head_dim),
    );
    let fail = |what: String| Err(candle_core::Error::Msg(what));
    if embed.dims().len() != 2 || embed.dims()[1] != h {
        return fail(format!(
            "token embedding is {:?}, the config's hidden size is {h}",
            embed.dims()
        ));
    }
    if blocks.len() != cfg.num_hidden_layers {
        return fail(format!(
            "{} layers, the config says {}",
            blocks.len(),
            cfg.num_hidden_layers
        ));
    }
    if norm.dims() != [h] {
        return fail(format!("final norm is {:?}, expected [{h}]", norm.dims()));
    }
    let want = [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)];
    for (l, b) in blocks.iter().enumerate() {
        for ((name, lin), (out, inp)) in b.linears().into_iter().zip(want) {
            if lin.shape() != (out, inp) {
                return fail(format!(
                    "layer {l} {name} is {:?}, the config needs [{out}, {inp}]",
                    lin.shape()
                ));
            }
        }
        for (name, t) in [("input norm", &b.input_norm), ("post norm", &b.post_norm)] {
            if t.dims() != [h] {
                return fail(format!(
                    "layer {l} {name} is {:?}, expected [{h}]",
                    t.dims()
                ));
            }
        }
    }
    Ok(())
}

/// Module paths of a block's linear layers, relative to `model.layers.{i}`.
pub const LINEAR_NAMES: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl Block {
    fn linears(&self) -> [(&'static str, &Lin); 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [
            (LINEAR_NAMES[0], &a.q),
            (LINEAR_NAMES[1], &a.k),
            (LINEAR_NAMES[2], &a.v),
            (LINEAR_NAMES[3], &a.o),
            (LINEAR_NAMES[4], &m.gate),
            (LINEAR_NAMES[5], &m.up),
            (LINEAR_NAMES[6], &m.down),
        ]
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Lin); 7] {
        let (a, m) = (&mut self.attn, &mut self.mlp);
        [
            (LINEAR_NAMES[0], &mut a.q),
            (LINEAR_NAMES[1], &mut a.k),
            (LINEAR_NAMES[2], &mut a.v),
            (LINEAR_NAMES[3], &mut a.o),
            (LINEAR_NAMES[4], &mut m.gate),
            (LINEAR_NAMES[5], &mut m.up),
            (LINEAR_NAMES[6], &mut m.down),
        ]
    }
}

/// RMSNorm: candle's fused kernel for inference, the composed form in training graphs.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if x.track_op() || w.track_op() {
        candle_nn::ops::rms_norm_slow(x, w, eps)
    } else {
        candle_nn::ops::rms_norm(x, w, eps)
    }
}

/// The read-only parts of a decoder one forward pass needs (borrowed apart from the cache).
struct Parts<'a> {
    cfg: &'a DecoderConfig,
    blocks: &'a [Block],
    rope: &'a Rope,
    device: &'a Device,
    dtype: DType,
}

impl Parts<'_> {
    /// Every block over `x` `[batch, seq, hidden]` at positions `pos..pos + seq`; with a
    /// cache (batch 1), the new K/V are appended and all cached positions are attended.
    fn blocks(
        &mut self,
        mut x: Tensor,
        pos: usize,
        seq: usize,
        mut cache: Option<&mut KvCache>,
        mut dropout: Option<&mut LoraDropout>,
    ) -> candle_core::Result<Tensor> {
        let cfg = self.cfg;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let eps = cfg.rms_norm_eps as f32;
        let total = pos + seq;
        let mask = if seq > 1 {
            // Causal over the new positions; all cached positions are visible.
            let m: Vec<f32> = (0..seq)
                .flat_map(|i| {
                    (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (1, 1, seq, total), self.device)?.to_dtype(self.dtype)?)
        } else {
            None
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let b = x.dim(0)?;
        for (l, blk) in self.blocks.iter().enumerate() {
            let residual = &x;
            let hs = rms_norm(&x, &blk.input_norm, eps)?;
            let shared = match dropout {
                None => Lin::forward_shared(&[&blk.attn.q, &blk.attn.k, &blk.attn.v], &hs)?,
                Some(_) => None,
            };
            let (q, k, v) = match shared.as_deref() {
                Some([q, k, v]) => (q.clone(), k.clone(), v.clone()),
                _ => (
                    blk.attn.q.forward_with(&hs, dropout.as_deref_mut())?,
                    blk.attn.k.forward_with(&hs, dropout.as_deref_mut())?,
                    blk.attn.v.forward_with(&hs, dropout.as_deref_mut())?,
                ),
            };
            let q = q.reshape((b, seq, nh, hd))?.transpose(1, 2)?;
            let k = k.reshape((b, seq, nkv, hd))?.transpose(1, 2)?;
            let v = v
                .reshape((b, seq, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = self.rope.apply(&q, pos)?;
            let k = self.rope.apply(&k, pos)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(l, &k, &v)?,
                None => (k.contiguous()?, v),
            };
            // Grouped-query attention: fold the query heads of a group into the sequence axis
            // so one matmul per KV head serves the whole group without copying K/V.
            let groups = nh / nkv;
            let q = q.contiguous()?.reshape((b, nkv, groups * seq, hd))?;
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = att.reshape((b, nkv * groups, seq, total))?;
            let att = match &mask {
                Some(m) => att.broadcast_add(m)?,
                None => att,
            };
            let att = crate::ops::softmax_last(&att.to_dtype(DType::F32)?)?.to_dtype(self.dtype)?;
            let att = att.reshape((b, nkv, groups * seq, total))?;
            let y = att.matmul(&v)?.reshape((b, nh, seq, hd))?;
            let y = y.transpose(1, 2)?.reshape((b, seq, nh * hd))?;
            let y = blk.attn.o.forward_with(&y, dropout.as_deref_mut())?;
            let x1 = (residual + y)?;
            let hs = rms_norm(&x1, &blk.post_norm, eps)?;
            let shared = match dropout {
                None => Lin::forward_shared(&[&blk.mlp.gate, &blk.mlp.up], &hs)?,
                Some(_) => None,
            };
            let (g, u) = match shared.as_deref() {
                Some([g, u]) => (g.clone(), u.clone()),
                _ => (
                    blk.mlp.gate.forward_with(&hs, dropout.as_deref_mut())?,
                    blk.mlp.up.forward_with(&hs, dropout.as_deref_mut())?,
                ),
            };
            let g = candle_nn::ops::silu(&g)?;
            let y = blk
                .mlp
                .down
                .forward_with(&(g * u)?, dropout.as_deref_mut())?;
            x = (x1 + y)?;
        }
        Ok(x)
    }

    /// Final norm and LM head: f32 logits `[positions, vocab]`.
    fn head(&self, x: &Tensor, norm: &Tensor, lm_head: &Lin) -> candle_core::Result<Tensor> {
        let x = rms_norm(x, norm, self.cfg.rms_norm_eps as f32)?;
        lm_head.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)
    }
}

/// Index of the largest logit (ties: the first), like `torch.argmax`.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// `[n, vocab]` f32 logits to rows.
pub fn logits_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>, LlmError> {
    logits.to_vec2::<f32>().ctx(|| "logits".into())
}
