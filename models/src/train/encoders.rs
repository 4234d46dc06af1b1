//! Trainable encoders (`train_encoders = true`, for small models such as the default one):
//! the Whisper and CLIP/SigLIP checkpoints loaded with their tensors as training variables,
//! so the very [`AvFrameEncoder`] that serves runs inside the training graph, and saved back
//! in their Hugging Face layout (`audio/`, `vision/`: the source directory's other files
//! copied, `model.safetensors` rewritten under the same tensor names).
//!
//! Which tensors train: those on the path from the encoder's input to the tokens the Q-Former
//! reads, found by one probe backward pass (so, e.g., CLIP's `post_layernorm`, which only
//! the pooled CLS passes through, stays as it is unless the slots are `cls`; a CLIP
//! checkpoint's text tower is never touched). Whisper's `embed_positions` stays frozen, as
//! in Hugging Face (sinusoids, `requires_grad_(False)`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};

use super::TrainError;
use crate::audio::{AudioEncoder, WhisperEncoder};
use crate::checkpoint::Weights;
use crate::stage::{AvFrameEncoder, EncoderInput};
use crate::tokens::SlotMode;
use crate::vision::VisionEncoder;

/// One encoder checkpoint: every tensor of its files, the trainable ones as variables.
struct Part {
    /// `audio` or `vision`: the output directory's name and the variables' prefix.
    kind: &'static str,
    source: PathBuf,
    /// Every tensor by its name, per safetensors file of the checkpoint (file name first);
    /// the variables' tensors among them, so a save writes the trained values.
    files: Vec<(String, Vec<(String, Tensor)>)>,
    vars: Vec<(String, Var)>,
}

/// The encoders as training variables.
pub struct TrainableEncoders {
    /// The frame encoder over the variables (what [`super::Trainer`] runs).
    pub encoder: AvFrameEncoder,
    parts: Vec<Part>,
}

fn model_err(dir: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Model(crate::error::ModelError::MissingFile {
        path: dir.to_owned(),
        message: e.to_string(),
    })
}

/// Every tensor of `dir`'s safetensors files, as f32, each trainable one (name under
/// `prefix`, not `frozen`) a variable; and the weights over them.
fn load_part(
    kind: &'static str,
    dir: &Path,
    root: impl Fn(&Weights) -> crate::error::Result<Weights>,
    frozen: &[&str],
) -> Result<(Part, Weights), TrainError> {
    let dev = Device::Cpu;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| model_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(model_err(
            &dir.join("model.safetensors"),
            "no *.safetensors file in the checkpoint directory",
        ));
    }
    // Read every file once; the encoder's root prefix is found on what was read.
    let mut loaded = Vec::with_capacity(files.len());
    for f in &files {
        let mut t = crate::checkpoint::load_safetensors(f, &dev).map_err(|e| model_err(f, e))?;
        t.sort_by(|a, b| a.0.cmp(&b.0));
        loaded.push(t);
    }
    let all: HashMap<String, Tensor> = loaded.iter().flatten().cloned().collect();
    let prefix = root(&Weights::from_tensors(all, &files[0], &dev))?
        .prefix()
        .to_owned();
    let mut by_file = Vec::new();
    let mut map: HashMap<String, Tensor> = HashMap::new();
    let mut vars = Vec::new();
    for (f, file_tensors) in files.iter().zip(loaded) {
        let mut tensors = Vec::new();
        for (name, t) in file_tensors {
            let under = prefix.is_empty() || name.starts_with(&format!("{prefix}."));
            let float = matches!(
                t.dtype(),
                DType::F32 | DType::F16 | DType::BF16 | DType::F64
            );
            if under && float && !frozen.iter().any(|s| name.contains(s)) {
                let v = Var::from_tensor(&t.to_dtype(DType::F32)?)?;
                tensors.push((name.clone(), v.as_tensor().clone()));
                vars.push((name, v));
            } else {
                tensors.push((name, t));
            }
        }
        map.extend(tensors.iter().cloned());
        let file = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        by_file.push((file, tensors));
    }
    let origin = files.first().cloned().unwrap_or_else(|| dir.to_owned());
    let weights = Weights::from_tensors(map, &origin, &dev);
    Ok((
        Part {
            kind,
            source: dir.to_owned(),
            files: by_file,
            vars,
        },
        weights,
    ))
}

impl TrainableEncoders {
    /// Loads the encoder checkpoints (`audio`: Whisper, `vision`: CLIP/SigLIP) as variables,
    /// with the serving encoder's visual slot mode.
    pub fn load(
        audio: Option<&Path>,
        vision: Option<&Path>,
        visual_slots: SlotMode,
    ) -> Result<Self, TrainError> {
        let mut parts = Vec::new();
        let audio_enc = match audio {
            Some(dir) => {
                let (p, w) = load_part("audio", dir, WhisperEncoder::root, &["embed_positions"])?;
                parts.push(p);
                Some(AudioEncoder::load_with(dir, &w)?)
            }
            None => None,
        };
        let vision_enc = match vision {
            Some(dir) => {
                let (p, w) = load_part("vision", dir, VisionEncoder::root, &[])?;
                parts.push(p);
                Some(VisionEncoder::load_with(dir, &w)?)
            }
            None => None,
        };
        let mut me = Self {
            encoder: AvFrameEncoder::new(audio_enc, vision_enc, visual_slots),
            parts,
        };
        me.keep_reached()?;
        Ok(me)
    }

    /// Drops from training the variables the tokens do not depend on (a probe backward
    /// pass on a blank frame).
    fn keep_reached(&mut self) -> Result<(), TrainError> {
        let dev = Device::Cpu;
        let mut probe = EncoderInput::default();
        if let Some(a) = &self.encoder.audio() {
            let cfg = a.encoder.config();
            let frames = 2 * cfg.max_source_positions.min(25);
            probe.mel = Some(Tensor::zeros((cfg.num_mel_bins, frames), DType::F32, &dev)?);
        }
        if let Some(v) = &self.encoder.vision() {
            let s = v.config.image_size;
            probe.pixels = Some(Tensor::zeros((3, s, s), DType::F32, &dev)?);
        }
        let out = self.encoder.encode_inputs(&[&probe])?;
        let mut sum: Option<Tensor> = None;
        for t in out.iter().flat_map(|f| [&f.audio, &f.visual]).flatten() {
            let s = t.sum_all()?;
            sum = Some(match sum {
                Some(x) => (x + s)?,
                None => s,
            });
        }
        let Some(sum) = sum else {
            return Ok(());
        };
        let grads = sum.backward()?;
        for p in &mut self.parts {
            p.vars.retain(|(_, v)| grads.get(v.as_tensor()).is_some());
        }
        Ok(())
    }

    /// The trainable variables, named `audio.<tensor>` / `vision.<tensor>`.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.parts
            .iter()
            .flat_map(|p| {
                p.vars
                    .iter()
                    .map(move |(n, v)| (format!("{}.{n}", p.kind), v.clone()))
            })
            .collect()
    }

    /// The checkpoints these encoders were loaded from.
    pub fn sources(&self) -> Vec<(&'static str, &Path)> {
        self.parts
            .iter()
            .map(|p| (p.kind, p.source.as_path()))
            .collect()
    }

    /// Writes `dir/audio` and `dir/vision` in the Hugging Face layout of their sources:
    /// the same files, the safetensors ones holding the trained values. Atomic per
    /// directory.
    pub(super) fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let io = |path: &Path, e: &dyn std::fmt::Display| TrainError::Output {
            path: path.to_owned(),
            message: e.to_string(),
        };
        for p in &self.parts {
            super::replace_dir(&dir.join(p.kind), |d| {
                for e in std::fs::read_dir(&p.source).map_err(|e| io(&p.source, &e))? {
                    let f = e.map_err(|e| io(&p.source, &e))?.path();
                    if f.is_file() && f.extension().is_none_or(|x| x != "safetensors") {
                        if let Some(name) = f.file_name() {
                            std::fs::copy(&f, d.join(name)).map_err(|e| io(&f, &e))?;
                        }
                    }
                }
                for (file, tensors) in &p.files {
                    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
                    let path = d.join(file);
                    candle_core::safetensors::save(&map, &path).map_err(|e| io(&path, &e))?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
