//! Random decoders written in the real formats (HF safetensors directory, GGUF with llama.cpp
//! metadata and tokenizer), for tests and benchmarks that need shapes no committed fixture has
//! (q4_k needs rows of 256; the benchmark needs a Qwen2.5-0.5B shape). Deterministic per seed.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::error::{CandleCtx, LlmError};

/// Shape of a synthetic Qwen2-architecture decoder.
#[derive(Clone, Debug)]
pub struct Qwen2Spec {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    /// Std of the normal init of matrices.
    pub init_std: f32,
    pub seed: u64,
}

impl Qwen2Spec {
    /// Qwen2.5-0.5B's shape (494M parameters, tied embeddings).
    pub fn qwen2_5_0_5b() -> Self {
        Self {
            vocab_size: 151_936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_hidden_layers: 24,
            num_attention_heads: 14,
            num_key_value_heads: 2,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 32_768,
            init_std: 0.02,
            seed: 0,
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// HF `config.json` for this shape.
    pub fn config_json(&self, bos: u32, eos: u32) -> serde_json::Value {
        json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "rms_norm_eps": 1e-6,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": true,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "torch_dtype": "float32",
            "use_sliding_window": false
        })
    }

    /// Random weights under HF names (f32, CPU).
    pub fn weights(&self) -> Result<Vec<(String, Tensor)>, LlmError> {
        let dev = Device::Cpu;
        // candle's CPU RNG cannot be seeded: draw from a seeded StdRng (Box-Muller).
        let rng = std::cell::RefCell::new(StdRng::seed_from_u64(self.seed));
        let normal = |n: usize, mean: f32, std: f32| -> Vec<f32> {
            let mut r = rng.borrow_mut();
            (0..n)
                .map(|_| {
                    let u1: f32 = r.random::<f32>().max(f32::MIN_POSITIVE);
                    let u2: f32 = r.random::<f32>();
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                    mean + std * z
                })
                .collect()
        };
        let (h, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let s = self.init_std;
        let mat = |r: usize, c: usize| Tensor::from_vec(normal(r * c, 0.0, s), (r, c), &dev);
        let vec = |n: usize, mean: f32, std: f32| Tensor::from_vec(normal(n, mean, std), n, &dev);
        let mut w = vec![(
            "model.embed_tokens.weight".to_owned(),
            mat(self.vocab_size, h).ctx(|| "embed".into())?,
        )];
        for l in 0..self.num_hidden_layers {
            let p = |n: &str| format!("model.layers.{l}.{n}");
            let layer: Vec<(String, candle_core::Result<Tensor>)> = vec![
                (p("self_attn.q_proj.weight"), mat(q, h)),
                (p("self_attn.q_proj.bias"), vec(q, 0.0, 0.02)),
                (p("self_attn.k_proj.weight"), mat(kv, h)),
                (p("self_attn.k_proj.bias"), vec(kv, 0.0, 0.02)),
                (p("self_attn.v_proj.weight"), mat(kv, h)),
                (p("self_attn.v_proj.bias"), vec(kv, 0.0, 0.02)),
                (p("self_attn.o_proj.weight"), mat(h, q)),
                (p("mlp.gate_proj.weight"), mat(i, h)),
                (p("mlp.up_proj.weight"), mat(i, h)),
                (p("mlp.down_proj.weight"), mat(h, i)),
                (p("input_layernorm.weight"), vec(h, 1.0, 0.05)),
                (p("post_attention_layernorm.weight"), vec(h, 1.0, 0.05)),
            ];
            for (n, t) in layer {
                let t = t.ctx(|| n.clone())?;
                w.push((n, t));
            }
        }
        w.push((
            "model.norm.weight".into(),
            vec(h, 1.0, 0.05).ctx(|| "norm".into())?,
        ));
        Ok(w)
    }

    /// Writes `config.json`, `model.safetensors` (f32) and a copy of `tokenizer_json` to `dir`.
    pub fn write_hf_dir(
        &self,
        dir: &Path,
        weights: &[(String, Tensor)],
        tokenizer_json: &Path,
        bos: u32,
        eos: u32,
    ) -> Result<(), LlmError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| LlmError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let cfg = dir.join("config.json");
        std::fs::write(&cfg, self.config_json(bos, eos).to_string()).map_err(io(&cfg))?;
        let map: HashMap<String, Tensor> = weights.iter().cloned().collect();
        candle_core::safetensors::save(&map, dir.join("model.safetensors"))
            .ctx(|| format!("writing {}", dir.join("model.safetensors").display()))?;
        std::fs::copy(tokenizer_json, dir.join("tokenizer.json")).map_err(io(tokenizer_json))?;
        Ok(())
    }

    /// Writes a qwen2-arch GGUF (2-D weights in `dtype`, vectors f32) with the tokenizer of
    /// `tokenizer_json` in `tokenizer.ggml.*` (padded with control tokens up to the vocab).
    pub fn write_gguf(
        &self,
        path: &Path,
        weights: &[(String, Tensor)],
        dtype: GgmlDType,
        tokenizer_json: &Path,
        bos: u32,
        eos: u32,
    ) -> Result<(), LlmError> {
        let tok = TokenizerMeta::from_file(tokenizer_json, self.vocab_size)?;
        let mut tensors = Vec::with_capacity(weights.len());
        for (name, t) in weights {
            let gname = gguf_name(name);
            let dt = if t.rank() == 2 { dtype } else { GgmlDType::F32 };
            let q = QTensor::quantize(t, dt).ctx(|| format!("quantising {name} to {dt:?}"))?;
            tensors.push((gname, q));
        }
        use gguf_file::Value as V;
        let u = |v: usize| V::U32(v as u32);
        let md: Vec<(&str, V)> = vec![
            ("general.architecture", V::String("qwen2".into())),
            ("general.name", V::String("sensorium-synthetic".into())),
            ("qwen2.context_length", u(self.max_position_embeddings)),
            ("qwen2.embedding_length", u(self.hidden_size)),
            ("qwen2.block_count", u(self.num_hidden_layers)),
            ("qwen2.feed_forward_length", u(self.intermediate_size)),
            ("qwen2.attention.head_count", u(self.num_attention_heads)),
            ("qwen2.attention.head_count_kv", u(self.num_key_value_heads)),
            ("qwen2.rope.freq_base", V::F32(self.rope_theta)),
            ("qwen2.attention.layer_norm_rms_epsilon", V::F32(1e-6)),
            ("tokenizer.ggml.model", V::String("gpt2".into())),
            ("tokenizer.ggml.pre", V::String("gpt-2".into())),
            (
                "tokenizer.ggml.tokens",
                V::Array(tok.tokens.into_iter().map(V::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                V::Array(tok.types.into_iter().map(V::I32).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                V::Array(tok.merges.into_iter().map(V::String).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", V::U32(bos)),
            ("tokenizer.ggml.eos_token_id", V::U32(eos)),
            ("tokenizer.ggml.add_bos_token", V::Bool(false)),
        ];
        let mdr: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let tr: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).map_err(|source| LlmError::Io {
            path: path.to_owned(),
            source,
        })?;
        gguf_file::write(&mut f, &mdr, &tr).ctx(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// llama.cpp tensor name of an HF tensor name.
fn gguf_name(hf: &str) -> String {
    const LAYER: [(&str, &str); 9] = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        if let Some((l, tail)) = rest.split_once('.') {
            for (h, g) in LAYER {
                if let Some(kind) = tail.strip_prefix(h) {
                    return format!("blk.{l}.{g}{kind}");
                }
            }
        }
    }
    hf.to_owned()
}

struct TokenizerMeta {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

impl TokenizerMeta {
    /// Byte-level BPE vocabulary, merges and special tokens of a tokenizer.json.
    fn from_file(path: &Path, vocab: usize) -> Result<Self, LlmError> {
        let text = std::fs::read_to_string(path).map_err(|source| LlmError::Io {
            path: path.to_owned(),
            source,
        })?;
        let j: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| LlmError::Json {
                path: path.to_owned(),
                source,
            })?;
        let bad = |field: &str| LlmError::Config {
            path: path.to_owned(),
            field: field.into(),
            message: "missing or malformed".into(),
        };
        let v = j["model"]["vocab"]
            .as_object()
            .ok_or_else(|| bad("model.vocab"))?;
        let mut tokens = vec![String::new(); vocab];
        let mut types = vec![3i32; vocab];
        for (t, id) in v {
            let id = id.as_u64().ok_or_else(|| bad("model.vocab"))? as usize;
            if id < vocab {
                tokens[id] = t.clone();
                types[id] = 1;
            }
        }
        for a in j["added_tokens"].as_array().into_iter().flatten() {
            if let (Some(id), Some(c)) = (a["id"].as_u64(), a["content"].as_str()) {
                if (id as usize) < vocab {
                    tokens[id as usize] = c.to_owned();
                    types[id as usize] = 3;
                }
            }
        }
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("<|pad_{i}|>");
            }
        }
        let merges = j["model"]["merges"]
            .as_array()
            .ok_or_else(|| bad("model.merges"))?
            .iter()
            .filter_map(|m| match m {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Array(p) => {
                    Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                }
                _ => None,
            })
            .collect();
        Ok(Self {
            tokens,
            types,
            merges,
        })
    }
}
