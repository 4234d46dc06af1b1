//! Online cross-modal distillation (after Jiang et al. 2025, arXiv 2505.06803): one
//! modality's model (the teacher, visual by default) teaches the other's (the student) on the
//! live stream, spending its update budget on the classes a heuristic model predicts to be
//! hard for the student.
//!
//! Pieces: [`config`] (the `[distill]` section), [`features`] (extractor traits and tiny
//! stand-in encoders), [`teacher`] (zero-shot or linear head), [`student`], [`difficulty`]
//! (the heuristic model), [`trainer`] (KL * T^2, AdamW, replay), [`checkpoint`],
//! [`background`] (trainer thread + atomic student swap), [`stage`] (the engine's
//! `WindowModel`), [`synth`] (GStreamer test scenes), [`eval`] (before/after and ablation)
//! and [`clip_text`] (class embeddings for the zero-shot teacher from a CLIP text tower).
//!
//! The extractors in [`features`] are stand-ins; [`encoders`] implements the same traits over
//! the Whisper / CLIP encoders (pooled tokens), which `sensorium run` uses when `[models]`
//! configures them. Ablation: `cargo run -p sensorium-models --example distill_eval --
//! --selection weighted --warmup 100 --budget 200 --seeds 10`.

pub mod background;
pub mod checkpoint;
pub mod clip_text;
pub mod config;
pub mod difficulty;
pub mod encoders;
pub mod error;
pub mod eval;
pub mod features;
pub mod optim;
pub mod replay;

pub mod labelled;
pub mod stage;
pub mod student;
pub mod teacher;
pub mod trainer;

pub use background::{BackgroundTrainer, StudentSlot, TrainerStats, TrainerSummary};
pub use checkpoint::{prev_path, ResumeInfo};
pub use config::{DifficultyConfig, Direction, DistillConfig, Selection};
pub use difficulty::DifficultyModel;
pub use encoders::{VisionTowerFeatures, WhisperAudioFeatures};
pub use error::DistillError;
pub use eval::{EvalConfig, EvalReport};
pub use features::{
    audio_stats, AudioFeatureExtractor, AudioStats, DistillFeatures, Extractors,
    GridVisualFeatures, SpectralAudioFeatures, VisualFeatureExtractor,
};
pub use replay::Pair;
pub use stage::{ClassProb, DistillStage, WindowPrediction};
pub use student::{StudentArch, StudentSnapshot};
pub use teacher::Teacher;
pub use trainer::{distillation_loss, DistillTrainer};
