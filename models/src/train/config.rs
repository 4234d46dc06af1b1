//! `[train]`: what `sensorium train` learns, from which data, and how (FAVOR's recipe by
//! default: encoders and LLM frozen, causal Q-Former + projection trained; LoRA on the LLM's
//! attention projections with `train_llm = "lora"`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use sensorium_engine::scene;

use super::TrainError;

/// What happens to the LLM's weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainLlm {
    /// The LLM stays as it is (only the Q-Former and its projection learn).
    #[default]
    Frozen,
    /// LoRA pairs on `lora.targets` (PEFT conventions), saved as `adapter/`.
    Lora,
    /// Every LLM weight is trained, saved as a full checkpoint `llm/`.
    Full,
}

/// Learning-rate schedule after the linear warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay from `lr` to 0 at the last step.
    #[default]
    Cosine,
    Constant,
}

/// `[train.lora]` (FAVOR's setting by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the LoRA input (training only).
    pub dropout: f64,
    /// Module names as PEFT's `target_modules`.
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            r: 32,
            alpha: 32.0,
            dropout: 0.1,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl LoraConfig {
    /// PEFT's scale `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// `[train]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Training samples, JSON Lines (see `models/src/train/data.rs` and the README).
    pub manifest: Option<PathBuf>,
    /// Validation samples; without it `val_fraction` of the manifest is held out.
    pub val_manifest: Option<PathBuf>,
    pub val_fraction: f64,
    /// Output directory (`--output` overrides).
    pub output: Option<PathBuf>,
    /// Optimizer steps; without it, `epochs` passes over the training samples.
    pub steps: Option<u64>,
    pub epochs: Option<u64>,
    /// Samples per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Shuffle whole runs of examples about the same window(s) (a sample's turns, a scene
    /// window's questions) instead of single examples, so that they share a micro-batch and
    /// the window goes through the encoders and the Q-Former once for all of them.
    pub group_windows: bool,
    pub lr: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip_grad_norm: f64,
    pub seed: u64,
    /// Evaluate (validation loss and exact-match accuracy) every N steps (0 = only at the end).
    pub eval_every: u64,
    /// Write a resumable checkpoint every N steps (0 = only at the end).
    pub save_every: u64,
    /// FAVOR's diversity loss weight on the Q-Former output tokens.
    pub diversity_loss: f64,
    pub train_llm: TrainLlm,
    pub lora: LoraConfig,
    /// Train the encoders too (small models only, such as the default model): their
    /// outputs are then computed in the training graph at every step (no feature cache),
    /// and `audio/` + `vision/` are written beside `qformer/`.
    pub train_encoders: bool,
    /// A Q-Former directory to start from (else `[models] qformer`, else a seeded random one).
    pub init_qformer: Option<PathBuf>,
    /// Where decoded clip features are cached (default: `<output>/cache`).
    pub cache: Option<PathBuf>,
    /// Train on generated scene streams (the default model's world) instead of a manifest.
    pub scenes: Option<ScenesConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            manifest: None,
            val_manifest: None,
            val_fraction: 0.0,
            output: None,
            steps: None,
            epochs: None,
            batch: 1,
            grad_accum: 1,
            group_windows: false,
            lr: 1e-4,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            clip_grad_norm: 1.0,
            seed: 0,
            eval_every: 0,
            save_every: 0,
            diversity_loss: 0.0,
            train_llm: TrainLlm::Frozen,
            lora: LoraConfig::default(),
            train_encoders: false,
            init_qformer: None,
            cache: None,
            scenes: None,
        }
    }
}

impl TrainConfig {
    /// Checks what serde cannot; the error names the field (`train.…`).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &str, message: &str| {
            Err(TrainError::Config {
                field: format!("train.{field}"),
                message: message.into(),
            })
        };
        match &self.scenes {
            Some(s) => s.validate()?,
            None if self.manifest.is_none() => {
                return bad(
                    "manifest",
                    "missing: the training samples (JSON Lines), or a [train.scenes] table",
                )
            }
            None => {}
        }
        if self.steps.is_some() && self.epochs.is_some() {
            return bad("steps", "set either `steps` or `epochs`, not both");
        }
        if self.steps == Some(0) || self.epochs == Some(0) {
            return bad("steps", "must be at least 1");
        }
        if self.batch == 0 {
            return bad("batch", "must be at least 1");
        }
        if self.grad_accum == 0 {
            return bad("grad_accum", "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be > 0");
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("val_fraction", "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be >= 0");
        }
        if !(self.clip_grad_norm.is_finite() && self.clip_grad_norm >= 0.0) {
            return bad("clip_grad_norm", "must be >= 0 (0 = off)");
        }
        if !(self.diversity_loss.is_finite() && self.diversity_loss >= 0.0) {
            return bad("diversity_loss", "must be >= 0");
        }
        if self.lora.r == 0 {
            return bad("lora.r", "must be at least 1");
        }
        if !(self.lora.alpha.is_finite() && self.lora.alpha > 0.0) {
            return bad("lora.alpha", "must be > 0");
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            return bad("lora.dropout", "must be in [0, 1)");
        }
        if self.lora.targets.is_empty() {
            return bad("lora.targets", "name at least one module (e.g. \"q_proj\")");
        }
        for t in &self.lora.targets {
            if !TARGETS.contains(&t.as_str()) {
                return Err(TrainError::Config {
                    field: "train.lora.targets".into(),
                    message: format!("unknown module {t:?} (one of: {})", TARGETS.join(", ")),
                });
            }
        }
        Ok(())
    }
}

/// Module names `target_modules` may use.
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// First seed of the held-out evaluation streams (`sensorium eval --bench scenes`): training
/// seeds must stay below it.
pub const HELD_OUT_SEEDS: u64 = 1_000_000_000;

/// `[train.scenes]`: train on generated scene streams instead of (or besides) a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenesConfig {
    /// Training streams: seeds `[from, to)`.
    pub train_seeds: [u64; 2],
    /// Validation streams: seeds `[from, to)` (disjoint from the training ones).
    pub val_seeds: [u64; 2],
    /// Length of each stream, s.
    pub seconds: f64,
    /// Questions asked per window (tasks drawn in turn, so every task is represented).
    pub questions: usize,
    /// Only these tasks (e.g. `["audio"]` for a first curriculum stage); empty: all.
    pub tasks: Vec<String>,
    /// Weight of the auxiliary label loss (0 = off): the window's facts from the world
    /// (objects, positions, motion, sound, sync, order; `scene::labels`) read by a linear
    /// head from the Q-Former's query tokens, so the encoders and the Q-Former learn from
    /// the world directly and not only through the LLM's answer tokens.
    pub labels_loss: f64,
    /// Steps of the encoders' pretraining stage on the streams' per-frame labels before
    /// the answer training (0 = none; needs `train_encoders`).
    pub pretrain_steps: u64,
    /// Frames per pretraining step.
    pub pretrain_batch: usize,
}

impl Default for ScenesConfig {
    fn default() -> Self {
        Self {
            train_seeds: [1000, 2000],
            val_seeds: [1, 21],
            seconds: 12.0,
            questions: 4,
            tasks: Vec::new(),
            labels_loss: 0.0,
            pretrain_steps: 0,
            pretrain_batch: 64,
        }
    }
}

impl ScenesConfig {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field: &str, message: String| {
            Err(TrainError::Config {
                field: format!("train.scenes.{field}"),
                message,
            })
        };
        for (name, [a, b]) in [
            ("train_seeds", self.train_seeds),
            ("val_seeds", self.val_seeds),
        ] {
            if a > b {
                return bad(name, format!("[{a}, {b}) is empty the wrong way round"));
            }
            if b > HELD_OUT_SEEDS {
                return bad(
                    name,
                    format!("seeds from {HELD_OUT_SEEDS} on are held out for evaluation"),
                );
            }
        }
        let [ta, tb] = self.train_seeds;
        let [va, vb] = self.val_seeds;
        if ta < vb && va < tb {
            return bad("val_seeds", "must not overlap train_seeds".into());
        }
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            return bad("seconds", format!("must be > 0, got {}", self.seconds));
        }
        if self.questions == 0 {
            return bad("questions", "must be at least 1".into());
        }
        if self.pretrain_steps > 0 && self.pretrain_batch == 0 {
            return bad("pretrain_batch", "must be at least 1".into());
        }
        if !(self.labels_loss.is_finite() && self.labels_loss >= 0.0) {
            return bad(
                "labels_loss",
                format!("must be >= 0 (0 = off), got {}", self.labels_loss),
            );
        }
        for t in &self.tasks {
            if !scene::TASKS.contains(&t.as_str()) {
                return bad(
                    "tasks",
                    format!("unknown task {t:?} (one of: {})", scene::TASKS.join(", ")),
                );
            }
        }
        Ok(())
    }
}
