//! The distillation feature-extractor traits over the real encoders: Whisper audio tokens
//! mean-pooled over time, and CLIP/SigLIP visual tokens (the per-frame slots the frame
//! encoder produces) mean-pooled over slots. Each extractor either owns its encoder or reads
//! the tokens an upstream [`AvFrameEncoder`](crate::stage::AvFrameEncoder) attached to the
//! frame, so in the live path every frame is encoded once for the Q-Former and distillation.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use sensorium_engine::frame::FrameFeatures;

use super::error::DistillError;
use super::features::{AudioFeatureExtractor, VisualFeatureExtractor};
use crate::audio::AudioEncoder;
use crate::tokens::SlotMode;
use crate::vision::VisionEncoder;

fn candle_err(context: &str) -> impl Fn(candle_core::Error) -> DistillError + '_ {
    move |source| DistillError::Candle {
        context: context.into(),
        source,
    }
}

/// Mean over the token axis of `[T, D]` (or `[1, T, D]`) -> `D` floats.
fn pool_tokens(x: &Tensor, context: &str) -> Result<Vec<f32>, DistillError> {
    let x = if x.rank() == 3 {
        x.squeeze(0).map_err(candle_err(context))?
    } else {
        x.clone()
    };
    x.to_dtype(DType::F32)
        .and_then(|x| x.mean(0))
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(candle_err(context))
}

fn model_err(what: &str) -> impl Fn(crate::error::ModelError) -> DistillError + '_ {
    move |e| DistillError::input(what, e)
}

/// Whisper encoder output, mean-pooled over its ~25 frames per 0.5 s: `d_model` floats.
pub struct WhisperAudioFeatures {
    encoder: Option<Arc<AudioEncoder>>,
    dim: usize,
}

impl WhisperAudioFeatures {
    /// Runs `encoder` itself when a frame carries no upstream tokens.
    pub fn with_encoder(encoder: Arc<AudioEncoder>) -> Self {
        Self {
            dim: encoder.width(),
            encoder: Some(encoder),
        }
    }

    /// Only pools the tokens of an upstream frame encoder of width `dim` (a frame without
    /// them is an error naming the missing encoder).
    pub fn upstream(dim: usize) -> Self {
        Self { encoder: None, dim }
    }
}

impl AudioFeatureExtractor for WhisperAudioFeatures {
    fn name(&self) -> &str {
        "whisper-mean"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn extract(&self, samples: &[f32]) -> Result<Vec<f32>, DistillError> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            DistillError::input(
                "whisper features",
                "frame has no Whisper tokens (the audio frame encoder did not run on it)",
            )
        })?;
        let x = enc
            .encode(&[samples])
            .map_err(model_err("whisper features"))?;
        pool_tokens(&x, "whisper features")
    }
    fn pool_upstream(&self, features: &FrameFeatures) -> Option<Result<Vec<f32>, DistillError>> {
        let t = features.encoded()?.audio.as_ref()?;
        Some(pool_tokens(t, "whisper features"))
    }
}

/// Vision tower slots (`mode`, as the frame encoder makes them), mean-pooled: `hidden_size`
/// floats. With `SlotMode::Cls` this is CLIP's CLS token.
pub struct VisionTowerFeatures {
    encoder: Option<Arc<VisionEncoder>>,
    mode: SlotMode,
    dim: usize,
}

impl VisionTowerFeatures {
    pub fn with_encoder(encoder: Arc<VisionEncoder>, mode: SlotMode) -> Self {
        Self {
            dim: encoder.width(),
            encoder: Some(encoder),
            mode,
        }
    }

    /// See [`WhisperAudioFeatures::upstream`].
    pub fn upstream(dim: usize) -> Self {
        Self {
            encoder: None,
            mode: SlotMode::All,
            dim,
        }
    }
}

impl VisualFeatureExtractor for VisionTowerFeatures {
    fn name(&self) -> &str {
        "vision-mean"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn extract(&self, rgb: &[u8], width: u32, height: u32) -> Result<Vec<f32>, DistillError> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            DistillError::input(
                "vision features",
                "frame has no visual tokens (the vision frame encoder did not run on it)",
            )
        })?;
        let x = enc
            .encode_slots(&[(rgb, width as usize, height as usize)], self.mode)
            .map_err(model_err("vision features"))?;
        pool_tokens(&x, "vision features")
    }
    fn pool_upstream(&self, features: &FrameFeatures) -> Option<Result<Vec<f32>, DistillError>> {
        let t = features.encoded()?.visual.as_ref()?;
        Some(pool_tokens(t, "vision features"))
    }
}
