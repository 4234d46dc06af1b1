//! The synchronous distillation trainer: accepts pairs, keeps the replay buffer and the
//! difficulty model, and runs AdamW updates of the temperature-scaled KL loss.
//!
//! It is single-threaded and deterministic for a given seed and input order (the eval
//! command uses it directly); [`super::background`] runs it on its own thread for the live
//! path. Checkpointing is in [`super::checkpoint`].

use candle_core::{Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW};

use super::config::DistillConfig;
use super::difficulty::DifficultyModel;
use super::error::{CandleContext, DistillError};
use super::optim::{AdamState, AdamW};
use super::replay::{Pair, ReplayBuffer, Stored};
use super::student::{Rng, StudentArch, StudentSnapshot, TrainableStudent};
use super::teacher::{argmax, softmax};

/// Temperature-scaled distillation loss, mean over the batch:
/// `T^2 * KL(softmax(t / T) || softmax(s / T))`, for logits `student`, `teacher` `[N, K]`.
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    let log_q = candle_nn::ops::log_softmax(&(student / temperature)?, 1)?;
    let log_p = candle_nn::ops::log_softmax(&(teacher / temperature)?, 1)?;
    let kl = (log_p.exp()? * (log_p - log_q)?)?.sum(1)?;
    kl.mean_all()? * (temperature * temperature)
}

/// Counters of one trainer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerCounters {
    /// Pairs offered to `observe`.
    pub pairs: u64,
    /// Pairs refused by the confidence gate.
    pub gated: u64,
    /// Loss of the last update.
    pub last_loss: f32,
}

/// What a checkpoint restores besides the weights, the step and the difficulty statistics,
/// so that a resumed run continues exactly as the uninterrupted one would.
pub(crate) struct TrainerState {
    pub adam: AdamState,
    /// The replay ring, oldest first.
    pub replay: Vec<Pair>,
    pub rng: u64,
    pub since_update: usize,
}

/// Online distillation of one student from one teacher's logits.
pub struct DistillTrainer {
    pub(crate) cfg: DistillConfig,
    pub(crate) student: TrainableStudent,
    opt: AdamW,
    replay: ReplayBuffer,
    pub(crate) difficulty: DifficultyModel,
    pub(crate) step: u64,
    since_update: usize,
    rng: Rng,
    pub(crate) counters: TrainerCounters,
}

impl DistillTrainer {
    /// A fresh student over `in_dim` features (seeded init), per `cfg`.
    pub fn new(cfg: &DistillConfig, in_dim: usize) -> Result<Self, DistillError> {
        cfg.validate()?;
        let arch = StudentArch {
            in_dim,
            hidden: cfg.student_hidden,
            num_classes: cfg.num_classes(),
        };
        let values = arch.init(cfg.seed);
        Self::from_parts(
            cfg,
            arch,
            &values,
            0,
            DifficultyModel::new(cfg.difficulty.clone(), cfg.num_classes()),
        )
    }

    pub(crate) fn from_parts(
        cfg: &DistillConfig,
        arch: StudentArch,
        values: &[Vec<f32>],
        step: u64,
        difficulty: DifficultyModel,
    ) -> Result<Self, DistillError> {
        let student = TrainableStudent::new(arch, values)?;
        let opt = AdamW::new(
            student.vars.clone(),
            ParamsAdamW {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )
        .ctx("optimizer init")?;
        Ok(Self {
            cfg: cfg.clone(),
            student,
            opt,
            replay: ReplayBuffer::new(cfg.replay_size),
            difficulty,
            step,
            since_update: 0,
            rng: Rng::new(cfg.seed.wrapping_add(step)),
            counters: TrainerCounters::default(),
        })
    }

    pub fn config(&self) -> &DistillConfig {
        &self.cfg
    }
    pub fn arch(&self) -> StudentArch {
        self.student.arch
    }
    /// Updates done so far (restored from a checkpoint on resume).
    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn counters(&self) -> &TrainerCounters {
        &self.counters
    }
    pub fn difficulty(&self) -> &DifficultyModel {
        &self.difficulty
    }
    /// Switch the batch selection (e.g. after a uniform warm-up); the statistics are kept.
    pub fn set_selection(&mut self, selection: super::config::Selection) {
        self.cfg.difficulty.selection = selection;
        self.difficulty.set_selection(selection);
    }
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }

    /// Offer one pair. Gated pairs (teacher not confident enough, or non-finite values) are
    /// counted and dropped; accepted pairs update the difficulty model and the replay ring,
    /// and every `update_interval` accepted pairs (once the ring holds a batch) an update
    /// runs. Returns the loss when an update ran.
    pub fn observe(&mut self, pair: Pair) -> Result<Option<f32>, DistillError> {
        let k = self.cfg.num_classes();
        let arch = self.student.arch;
        if pair.teacher_logits.len() != k || pair.student_features.len() != arch.in_dim {
            return Err(DistillError::input(
                "distill pair",
                format!(
                    "teacher logits {} (expected {k}), student features {} (expected {})",
                    pair.teacher_logits.len(),
                    pair.student_features.len(),
                    arch.in_dim
                ),
            ));
        }
        self.counters.pairs += 1;
        let finite = pair.snr_db.is_finite()
            && pair.student_features.iter().all(|x| x.is_finite())
            && pair.teacher_logits.iter().all(|x| x.is_finite());
        if !finite {
            // A NaN/inf from an encoder would poison every later update (and the checkpoint).
            self.counters.gated += 1;
            return Ok(None);
        }
        let (tc, conf) = argmax(&softmax(&pair.teacher_logits, 1.0));
        if (conf as f64) < self.cfg.confidence_gate {
            self.counters.gated += 1;
            return Ok(None);
        }
        let x = Tensor::from_slice(&pair.student_features, (1, arch.in_dim), &Device::Cpu)
            .ctx("student probe")?;
        let logits = self.student.forward(&x).ctx("student probe")?;
        let probs = softmax(
            &crate::tensor_file::to_vec(&logits).ctx("student probe")?,
            1.0,
        );
        self.difficulty.observe(tc, conf, &probs, pair.snr_db);
        self.replay.push(Stored {
            pair,
            teacher_class: tc,
        });
        self.since_update += 1;
        if self.since_update >= self.cfg.update_interval && self.replay.len() >= self.cfg.batch_size
        {
            self.since_update = 0;
            return self.update().map(Some);
        }
        Ok(None)
    }

    /// The optimizer moments, replay ring, sampler and update phase (for checkpoints).
    pub(crate) fn train_state(&self) -> Result<TrainerState, DistillError> {
        Ok(TrainerState {
            adam: self.opt.state().ctx("optimizer state")?,
            replay: self.replay.iter().map(|s| s.pair.clone()).collect(),
            rng: self.rng.state(),
            since_update: self.since_update,
        })
    }

    /// Restores what [`train_state`](Self::train_state) saved (the weights, step and
    /// difficulty statistics are restored by construction).
    pub(crate) fn restore(&mut self, state: TrainerState) -> Result<(), DistillError> {
        self.opt.set_state(&state.adam).ctx("optimizer state")?;
        self.replay = ReplayBuffer::new(self.cfg.replay_size);
        for pair in state.replay {
            let (teacher_class, _) = argmax(&softmax(&pair.teacher_logits, 1.0));
            self.replay.push(Stored {
                pair,
                teacher_class,
            });
        }
        self.rng = Rng::new(state.rng);
        self.since_update = state.since_update;
        Ok(())
    }

    /// Draw a batch by the difficulty-aware selection and run one AdamW step.
    pub fn update(&mut self) -> Result<f32, DistillError> {
        let n = self.replay.len();
        if n == 0 {
            return Err(DistillError::input(
                "distill update",
                "replay buffer is empty",
            ));
        }
        let any_hard = self.difficulty.any_hard();
        let weights: Vec<f64> = self
            .replay
            .iter()
            .map(|s| self.difficulty.selection_weight(s.teacher_class, any_hard))
            .collect();
        let total: f64 = weights.iter().sum();
        let b = self.cfg.batch_size;
        let mut xs = Vec::with_capacity(b * self.student.arch.in_dim);
        let mut ts = Vec::with_capacity(b * self.cfg.num_classes());
        for _ in 0..b {
            let i = if total > 0.0 {
                let mut r = self.rng.unit() * total;
                let mut pick = n - 1;
                for (j, w) in weights.iter().enumerate() {
                    if r < *w {
                        pick = j;
                        break;
                    }
                    r -= w;
                }
                pick
            } else {
                self.rng.below(n)
            };
            if let Some(s) = self.replay.get(i) {
                xs.extend_from_slice(&s.pair.student_features);
                ts.extend_from_slice(&s.pair.teacher_logits);
            }
        }
        let dev = Device::Cpu;
        let x = Tensor::from_vec(xs, (b, self.student.arch.in_dim), &dev).ctx("update batch")?;
        let t = Tensor::from_vec(ts, (b, self.cfg.num_classes()), &dev).ctx("update batch")?;
        let s = self.student.forward(&x).ctx("student forward")?;
        let loss = distillation_loss(&s, &t, self.cfg.temperature).ctx("distillation loss")?;
        self.opt.backward_step(&loss).ctx("optimizer step")?;
        let loss = loss.to_scalar::<f32>().ctx("loss value")?;
        self.step += 1;
        self.counters.last_loss = loss;
        Ok(loss)
    }

    /// An immutable copy of the current student for inference.
    pub fn snapshot(&self) -> Result<StudentSnapshot, DistillError> {
        self.student.snapshot(self.step)
    }
}

impl std::fmt::Debug for DistillTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistillTrainer")
            .field("arch", &self.student.arch)
            .field("step", &self.step)
            .field("replay", &self.replay.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}
