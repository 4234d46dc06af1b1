//! The decoder's shape, read from a Hugging Face `config.json` (keys as HF spells them) or
//! from GGUF metadata, resolved into one [`DecoderConfig`] that the model code uses.

use std::path::Path;

use serde::Deserialize;

use super::error::LlmError;

/// Which family: decides the q/k/v bias default and the GGUF tensor layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Qwen2 / Qwen2.5: bias on q/k/v projections.
    Qwen2,
    /// LLaMA family (LLaMA 2/3, Vicuna, Mistral without sliding window): no bias.
    Llama,
}

/// How rotary embeddings pair the head dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// HF layout: dimension i pairs with i + d/2 (`rotate_half`).
    Halves,
    /// GGML layout of llama-arch GGUF files (q/k rows permuted): pairs (2i, 2i+1).
    Interleaved,
}

/// LLaMA 3.1 style frequency scaling (`rope_scaling.rope_type == "llama3"`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// The resolved decoder shape.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub rope_style: RopeStyle,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f32>,
    rope_type: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

/// `config.json` as written by `transformers` (4.x puts `rope_theta`/`rope_scaling` at the top
/// level, 5.x nests them in `rope_parameters`; both are read).
#[derive(Deserialize)]
struct HfConfigJson {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f32>,
    rope_scaling: Option<RopeParameters>,
    rope_parameters: Option<RopeParameters>,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
    use_sliding_window: Option<bool>,
}

impl DecoderConfig {
    /// Reads and resolves `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self, LlmError> {
        let text = std::fs::read_to_string(path).map_err(|source| LlmError::Io {
            path: path.to_owned(),
            source,
        })?;
        let raw: HfConfigJson = serde_json::from_str(&text).map_err(|source| LlmError::Json {
            path: path.to_owned(),
            source,
        })?;
        let bad = |field: &str, message: String| LlmError::Config {
            path: path.to_owned(),
            field: field.into(),
            message,
        };
        let model_type = raw.model_type.as_deref().unwrap_or("llama");
        let arch = match model_type {
            "qwen2" => Arch::Qwen2,
            "llama" | "mistral" => Arch::Llama,
            other => {
                return Err(bad(
                    "model_type",
                    format!("`{other}` is not supported (qwen2, llama, mistral)"),
                ))
            }
        };
        if raw.use_sliding_window == Some(true) {
            return Err(bad(
                "use_sliding_window",
                "sliding-window attention is not supported".into(),
            ));
        }
        if raw.hidden_size.checked_rem(raw.num_attention_heads) != Some(0) {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    raw.num_attention_heads, raw.hidden_size
                ),
            ));
        }
        let kv = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if raw.num_attention_heads.checked_rem(kv) != Some(0) {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{kv} does not divide num_attention_heads {}",
                    raw.num_attention_heads
                ),
            ));
        }
        let params = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_theta
            .or(params.and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0);
        let rope_scaling = match params {
            Some(p) if p.rope_type.as_deref() == Some("llama3") => Some(Llama3RopeScaling {
                factor: p
                    .factor
                    .ok_or_else(|| bad("rope_scaling.factor", "missing".into()))?,
                low_freq_factor: p.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: p.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: p
                    .original_max_position_embeddings
                    .unwrap_or(8192),
            }),
            Some(p) if matches!(p.rope_type.as_deref(), None | Some("default")) => None,
            Some(p) => {
                return Err(bad(
                    "rope_scaling.rope_type",
                    format!(
                        "`{}` is not supported (default, llama3)",
                        p.rope_type.as_deref().unwrap_or("")
                    ),
                ))
            }
            None => None,
        };
        let eos_token_ids = match raw.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => vec![],
        };
        Ok(Self {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads: kv,
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            rope_style: RopeStyle::Halves,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(arch == Arch::Qwen2),
            bos_token_id: raw.bos_token_id,
            eos_token_ids,
        })
    }
}
