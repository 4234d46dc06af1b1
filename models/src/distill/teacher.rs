//! The teacher: posteriors over the K sound-source classes from one modality's features.
//!
//! Two kinds, chosen by the tensors in its safetensors file:
//! - zero-shot (CLIP-style): `text_embeds` `[K, E]` are the text-tower embeddings of one prompt
//!   per class ("a photo of a {class}"); logits = exp(`logit_scale`) * cos(image, text), with
//!   an optional `visual_projection.weight` `[E, D]` (the HF CLIP name) mapping pooled vision
//!   features into the joint space. Computing `text_embeds` from a CLIP text tower inside
//!   sensorium is not implemented yet: the file is produced offline.
//! - linear head: `classifier.weight` `[K, D]` and `classifier.bias` `[K]`, e.g. fitted on a few
//!   labelled frames with [`Teacher::fit_linear`].
//!
//! The teacher never trains online, so it is plain f32 math shared by `Arc` between threads.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::error::{CandleContext, DistillError};
use super::student::Rng;
use crate::tensor_file::{self, ReadError, StFile, StTensor};

#[derive(Clone, Debug)]
enum Kind {
    Linear {
        /// Row-major `[K, D]`.
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    ZeroShot {
        /// Unit-norm rows, `[K, E]`.
        text: Vec<f32>,
        embed_dim: usize,
        /// Optional `[E, D]` projection of the input features.
        projection: Option<Vec<f32>>,
        scale: f32,
    },
}

/// A frozen classifier over `num_classes` classes taking `in_dim` features.
#[derive(Clone, Debug)]
pub struct Teacher {
    kind: Kind,
    num_classes: usize,
    in_dim: usize,
}

fn weights_err(path: &Path, tensor: &str, message: impl std::fmt::Display) -> DistillError {
    DistillError::Weights {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        message: message.to_string(),
    }
}

fn take(file: &StFile, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>, DistillError> {
    let t = file
        .tensors
        .get(name)
        .ok_or_else(|| weights_err(path, name, "missing"))?;
    if t.dims() != shape {
        return Err(weights_err(
            path,
            name,
            format!("expected shape {shape:?}, got {:?}", t.dims()),
        ));
    }
    tensor_file::to_vec(t).map_err(|e| weights_err(path, name, e))
}

impl Teacher {
    /// A linear head from row-major `weight` `[K, D]` and `bias` `[K]`.
    pub fn linear(weight: Vec<f32>, bias: Vec<f32>, in_dim: usize) -> Result<Self, DistillError> {
        let k = bias.len();
        if k < 2 || in_dim == 0 || weight.len() != k * in_dim {
            return Err(DistillError::input(
                "teacher head",
                format!(
                    "weight has {} values, expected {k} x {in_dim} (bias has {k})",
                    weight.len()
                ),
            ));
        }
        Ok(Self {
            kind: Kind::Linear { weight, bias },
            num_classes: k,
            in_dim,
        })
    }

    /// A zero-shot teacher from class embeddings `text` `[K, E]` (row-major, any norm), an
    /// optional projection [E, in_dim] of the features, and the log `logit_scale`.
    pub fn zero_shot(
        mut text: Vec<f32>,
        num_classes: usize,
        projection: Option<Vec<f32>>,
        logit_scale: f32,
        in_dim: usize,
    ) -> Result<Self, DistillError> {
        let bad = |m: String| DistillError::input("zero-shot teacher", m);
        if num_classes < 2 || text.is_empty() || !text.len().is_multiple_of(num_classes) {
            return Err(bad(format!(
                "{} values for {num_classes} classes",
                text.len()
            )));
        }
        let embed_dim = text.len() / num_classes;
        match &projection {
            Some(p) if p.len() != embed_dim * in_dim => {
                return Err(bad(format!(
                    "projection has {} values, expected {embed_dim} x {in_dim}",
                    p.len()
                )))
            }
            None if embed_dim != in_dim => {
                return Err(bad(format!(
                    "embedding width {embed_dim} != feature width {in_dim} and no projection"
                )))
            }
            _ => {}
        }
        if !logit_scale.is_finite() {
            return Err(bad("logit_scale is not finite".into()));
        }
        normalise_rows(&mut text, embed_dim);
        Ok(Self {
            kind: Kind::ZeroShot {
                text,
                embed_dim,
                projection,
                scale: logit_scale.exp(),
            },
            num_classes,
            in_dim,
        })
    }

    /// Load a teacher for `num_classes` classes over `in_dim` features from `path`; the kind
    /// is zero-shot when the file has `text_embeds`, a linear head otherwise.
    pub fn load(path: &Path, num_classes: usize, in_dim: usize) -> Result<Self, DistillError> {
        let file = StFile::read(path).map_err(|e| match e {
            ReadError::Io(e) => DistillError::io(path, e),
            ReadError::Invalid(reason) => weights_err(path, "*", reason),
        })?;
        if let Some(text) = file.tensors.get("text_embeds") {
            let dims = text.dims().to_vec();
            if dims.len() != 2 || dims[0] != num_classes {
                return Err(weights_err(
                    path,
                    "text_embeds",
                    format!("expected [{num_classes}, E], got {dims:?}"),
                ));
            }
            let e = dims[1];
            let mut text = take(&file, path, "text_embeds", &[num_classes, e])?;
            normalise_rows(&mut text, e);
            let projection = if file.tensors.contains_key("visual_projection.weight") {
                Some(take(&file, path, "visual_projection.weight", &[e, in_dim])?)
            } else if e != in_dim {
                return Err(weights_err(
                    path,
                    "text_embeds",
                    format!("embedding width {e} != feature width {in_dim} and no visual_projection.weight"),
                ));
            } else {
                None
            };
            let scale = match file.tensors.get("logit_scale") {
                Some(t) => {
                    let v = tensor_file::to_vec(t)
                        .map_err(|err| weights_err(path, "logit_scale", err))?;
                    match v.as_slice() {
                        [x] if x.is_finite() => x.exp(),
                        _ => {
                            return Err(weights_err(
                                path,
                                "logit_scale",
                                "expected one finite value",
                            ))
                        }
                    }
                }
                None => 100.0,
            };
            return Ok(Self {
                kind: Kind::ZeroShot {
                    text,
                    embed_dim: e,
                    projection,
                    scale,
                },
                num_classes,
                in_dim,
            });
        }
        let weight = take(&file, path, "classifier.weight", &[num_classes, in_dim])?;
        let bias = take(&file, path, "classifier.bias", &[num_classes])?;
        Self::linear(weight, bias, in_dim)
    }

    /// Save a linear teacher as `classifier.weight` / `classifier.bias` (atomic write).
    pub fn save(&self, path: &Path) -> Result<(), DistillError> {
        let Kind::Linear { weight, bias } = &self.kind else {
            return Err(DistillError::input(
                "teacher save",
                "only linear teachers are saved by sensorium",
            ));
        };
        let tensors = [
            StTensor {
                name: "classifier.weight".into(),
                shape: vec![self.num_classes, self.in_dim],
                data: weight.clone(),
            },
            StTensor {
                name: "classifier.bias".into(),
                shape: vec![self.num_classes],
                data: bias.clone(),
            },
        ];
        tensor_file::write_atomic(path, &tensor_file::to_bytes(&tensors, &BTreeMap::new()))
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
    pub fn is_zero_shot(&self) -> bool {
        matches!(self.kind, Kind::ZeroShot { .. })
    }

    /// Class logits (before any temperature) for one feature vector.
    pub fn logits(&self, x: &[f32]) -> Result<Vec<f32>, DistillError> {
        if x.len() != self.in_dim {
            return Err(DistillError::input(
                "teacher features",
                format!("expected {} values, got {}", self.in_dim, x.len()),
            ));
        }
        Ok(match &self.kind {
            Kind::Linear { weight, bias } => bias
                .iter()
                .enumerate()
                .map(|(k, b)| b + dot(&weight[k * self.in_dim..(k + 1) * self.in_dim], x))
                .collect(),
            Kind::ZeroShot {
                text,
                embed_dim,
                projection,
                scale,
            } => {
                let mut z: Vec<f32> = match projection {
                    Some(p) => (0..*embed_dim)
                        .map(|i| dot(&p[i * self.in_dim..(i + 1) * self.in_dim], x))
                        .collect(),
                    None => x.to_vec(),
                };
                normalise_rows(&mut z, *embed_dim);
                (0..self.num_classes)
                    .map(|k| scale * dot(&text[k * embed_dim..(k + 1) * embed_dim], &z))
                    .collect()
            }
        })
    }

    /// Fit a linear head by softmax regression (AdamW, full batch) on labelled features.
    pub fn fit_linear(
        features: &[Vec<f32>],
        labels: &[usize],
        num_classes: usize,
        epochs: usize,
        seed: u64,
    ) -> Result<Self, DistillError> {
        let d = features.first().map(|f| f.len()).unwrap_or(0);
        if features.is_empty() || features.len() != labels.len() || d == 0 {
            return Err(DistillError::input(
                "teacher fit",
                format!(
                    "{} feature rows for {} labels",
                    features.len(),
                    labels.len()
                ),
            ));
        }
        if let Some(l) = labels.iter().find(|l| **l >= num_classes) {
            return Err(DistillError::input(
                "teacher fit",
                format!("label {l} out of range for {num_classes} classes"),
            ));
        }
        let dev = Device::Cpu;
        let flat: Vec<f32> = features.iter().flatten().copied().collect();
        if flat.len() != features.len() * d {
            return Err(DistillError::input(
                "teacher fit",
                "feature rows differ in length",
            ));
        }
        let x = Tensor::from_vec(flat, (features.len(), d), &dev).ctx("teacher fit")?;
        let y = Tensor::from_vec(
            labels.iter().map(|l| *l as u32).collect::<Vec<_>>(),
            labels.len(),
            &dev,
        )
        .ctx("teacher fit")?;
        let mut rng = Rng::new(seed);
        let init: Vec<f32> = (0..num_classes * d).map(|_| rng.uniform(0.01)).collect();
        let w = Var::from_vec(init, (num_classes, d), &dev).ctx("teacher fit")?;
        let b = Var::zeros(num_classes, candle_core::DType::F32, &dev).ctx("teacher fit")?;
        let mut opt = AdamW::new(
            vec![w.clone(), b.clone()],
            ParamsAdamW {
                lr: 0.05,
                weight_decay: 1e-4,
                ..Default::default()
            },
        )
        .ctx("teacher fit")?;
        for _ in 0..epochs {
            let logits = x
                .matmul(&w.as_tensor().t().ctx("teacher fit")?)
                .and_then(|l| l.broadcast_add(b.as_tensor()))
                .ctx("teacher fit")?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y).ctx("teacher fit")?;
            opt.backward_step(&loss).ctx("teacher fit")?;
        }
        let weight = tensor_file::to_vec(w.as_tensor()).ctx("teacher fit")?;
        let bias = tensor_file::to_vec(b.as_tensor()).ctx("teacher fit")?;
        Self::linear(weight, bias, d)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalise_rows(m: &mut [f32], width: usize) {
    for row in m.chunks_mut(width) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
}

/// Softmax of `logits / temperature` (numerically stable).
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    let e: Vec<f32> = logits
        .iter()
        .map(|l| ((l - m) / temperature).exp())
        .collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Index and value of the largest entry (first one on ties); `(0, NaN)` for an empty slice.
pub fn argmax(p: &[f32]) -> (usize, f32) {
    p.iter()
        .enumerate()
        .fold((0, f32::NAN), |(bi, bv), (i, v)| {
            if bv.is_nan() || *v > bv {
                (i, *v)
            } else {
                (bi, bv)
            }
        })
}
