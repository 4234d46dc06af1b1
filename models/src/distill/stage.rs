//! `DistillStage`: the engine-facing window model of online distillation.
//!
//! Per window it pools per-frame features of both modalities, answers with the student's
//! and the teacher's top class, and hands the (student features, teacher logits) pair to the
//! background trainer without waiting. Inference always uses the latest swapped-in student.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sensorium_engine::frame::{SyncedFrame, Window};
use sensorium_engine::model::{StageError, WindowModel};
use serde_json::{json, Map, Value};

use super::background::{BackgroundTrainer, StudentSlot, TrainerStats, TrainerSummary};
use super::checkpoint::ResumeInfo;
use super::config::{Direction, DistillConfig};
use super::error::DistillError;
use super::features::{mean_pool, DistillFeatures, Extractors};
use super::replay::Pair;
use super::teacher::{argmax, softmax, Teacher};
use super::trainer::DistillTrainer;

/// A class and its probability (T = 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ClassProb {
    pub class: String,
    pub index: usize,
    pub p: f32,
}

/// What the stage says about one window.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowPrediction {
    /// `None` when the window has no data of the student's modality.
    pub student: Option<ClassProb>,
    /// `None` when the window has no data of the teacher's modality.
    pub teacher: Option<ClassProb>,
    /// Version (update count) of the student that answered.
    pub student_version: u64,
    /// Whether a training pair was queued (false: a modality missing, or queue full).
    pub submitted: bool,
}

/// Pooled features of one window (`None`: that modality is absent).
struct WindowFeatures {
    audio: Option<Vec<f32>>,
    visual: Option<Vec<f32>>,
    snr_db: f32,
}

/// Online cross-modal distillation as a [`WindowModel`].
pub struct DistillStage {
    cfg: DistillConfig,
    extractors: Extractors,
    teacher: Arc<Teacher>,
    slot: Arc<StudentSlot>,
    trainer: Option<BackgroundTrainer>,
    resume: ResumeInfo,
    /// Frames that arrived without the frame stage's features and were computed here.
    computed: AtomicU64,
}

impl DistillStage {
    /// Build the stage: checks that the teacher and the extractors fit the config, resumes
    /// the student from `cfg.checkpoint` (or its `.prev`) when present, and starts training.
    pub fn new(
        cfg: DistillConfig,
        teacher: Teacher,
        extractors: Extractors,
    ) -> Result<Self, DistillError> {
        cfg.validate()?;
        let (teacher_dim, student_dim) = match cfg.direction {
            Direction::VisualToAudio => (extractors.visual.dim(), extractors.audio.dim()),
            Direction::AudioToVisual => (extractors.audio.dim(), extractors.visual.dim()),
        };
        if teacher.num_classes() != cfg.num_classes() {
            return Err(DistillError::config(
                "classes",
                format!(
                    "{} classes configured, the teacher scores {}",
                    cfg.num_classes(),
                    teacher.num_classes()
                ),
            ));
        }
        if teacher.in_dim() != teacher_dim {
            return Err(DistillError::config(
                "direction",
                format!(
                    "teacher takes {} features, the {:?} teacher extractor gives {teacher_dim}",
                    teacher.in_dim(),
                    cfg.direction
                ),
            ));
        }
        let (trainer, resume) = match &cfg.checkpoint {
            Some(path) => DistillTrainer::resume_latest(&cfg, student_dim, path)?,
            None => (
                DistillTrainer::new(&cfg, student_dim)?,
                ResumeInfo {
                    loaded: None,
                    step: 0,
                    refused: Vec::new(),
                },
            ),
        };
        let trainer = BackgroundTrainer::spawn(trainer)?;
        Ok(Self {
            slot: trainer.slot(),
            trainer: Some(trainer),
            cfg,
            extractors,
            teacher: Arc::new(teacher),
            resume,
            computed: AtomicU64::new(0),
        })
    }

    /// The per-frame feature extractors (the frame stage runs them:
    /// `AvFrameEncoder::with_distill`).
    pub fn extractors(&self) -> &Extractors {
        &self.extractors
    }

    /// How the student was resumed (file used, refused corrupt files).
    pub fn resume_info(&self) -> &ResumeInfo {
        &self.resume
    }
    pub fn student_version(&self) -> u64 {
        self.slot.load().version
    }
    pub fn stats(&self) -> Option<Arc<TrainerStats>> {
        self.trainer.as_ref().map(|t| t.stats())
    }
    pub fn config(&self) -> &DistillConfig {
        &self.cfg
    }

    /// Stop training (after the queued pairs), write the final checkpoint.
    pub fn shutdown(mut self) -> Result<TrainerSummary, DistillError> {
        match self.trainer.take() {
            Some(t) => t.shutdown(),
            None => Err(DistillError::Trainer("already shut down".into())),
        }
    }

    /// Frames whose features this stage computed itself because they arrived without the
    /// frame stage's (0 in a run: the frame stage computes each frame's once).
    pub fn frames_encoded(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Features of one frame: the frame stage's (see `AvFrameEncoder::with_distill`), or,
    /// for a frame that arrives without them (the stage used on its own), computed now.
    fn frame_features<'f>(
        &self,
        f: &'f SyncedFrame,
    ) -> Result<Cow<'f, DistillFeatures>, DistillError> {
        if let Some(ff) = f.features.as_ref().and_then(|x| x.distill()) {
            return Ok(Cow::Borrowed(ff));
        }
        self.computed.fetch_add(1, Ordering::Relaxed);
        Ok(Cow::Owned(self.extractors.frame(f, f.features.as_deref())?))
    }

    /// Pooled (audio, visual) features of a window's valid frames, and the mean audio SNR.
    fn window_features(&self, w: &Window) -> Result<WindowFeatures, DistillError> {
        let mut audio = Vec::new();
        let mut visual = Vec::new();
        let mut snr = Vec::new();
        for (f, valid) in w.frames.iter().zip(&w.valid) {
            if !valid {
                continue;
            }
            let ff = self.frame_features(f)?;
            if let Some(a) = &ff.audio {
                audio.push(a.clone());
                snr.push(ff.snr_db);
            }
            if let Some(v) = &ff.visual {
                visual.push(v.clone());
            }
        }
        Ok(WindowFeatures {
            audio: mean_pool(&audio),
            visual: mean_pool(&visual),
            snr_db: snr.iter().sum::<f32>() / snr.len().max(1) as f32,
        })
    }

    fn class_prob(&self, logits: &[f32]) -> ClassProb {
        let (index, p) = argmax(&softmax(logits, 1.0));
        ClassProb {
            class: self.cfg.classes.get(index).cloned().unwrap_or_default(),
            index,
            p,
        }
    }

    /// Predict one window with the current student and queue it for training.
    pub fn predict(&self, w: &Window) -> Result<WindowPrediction, DistillError> {
        let WindowFeatures {
            audio,
            visual,
            snr_db,
        } = self.window_features(w)?;
        let (teacher_x, student_x) = match self.cfg.direction {
            Direction::VisualToAudio => (visual, audio),
            Direction::AudioToVisual => (audio, visual),
        };
        let student_model = self.slot.load();
        let student_logits = student_x
            .as_ref()
            .map(|x| student_model.logits(x))
            .transpose()?;
        let teacher_logits = teacher_x
            .as_ref()
            .map(|x| self.teacher.logits(x))
            .transpose()?;
        let student = student_logits.as_deref().map(|l| self.class_prob(l));
        let teacher = teacher_logits.as_deref().map(|l| self.class_prob(l));
        let mut submitted = false;
        if let (Some(x), Some(t), Some(tr)) = (student_x, teacher_logits, &self.trainer) {
            submitted = tr.submit(Pair {
                student_features: x,
                teacher_logits: t,
                snr_db,
            });
        }
        metrics::counter!("distill_windows_total").increment(1);
        metrics::gauge!("distill_student_version").set(student_model.version as f64);
        Ok(WindowPrediction {
            student,
            teacher,
            student_version: student_model.version,
            submitted,
        })
    }
}

fn class_json(c: &Option<ClassProb>) -> Value {
    match c {
        Some(c) => json!({"class": c.class, "p": c.p}),
        None => Value::Null,
    }
}

impl WindowModel for DistillStage {
    fn name(&self) -> &str {
        "distill"
    }

    /// Fields per window: `student` and `teacher` as `{"class", "p"}` (null when that
    /// modality is missing) and `student_version`.
    fn process(&mut self, windows: &[&Window]) -> Result<Vec<Map<String, Value>>, StageError> {
        windows
            .iter()
            .map(|w| {
                let p = self.predict(w).map_err(|e| {
                    StageError::new("distill", e)
                        .at(format!("stream {} window {}", w.stream, w.index))
                })?;
                let mut m = Map::new();
                m.insert("student".into(), class_json(&p.student));
                m.insert("teacher".into(), class_json(&p.teacher));
                m.insert("student_version".into(), json!(p.student_version));
                Ok(m)
            })
            .collect()
    }
}
