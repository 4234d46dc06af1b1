//! The causal Q-Former model: slot assembly, slot embedding, the layer stack and the LLM
//! projection, plus the checkpoint layout (see `models/QFORMER_LAYOUT.md`) and seeded random
//! initialisation.
//!
//! Structure follows FAVOR (`BriansIDP/AudioVisualLLM`, `model/openllama.py`
//! `encode_video`/`init_video_Qformer`, and its BLIP-2-derived `model/Qformer.py`):
//! `ln_video` on the slots, then `+ video_frame_position_embedding(position_ids)`, then the
//! BERT Q-Former with `video_query_tokens` (through `bert.embeddings.LayerNorm`), then
//! `llama_proj`.
//!
//! # Safetensors layout (`model.safetensors`, f32/f16/bf16; `Ws = audio_slot_width +
//! visual_slot_width`, `H = hidden_size`, `I = intermediate_size`, `Q = num_query_tokens`,
//! `P = max_slot_positions`, `i` = layer)
//! ```text
//! video_query_tokens                                              [1, Q, H]
//! video_Qformer.bert.embeddings.LayerNorm.{weight,bias}           [H]
//! ln_video.{weight,bias}                                          [Ws]
//! video_frame_position_embedding.weight                           [P, Ws]
//! speech_pre_qformer_proj.{weight [Was, audio_width], bias [Was]}   (if audio_proj)
//! visual_pre_qformer_proj.{weight [Wvs, visual_width], bias [Wvs]}  (if visual_proj)
//! video_Qformer.bert.encoder.layer.{i}.causal_attention.self.{query,key,value}.weight [Ws, Ws]
//!     .causal_attention.self.{query,key,value}.bias [Ws]              (if causal_slots)
//!     .causal_attention.output.dense.{weight [Ws, Ws], bias [Ws]}
//!     .causal_attention.output.LayerNorm.{weight,bias} [Ws]
//!     .attention.self.{query,key,value}.{weight [H, H], bias [H]}
//!     .attention.output.dense.{weight [H, H], bias [H]}, .attention.output.LayerNorm [H]
//!     .crossattention.self.query.{weight [H, H], bias [H]}
//!     .crossattention.self.{key,value}.{weight [H, Ws], bias [H]}
//!     .crossattention.output.dense.{weight [H, H], bias [H]}, .crossattention.output.LayerNorm [H]
//!     .intermediate_query.dense.{weight [I, H], bias [I]}
//!     .output_query.dense.{weight [H, I], bias [H]}, .output_query.LayerNorm [H]
//! llama_proj.{weight [llm_hidden_size, H], bias [llm_hidden_size]}
//! ```
//! All names except `causal_attention` and `visual_pre_qformer_proj` are FAVOR's own
//! state-dict names, so FAVOR-style weights load as they are.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{self, LayerNorm, Linear, Weights};
use crate::error::{ModelError, Result};
use crate::ops::{Activation, MASK_NEG};
use crate::tokens::{self, SlotMode};

use super::backend::{FullPlan, QFormerBackend};
use super::blocks::{BertAttention, QFormerLayer, QueryFfn};
use super::config::{MaskDirection, QFormerConfig, SlotContext};
use super::input::{CachedFrame, FrameInput, QFormerOutput, StreamFrame};

/// How a tensor of the layout is initialised by [`QFormer::random`].
#[derive(Clone, Copy, Debug)]
enum Init {
    Normal,
    LnWeight,
}

/// Every tensor of the layout with its shape, in a fixed order.
fn layout(cfg: &QFormerConfig) -> Vec<(String, Vec<usize>, Init)> {
    use Init::*;
    let (h, i, q) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_query_tokens);
    let ws = cfg.slot_width();
    let mut v: Vec<(String, Vec<usize>, Init)> = Vec::new();
    let lin = |v: &mut Vec<_>, name: &str, out: usize, inp: usize| {
        v.push((format!("{name}.weight"), vec![out, inp], Normal));
        v.push((format!("{name}.bias"), vec![out], Normal));
    };
    let ln = |v: &mut Vec<(String, Vec<usize>, Init)>, name: &str, d: usize| {
        v.push((format!("{name}.weight"), vec![d], LnWeight));
        v.push((format!("{name}.bias"), vec![d], Normal));
    };
    v.push(("video_query_tokens".into(), vec![1, q, h], Normal));
    ln(&mut v, "video_Qformer.bert.embeddings.LayerNorm", h);
    ln(&mut v, "ln_video", ws);
    v.push((
        "video_frame_position_embedding.weight".into(),
        vec![cfg.max_slot_positions, ws],
        Normal,
    ));
    if cfg.audio_proj {
        lin(
            &mut v,
            "speech_pre_qformer_proj",
            cfg.audio_slot_width,
            cfg.audio_width,
        );
    }
    if cfg.visual_proj {
        lin(
            &mut v,
            "visual_pre_qformer_proj",
            cfg.visual_slot_width,
            cfg.visual_width,
        );
    }
    for l in 0..cfg.num_hidden_layers {
        let p = format!("video_Qformer.bert.encoder.layer.{l}");
        let attn = |v: &mut Vec<_>, name: &str, w: usize, kv: usize| {
            lin(v, &format!("{p}.{name}.self.query"), w, w);
            lin(v, &format!("{p}.{name}.self.key"), w, kv);
            lin(v, &format!("{p}.{name}.self.value"), w, kv);
            lin(v, &format!("{p}.{name}.output.dense"), w, w);
            ln(v, &format!("{p}.{name}.output.LayerNorm"), w);
        };
        if cfg.causal_slots {
            attn(&mut v, "causal_attention", ws, ws);
        }
        attn(&mut v, "attention", h, h);
        attn(&mut v, "crossattention", h, ws);
        lin(&mut v, &format!("{p}.intermediate_query.dense"), i, h);
        lin(&mut v, &format!("{p}.output_query.dense"), h, i);
        ln(&mut v, &format!("{p}.output_query.LayerNorm"), h);
    }
    lin(&mut v, "llama_proj", cfg.llm_hidden_size, h);
    v
}

/// Seeded random tensors for every name of the layout: N(0, std) (BERT's
/// initializer_range is 0.02); LayerNorm weights 1 + N(0, std).
pub fn random_tensors(
    cfg: &QFormerConfig,
    seed: u64,
    std: f32,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = sensorium_engine::rng::Rng::new(seed);
    let mut out = HashMap::new();
    for (name, shape, init) in layout(cfg) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let x = std * rng.normal_open() as f32;
                match init {
                    Init::Normal => x,
                    Init::LnWeight => 1.0 + x,
                }
            })
            .collect();
        out.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(out)
}

/// The causal Q-Former.
#[derive(Debug)]
pub struct QFormer {
    pub cfg: QFormerConfig,
    pub(crate) query_tokens: Tensor,
    pub(crate) query_ln: LayerNorm,
    pub(crate) ln_video: LayerNorm,
    pub(crate) position_embedding: Tensor,
    pub(crate) audio_proj: Option<Linear>,
    pub(crate) visual_proj: Option<Linear>,
    pub(crate) layers: Vec<QFormerLayer>,
    pub(crate) llama_proj: Linear,
    device: Device,
}

impl QFormer {
    /// Loads `dir/config.json` (a [`QFormerConfig`], `model_type = "causal_qformer"`) and
    /// `dir/*.safetensors` in the layout above.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = Self::load_config(dir)?;
        Self::from_weights(cfg, &Weights::from_dir(dir, device)?)
    }

    /// `dir/config.json` alone, validated (widths and slot counts without the weights).
    pub fn load_config(dir: &Path) -> Result<QFormerConfig> {
        let (path, value) = checkpoint::read_config(dir)?;
        let mt = checkpoint::model_type(&value);
        if mt != "causal_qformer" {
            return Err(ModelError::UnknownArchitecture {
                path,
                found: mt.to_string(),
                expected: "causal_qformer".into(),
            });
        }
        let cfg: QFormerConfig = checkpoint::parse_config(&path, &value)?;
        cfg.validate()
            .map_err(|message| ModelError::InvalidConfig {
                path: path.clone(),
                message,
            })?;
        Ok(cfg)
    }

    /// Seeded random weights N(0, `std`) (deterministic across machines; 0.02 is BERT's
    /// initializer_range, tests use larger values so that every path visibly matters).
    pub fn random(cfg: QFormerConfig, seed: u64, std: f32, device: &Device) -> Result<Self> {
        cfg.validate().map_err(ModelError::InvalidInput)?;
        let t = random_tensors(&cfg, seed, std, device)?;
        let origin = Path::new("<random qformer>");
        Self::from_weights(cfg, &Weights::from_tensors(t, origin, device))
    }

    /// Writes `config.json` and `model.safetensors` of seeded random weights to `dir`.
    pub fn save_random(cfg: &QFormerConfig, seed: u64, std: f32, dir: &Path) -> Result<()> {
        let t = random_tensors(cfg, seed, std, &Device::Cpu)?;
        let io = |e: std::io::Error| ModelError::MissingFile {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut v =
            serde_json::to_value(cfg).map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        v["model_type"] = "causal_qformer".into();
        std::fs::write(dir.join("config.json"), v.to_string()).map_err(io)?;
        candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
        Ok(())
    }

    /// Builds from weights in the documented layout.
    pub fn from_weights(cfg: QFormerConfig, vb: &Weights) -> Result<Self> {
        let act = Activation::from_hf(&cfg.hidden_act).ok_or_else(|| {
            ModelError::InvalidInput(format!("unsupported hidden_act {:?}", cfg.hidden_act))
        })?;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let ws = cfg.slot_width();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let lv = vb.pp("video_Qformer.bert.encoder.layer").pp(l);
                Ok(QFormerLayer {
                    causal: if cfg.causal_slots {
                        Some(BertAttention::new(
                            &lv.pp("causal_attention"),
                            ws,
                            ws,
                            cfg.slot_attention_heads,
                            eps,
                        )?)
                    } else {
                        None
                    },
                    attention: BertAttention::new(
                        &lv.pp("attention"),
                        h,
                        h,
                        cfg.num_attention_heads,
                        eps,
                    )?,
                    cross: BertAttention::new(
                        &lv.pp("crossattention"),
                        h,
                        ws,
                        cfg.num_attention_heads,
                        eps,
                    )?,
                    ffn: QueryFfn::new(&lv, h, cfg.intermediate_size, eps, act)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            query_tokens: vb.get(&[1, cfg.num_query_tokens, h], "video_query_tokens")?,
            query_ln: vb.layer_norm(h, eps, "video_Qformer.bert.embeddings.LayerNorm")?,
            ln_video: vb.layer_norm(ws, eps, "ln_video")?,
            position_embedding: vb.get(
                &[cfg.max_slot_positions, ws],
                "video_frame_position_embedding.weight",
            )?,
            audio_proj: if cfg.audio_proj {
                Some(vb.linear(
                    cfg.audio_width,
                    cfg.audio_slot_width,
                    true,
                    "speech_pre_qformer_proj",
                )?)
            } else {
                None
            },
            visual_proj: if cfg.visual_proj {
                Some(vb.linear(
                    cfg.visual_width,
                    cfg.visual_slot_width,
                    true,
                    "visual_pre_qformer_proj",
                )?)
            } else {
                None
            },
            layers,
            llama_proj: vb.linear(h, cfg.llm_hidden_size, true, "llama_proj")?,
            device: vb.device().clone(),
            cfg,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn part(
        &self,
        x: Option<&Tensor>,
        width: usize,
        slot_width: usize,
        proj: Option<&Linear>,
        what: &str,
    ) -> Result<Tensor> {
        let s = self.cfg.slots_per_frame;
        let Some(x) = x else {
            return Ok(Tensor::zeros((s, slot_width), DType::F32, &self.device)?);
        };
        let (_, w) = x.dims2().map_err(|_| {
            ModelError::InvalidInput(format!(
                "{what} tokens must be [tokens, width], got {:?}",
                x.dims()
            ))
        })?;
        if w != width {
            return Err(ModelError::InvalidInput(format!(
                "{what} tokens have width {w}, the Q-Former expects {width}"
            )));
        }
        let x = x.to_dtype(DType::F32)?;
        // Project before padding (FAVOR projects Whisper's 25 frames, then zero-pads to 32).
        let x = match proj {
            Some(p) => p.forward(&x)?,
            None => x,
        };
        Ok(tokens::to_slots(&x.unsqueeze(0)?, None, SlotMode::Pad(s))?.squeeze(0)?)
    }

    /// One frame's raw slots `[S, Ws]` = `[audio ; visual]` on the feature axis.
    pub fn assemble(&self, f: &FrameInput) -> Result<Tensor> {
        let c = &self.cfg;
        let a = self.part(
            f.audio.as_ref(),
            c.audio_width,
            c.audio_slot_width,
            self.audio_proj.as_ref(),
            "audio",
        )?;
        let v = self.part(
            f.visual.as_ref(),
            c.visual_width,
            c.visual_slot_width,
            self.visual_proj.as_ref(),
            "visual",
        )?;
        Ok(Tensor::cat(&[&a, &v], 1)?)
    }

    /// Position id of slot 0 of a frame whose position index is `p` (see [`super::config::PositionMode`]).
    pub fn position_base(&self, p: u64) -> usize {
        let period = self.cfg.position_period() as u64;
        (p % period) as usize * self.cfg.slots_per_frame
    }

    /// `ln_video(raw) + position_embedding[ids]` for frames with the given position indices;
    /// `raw` is `[n * S, Ws]`, result `[1, n * S, Ws]`.
    pub fn embed(&self, raw: &Tensor, positions: &[u64]) -> Result<Tensor> {
        let s = self.cfg.slots_per_frame;
        let pos = positions
            .iter()
            .map(|p| self.position_embedding.narrow(0, self.position_base(*p), s))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let pos = Tensor::cat(&pos, 0)?;
        Ok(self.ln_video.forward(raw)?.add(&pos)?.unsqueeze(0)?)
    }

    /// Whether slot row frame `i` may attend key frame `j` (sequence-local indices).
    pub fn frame_allowed(&self, i: usize, j: usize) -> bool {
        let band = match self.cfg.context {
            SlotContext::Lookback => self.cfg.lookback,
            SlotContext::Window => usize::MAX,
        };
        match self.cfg.mask {
            MaskDirection::Past => j <= i && i - j < band,
            MaskDirection::Future => j >= i && j - i < band,
        }
    }

    /// Additive block mask `[n*S, n*S]` for a frame sequence with validity flags.
    pub fn slot_mask(&self, valid: &[bool]) -> Result<Tensor> {
        let (n, s) = (valid.len(), self.cfg.slots_per_frame);
        let mut m = vec![0f32; n * s * n * s];
        for i in 0..n {
            for (j, vj) in valid.iter().enumerate() {
                if self.frame_allowed(i, j) && *vj {
                    continue;
                }
                for a in 0..s {
                    let row = (i * s + a) * n * s + j * s;
                    m[row..row + s].fill(MASK_NEG);
                }
            }
        }
        Ok(Tensor::from_vec(m, (n * s, n * s), &self.device)?)
    }

    /// Additive key mask `[1, 1, 1, n*S]` from frame validity.
    pub fn key_mask(&self, valid: &[bool]) -> Result<Tensor> {
        let s = self.cfg.slots_per_frame;
        let m: Vec<f32> = valid
            .iter()
            .flat_map(|v| std::iter::repeat_n(if *v { 0.0 } else { MASK_NEG }, s))
            .collect();
        Ok(Tensor::from_vec(
            m,
            (1, 1, 1, valid.len() * s),
            &self.device,
        )?)
    }

    /// The query side for a batch of windows. `cross_kv[l]` holds, per layer, the
    /// head-split cross-attention keys/values of each window's slot states
    /// (`[B, heads, k*S, dh]`); `mask` is `[B, 1, 1, k*S]`.
    pub fn query_forward(
        &self,
        cross_kv: &[(Tensor, Tensor)],
        mask: &Tensor,
    ) -> Result<QFormerOutput> {
        let b = mask.dim(0)?;
        let q = self.query_ln.forward(&self.query_tokens)?;
        let mut x = q.repeat((b, 1, 1))?;
        for (layer, (k, v)) in self.layers.iter().zip(cross_kv) {
            x = layer.attention.forward(&x, &x, None)?;
            x = layer.cross.attend(&x, k, v, Some(mask))?;
            x = layer.ffn.forward(&x)?;
        }
        let projected = self.llama_proj.forward(&x)?;
        Ok(QFormerOutput {
            hidden: x,
            projected,
        })
    }
}

/// One cached frame's K/V at one layer (candle backend).
#[derive(Debug)]
pub struct LayerKv {
    /// The frame's causal-attention K/V at the layer's input (`None` without causal slots).
    self_kv: Option<(Tensor, Tensor)>,
    /// The frame's cross-attention K/V of the layer's slot states.
    cross_kv: (Tensor, Tensor),
}

/// The candle backend's per-stream cache: each cached frame's per-layer K/V by frame index.
pub type CandleCache = BTreeMap<u64, Vec<LayerKv>>;

impl QFormerBackend for QFormer {
    type Cache = CandleCache;
    type Window = WindowKv;

    fn config(&self) -> &QFormerConfig {
        &self.cfg
    }

    fn push_frame(
        &self,
        cache: &mut CandleCache,
        prev: &[CachedFrame],
        f: &StreamFrame,
    ) -> Result<()> {
        self.push_frames(cache, prev, std::slice::from_ref(f))
    }

    /// New frames as one batch (one frame is a batch of one): each layer's projections run
    /// once over all their slot rows (GEMMs of `n*S` rows instead of `n` of `S`), the causal attention with a
    /// block mask over the cached lookback and the new frames.
    fn push_frames(
        &self,
        cache: &mut CandleCache,
        prev: &[CachedFrame],
        frames: &[StreamFrame],
    ) -> Result<()> {
        let Some(first) = frames.first() else {
            return Ok(());
        };
        let inconsistent = || ModelError::InvalidInput("slot cache is inconsistent".into());
        let (n, s, lookback) = (
            frames.len(),
            self.cfg.slots_per_frame,
            self.cfg.lookback as u64,
        );
        let prev_kv = prev
            .iter()
            .map(|p| cache.get(&p.index).ok_or_else(inconsistent))
            .collect::<Result<Vec<_>>>()?;
        // Key frames: the cached lookback, then the new frames; query frame i sees key frame
        // j when j is valid, not later, and inside i's lookback.
        let keys: Vec<CachedFrame> = prev
            .iter()
            .copied()
            .chain(frames.iter().map(|f| CachedFrame {
                index: f.index,
                valid: f.valid,
            }))
            .collect();
        let mut m = vec![0f32; n * s * keys.len() * s];
        for (i, f) in frames.iter().enumerate() {
            for (j, key) in keys.iter().enumerate() {
                let allowed = key.valid && key.index <= f.index && key.index + lookback > f.index;
                if !allowed {
                    for a in 0..s {
                        let row = (i * s + a) * keys.len() * s + j * s;
                        m[row..row + s].fill(MASK_NEG);
                    }
                }
            }
        }
        let mask = Tensor::from_vec(m, (n * s, keys.len() * s), &self.device)?;
        let raw = frames
            .iter()
            .map(|f| self.assemble(&f.input))
            .collect::<Result<Vec<_>>>()?;
        let positions: Vec<u64> = (0..n as u64).map(|i| first.index + i).collect();
        let mut x = self.embed(&Tensor::cat(&raw, 0)?, &positions)?;
        let mut layers: Vec<Vec<LayerKv>> = (0..n).map(|_| Vec::new()).collect();
        for (l, layer) in self.layers.iter().enumerate() {
            let self_kv = match &layer.causal {
                Some(c) => {
                    let (k, v) = c.kv(&x)?;
                    let mut ks = Vec::with_capacity(prev.len() + 1);
                    let mut vs = Vec::with_capacity(prev.len() + 1);
                    for p in &prev_kv {
                        let (pk, pv) = p[l].self_kv.as_ref().ok_or_else(inconsistent)?;
                        ks.push(pk);
                        vs.push(pv);
                    }
                    ks.push(&k);
                    vs.push(&v);
                    x = c.attend(
                        &x,
                        &Tensor::cat(&ks, 2)?,
                        &Tensor::cat(&vs, 2)?,
                        Some(&mask),
                    )?;
                    Some((k, v))
                }
                None => None,
            };
            let (ck, cv) = layer.cross.kv(&x)?;
            for (i, frame_layers) in layers.iter_mut().enumerate() {
                let rows = |t: &Tensor| t.narrow(2, i * s, s)?.contiguous();
                frame_layers.push(LayerKv {
                    self_kv: match &self_kv {
                        Some((k, v)) => Some((rows(k)?, rows(v)?)),
                        None => None,
                    },
                    cross_kv: (rows(&ck)?, rows(&cv)?),
                });
            }
        }
        for (f, l) in frames.iter().zip(layers) {
            cache.insert(f.index, l);
        }
        Ok(())
    }

    fn evict(&self, cache: &mut CandleCache, index: u64) {
        cache.remove(&index);
    }

    fn clear(&self, cache: &mut CandleCache) {
        cache.clear();
    }

    fn gather(&self, cache: &CandleCache, window: &[CachedFrame]) -> Result<WindowKv> {
        let win = window
            .iter()
            .map(|c| {
                cache.get(&c.index).ok_or_else(|| {
                    ModelError::InvalidInput(format!("frame {} is not cached", c.index))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let kv = (0..self.layers.len())
            .map(|l| {
                let ks: Vec<&Tensor> = win.iter().map(|c| &c[l].cross_kv.0).collect();
                let vs: Vec<&Tensor> = win.iter().map(|c| &c[l].cross_kv.1).collect();
                Ok((Tensor::cat(&ks, 2)?, Tensor::cat(&vs, 2)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let valid: Vec<bool> = window.iter().map(|c| c.valid).collect();
        Ok(WindowKv {
            kv,
            mask: self.key_mask(&valid)?,
        })
    }

    fn slot_side(&self, plan: &FullPlan<'_>) -> Result<WindowKv> {
        let raw = plan
            .frames
            .iter()
            .map(|f| self.assemble(f))
            .collect::<Result<Vec<_>>>()?;
        let mut x = self.embed(&Tensor::cat(&raw, 0)?, &plan.positions)?;
        let mask = self.slot_mask(plan.valid)?;
        let (s, k, ctx) = (self.cfg.slots_per_frame, plan.k, plan.context());
        let mut kv = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            if let Some(c) = &layer.causal {
                x = c.forward(&x, &x, Some(&mask))?;
            }
            let win = x.narrow(1, ctx * s, k * s)?;
            kv.push(layer.cross.kv(&win)?);
        }
        Ok(WindowKv {
            kv,
            mask: self.key_mask(&plan.valid[ctx..])?,
        })
    }

    fn query_batch(&self, windows: &[&WindowKv]) -> Result<QFormerOutput> {
        let Some(first) = windows.first() else {
            return Err(ModelError::InvalidInput("no windows to run".into()));
        };
        let len = first.mask.dim(3)?;
        if let Some(w) = windows.iter().find(|w| w.mask.dim(3).ok() != Some(len)) {
            return Err(ModelError::InvalidInput(format!(
                "windows in one batch must have equal length ({} vs {len} slots)",
                w.mask.dim(3)?
            )));
        }
        let kv = (0..self.layers.len())
            .map(|l| {
                let ks: Vec<&Tensor> = windows.iter().map(|w| &w.kv[l].0).collect();
                let vs: Vec<&Tensor> = windows.iter().map(|w| &w.kv[l].1).collect();
                Ok((Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let masks: Vec<&Tensor> = windows.iter().map(|w| &w.mask).collect();
        self.query_forward(&kv, &Tensor::cat(&masks, 0)?)
    }
}

/// A window's slot side, ready for the queries: per layer the head-split cross-attention
/// keys and values `[1, heads, k*S, dh]`, and the key mask `[1, 1, 1, k*S]`.
#[derive(Clone, Debug)]
pub struct WindowKv {
    pub kv: Vec<(Tensor, Tensor)>,
    pub mask: Tensor,
}
