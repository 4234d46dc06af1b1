//! The student: a linear or one-hidden-layer MLP head over pooled features of the student
//! modality, trained online, and the immutable snapshots of it that inference reads.
//!
//! Tensor names (also the checkpoint's, under `student.`): `fc1.weight` `[H, D]`, `fc1.bias`
//! `[H]` (MLP only), `classifier.weight` `[K, H or D]`, `classifier.bias` `[K]`.

use candle_core::{Device, Tensor, Var};

use super::error::{CandleContext, DistillError};
use crate::tensor_file;

pub use sensorium_engine::rng::Rng;

/// Shape of the student head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StudentArch {
    pub in_dim: usize,
    /// 0: linear head.
    pub hidden: usize,
    pub num_classes: usize,
}

impl StudentArch {
    /// (name, shape) of every parameter, in a fixed order.
    pub fn params(&self) -> Vec<(&'static str, Vec<usize>)> {
        if self.hidden == 0 {
            vec![
                ("classifier.weight", vec![self.num_classes, self.in_dim]),
                ("classifier.bias", vec![self.num_classes]),
            ]
        } else {
            vec![
                ("fc1.weight", vec![self.hidden, self.in_dim]),
                ("fc1.bias", vec![self.hidden]),
                ("classifier.weight", vec![self.num_classes, self.hidden]),
                ("classifier.bias", vec![self.num_classes]),
            ]
        }
    }

    /// Seeded initial values: fc1 uniform(+-1/sqrt(D)), classifier uniform(+-0.01/sqrt(fan_in)),
    /// biases zero, so the untrained student is close to uniform (chance).
    pub fn init(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(seed ^ 0x5EED_57D0);
        self.params()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let fan_in = *shape.last().unwrap_or(&1) as f32;
                let a = match name {
                    "fc1.weight" => 1.0 / fan_in.sqrt(),
                    "classifier.weight" => 0.01 / fan_in.sqrt(),
                    _ => 0.0,
                };
                (0..n).map(|_| rng.uniform(a)).collect()
            })
            .collect()
    }
}

/// Logits of the head `params` (in `StudentArch::params` order) for a batch `x` `[N, D]`.
pub(crate) fn forward(params: &[Tensor], x: &Tensor) -> candle_core::Result<Tensor> {
    let lin = |x: &Tensor, w: &Tensor, b: &Tensor| x.matmul(&w.t()?)?.broadcast_add(b);
    match params {
        [w, b] => lin(x, w, b),
        [w1, b1, w2, b2] => lin(&lin(x, w1, b1)?.relu()?, w2, b2),
        _ => candle_core::bail!("student head has {} tensors, expected 2 or 4", params.len()),
    }
}

/// An immutable copy of the student at one version; what inference reads.
#[derive(Debug)]
pub struct StudentSnapshot {
    pub arch: StudentArch,
    params: Vec<Tensor>,
    /// Number of optimizer updates that produced these weights (0 = initial).
    pub version: u64,
}

impl StudentSnapshot {
    /// Build from values in `StudentArch::params` order.
    pub fn from_values(
        arch: StudentArch,
        values: &[Vec<f32>],
        version: u64,
    ) -> Result<Self, DistillError> {
        let specs = arch.params();
        if values.len() != specs.len() {
            return Err(DistillError::input(
                "student weights",
                format!("{} tensors, expected {}", values.len(), specs.len()),
            ));
        }
        let params = specs
            .iter()
            .zip(values)
            .map(|((name, shape), v)| {
                Tensor::from_vec(v.clone(), shape.as_slice(), &Device::Cpu)
                    .map_err(|e| DistillError::input("student weights", format!("{name}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            arch,
            params,
            version,
        })
    }

    /// Logits for one feature vector.
    pub fn logits(&self, x: &[f32]) -> Result<Vec<f32>, DistillError> {
        if x.len() != self.arch.in_dim {
            return Err(DistillError::input(
                "student features",
                format!("expected {} values, got {}", self.arch.in_dim, x.len()),
            ));
        }
        let t = Tensor::from_slice(x, (1, x.len()), &Device::Cpu).ctx("student logits")?;
        let out = forward(&self.params, &t).ctx("student logits")?;
        tensor_file::to_vec(&out).ctx("student logits")
    }

    /// Parameter values in `StudentArch::params` order.
    pub fn values(&self) -> Result<Vec<Vec<f32>>, DistillError> {
        self.params
            .iter()
            .map(|t| tensor_file::to_vec(t).ctx("student values"))
            .collect()
    }
}

/// The trainable student (candle `Var`s, updated in place by the optimizer).
pub(crate) struct TrainableStudent {
    pub arch: StudentArch,
    pub vars: Vec<Var>,
}

impl TrainableStudent {
    pub fn new(arch: StudentArch, values: &[Vec<f32>]) -> Result<Self, DistillError> {
        let vars = arch
            .params()
            .iter()
            .zip(values)
            .map(|((_, shape), v)| Var::from_vec(v.clone(), shape.as_slice(), &Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()
            .ctx("student init")?;
        Ok(Self { arch, vars })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let params: Vec<Tensor> = self.vars.iter().map(|v| v.as_tensor().clone()).collect();
        forward(&params, x)
    }

    /// A deep copy (new storage), so later in-place updates do not leak into readers.
    pub fn snapshot(&self, version: u64) -> Result<StudentSnapshot, DistillError> {
        let params = self
            .vars
            .iter()
            .map(|v| v.as_tensor().detach().copy())
            .collect::<candle_core::Result<Vec<_>>>()
            .ctx("student snapshot")?;
        Ok(StudentSnapshot {
            arch: self.arch,
            params,
            version,
        })
    }

    pub fn values(&self) -> Result<Vec<Vec<f32>>, DistillError> {
        self.vars
            .iter()
            .map(|v| tensor_file::to_vec(v.as_tensor()).ctx("student values"))
            .collect()
    }
}
