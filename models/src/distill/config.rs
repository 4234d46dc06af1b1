//! The `[distill]` config section: which classes, which direction, and every knob of the
//! loss, the optimizer, the replay buffer, checkpoints and the difficulty model.
//!
//! Field names are the TOML keys. `validate` turns every bad value into one error naming the
//! field, so a typo in a config never reaches the trainer. Example (defaults shown):
//!
//! ```toml
//! [distill]
//! classes = ["dog", "car", "rain"]     # required, >= 2, unique
//! direction = "visual_to_audio"        # or "audio_to_visual"
//! temperature = 2.0                    # KL(teacher_T || student_T) * T^2
//! confidence_gate = 0.5                # skip pairs whose teacher top p (T = 1) is lower
//! lr = 0.03
//! weight_decay = 1e-4
//! replay_size = 512
//! batch_size = 32
//! update_interval = 1                  # one update per accepted pair
//! queue_capacity = 256                 # live path -> trainer; overflow dropped and counted
//! student_hidden = 0                   # 0: linear head, else MLP width
//! checkpoint = "state/student.safetensors"
//! checkpoint_every = 100
//! seed = 0
//! [distill.difficulty]
//! selection = "weighted"               # "hard" | "weighted" | "uniform"
//! ema = 0.1
//! threshold = 0.5
//! floor = 0.1
//! bias = -2.0
//! w_disagreement = 4.0
//! w_entropy = 1.5
//! w_teacher_confidence = 1.0
//! w_snr = 0.5
//! snr_ref_db = 20.0
//! snr_scale_db = 10.0
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::DistillError;

/// Which modality teaches which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The visual model is the teacher, the audio model learns (the default: eyes teach ears).
    #[default]
    VisualToAudio,
    /// The audio model is the teacher, the visual model learns.
    AudioToVisual,
}

/// How the difficulty model steers the update budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Only pairs whose (teacher) class is predicted hard are drawn into batches; when no
    /// class is predicted hard, batches are drawn uniformly. (The paper's choice; with a
    /// small student it forgets the classes it stops seeing, see the eval numbers.)
    Hard,
    /// Pairs are drawn with probability proportional to `floor + difficulty(class)` (the
    /// default: it beat both `hard` and `uniform` on hard classes in our ablation).
    #[default]
    Weighted,
    /// Every pair in the replay buffer is equally likely (the ablation baseline).
    Uniform,
}

/// The heuristic difficulty model (see `difficulty.rs` for the formula).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DifficultyConfig {
    pub selection: Selection,
    /// Smoothing of the per-class exponential moving averages (weight of a new observation).
    pub ema: f64,
    /// A class is "hard" when its predicted difficulty is at least this.
    pub threshold: f64,
    /// Added to every class weight in `weighted` selection (keeps easy classes in play).
    pub floor: f64,
    /// Logistic formula: bias and weights of the inputs.
    pub bias: f64,
    pub w_disagreement: f64,
    pub w_entropy: f64,
    pub w_teacher_confidence: f64,
    pub w_snr: f64,
    /// SNR (dB) at which the SNR term is zero; lower SNR makes a class harder.
    pub snr_ref_db: f64,
    /// dB per unit of the SNR term.
    pub snr_scale_db: f64,
}

impl Default for DifficultyConfig {
    fn default() -> Self {
        Self {
            selection: Selection::Weighted,
            ema: 0.1,
            threshold: 0.5,
            floor: 0.1,
            bias: -2.0,
            w_disagreement: 4.0,
            w_entropy: 1.5,
            w_teacher_confidence: 1.0,
            w_snr: 0.5,
            snr_ref_db: 20.0,
            snr_scale_db: 10.0,
        }
    }
}

/// The `[distill]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Sound-source class names; teacher and student both score exactly these, in order.
    pub classes: Vec<String>,
    pub direction: Direction,
    /// Softmax temperature T of the distillation loss (KL * T^2).
    pub temperature: f64,
    /// Pairs whose teacher top probability (at T = 1) is below this are not learnt from.
    pub confidence_gate: f64,
    /// AdamW learning rate and decoupled weight decay.
    pub lr: f64,
    pub weight_decay: f64,
    /// Capacity of the replay ring of recent (student features, teacher logits) pairs.
    pub replay_size: usize,
    /// Pairs per update.
    pub batch_size: usize,
    /// One update per this many accepted new pairs.
    pub update_interval: usize,
    /// Capacity of the live-path -> trainer queue; pairs beyond it are dropped and counted.
    pub queue_capacity: usize,
    /// Hidden width of the student MLP; 0 makes it a linear head.
    pub student_hidden: usize,
    /// Checkpoint file (`.safetensors`); the previous one is kept as `<stem>.prev.safetensors`.
    pub checkpoint: Option<PathBuf>,
    /// Write a checkpoint every this many updates (and always at shutdown); 0: only at shutdown.
    pub checkpoint_every: u64,
    /// Seed of the student init and of batch sampling (runs are reproducible).
    pub seed: u64,
    pub difficulty: DifficultyConfig,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            classes: Vec::new(),
            direction: Direction::VisualToAudio,
            temperature: 2.0,
            confidence_gate: 0.5,
            lr: 0.03,
            weight_decay: 1e-4,
            replay_size: 512,
            batch_size: 32,
            update_interval: 1,
            queue_capacity: 256,
            student_hidden: 0,
            checkpoint: None,
            checkpoint_every: 100,
            seed: 0,
            difficulty: DifficultyConfig::default(),
        }
    }
}

/// A config file of which only the `[distill]` table is read here.
#[derive(Deserialize)]
struct FileWithDistill {
    distill: Option<toml::Value>,
}

impl DistillConfig {
    /// Parse the `[distill]` table of a whole sensorium config file (other tables ignored).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, DistillError> {
        let parse_err = |e: &dyn std::fmt::Display| DistillError::ConfigParse {
            origin: origin.to_string(),
            message: e.to_string(),
        };
        let file: FileWithDistill = toml::from_str(text).map_err(|e| parse_err(&e))?;
        let table = file.distill.ok_or_else(|| DistillError::ConfigParse {
            origin: origin.to_string(),
            message: "no [distill] section".into(),
        })?;
        let cfg: DistillConfig = table.try_into().map_err(|e| parse_err(&e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), DistillError> {
        if self.classes.len() < 2 {
            return Err(DistillError::config(
                "classes",
                format!("need at least 2 classes, got {}", self.classes.len()),
            ));
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(DistillError::config(
                    "classes",
                    format!("class {i} is empty"),
                ));
            }
            if self.classes[..i].contains(c) {
                return Err(DistillError::config(
                    "classes",
                    format!("duplicate class {c:?}"),
                ));
            }
        }
        let pos = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(DistillError::config(field, format!("must be > 0, got {v}")))
            }
        };
        pos("temperature", self.temperature)?;
        pos("lr", self.lr)?;
        pos("difficulty.ema", self.difficulty.ema)?;
        pos("difficulty.snr_scale_db", self.difficulty.snr_scale_db)?;
        let unit = |field: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(DistillError::config(
                    field,
                    format!("must be in [0, 1], got {v}"),
                ))
            }
        };
        unit("confidence_gate", self.confidence_gate)?;
        unit("difficulty.ema", self.difficulty.ema)?;
        unit("difficulty.threshold", self.difficulty.threshold)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(DistillError::config(
                "weight_decay",
                format!("must be >= 0, got {}", self.weight_decay),
            ));
        }
        if !(self.difficulty.floor.is_finite() && self.difficulty.floor >= 0.0) {
            return Err(DistillError::config(
                "difficulty.floor",
                format!("must be >= 0, got {}", self.difficulty.floor),
            ));
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("update_interval", self.update_interval),
            ("queue_capacity", self.queue_capacity),
        ] {
            if v == 0 {
                return Err(DistillError::config(field, "must be > 0"));
            }
        }
        if self.replay_size < self.batch_size {
            return Err(DistillError::config(
                "replay_size",
                format!(
                    "must be >= batch_size ({}), got {}",
                    self.batch_size, self.replay_size
                ),
            ));
        }
        Ok(())
    }

    /// Number of classes K.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }
}
