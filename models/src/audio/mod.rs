//! Audio encoder: log-mel front end + Whisper encoder, encoding each video frame's audio
//! (0.5 s at 2 fps = 8000 samples -> 50 mel frames -> 25 encoder frames) once, without
//! padding to Whisper's 30 s context.

pub mod mel;
pub mod whisper;

use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};
use crate::tokens::{self, SlotMode};
pub use mel::LogMel;
pub use whisper::{WhisperConfig, WhisperEncoder};

/// Whisper encoder with its front end.
#[derive(Debug)]
pub struct AudioEncoder {
    pub mel: LogMel,
    pub encoder: WhisperEncoder,
    device: Device,
}

impl AudioEncoder {
    /// Loads a Whisper checkpoint directory (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let encoder = WhisperEncoder::load(dir, device)?;
        Ok(Self {
            mel: LogMel::new(encoder.config().num_mel_bins),
            encoder,
            device: device.clone(),
        })
    }

    /// With the given weights (see [`WhisperEncoder::load_with`]).
    pub fn load_with(dir: &Path, vb: &crate::checkpoint::Weights) -> Result<Self> {
        let encoder = WhisperEncoder::load_with(dir, vb)?;
        Ok(Self {
            mel: LogMel::new(encoder.config().num_mel_bins),
            encoder,
            device: vb.device().clone(),
        })
    }

    /// Width of the output tokens (`d_model`).
    pub fn width(&self) -> usize {
        self.encoder.config().d_model
    }

    /// The encoder's input for one 16 kHz chunk: log-mel `[n_mels, frames]`.
    pub fn mel(&self, chunk: &[f32]) -> Result<Tensor> {
        let n_mels = self.mel.n_mels();
        Ok(Tensor::from_vec(
            self.mel.compute(chunk)?,
            (n_mels, LogMel::frames(chunk.len())),
            &self.device,
        )?)
    }

    /// Encodes log-mel inputs `[B, n_mels, frames]`: `[B, frames/2, d_model]`.
    pub fn encode_mel(&self, mel: &Tensor) -> Result<Tensor> {
        self.encoder.forward(mel)
    }

    /// Encodes equally long 16 kHz chunks in one batch: `[B, n/320, d_model]`.
    pub fn encode(&self, chunks: &[&[f32]]) -> Result<Tensor> {
        let Some(first) = chunks.first() else {
            return Err(ModelError::InvalidInput("no audio chunks to encode".into()));
        };
        let n = first.len();
        let n_mels = self.mel.n_mels();
        let mut data = Vec::with_capacity(chunks.len() * n_mels * LogMel::frames(n));
        for c in chunks {
            if c.len() != n {
                return Err(ModelError::InvalidInput(format!(
                    "audio chunks in one batch must have equal length ({} vs {n})",
                    c.len()
                )));
            }
            data.extend(self.mel.compute(c)?);
        }
        let mel = Tensor::from_vec(
            data,
            (chunks.len(), n_mels, LogMel::frames(n)),
            &self.device,
        )?;
        self.encoder.forward(&mel)
    }

    /// Encodes chunks and applies `mode`: `[B, slots, d_model]`.
    pub fn encode_slots(&self, chunks: &[&[f32]], mode: SlotMode) -> Result<Tensor> {
        let x = self.encode(chunks)?;
        tokens::to_slots(&x, None, mode)
    }
}
