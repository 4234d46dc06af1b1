//! Class embeddings for the zero-shot teacher, computed with a CLIP text tower.
//!
//! Loads a Hugging Face CLIP checkpoint directory (`config.json`, `model.safetensors`,
//! `tokenizer.json`; tensor names `text_model.*`, `text_projection.weight`, `logit_scale`),
//! embeds one prompt per class ("a photo of a {class}" by default) and L2-normalises, as
//! `CLIPModel.get_text_features` does. The text tower is candle-transformers' port
//! (`candle-transformers/src/models/clip/text_model.rs`), pooled at the end-of-text token
//! (the highest id, CLIP's legacy pooling). The result can be written as a teacher file
//! (`text_embeds`, `logit_scale`) with [`save_class_embeddings`] and loaded by
//! [`super::teacher::Teacher::load`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use serde::Deserialize;

use super::error::{CandleContext, DistillError};
use crate::tensor_file::{self, StTensor};

/// The `config.json` keys this loader reads (HF `CLIPConfig`).
#[derive(Deserialize)]
struct HfClipConfig {
    text_config: HfTextConfig,
    projection_dim: usize,
}

#[derive(Deserialize)]
struct HfTextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    hidden_act: String,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}

/// A CLIP text tower with its projection and tokenizer.
pub struct ClipTextEmbedder {
    model: ClipTextTransformer,
    projection: candle_nn::Linear,
    tokenizer: tokenizers::Tokenizer,
    max_len: usize,
    /// `logit_scale` of the checkpoint (log of the cosine scale).
    pub logit_scale: f32,
    pub projection_dim: usize,
    dir: PathBuf,
}

impl ClipTextEmbedder {
    /// Load from a checkpoint directory.
    pub fn load(dir: &Path) -> Result<Self, DistillError> {
        let cfg_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| DistillError::io(&cfg_path, e))?;
        let cfg: HfClipConfig =
            serde_json::from_str(&text).map_err(|e| DistillError::ConfigParse {
                origin: cfg_path.display().to_string(),
                message: e.to_string(),
            })?;
        let t = &cfg.text_config;
        if t.hidden_act != "quick_gelu" {
            return Err(DistillError::ConfigParse {
                origin: cfg_path.display().to_string(),
                message: format!(
                    "text_config.hidden_act {:?} is not supported (only quick_gelu)",
                    t.hidden_act
                ),
            });
        }
        let ccfg = ClipTextConfig {
            vocab_size: t.vocab_size,
            embed_dim: t.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: cfg.projection_dim,
        };
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(DistillError::io(
                &weights,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
            ));
        }
        let wctx = |e: candle_core::Error| DistillError::Weights {
            path: weights.clone(),
            tensor: "text_model / text_projection".into(),
            message: e.to_string(),
        };
        // SAFETY: the file is memory-mapped read-only; it must not change while loaded,
        // which holds for checkpoints (written atomically, never in place).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                std::slice::from_ref(&weights),
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(wctx)?;
        let model = ClipTextTransformer::new(vb.pp("text_model"), &ccfg).map_err(wctx)?;
        let projection =
            candle_nn::linear_no_bias(t.hidden_size, cfg.projection_dim, vb.pp("text_projection"))
                .map_err(wctx)?;
        let logit_scale = if vb.contains_tensor("logit_scale") {
            vb.get((), "logit_scale")
                .and_then(|t| t.to_scalar::<f32>())
                .map_err(wctx)?
        } else {
            100f32.ln()
        };
        let tok_path = dir.join("tokenizer.json");
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| DistillError::ConfigParse {
                origin: tok_path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            model,
            projection,
            tokenizer,
            max_len: t.max_position_embeddings,
            logit_scale,
            projection_dim: cfg.projection_dim,
            dir: dir.to_path_buf(),
        })
    }

    /// Token ids of `text` (with the tokenizer's start/end tokens), cut to the context length
    /// keeping the end-of-text token last.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DistillError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| DistillError::input("prompt", format!("{text:?}: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.is_empty() {
            return Err(DistillError::input(
                "prompt",
                format!("{text:?} has no tokens"),
            ));
        }
        if ids.len() > self.max_len {
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_len);
            ids[self.max_len - 1] = last;
        }
        Ok(ids)
    }

    /// L2-normalised text features of `text`.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, DistillError> {
        let ids = self.tokenize(text)?;
        let n = ids.len();
        let input = Tensor::from_vec(ids, (1, n), &Device::Cpu).ctx("clip text input")?;
        let pooled = self.model.forward(&input).ctx("clip text tower")?;
        let z = self
            .projection
            .forward(&pooled)
            .ctx("clip text projection")?;
        let mut v = tensor_file::to_vec(&z).ctx("clip text features")?;
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        Ok(v)
    }

    /// Row-major `[K, E]` embeddings of `template` (with `{}` replaced by the class) per class.
    pub fn class_embeddings(
        &self,
        classes: &[String],
        template: &str,
    ) -> Result<Vec<f32>, DistillError> {
        if !template.contains("{}") {
            return Err(DistillError::input(
                "prompt template",
                format!("{template:?} has no {{}} for the class name"),
            ));
        }
        let mut out = Vec::with_capacity(classes.len() * self.projection_dim);
        for c in classes {
            out.extend(self.embed(&template.replace("{}", c))?);
        }
        Ok(out)
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Write a zero-shot teacher file: `text_embeds` `[K, E]` and `logit_scale` `[1]` (log scale).
pub fn save_class_embeddings(
    path: &Path,
    embeds: &[f32],
    num_classes: usize,
    logit_scale: f32,
) -> Result<(), DistillError> {
    if num_classes == 0 || embeds.is_empty() || !embeds.len().is_multiple_of(num_classes) {
        return Err(DistillError::input(
            "class embeddings",
            format!("{} values for {num_classes} classes", embeds.len()),
        ));
    }
    let tensors = [
        StTensor {
            name: "text_embeds".into(),
            shape: vec![num_classes, embeds.len() / num_classes],
            data: embeds.to_vec(),
        },
        StTensor {
            name: "logit_scale".into(),
            shape: vec![1],
            data: vec![logit_scale],
        },
    ];
    tensor_file::write_atomic(path, &tensor_file::to_bytes(&tensors, &BTreeMap::new()))
}
