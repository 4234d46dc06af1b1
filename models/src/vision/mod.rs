//! Visual encoder: CLIP and SigLIP vision towers from HF checkpoints, with the matching
//! image preprocessing and a choice of per-frame tokens (all patches, pooled slots, CLS).

pub mod preprocess;
pub mod vit;

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::checkpoint::{self, Weights};
use crate::error::{ModelError, Result};
use crate::ops::Activation;
use crate::tokens::{self, SlotMode};
pub use preprocess::{Preprocess, Resample};
pub use vit::VisionTransformer;

/// Which vision family a checkpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Clip,
    Siglip,
}

/// HF `CLIPVisionConfig` / `SiglipVisionConfig` keys; absent keys take the family default.
#[derive(Clone, Debug, Deserialize)]
struct RawVisionConfig {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_channels: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

/// A resolved vision config.
#[derive(Clone, Debug)]
pub struct VisionConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

const KNOWN: &str = "clip, clip_vision_model, siglip, siglip_vision_model";

impl VisionConfig {
    /// Reads `dir/config.json`: a full `CLIPConfig`/`SiglipConfig` (uses `vision_config`) or
    /// a vision-only config.
    pub fn load(dir: &Path) -> Result<Self> {
        let (path, value) = checkpoint::read_config(dir)?;
        let mt = checkpoint::model_type(&value);
        let (family, sub) = match mt {
            "clip" => (Family::Clip, true),
            "clip_vision_model" => (Family::Clip, false),
            "siglip" => (Family::Siglip, true),
            "siglip_vision_model" => (Family::Siglip, false),
            other => {
                return Err(ModelError::UnknownArchitecture {
                    path,
                    found: other.to_string(),
                    expected: KNOWN.into(),
                })
            }
        };
        let v = if sub {
            value
                .get("vision_config")
                .cloned()
                .unwrap_or(serde_json::json!({}))
        } else {
            value.clone()
        };
        let raw: RawVisionConfig = checkpoint::parse_config(&path, &v)?;
        let clip = family == Family::Clip;
        Ok(Self {
            family,
            hidden_size: raw.hidden_size.unwrap_or(768),
            intermediate_size: raw.intermediate_size.unwrap_or(3072),
            num_hidden_layers: raw.num_hidden_layers.unwrap_or(12),
            num_attention_heads: raw.num_attention_heads.unwrap_or(12),
            num_channels: raw.num_channels.unwrap_or(3),
            image_size: raw.image_size.unwrap_or(224),
            patch_size: raw.patch_size.unwrap_or(if clip { 32 } else { 16 }),
            hidden_act: raw.hidden_act.unwrap_or_else(|| {
                if clip {
                    "quick_gelu".into()
                } else {
                    "gelu_pytorch_tanh".into()
                }
            }),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(if clip { 1e-5 } else { 1e-6 }),
        })
    }
}

/// Reads `preprocessor_config.json` when present, else the family defaults.
fn load_preprocess(dir: &Path, cfg: &VisionConfig) -> Result<Preprocess> {
    let mut p = match cfg.family {
        Family::Clip => Preprocess::clip(cfg.image_size),
        Family::Siglip => Preprocess::siglip(cfg.image_size),
    };
    let path = dir.join("preprocessor_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(p);
    };
    let bad = |m: String| ModelError::InvalidConfig {
        path: path.clone(),
        message: m,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let get =
        |o: &serde_json::Value, k: &str| o.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    if let Some(size) = v.get("size") {
        if let Some(s) = get(size, "shortest_edge") {
            p.shortest_edge = Some(s);
            p.square = None;
        } else if let (Some(h), Some(w)) = (get(size, "height"), get(size, "width")) {
            if h != w {
                return Err(bad(format!("non-square size {w}x{h} is not supported")));
            }
            p.square = Some(h);
            p.shortest_edge = None;
        }
    }
    if v.get("do_center_crop").and_then(|x| x.as_bool()) == Some(false) {
        p.crop = None;
    } else if let Some(c) = v.get("crop_size") {
        if let (Some(h), Some(w)) = (get(c, "height"), get(c, "width")) {
            p.crop = Some((h, w));
        }
    }
    if let Some(r) = v.get("resample").and_then(|x| x.as_u64()) {
        p.resample =
            Resample::from_pil(r).ok_or_else(|| bad(format!("unsupported resample {r}")))?;
    }
    for (key, dst) in [("image_mean", &mut p.mean), ("image_std", &mut p.std)] {
        if let Some(arr) = v.get(key).and_then(|x| x.as_array()) {
            for (d, s) in dst.iter_mut().zip(arr) {
                *d = s
                    .as_f64()
                    .ok_or_else(|| bad(format!("{key} must be numbers")))?
                    as f32;
            }
        }
    }
    Ok(p)
}

/// A vision tower with its preprocessing.
#[derive(Debug)]
pub struct VisionEncoder {
    pub config: VisionConfig,
    pub preprocess: Preprocess,
    pub tower: VisionTransformer,
    device: Device,
}

impl VisionEncoder {
    /// Loads a CLIP or SigLIP checkpoint directory (`config.json`, `*.safetensors`,
    /// optionally `preprocessor_config.json`). Tensors under `vision_model.` or bare.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with(dir, &Weights::from_dir(dir, device)?)
    }

    /// Loads `dir`'s config and preprocessing with the given weights (the checkpoint's
    /// tensors by their file names, e.g. training variables).
    pub fn load_with(dir: &Path, vb: &Weights) -> Result<Self> {
        let device = vb.device().clone();
        let config = VisionConfig::load(dir)?;
        let act =
            Activation::from_hf(&config.hidden_act).ok_or_else(|| ModelError::InvalidConfig {
                path: dir.join("config.json"),
                message: format!("unsupported hidden_act {:?}", config.hidden_act),
            })?;
        let preprocess = load_preprocess(dir, &config)?;
        let vb = Self::root(vb)?;
        let tower = VisionTransformer::new(&config, act, &vb)?;
        Ok(Self {
            config,
            preprocess,
            tower,
            device,
        })
    }

    /// The view of a checkpoint's weights rooted at the tower.
    pub fn root(vb: &Weights) -> Result<Weights> {
        // CLIPModel / SiglipModel and older vision-only saves use `vision_model.`; newer
        // transformers save vision-only models without the prefix.
        if vb.contains("vision_model.embeddings.patch_embedding.weight") {
            Ok(vb.pp("vision_model"))
        } else if vb.contains("embeddings.patch_embedding.weight") {
            Ok(vb.clone())
        } else {
            Err(ModelError::MissingTensor {
                path: vb.file(),
                tensor: "vision_model.embeddings.patch_embedding.weight".into(),
            })
        }
    }

    pub fn width(&self) -> usize {
        self.config.hidden_size
    }

    /// Preprocesses packed RGB8 frames (each with its size) into `[B, 3, S, S]`.
    pub fn pixels(&self, frames: &[(&[u8], usize, usize)]) -> Result<Tensor> {
        let s = self.config.image_size;
        let mut data = Vec::with_capacity(frames.len() * 3 * s * s);
        for (rgb, w, h) in frames {
            let (oh, ow) = self.preprocess.output_size(*w, *h);
            if (oh, ow) != (s, s) {
                return Err(ModelError::InvalidInput(format!(
                    "preprocessing gives {ow}x{oh}, the tower expects {s}x{s}"
                )));
            }
            data.extend(self.preprocess.apply(rgb, *w, *h)?);
        }
        Ok(Tensor::from_vec(
            data,
            (frames.len(), 3, s, s),
            &self.device,
        )?)
    }

    /// Runs the tower on pixels: (`last_hidden_state`, pooled CLS for CLIP).
    pub fn forward(&self, pixels: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        Ok(self.tower.forward(pixels)?)
    }

    /// Frames -> per-frame slots `[B, slots, D]` (CLS excluded from patch tokens).
    pub fn encode_slots(&self, frames: &[(&[u8], usize, usize)], mode: SlotMode) -> Result<Tensor> {
        self.pixel_slots(&self.pixels(frames)?, mode)
    }

    /// Preprocessed pixels `[B, 3, S, S]` -> per-frame slots `[B, slots, D]`.
    pub fn pixel_slots(&self, pixels: &Tensor, mode: SlotMode) -> Result<Tensor> {
        let (h, cls) = self.forward(pixels)?;
        let patches = match self.config.family {
            Family::Clip => h.narrow(1, 1, h.dim(1)? - 1)?,
            Family::Siglip => h,
        };
        tokens::to_slots(&patches, cls.as_ref(), mode)
    }
}
