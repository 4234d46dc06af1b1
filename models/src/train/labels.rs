//! Learning from the world's facts, not only from answers: linear label heads (training
//! only, never part of a served model), read by the encoders' pretraining stage
//! (`pretrain.rs`) and the Q-Former's label loss.
//!
//! An answer's tokens reach the encoders only through the LLM, the Q-Former and a pooled,
//! mostly black picture: from random weights that signal is too weak for a small vision
//! tower to learn colours, shapes and positions in the default model's time budget (measured:
//! visual accuracy at chance after 6,000 steps). Whisper and CLIP come pretrained to FAVOR;
//! the default model's encoders get the same start here, from the scene world's per-frame
//! labels ([`sensorium_engine::scene::frame_labels`]): a batched stage of many frames per
//! step ([`Trainer::pretrain_encoders`]) before the answer training, plus an optional label
//! loss on the Q-Former's query tokens during it ([`Trainer::with_labels`]).

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng as _, SeedableRng};

use super::TrainError;

/// A linear read-out of labels: `sigmoid(W x + b)` against 0/1 targets.
pub(super) struct LabelHead {
    pub(super) weight: Var,
    pub(super) bias: Var,
}

impl LabelHead {
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` weights (PyTorch's `nn.Linear`), seeded.
    pub(super) fn new(inputs: usize, labels: usize, seed: u64) -> Result<Self, TrainError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x001A_BE15);
        let a = 1.0 / (inputs as f32).sqrt();
        let w: Vec<f32> = (0..inputs * labels)
            .map(|_| rng.random_range(-a..a))
            .collect();
        Ok(Self {
            weight: Var::from_tensor(&Tensor::from_vec(w, (labels, inputs), &Device::Cpu)?)?,
            bias: Var::from_tensor(&Tensor::zeros(labels, DType::F32, &Device::Cpu)?)?,
        })
    }

    /// The labels' logits read from `x` (`[B, inputs]` -> `[B, labels]`).
    pub(super) fn logits(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        Ok(x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    /// Masked mean binary cross-entropy of the labels read from `x` (`[B, inputs]`);
    /// `target` and `mask` are `[B, labels]` row-major.
    pub(super) fn loss(
        &self,
        x: &Tensor,
        target: &[f32],
        mask: &[f32],
    ) -> Result<Tensor, TrainError> {
        bce(&self.logits(x)?, target, mask)
    }
}

/// Masked mean binary cross-entropy of `logits` (`[B, labels]`) against `target`, `mask`
/// (`[B, labels]` row-major).
pub(super) fn bce(logits: &Tensor, target: &[f32], mask: &[f32]) -> Result<Tensor, TrainError> {
    let shape = logits.dims2()?;
    let t = Tensor::from_slice(target, shape, &Device::Cpu)?;
    let m = Tensor::from_slice(mask, shape, &Device::Cpu)?;
    // softplus(x) - t*x, softplus(x) = relu(x) + ln(1 + e^-|x|): stable and differentiable.
    let softplus = (logits.relu()? + logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    let bce = (softplus - (&t * logits)?)?;
    let count = mask.iter().sum::<f32>().max(1.0) as f64;
    Ok(((bce * m)?.sum_all()? / count)?)
}
