//! Reading Hugging Face checkpoint directories (`config.json` + `*.safetensors`) with
//! errors that name the file and tensor at fault.
//!
//! We do not use `candle_nn::VarBuilder` for loading because its shape errors do not name
//! the file; [`Weights`] is the same idea (`pp` for path prefixes mirroring HF tensor
//! names) but checks name, shape and dtype itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Reads and parses `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<(PathBuf, serde_json::Value)> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::MissingFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let value = serde_json::from_str(&text).map_err(|e| ModelError::InvalidConfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok((path, value))
}

/// Deserialises a config struct from a JSON value, naming the file on failure.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    value: &serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value.clone()).map_err(|e| ModelError::InvalidConfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The `model_type` field of a config (empty when absent).
pub fn model_type(value: &serde_json::Value) -> &str {
    value
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
}

struct Store {
    tensors: HashMap<String, (Tensor, usize)>,
    files: Vec<PathBuf>,
}

/// All tensors of a checkpoint plus a name prefix; cheap to clone.
#[derive(Clone)]
pub struct Weights {
    store: Arc<Store>,
    prefix: String,
    device: Device,
}

/// Every tensor of one safetensors file, copied once from a memory map of it (candle's
/// `safetensors::load` reads the whole file into memory first, then copies each tensor out of
/// that buffer), by up to as many threads as there are cores (the copies are page-fault and
/// memory bound). Every loader of whole checkpoints in the crate goes through here.
pub(crate) fn load_safetensors(
    path: &Path,
    device: &Device,
) -> candle_core::Result<Vec<(String, Tensor)>> {
    // SAFETY: the map is only read while `st` lives, within this function; as with any
    // memory-mapped checkpoint, the file must not be truncated while it is being loaded.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }?;
    let names: Vec<String> = st.tensors().into_iter().map(|(name, _)| name).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = names.len().div_ceil(threads).max(1);
    let st = &st;
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|n| st.load(n, device).map(|t| (n.clone(), t)))
                        .collect::<candle_core::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for w in workers {
            let part = w.join().map_err(|_| {
                candle_core::Error::Msg("a checkpoint loader thread panicked".into())
            })?;
            out.extend(part?);
        }
        Ok(out)
    })
}

impl Weights {
    /// Loads every `*.safetensors` file of `dir` (sharded checkpoints included).
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| ModelError::MissingFile {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ModelError::MissingFile {
                path: dir.join("model.safetensors"),
                message: "no *.safetensors file in the checkpoint directory".into(),
            });
        }
        Self::from_files(&files, device)
    }

    /// Loads the given safetensors files.
    pub fn from_files(files: &[PathBuf], device: &Device) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let loaded = load_safetensors(f, device).map_err(|e| ModelError::MissingFile {
                path: f.clone(),
                message: crate::error::candle_text(&e),
            })?;
            for (k, v) in loaded {
                tensors.insert(k, (v, i));
            }
        }
        Ok(Self {
            store: Arc::new(Store {
                tensors,
                files: files.to_vec(),
            }),
            prefix: String::new(),
            device: device.clone(),
        })
    }

    /// Builds weights from in-memory tensors (e.g. random init); `origin` names them in errors.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, origin: &Path, device: &Device) -> Self {
        Self {
            store: Arc::new(Store {
                tensors: tensors.into_iter().map(|(k, v)| (k, (v, 0))).collect(),
                files: vec![origin.to_path_buf()],
            }),
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// A view with `name` appended to the prefix (like `VarBuilder::pp`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Self {
            store: self.store.clone(),
            prefix,
            device: self.device.clone(),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The name prefix of this view (`""` at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// The file that errors about this checkpoint name (the first shard when unknown).
    pub fn file(&self) -> PathBuf {
        self.store.files.first().cloned().unwrap_or_default()
    }

    /// Whether `name` (under the prefix) exists.
    pub fn contains(&self, name: &str) -> bool {
        self.store.tensors.contains_key(&self.full(name))
    }

    /// The tensor `name` under the prefix, checked against `shape`, converted to f32.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        let full = self.full(name);
        let Some((t, file)) = self.store.tensors.get(&full) else {
            return Err(ModelError::MissingTensor {
                path: self.file(),
                tensor: full,
            });
        };
        let path = self.store.files[*file].clone();
        if t.dims() != shape {
            return Err(ModelError::TensorShape {
                path,
                tensor: full,
                found: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        match t.dtype() {
            DType::F32 => Ok(t.clone()),
            DType::F16 | DType::BF16 | DType::F64 => Ok(t.to_dtype(DType::F32)?),
            other => Err(ModelError::TensorDtype {
                path,
                tensor: full,
                found: format!("{other:?}"),
            }),
        }
    }

    /// A linear layer `name.weight` `[out, in]` (+ `name.bias` `[out]` when `bias`).
    pub fn linear(&self, in_dim: usize, out_dim: usize, bias: bool, name: &str) -> Result<Linear> {
        let vb = self.pp(name);
        let weight = vb.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A LayerNorm `name.weight`, `name.bias` of width `dim`.
    pub fn layer_norm(&self, dim: usize, eps: f64, name: &str) -> Result<LayerNorm> {
        let vb = self.pp(name);
        Ok(LayerNorm {
            weight: vb.get(&[dim], "weight")?,
            bias: vb.get(&[dim], "bias")?,
            eps,
        })
    }
}

/// `y = x W^T + b` on the last axis.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// LayerNorm over the last axis.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Bidirectional multi-head self-attention with HF's `q_proj`/`k_proj`/`v_proj`/`out_proj`
/// names, shared by the Whisper encoder and the CLIP/SigLIP towers (which differ only in
/// whether `k_proj` has a bias).
#[derive(Debug)]
pub struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SelfAttention {
    pub fn new(vb: &Weights, dim: usize, heads: usize, k_bias: bool) -> Result<Self> {
        Ok(Self {
            q_proj: vb.linear(dim, dim, true, "q_proj")?,
            k_proj: vb.linear(dim, dim, k_bias, "k_proj")?,
            v_proj: vb.linear(dim, dim, true, "v_proj")?,
            out_proj: vb.linear(dim, dim, true, "out_proj")?,
            heads,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        use crate::ops;
        let q = ops::split_heads(&self.q_proj.forward(x)?, self.heads)?;
        let k = ops::split_heads(&self.k_proj.forward(x)?, self.heads)?;
        let v = ops::split_heads(&self.v_proj.forward(x)?, self.heads)?;
        let dh = q.dim(3)?;
        let o = ops::attention(&q, &k, &v, None, 1.0 / (dh as f64).sqrt())?;
        self.out_proj.forward(&ops::merge_heads(&o)?)
    }
}
