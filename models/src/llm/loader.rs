//! Opens a model from a path: a Hugging Face directory (`config.json`, `model.safetensors` or
//! sharded `model.safetensors.index.json`, `tokenizer.json`) or a `.gguf` file (tokenizer from
//! its metadata, or from a `tokenizer.json` given explicitly).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::error::LlmError;
use super::gguf::GgufFile;
use super::hf_config::DecoderConfig;
use super::model::Decoder;
use super::tokenizer::LlmTokenizer;

/// Compute dtype of a dense (safetensors) model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeDtype {
    /// f32 on CPU, bf16 on CUDA.
    #[default]
    Auto,
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            ComputeDtype::Auto if device.is_cuda() => DType::BF16,
            ComputeDtype::Auto | ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
            ComputeDtype::F16 => DType::F16,
        }
    }
}

/// Decoder + tokenizer.
#[derive(Debug)]
pub struct LoadedModel {
    pub decoder: Decoder,
    pub tokenizer: LlmTokenizer,
}

/// Loads `model` (directory or `.gguf`) with a KV cache of `cache_cap` positions.
/// `tokenizer` overrides where the tokenizer comes from.
pub fn load_model(
    model: &Path,
    tokenizer: Option<&Path>,
    dtype: ComputeDtype,
    cache_cap: usize,
    device: &Device,
) -> Result<LoadedModel, LlmError> {
    load_model_with(model, tokenizer, dtype, false, cache_cap, device)
}

/// [`load_model`], optionally dequantising GGUF weights to f32 at load.
pub fn load_model_with(
    model: &Path,
    tokenizer: Option<&Path>,
    dtype: ComputeDtype,
    dequantize: bool,
    cache_cap: usize,
    device: &Device,
) -> Result<LoadedModel, LlmError> {
    let is_gguf = model
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        let mut g = GgufFile::open(model)?;
        g.dequantize = dequantize;
        // The weights and the tokenizer (a 150k-token BPE and its special tokens take a
        // third of a small model's load) are built side by side.
        let (decoder, tokenizer) = std::thread::scope(|s| {
            let tokenizer = s.spawn(|| match tokenizer {
                Some(t) => LlmTokenizer::from_file(t),
                None => LlmTokenizer::from_gguf_parts(g.tokenizer_parts()?),
            });
            let decoder = g.load_decoder(cache_cap, device);
            let tokenizer = tokenizer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (decoder, tokenizer)
        });
        return Ok(LoadedModel {
            decoder: decoder?,
            tokenizer: tokenizer?,
        });
    }
    if !model.is_dir() {
        return Err(LlmError::Checkpoint {
            path: model.to_owned(),
            message: "is neither a model directory (config.json + safetensors) nor a .gguf file"
                .into(),
        });
    }
    let cfg = DecoderConfig::from_hf_file(&model.join("config.json"))?;
    let files = safetensors_files(model)?;
    let dtype = dtype.resolve(device);
    // SAFETY: the files are memory-mapped read-only; like every mmap-based loader we rely on
    // them not being modified while the model is alive.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }.map_err(|e| {
            LlmError::Checkpoint {
                path: model.to_owned(),
                message: format!("safetensors: {e}"),
            }
        })?;
    let decoder =
        Decoder::from_var_builder(cfg, vb, cache_cap).map_err(|e| LlmError::Checkpoint {
            path: model.to_owned(),
            message: e.to_string(),
        })?;
    let tok_path = tokenizer
        .map(Path::to_owned)
        .unwrap_or_else(|| model.join("tokenizer.json"));
    let tokenizer = LlmTokenizer::from_file(&tok_path)?;
    Ok(LoadedModel { decoder, tokenizer })
}

/// `model.safetensors`, or every shard named by `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, LlmError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).map_err(|source| LlmError::Io {
        path: index.clone(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| LlmError::Json {
        path: index.clone(),
        source,
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| LlmError::Config {
            path: index.clone(),
            field: "weight_map".into(),
            message: "missing or not an object".into(),
        })?;
    let mut files: Vec<PathBuf> = map
        .values()
        .filter_map(|f| f.as_str())
        .map(|f| dir.join(f))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
