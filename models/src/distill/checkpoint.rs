//! Student checkpoints: everything the trainer needs to continue exactly where it stopped
//! (weights, optimizer moments, difficulty statistics, replay ring, sampler state) in one
//! safetensors file, written atomically, rotated so the previous good one survives, and
//! validated on load. A run resumed from a checkpoint makes bit-for-bit the updates the
//! uninterrupted run would have made.
//!
//! Layout (`format_version = 2`): tensors `student.<param>` (see [`super::student`]),
//! `difficulty.<stat>` `[K]`, `optim.m.<param>` and `optim.v.<param>` (AdamW first and
//! second moments, the parameter's shape), and when the replay ring is not empty
//! `replay.student_features` `[n, in_dim]`, `replay.teacher_logits` `[n, K]`, `replay.snr_db`
//! `[n]` (oldest first); metadata `format = sensorium-distill`, `format_version`, `step`,
//! `classes` (JSON list), `direction`, `in_dim`, `hidden`, `optim_step`, `replay_len`,
//! `rng` (the sampler's 64-bit state, decimal), `since_update`. Version 1 files (weights,
//! step and difficulty only) still load; their optimizer moments and replay ring start empty.
//!
//! Rotation: saving `dir/name.safetensors` writes and syncs `name.safetensors.tmp`, then makes
//! `dir/name.prev.safetensors` a copy (hard link) of a valid existing file (a corrupt one is
//! not rotated, so a good `.prev` is never replaced by garbage), then renames the new file
//! into place. A process killed at any moment leaves a complete `name.safetensors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::config::DistillConfig;
use super::difficulty::DifficultyModel;
use super::error::DistillError;
use super::optim::AdamState;
use super::replay::Pair;
use super::student::StudentArch;
use super::trainer::{DistillTrainer, TrainerState};
use crate::tensor_file::{self, ReadError, StFile, StTensor};

const FORMAT: &str = "sensorium-distill";
const FORMAT_VERSION: &str = "2";

/// `dir/name.safetensors` -> `dir/name.prev.safetensors`.
pub fn prev_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "safetensors".into());
    path.with_file_name(format!("{stem}.prev.{ext}"))
}

/// Which file a resume used, and why others were refused.
#[derive(Debug)]
pub struct ResumeInfo {
    /// The checkpoint loaded, `None` when the student started fresh.
    pub loaded: Option<PathBuf>,
    pub step: u64,
    /// Checkpoints refused on the way (e.g. a corrupt latest one).
    pub refused: Vec<DistillError>,
}

impl DistillTrainer {
    /// Write a checkpoint of the current state to `path` (rotating the previous one).
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), DistillError> {
        let arch = self.student.arch;
        let state = self.train_state()?;
        let mut tensors = Vec::new();
        let moments = state.adam.m.into_iter().zip(state.adam.v);
        for (((name, shape), data), (m, v)) in arch
            .params()
            .into_iter()
            .zip(self.student.values()?)
            .zip(moments)
        {
            for (prefix, data) in [("student", data), ("optim.m", m), ("optim.v", v)] {
                tensors.push(StTensor {
                    name: format!("{prefix}.{name}"),
                    shape: shape.clone(),
                    data,
                });
            }
        }
        let n = state.replay.len();
        if n > 0 {
            let k = self.cfg.num_classes();
            let columns: [(&str, Vec<usize>, Vec<f32>); 3] = [
                (
                    "replay.student_features",
                    vec![n, arch.in_dim],
                    state
                        .replay
                        .iter()
                        .flat_map(|p| p.student_features.iter().copied())
                        .collect(),
                ),
                (
                    "replay.teacher_logits",
                    vec![n, k],
                    state
                        .replay
                        .iter()
                        .flat_map(|p| p.teacher_logits.iter().copied())
                        .collect(),
                ),
                (
                    "replay.snr_db",
                    vec![n],
                    state.replay.iter().map(|p| p.snr_db).collect(),
                ),
            ];
            for (name, shape, data) in columns {
                tensors.push(StTensor {
                    name: name.into(),
                    shape,
                    data,
                });
            }
        }
        for (name, v) in self.difficulty.state() {
            tensors.push(StTensor {
                name: name.into(),
                shape: vec![v.len()],
                data: v.clone(),
            });
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("format_version".into(), FORMAT_VERSION.into());
        meta.insert("step".into(), self.step.to_string());
        meta.insert(
            "classes".into(),
            serde_json::to_string(&self.cfg.classes).unwrap_or_default(),
        );
        meta.insert(
            "direction".into(),
            serde_json::to_string(&self.cfg.direction).unwrap_or_default(),
        );
        meta.insert("in_dim".into(), arch.in_dim.to_string());
        meta.insert("hidden".into(), arch.hidden.to_string());
        meta.insert("optim_step".into(), state.adam.step.to_string());
        meta.insert("replay_len".into(), n.to_string());
        meta.insert("rng".into(), state.rng.to_string());
        meta.insert("since_update".into(), state.since_update.to_string());
        // Order matters for a kill at any point: the new file is complete before anything
        // is touched, `.prev` is replaced atomically by a link to the current file, and the
        // current file is replaced by one rename, so `path` always holds a whole checkpoint.
        let tmp = tensor_file::write_tmp(path, &tensor_file::to_bytes(&tensors, &meta))?;
        if path.exists() && StFile::read(path).is_ok() {
            tensor_file::atomic_copy(path, &prev_path(path))?;
        }
        tensor_file::commit(&tmp, path)
    }

    /// Resume exactly from `path` for `cfg` and `in_dim`; a file that is unreadable or does
    /// not match (classes, shapes) is refused with [`DistillError::CorruptCheckpoint`].
    pub fn resume(cfg: &DistillConfig, in_dim: usize, path: &Path) -> Result<Self, DistillError> {
        cfg.validate()?;
        let bad = |reason: String| DistillError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let file = StFile::read(path).map_err(|e| match e {
            ReadError::Io(e) => DistillError::io(path, e),
            ReadError::Invalid(r) => bad(r),
        })?;
        let meta = |key: &str| {
            file.metadata
                .get(key)
                .cloned()
                .ok_or_else(|| bad(format!("metadata `{key}` missing")))
        };
        if meta("format")? != FORMAT {
            return Err(bad(format!("not a {FORMAT} checkpoint")));
        }
        let version = meta("format_version")?;
        if version != "1" && version != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {version} is not supported (1 or {FORMAT_VERSION})"
            )));
        }
        let number = |key: &str| -> Result<u64, DistillError> {
            meta(key)?
                .parse()
                .map_err(|_| bad(format!("metadata `{key}` is not a number")))
        };
        let step: u64 = meta("step")?
            .parse()
            .map_err(|_| bad("metadata `step` is not a number".into()))?;
        let classes: Vec<String> = serde_json::from_str(&meta("classes")?)
            .map_err(|_| bad("metadata `classes` is not a JSON list".into()))?;
        if classes != cfg.classes {
            return Err(bad(format!(
                "classes {classes:?} differ from the config's {:?}",
                cfg.classes
            )));
        }
        let arch = StudentArch {
            in_dim,
            hidden: cfg.student_hidden,
            num_classes: cfg.num_classes(),
        };
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>, DistillError> {
            let t = file
                .tensors
                .get(name)
                .ok_or_else(|| bad(format!("tensor `{name}` missing")))?;
            if t.dims() != shape {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            let v = tensor_file::to_vec(t).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("tensor `{name}` holds non-finite values")));
            }
            Ok(v)
        };
        let values = arch
            .params()
            .iter()
            .map(|(name, shape)| get(&format!("student.{name}"), shape))
            .collect::<Result<Vec<_>, _>>()?;
        let mut difficulty = DifficultyModel::new(cfg.difficulty.clone(), cfg.num_classes());
        let names: Vec<&str> = difficulty.state().iter().map(|(n, _)| *n).collect();
        for name in names {
            let v = get(name, &[cfg.num_classes()])?;
            difficulty.set_state(name, v);
        }
        let mut trainer = Self::from_parts(cfg, arch, &values, step, difficulty)?;
        if version == "1" {
            return Ok(trainer);
        }
        let mut adam = AdamState {
            step: number("optim_step")?,
            m: Vec::new(),
            v: Vec::new(),
        };
        for (name, shape) in arch.params() {
            adam.m.push(get(&format!("optim.m.{name}"), &shape)?);
            adam.v.push(get(&format!("optim.v.{name}"), &shape)?);
        }
        let n = number("replay_len")? as usize;
        let mut replay = Vec::with_capacity(n);
        if n > 0 {
            let k = cfg.num_classes();
            let features = get("replay.student_features", &[n, in_dim])?;
            let logits = get("replay.teacher_logits", &[n, k])?;
            let snr = get("replay.snr_db", &[n])?;
            for i in 0..n {
                replay.push(Pair {
                    student_features: features[i * in_dim..(i + 1) * in_dim].to_vec(),
                    teacher_logits: logits[i * k..(i + 1) * k].to_vec(),
                    snr_db: snr[i],
                });
            }
        }
        trainer.restore(TrainerState {
            adam,
            replay,
            rng: number("rng")?,
            since_update: number("since_update")? as usize,
        })?;
        Ok(trainer)
    }

    /// Resume from `path`, else from its `.prev` sibling, else start fresh; refusals of
    /// corrupt files are reported in [`ResumeInfo::refused`] (the files are left in place).
    pub fn resume_latest(
        cfg: &DistillConfig,
        in_dim: usize,
        path: &Path,
    ) -> Result<(Self, ResumeInfo), DistillError> {
        let mut refused = Vec::new();
        for candidate in [path.to_path_buf(), prev_path(path)] {
            if !candidate.exists() {
                continue;
            }
            match Self::resume(cfg, in_dim, &candidate) {
                Ok(t) => {
                    let step = t.step;
                    return Ok((
                        t,
                        ResumeInfo {
                            loaded: Some(candidate),
                            step,
                            refused,
                        },
                    ));
                }
                Err(e @ DistillError::CorruptCheckpoint { .. }) => refused.push(e),
                Err(e) => return Err(e),
            }
        }
        let t = Self::new(cfg, in_dim)?;
        Ok((
            t,
            ResumeInfo {
                loaded: None,
                step: 0,
                refused,
            },
        ))
    }
}
