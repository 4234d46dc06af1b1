//! The background trainer thread and the slot through which inference reads the student.
//!
//! The live path only ever `try_send`s pairs into a bounded queue (a full queue drops the
//! pair and counts it) and reads the current student from a [`StudentSlot`]: an
//! `RwLock<Arc<StudentSnapshot>>` whose lock is held only to clone or replace the `Arc`,
//! never while training, so readers never wait on an update. The thread checkpoints every
//! `checkpoint_every` updates and once more when the queue closes (shutdown).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::{Mutex, RwLock};

use super::error::DistillError;
use super::replay::Pair;
use super::student::StudentSnapshot;
use super::trainer::DistillTrainer;

/// The current student, swapped atomically after each update.
#[derive(Debug)]
pub struct StudentSlot {
    current: RwLock<Arc<StudentSnapshot>>,
}

impl StudentSlot {
    pub fn new(initial: StudentSnapshot) -> Self {
        Self {
            current: RwLock::new(Arc::new(initial)),
        }
    }
    /// The student to use now (cheap: an `Arc` clone).
    pub fn load(&self) -> Arc<StudentSnapshot> {
        self.current.read().clone()
    }
    pub fn store(&self, next: Arc<StudentSnapshot>) {
        *self.current.write() = next;
    }
}

/// Live statistics of the background trainer, readable from any thread.
#[derive(Debug)]
pub struct TrainerStats {
    pub submitted: AtomicU64,
    /// Pairs dropped because the trainer queue was full (or the trainer had stopped).
    pub dropped: AtomicU64,
    pub updates: AtomicU64,
    pub checkpoints: AtomicU64,
    started: Instant,
    /// Last loss, per-class difficulty and agreement (after the last update).
    pub last: Mutex<TrainerView>,
    /// Why training stopped early (inference goes on with the last student).
    pub error: Mutex<Option<String>>,
}

/// A copy of the trainer's view after an update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerView {
    pub step: u64,
    pub loss: f32,
    pub difficulty: Vec<f32>,
    pub agreement: Vec<f32>,
    pub gated: u64,
}

impl TrainerStats {
    fn new() -> Self {
        Self {
            submitted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            started: Instant::now(),
            last: Mutex::new(TrainerView::default()),
            error: Mutex::new(None),
        }
    }
    /// Updates per second since the trainer started.
    pub fn updates_per_second(&self) -> f64 {
        let s = self.started.elapsed().as_secs_f64();
        if s > 0.0 {
            self.updates.load(Ordering::Relaxed) as f64 / s
        } else {
            0.0
        }
    }
}

/// What the trainer thread reports when it ends.
#[derive(Debug)]
pub struct TrainerSummary {
    pub step: u64,
    pub pairs: u64,
    pub gated: u64,
    /// The checkpoint written at shutdown, if one is configured.
    pub checkpoint: Option<PathBuf>,
}

/// A [`DistillTrainer`] running on its own thread.
pub struct BackgroundTrainer {
    tx: Option<Sender<Pair>>,
    handle: Option<JoinHandle<Result<TrainerSummary, DistillError>>>,
    slot: Arc<StudentSlot>,
    stats: Arc<TrainerStats>,
}

fn publish(trainer: &DistillTrainer, stats: &TrainerStats, classes: &[String]) {
    let d = trainer.difficulty();
    let difficulty = d.difficulties();
    let agreement: Vec<f32> = (0..d.num_classes()).map(|c| d.agreement(c)).collect();
    let loss = trainer.counters().last_loss;
    metrics::counter!("distill_updates_total").increment(1);
    metrics::gauge!("distill_loss").set(loss as f64);
    metrics::gauge!("distill_updates_per_second").set(stats.updates_per_second());
    for (c, name) in classes.iter().enumerate() {
        metrics::gauge!("distill_class_difficulty", "class" => name.clone())
            .set(difficulty[c] as f64);
        metrics::gauge!("distill_class_agreement", "class" => name.clone())
            .set(agreement[c] as f64);
    }
    *stats.last.lock() = TrainerView {
        step: trainer.step(),
        loss,
        difficulty,
        agreement,
        gated: trainer.counters().gated,
    };
}

/// The trainer thread's body: train on every pair until the queue closes, then checkpoint.
fn train_loop(
    mut trainer: DistillTrainer,
    rx: &crossbeam_channel::Receiver<Pair>,
    slot: &StudentSlot,
    stats: &TrainerStats,
    cfg: &super::config::DistillConfig,
) -> Result<TrainerSummary, DistillError> {
    let every = cfg.checkpoint_every;
    for pair in rx.iter() {
        if trainer.observe(pair)?.is_some() {
            slot.store(Arc::new(trainer.snapshot()?));
            stats.updates.fetch_add(1, Ordering::Relaxed);
            publish(&trainer, stats, &cfg.classes);
            if let Some(path) = &cfg.checkpoint {
                if every > 0 && trainer.step().is_multiple_of(every) {
                    trainer.save_checkpoint(path)?;
                    stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Some(path) = &cfg.checkpoint {
        trainer.save_checkpoint(path)?;
        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
    }
    Ok(TrainerSummary {
        step: trainer.step(),
        pairs: trainer.counters().pairs,
        gated: trainer.counters().gated,
        checkpoint: cfg.checkpoint.clone(),
    })
}

impl BackgroundTrainer {
    /// Start `trainer` on a thread; its current weights go into the slot at once.
    pub fn spawn(trainer: DistillTrainer) -> Result<Self, DistillError> {
        let cfg = trainer.config().clone();
        let slot = Arc::new(StudentSlot::new(trainer.snapshot()?));
        let stats = Arc::new(TrainerStats::new());
        let (tx, rx) = crossbeam_channel::bounded::<Pair>(cfg.queue_capacity);
        let (slot2, stats2) = (slot.clone(), stats.clone());
        let handle = std::thread::Builder::new()
            .name("distill-trainer".into())
            .spawn(move || {
                let result = train_loop(trainer, &rx, &slot2, &stats2, &cfg);
                if let Err(e) = &result {
                    *stats2.error.lock() = Some(e.to_string());
                    metrics::counter!("distill_trainer_errors_total").increment(1);
                }
                result
            })
            .map_err(|e| DistillError::Trainer(format!("cannot start thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            slot,
            stats,
        })
    }

    /// Offer a pair without ever blocking; returns false (and counts a drop) when the queue
    /// is full or the trainer has stopped.
    pub fn submit(&self, pair: Pair) -> bool {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let ok = match &self.tx {
            Some(tx) => match tx.try_send(pair) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !ok {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("distill_pairs_dropped_total").increment(1);
        }
        ok
    }

    pub fn slot(&self) -> Arc<StudentSlot> {
        self.slot.clone()
    }
    pub fn stats(&self) -> Arc<TrainerStats> {
        self.stats.clone()
    }

    /// Close the queue, let the thread train on what is queued, checkpoint and join.
    pub fn shutdown(mut self) -> Result<TrainerSummary, DistillError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<TrainerSummary, DistillError> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| DistillError::Trainer("trainer thread panicked".into()))?,
            None => Err(DistillError::Trainer("already shut down".into())),
        }
    }
}

impl Drop for BackgroundTrainer {
    fn drop(&mut self) {
        if self.handle.is_some() {
            // Best effort: a dropped trainer still checkpoints; errors have no one to go to.
            let _ = self.finish();
        }
    }
}
