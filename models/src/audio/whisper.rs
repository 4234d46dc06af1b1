//! Whisper encoder from Hugging Face checkpoints (tiny .. large-v3, 80 or 128 mel bins).
//!
//! Follows `transformers/models/whisper/modeling_whisper.py` (`WhisperEncoder`,
//! `WhisperEncoderLayer`, `WhisperAttention`); tensor paths mirror the HF names under
//! `model.encoder.` (WhisperForConditionalGeneration), `encoder.` (WhisperModel) or none.
//! Unlike HF (which insists on 3000 mel frames = 30 s) and candle-transformers' whisper
//! (which recomputes sinusoids and uses tanh-GELU in the convs), we load `embed_positions`
//! from the checkpoint and slice it to the input length, so a 0.5 s chunk is encoded as 25
//! frames without padding to 30 s. Exact (erf) GELU, as HF's `"gelu"`.

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::checkpoint::{self, LayerNorm, Linear, SelfAttention, Weights};
use crate::error::{ModelError, Result};
use crate::ops::Activation;

/// The encoder fields of HF `WhisperConfig` (`config.json` keys).
#[derive(Clone, Debug, Deserialize)]
pub struct WhisperConfig {
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub num_mel_bins: usize,
    pub max_source_positions: usize,
    #[serde(default = "default_act")]
    pub activation_function: String,
}

fn default_act() -> String {
    "gelu".into()
}

const LN_EPS: f64 = 1e-5;

/// `WhisperEncoderLayer` (pre-LN).
#[derive(Debug)]
struct EncoderLayer {
    self_attn: SelfAttention,
    self_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
    act: Activation,
}

impl EncoderLayer {
    fn new(cfg: &WhisperConfig, act: Activation, vb: &Weights) -> Result<Self> {
        let d = cfg.d_model;
        Ok(Self {
            self_attn: SelfAttention::new(
                &vb.pp("self_attn"),
                cfg.d_model,
                cfg.encoder_attention_heads,
                false,
            )?,
            self_attn_layer_norm: vb.layer_norm(d, LN_EPS, "self_attn_layer_norm")?,
            fc1: vb.linear(d, cfg.encoder_ffn_dim, true, "fc1")?,
            fc2: vb.linear(cfg.encoder_ffn_dim, d, true, "fc2")?,
            final_layer_norm: vb.layer_norm(d, LN_EPS, "final_layer_norm")?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.self_attn_layer_norm.forward(x)?)?;
        let x = (x + h)?;
        let h = self.final_layer_norm.forward(&x)?;
        let h = self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(&h)?)?)?;
        x + h
    }
}

#[derive(Debug)]
struct Conv1d {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

impl Conv1d {
    fn new(cin: usize, cout: usize, stride: usize, vb: &Weights) -> Result<Self> {
        Ok(Self {
            weight: vb.get(&[cout, cin, 3], "weight")?,
            bias: vb.get(&[cout], "bias")?,
            stride,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::conv1d(x, &self.weight, Some(&self.bias), 1, self.stride)
    }
}

/// The Whisper encoder (`WhisperEncoder`).
#[derive(Debug)]
pub struct WhisperEncoder {
    cfg: WhisperConfig,
    conv1: Conv1d,
    conv2: Conv1d,
    embed_positions: Tensor,
    layers: Vec<EncoderLayer>,
    layer_norm: LayerNorm,
    act: Activation,
}

impl WhisperEncoder {
    /// Loads from a HF checkpoint directory (`config.json` with `model_type = "whisper"`
    /// and `*.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (path, value) = checkpoint::read_config(dir)?;
        let mt = checkpoint::model_type(&value);
        if mt != "whisper" {
            return Err(ModelError::UnknownArchitecture {
                path,
                found: mt.to_string(),
                expected: "whisper".into(),
            });
        }
        let cfg: WhisperConfig = checkpoint::parse_config(&path, &value)?;
        let vb = Self::root(&Weights::from_dir(dir, device)?)?;
        Self::new(cfg, &vb, &path)
    }

    /// Loads from `dir`'s config with the given weights (the checkpoint's tensors by their
    /// file names, e.g. training variables).
    pub fn load_with(dir: &Path, vb: &Weights) -> Result<Self> {
        let (path, value) = checkpoint::read_config(dir)?;
        let cfg: WhisperConfig = checkpoint::parse_config(&path, &value)?;
        Self::new(cfg, &Self::root(vb)?, &path)
    }

    /// The view of a checkpoint's weights rooted at the encoder: `model.encoder.`
    /// (WhisperForConditionalGeneration), `encoder.` (WhisperModel) or bare.
    pub fn root(vb: &Weights) -> Result<Weights> {
        Ok(if vb.contains("model.encoder.conv1.weight") {
            vb.pp("model.encoder")
        } else if vb.contains("encoder.conv1.weight") {
            vb.pp("encoder")
        } else if vb.contains("conv1.weight") {
            vb.clone()
        } else {
            return Err(ModelError::MissingTensor {
                path: vb.file(),
                tensor: "model.encoder.conv1.weight".into(),
            });
        })
    }

    /// Builds from a config and weights rooted at the encoder (`conv1`, `layers`, ...).
    pub fn new(cfg: WhisperConfig, vb: &Weights, config_path: &Path) -> Result<Self> {
        let act = Activation::from_hf(&cfg.activation_function).ok_or_else(|| {
            ModelError::InvalidConfig {
                path: config_path.to_path_buf(),
                message: format!(
                    "unsupported activation_function {:?}",
                    cfg.activation_function
                ),
            }
        })?;
        let d = cfg.d_model;
        let layers = (0..cfg.encoder_layers)
            .map(|i| EncoderLayer::new(&cfg, act, &vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: Conv1d::new(cfg.num_mel_bins, d, 1, &vb.pp("conv1"))?,
            conv2: Conv1d::new(d, d, 2, &vb.pp("conv2"))?,
            embed_positions: vb
                .pp("embed_positions")
                .get(&[cfg.max_source_positions, d], "weight")?,
            layer_norm: vb.layer_norm(d, LN_EPS, "layer_norm")?,
            layers,
            act,
            cfg,
        })
    }

    pub fn config(&self) -> &WhisperConfig {
        &self.cfg
    }

    /// Encodes log-mel features `[B, n_mels, T]` (T even, T/2 <= max_source_positions)
    /// into `[B, T/2, d_model]`; positional embeddings are sliced to `T/2`.
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let (_, n_mels, t) = mel.dims3()?;
        if n_mels != self.cfg.num_mel_bins {
            return Err(ModelError::InvalidInput(format!(
                "mel input has {n_mels} bins, the encoder expects {}",
                self.cfg.num_mel_bins
            )));
        }
        let frames = t.div_ceil(2);
        if frames > self.cfg.max_source_positions || t == 0 {
            return Err(ModelError::InvalidInput(format!(
                "mel input of {t} frames gives {frames} encoder frames; allowed 1..={}",
                self.cfg.max_source_positions
            )));
        }
        let x = self.act.forward(&self.conv1.forward(mel)?)?;
        let x = self.act.forward(&self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?;
        let pos = self.embed_positions.narrow(0, 0, frames)?;
        let mut x = x.broadcast_add(&pos)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(self.layer_norm.forward(&x)?)
    }
}
