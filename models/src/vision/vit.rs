//! The ViT tower shared by CLIP and SigLIP vision models.
//!
//! Follows `transformers/models/clip/modeling_clip.py` (`CLIPVisionEmbeddings`,
//! `CLIPEncoderLayer`, `CLIPVisionTransformer`) and `models/siglip/modeling_siglip.py`
//! (`SiglipVisionEmbeddings`, `SiglipVisionTransformer`). The two differ only in: CLS token
//! and `pre_layrnorm` (CLIP), patch-conv bias (SigLIP), the activation, and where
//! `post_layernorm` goes (CLIP: pooled CLS only; SigLIP: every token). SigLIP's attention
//! pooling head is not loaded: we use token states, not the pooled embedding.

use candle_core::Tensor;

use crate::checkpoint::{LayerNorm, Linear, SelfAttention, Weights};
use crate::error::Result;
use crate::ops::Activation;

use super::{Family, VisionConfig};

/// `CLIPEncoderLayer` / `SiglipEncoderLayer` (identical structure and names).
#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: SelfAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl EncoderLayer {
    fn new(cfg: &VisionConfig, act: Activation, vb: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            layer_norm1: vb.layer_norm(d, eps, "layer_norm1")?,
            self_attn: SelfAttention::new(
                &vb.pp("self_attn"),
                cfg.hidden_size,
                cfg.num_attention_heads,
                true,
            )?,
            layer_norm2: vb.layer_norm(d, eps, "layer_norm2")?,
            fc1: vb.linear(d, cfg.intermediate_size, true, "mlp.fc1")?,
            fc2: vb.linear(cfg.intermediate_size, d, true, "mlp.fc2")?,
            act,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.self_attn.forward(&self.layer_norm1.forward(x)?)?;
        let x = (x + h)?;
        let h = self.layer_norm2.forward(&x)?;
        let h = self
            .fc2
            .forward(&self.act.forward(&self.fc1.forward(&h)?)?)?;
        x + h
    }
}

/// A CLIP or SigLIP vision transformer, rooted at `vision_model.`.
#[derive(Debug)]
pub struct VisionTransformer {
    family: Family,
    patch_weight: Tensor,
    patch_bias: Option<Tensor>,
    class_embedding: Option<Tensor>,
    position_embedding: Tensor,
    pre_layrnorm: Option<LayerNorm>,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    patch: usize,
}

impl VisionTransformer {
    pub fn new(cfg: &VisionConfig, act: Activation, vb: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let n_patches = (cfg.image_size / p) * (cfg.image_size / p);
        let emb = vb.pp("embeddings");
        let clip = cfg.family == Family::Clip;
        let n_pos = n_patches + usize::from(clip);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(cfg, act, &vb.pp("encoder.layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            family: cfg.family,
            patch_weight: emb
                .pp("patch_embedding")
                .get(&[d, cfg.num_channels, p, p], "weight")?,
            patch_bias: if clip {
                None
            } else {
                Some(emb.pp("patch_embedding").get(&[d], "bias")?)
            },
            class_embedding: if clip {
                Some(emb.get(&[d], "class_embedding")?)
            } else {
                None
            },
            position_embedding: emb.pp("position_embedding").get(&[n_pos, d], "weight")?,
            pre_layrnorm: if clip {
                Some(vb.layer_norm(d, cfg.layer_norm_eps, "pre_layrnorm")?)
            } else {
                None
            },
            layers,
            post_layernorm: vb.layer_norm(d, cfg.layer_norm_eps, "post_layernorm")?,
            patch: p,
        })
    }

    /// Runs the tower on pixels `[B, C, H, W]`. Returns the HF `last_hidden_state`
    /// (`[B, 1 + N, D]` for CLIP with CLS first, `[B, N, D]` for SigLIP after its
    /// post-LayerNorm) and, for CLIP, the pooled CLS (`post_layernorm(h[:, 0])`).
    pub fn forward(&self, pixels: &Tensor) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let x = pixels.conv2d(&self.patch_weight, 0, self.patch, 1, 1)?;
        let x = match &self.patch_bias {
            Some(b) => x.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
            None => x,
        };
        let (b, d, _, _) = x.dims4()?;
        let x = x.flatten_from(2)?.transpose(1, 2)?; // [B, N, D]
        let x = match &self.class_embedding {
            Some(c) => Tensor::cat(&[&c.reshape((1, 1, d))?.repeat((b, 1, 1))?, &x], 1)?,
            None => x,
        };
        let mut x = x.broadcast_add(&self.position_embedding.unsqueeze(0)?)?;
        if let Some(ln) = &self.pre_layrnorm {
            x = ln.forward(&x)?;
        }
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        match self.family {
            Family::Clip => {
                let cls = self
                    .post_layernorm
                    .forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?;
                Ok((x, Some(cls)))
            }
            Family::Siglip => Ok((self.post_layernorm.forward(&x)?, None)),
        }
    }
}
