//! LoRA on the LLM, in PEFT's conventions and file layout so that PEFT loads what sensorium
//! trains onto the Hugging Face model (`tools/peft_check.py` checks the logits):
//!
//! - `A` `[r, in]` Kaiming-uniform (`a = sqrt(5)`: U(-1/sqrt(in), 1/sqrt(in))), `B` `[out, r]`
//!   zero, so training starts from the base model exactly; scale `alpha / r`; dropout on the
//!   LoRA input only.
//! - `adapter_config.json` (PEFT `LoraConfig` fields) and `adapter_model.safetensors` with
//!   tensors `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` / `lora_B`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

use super::config::LoraConfig;
use super::TrainError;
use crate::llm::model::{LoraWeights, LINEAR_NAMES};
use crate::llm::Decoder;

const PREFIX: &str = "base_model.model.";

/// The trainable LoRA pairs, keyed by module path (`model.layers.0.self_attn.q_proj`).
pub struct LoraParams {
    pub cfg: LoraConfig,
    /// `(module, A, B)` in a fixed order.
    pub pairs: Vec<(String, Var, Var)>,
}

/// `(module path, layer, name)` of every targeted linear layer, in layer order.
fn targeted(dec: &Decoder, targets: &[String]) -> Vec<(String, usize, &'static str)> {
    let mut out = Vec::new();
    for l in 0..dec.num_layers() {
        for name in LINEAR_NAMES {
            let short = name.rsplit('.').next().unwrap_or(name);
            if targets.iter().any(|t| t == short) {
                out.push((format!("model.layers.{l}.{name}"), l, name));
            }
        }
    }
    out
}

impl LoraParams {
    /// Fresh pairs for `dec` (seeded).
    pub fn init(dec: &Decoder, cfg: &LoraConfig, seed: u64) -> Result<Self, TrainError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x4c6f_5241);
        let dev = dec.device().clone();
        let mut pairs = Vec::new();
        for (path, layer, name) in targeted(dec, &cfg.targets) {
            let (out, inp) = dec
                .linear_shape(layer, name)
                .ok_or_else(|| TrainError::Config {
                    field: "train.lora.targets".into(),
                    message: format!("{path}: no such layer"),
                })?;
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..cfg.r * inp)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (cfg.r, inp), &dev)?)?;
            let b = Var::from_tensor(&Tensor::zeros((out, cfg.r), DType::F32, &dev)?)?;
            pairs.push((path, a, b));
        }
        Ok(Self {
            cfg: cfg.clone(),
            pairs,
        })
    }

    /// Attaches the pairs to `dec` (its forward then adds them).
    pub fn attach(&self, dec: &mut Decoder) -> Result<(), TrainError> {
        let map = self
            .pairs
            .iter()
            .map(|(p, a, b)| {
                (
                    p.clone(),
                    LoraWeights {
                        a: a.as_tensor().clone(),
                        b: b.as_tensor().clone(),
                        scale: self.cfg.scale(),
                    },
                )
            })
            .collect();
        dec.set_lora(&map).map_err(TrainError::Llm)
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        self.pairs
            .iter()
            .flat_map(|(p, a, b)| {
                [
                    (format!("{PREFIX}{p}.lora_A.weight"), a.clone()),
                    (format!("{PREFIX}{p}.lora_B.weight"), b.clone()),
                ]
            })
            .collect()
    }

    /// Writes `adapter_config.json` + `adapter_model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path, base_model: &Path) -> Result<(), TrainError> {
        let io = |e: String| TrainError::Output {
            path: dir.to_owned(),
            message: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(e.to_string()))?;
        let c = &self.cfg;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model.display().to_string(),
            "r": c.r,
            "lora_alpha": c.alpha,
            "lora_dropout": c.dropout,
            "target_modules": c.targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "use_rslora": false,
            "use_dora": false,
        });
        std::fs::write(
            dir.join("adapter_config.json"),
            serde_json::to_string_pretty(&config).map_err(|e| io(e.to_string()))?,
        )
        .map_err(|e| io(e.to_string()))?;
        let tensors: HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))
            .map_err(|e| io(e.to_string()))
    }
}

/// Reads a PEFT LoRA adapter directory into per-module pairs for [`Decoder::set_lora`].
pub fn load_adapter(
    dir: &Path,
    device: &Device,
) -> Result<HashMap<String, LoraWeights>, TrainError> {
    let bad = |path: &Path, message: String| TrainError::Adapter {
        path: path.to_owned(),
        message,
    };
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| bad(&cfg_path, format!("cannot read: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(&cfg_path, e.to_string()))?;
    if v.get("peft_type").and_then(|x| x.as_str()) != Some("LORA") {
        return Err(bad(&cfg_path, "peft_type is not \"LORA\"".into()));
    }
    let r = v.get("r").and_then(|x| x.as_f64()).unwrap_or(0.0);
    let alpha = v.get("lora_alpha").and_then(|x| x.as_f64()).unwrap_or(0.0);
    if r <= 0.0 || alpha <= 0.0 {
        return Err(bad(&cfg_path, "needs r > 0 and lora_alpha > 0".into()));
    }
    if v.get("use_rslora").and_then(|x| x.as_bool()) == Some(true)
        || v.get("use_dora").and_then(|x| x.as_bool()) == Some(true)
    {
        return Err(bad(
            &cfg_path,
            "rsLoRA and DoRA adapters are not supported".into(),
        ));
    }
    let st = dir.join("adapter_model.safetensors");
    let tensors =
        candle_core::safetensors::load(&st, device).map_err(|e| bad(&st, e.to_string()))?;
    let mut a: HashMap<String, Tensor> = HashMap::new();
    let mut b: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in tensors {
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| bad(&st, e.to_string()))?;
        let m = name.strip_prefix(PREFIX).unwrap_or(&name);
        if let Some(m) = m.strip_suffix(".lora_A.weight") {
            a.insert(m.to_owned(), t);
        } else if let Some(m) = m.strip_suffix(".lora_B.weight") {
            b.insert(m.to_owned(), t);
        } else {
            return Err(bad(&st, format!("unexpected tensor {name:?}")));
        }
    }
    let mut out = HashMap::new();
    for (m, ta) in a {
        let tb = b
            .remove(&m)
            .ok_or_else(|| bad(&st, format!("{m}: lora_A without lora_B")))?;
        out.insert(
            m,
            LoraWeights {
                a: ta,
                b: tb,
                scale: alpha / r,
            },
        );
    }
    if let Some(m) = b.keys().next() {
        return Err(bad(&st, format!("{m}: lora_B without lora_A")));
    }
    Ok(out)
}
