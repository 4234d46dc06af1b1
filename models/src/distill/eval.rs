//! The distillation evaluation behind `sensorium distill-eval`: replay a labelled set of
//! clips, report the student's per-class accuracy before and after online distillation, and
//! the ablation difficulty-aware vs uniform selection at equal update budgets.
//!
//! Labels are used only to score (and, when no teacher file is given, to fit the teacher on
//! a few labelled frames of its modality); the student learns from the teacher alone. Both
//! runs see the same stream of training clips in the same order and stop after exactly
//! `budget` updates; results are averaged over `seeds`.

use std::fmt;
use std::path::PathBuf;

use super::config::{Direction, DistillConfig, Selection};
use super::error::DistillError;
use super::features::{audio_stats, mean_pool, Extractors};
use super::labelled::{self, Clip, LabelledSpec, TestMedia};
use super::replay::Pair;
use super::student::{Rng, StudentSnapshot};
use super::teacher::{argmax, Teacher};
use super::trainer::DistillTrainer;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// The `[distill]` settings; `classes` must equal the scene class names. Its
    /// `difficulty.selection` is the difficulty-aware arm (`uniform` there means `weighted`).
    pub distill: DistillConfig,
    /// The labelled clips (GStreamer test sources or the scene world).
    pub clips: LabelledSpec,
    /// The last this-many clips of every class are held out for scoring.
    pub test_clips_per_class: usize,
    /// Labelled frames per class used to fit a linear teacher, when `teacher` is `None`.
    pub teacher_frames_per_class: usize,
    /// A teacher file (see [`Teacher::load`]) to use instead of fitting one.
    pub teacher: Option<PathBuf>,
    /// Updates with uniform selection before the arms split, standing in for a pretrained
    /// student (0: both arms start from the untrained student).
    pub warmup: u64,
    /// Updates per arm after the warm-up (equal for both arms).
    pub budget: u64,
    /// One run per seed (student init and batch sampling); results are averaged.
    pub seeds: Vec<u64>,
}

/// Accuracy per class and summaries.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracy {
    pub per_class: Vec<f32>,
    pub overall: f32,
    /// Mean over the hard classes.
    pub hard: f32,
}

/// The outcome of [`run`].
#[derive(Clone, Debug)]
pub struct EvalReport {
    /// Names of the (audio, visual) feature extractors, and their widths.
    pub features: (String, String),
    pub feature_dims: (usize, usize),
    pub classes: Vec<String>,
    /// Hard by construction (low-SNR sound).
    pub hard_classes: Vec<String>,
    pub direction: Direction,
    pub train_clips: usize,
    pub test_clips: usize,
    pub budget: u64,
    pub seeds: usize,
    /// The teacher on the held-out clips (its own modality).
    pub teacher: Accuracy,
    /// The untrained student.
    pub before: Accuracy,
    pub warmup: u64,
    /// The student after the uniform warm-up, where both arms start (= `before` without one).
    pub warm: Accuracy,
    /// After `budget` updates with difficulty-aware selection.
    pub after_difficulty: Accuracy,
    pub difficulty_selection: Selection,
    /// After `budget` updates with uniform selection.
    pub after_uniform: Accuracy,
    /// Predicted difficulty per class at the end of the difficulty-aware run (first seed).
    pub predicted_difficulty: Vec<f32>,
}

/// Pooled features of one clip.
struct ClipFeatures {
    class: usize,
    audio: Vec<f32>,
    visual: Vec<f32>,
    snr_db: f32,
}

fn clip_features(clip: &Clip, ex: &Extractors, spf: usize) -> Result<ClipFeatures, DistillError> {
    let mut audio = Vec::new();
    let mut visual = Vec::new();
    let mut snr = 0.0;
    for (i, f) in clip.frames.iter().enumerate() {
        visual.push(ex.visual.extract(f, clip.width, clip.height)?);
        let a = clip.audio.get(i * spf..(i + 1) * spf).ok_or_else(|| {
            DistillError::input("clip audio", format!("clip {} too short", clip.index))
        })?;
        audio.push(ex.audio.extract(a)?);
        // Mean per-frame SNR, as the stage computes it.
        snr += audio_stats(a).snr_db / clip.frames.len() as f32;
    }
    let empty = || DistillError::input("clip", format!("clip {} has no frames", clip.index));
    Ok(ClipFeatures {
        class: clip.class,
        audio: mean_pool(&audio).ok_or_else(empty)?,
        visual: mean_pool(&visual).ok_or_else(empty)?,
        snr_db: snr,
    })
}

fn accuracy(preds: impl Iterator<Item = (usize, usize)>, k: usize, hard: &[usize]) -> Accuracy {
    let mut hit = vec![0f32; k];
    let mut n = vec![0f32; k];
    for (truth, pred) in preds {
        n[truth] += 1.0;
        if truth == pred {
            hit[truth] += 1.0;
        }
    }
    let per_class: Vec<f32> = hit.iter().zip(&n).map(|(h, n)| h / n.max(1.0)).collect();
    let overall = hit.iter().sum::<f32>() / n.iter().sum::<f32>().max(1.0);
    let hard_acc = if hard.is_empty() {
        f32::NAN
    } else {
        hard.iter().map(|c| per_class[*c]).sum::<f32>() / hard.len() as f32
    };
    Accuracy {
        per_class,
        overall,
        hard: hard_acc,
    }
}

fn mean_accuracy(runs: &[Accuracy]) -> Accuracy {
    let n = runs.len().max(1) as f32;
    let k = runs.first().map(|a| a.per_class.len()).unwrap_or(0);
    Accuracy {
        per_class: (0..k)
            .map(|c| runs.iter().map(|a| a.per_class[c]).sum::<f32>() / n)
            .collect(),
        overall: runs.iter().map(|a| a.overall).sum::<f32>() / n,
        hard: runs.iter().map(|a| a.hard).sum::<f32>() / n,
    }
}

/// Student accuracy on held-out features.
pub fn student_accuracy(
    student: &StudentSnapshot,
    test: &[(usize, &[f32])],
    k: usize,
    hard: &[usize],
) -> Result<Accuracy, DistillError> {
    let preds = test
        .iter()
        .map(|(c, x)| Ok((*c, argmax(&student.logits(x)?).0)))
        .collect::<Result<Vec<_>, DistillError>>()?;
    Ok(accuracy(preds.into_iter(), k, hard))
}

/// Train one student from the stream `pairs` (cycled in order): `warmup` updates with
/// uniform selection, then `cfg`'s selection until the step reaches `warmup + budget`.
pub fn train_for_budget(
    cfg: &DistillConfig,
    in_dim: usize,
    pairs: &[Pair],
    warmup: u64,
    budget: u64,
) -> Result<DistillTrainer, DistillError> {
    let mut trainer = DistillTrainer::new(cfg, in_dim)?;
    trainer.set_selection(Selection::Uniform);
    let total = warmup + budget;
    if pairs.is_empty() {
        return Err(DistillError::input("eval", "no training clips"));
    }
    // A stream whose every pair is gated would never reach the budget: bound the passes.
    let max_offers = (total as usize + cfg.batch_size) * cfg.update_interval * 50 + pairs.len();
    let mut offered = 0;
    while trainer.step() < total {
        if trainer.step() == warmup {
            trainer.set_selection(cfg.difficulty.selection);
        }
        if offered >= max_offers {
            return Err(DistillError::input(
                "eval",
                format!(
                    "only {} of {total} updates after {offered} pairs ({} gated by confidence_gate)",
                    trainer.step(),
                    trainer.counters().gated
                ),
            ));
        }
        trainer.observe(pairs[offered % pairs.len()].clone())?;
        offered += 1;
    }
    Ok(trainer)
}

/// Run the evaluation described by `cfg` (`media` renders the test-sources clip world).
pub fn run(cfg: &EvalConfig, media: Option<&dyn TestMedia>) -> Result<EvalReport, DistillError> {
    run_with(cfg, &Extractors::stand_in(), media)
}

/// [`run`] with the given feature extractors (e.g. the real Whisper and CLIP encoders
/// through [`super::encoders`]) instead of the stand-in ones.
pub fn run_with(
    cfg: &EvalConfig,
    ex: &Extractors,
    media: Option<&dyn TestMedia>,
) -> Result<EvalReport, DistillError> {
    cfg.distill.validate()?;
    let names: Vec<String> = cfg.clips.classes.iter().map(|c| c.name.clone()).collect();
    if names != cfg.distill.classes {
        return Err(DistillError::config(
            "classes",
            format!(
                "{:?} differ from the scene classes {names:?}",
                cfg.distill.classes
            ),
        ));
    }
    if cfg.test_clips_per_class == 0 || cfg.test_clips_per_class >= cfg.clips.clips_per_class {
        return Err(DistillError::input(
            "eval",
            format!(
                "test_clips_per_class {} must be in 1..{}",
                cfg.test_clips_per_class, cfg.clips.clips_per_class
            ),
        ));
    }
    if cfg.seeds.is_empty() {
        return Err(DistillError::input("eval", "no seeds"));
    }
    let k = names.len();
    let hard: Vec<usize> = (0..k)
        .filter(|c| cfg.clips.classes[*c].snr_db.is_some())
        .collect();
    let clips = labelled::generate(&cfg.clips, media)?;
    let spf = cfg.clips.samples_per_frame();
    let split = cfg.clips.clips_per_class - cfg.test_clips_per_class;
    let (teacher_dim, student_dim) = match cfg.distill.direction {
        Direction::VisualToAudio => (ex.visual.dim(), ex.audio.dim()),
        Direction::AudioToVisual => (ex.audio.dim(), ex.visual.dim()),
    };
    let pick = |f: &ClipFeatures, teacher_side: bool| -> Vec<f32> {
        match (cfg.distill.direction, teacher_side) {
            (Direction::VisualToAudio, true) | (Direction::AudioToVisual, false) => {
                f.visual.clone()
            }
            _ => f.audio.clone(),
        }
    };
    let feats = clips
        .iter()
        .map(|c| clip_features(c, ex, spf))
        .collect::<Result<Vec<_>, _>>()?;
    let (train, test): (Vec<_>, Vec<_>) =
        feats.iter().zip(&clips).partition(|(_, c)| c.index < split);

    // The teacher: loaded, or fitted on a few labelled single frames of its modality.
    let teacher = match &cfg.teacher {
        Some(path) => Teacher::load(path, k, teacher_dim)?,
        None => {
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for (_, clip) in train
                .iter()
                .filter(|(_, c)| c.index < cfg.teacher_frames_per_class)
            {
                let short = || DistillError::input("clip", format!("clip {} is empty", clip.index));
                let x = match cfg.distill.direction {
                    Direction::VisualToAudio => {
                        let first = clip.frames.first().ok_or_else(short)?;
                        ex.visual.extract(first, clip.width, clip.height)?
                    }
                    Direction::AudioToVisual => {
                        ex.audio.extract(clip.audio.get(..spf).ok_or_else(short)?)?
                    }
                };
                xs.push(x);
                ys.push(clip.class);
            }
            Teacher::fit_linear(&xs, &ys, k, 300, 1)?
        }
    };
    let teacher_preds = test
        .iter()
        .map(|(f, _)| Ok((f.class, argmax(&teacher.logits(&pick(f, true))?).0)))
        .collect::<Result<Vec<_>, DistillError>>()?;
    let teacher_acc = accuracy(teacher_preds.into_iter(), k, &hard);

    let test_x: Vec<(usize, Vec<f32>)> = test
        .iter()
        .map(|(f, _)| (f.class, pick(f, false)))
        .collect();
    let test_ref: Vec<(usize, &[f32])> = test_x.iter().map(|(c, x)| (*c, x.as_slice())).collect();

    let aware = match cfg.distill.difficulty.selection {
        Selection::Uniform => Selection::Weighted,
        s => s,
    };
    let (mut before, mut after_d, mut after_u) = (Vec::new(), Vec::new(), Vec::new());
    let mut warm = Vec::new();
    let mut predicted = Vec::new();
    let bar = crate::progress::bar(cfg.seeds.len() as u64, "seed");
    for (si, seed) in cfg.seeds.iter().enumerate() {
        bar.set_position(si as u64);
        // The same shuffled stream for both arms of this seed.
        let mut order: Vec<usize> = (0..train.len()).collect();
        let mut rng = Rng::new(*seed ^ 0xC1_1B5);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let pairs = order
            .iter()
            .map(|i| {
                let f = train[*i].0;
                Ok(Pair {
                    student_features: pick(f, false),
                    teacher_logits: teacher.logits(&pick(f, true))?,
                    snr_db: f.snr_db,
                })
            })
            .collect::<Result<Vec<_>, DistillError>>()?;
        let mut dcfg = cfg.distill.clone();
        dcfg.seed = *seed;
        dcfg.checkpoint = None;
        before.push(student_accuracy(
            &DistillTrainer::new(&dcfg, student_dim)?.snapshot()?,
            &test_ref,
            k,
            &hard,
        )?);
        let warm_trainer = train_for_budget(&dcfg, student_dim, &pairs, cfg.warmup, 0)?;
        warm.push(student_accuracy(
            &warm_trainer.snapshot()?,
            &test_ref,
            k,
            &hard,
        )?);
        for (sel, out) in [(aware, &mut after_d), (Selection::Uniform, &mut after_u)] {
            dcfg.difficulty.selection = sel;
            let trainer = train_for_budget(&dcfg, student_dim, &pairs, cfg.warmup, cfg.budget)?;
            out.push(student_accuracy(&trainer.snapshot()?, &test_ref, k, &hard)?);
            if si == 0 && sel == aware {
                predicted = trainer.difficulty().difficulties();
            }
        }
    }
    Ok(EvalReport {
        features: (ex.audio.name().to_owned(), ex.visual.name().to_owned()),
        feature_dims: (ex.audio.dim(), ex.visual.dim()),
        hard_classes: hard.iter().map(|c| names[*c].clone()).collect(),
        classes: names,
        direction: cfg.distill.direction,
        train_clips: train.len(),
        test_clips: test.len(),
        budget: cfg.budget,
        seeds: cfg.seeds.len(),
        teacher: teacher_acc,
        before: mean_accuracy(&before),
        warmup: cfg.warmup,
        warm: mean_accuracy(&warm),
        after_difficulty: mean_accuracy(&after_d),
        difficulty_selection: aware,
        after_uniform: mean_accuracy(&after_u),
        predicted_difficulty: predicted,
    })
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "distill-eval: {:?}, {} train / {} held-out clips, {} uniform warm-up updates, then {} updates per arm, {} seed(s)",
            self.direction, self.train_clips, self.test_clips, self.warmup, self.budget, self.seeds
        )?;
        writeln!(
            f,
            "features: audio {} ({} floats), visual {} ({} floats)",
            self.features.0, self.feature_dims.0, self.features.1, self.feature_dims.1
        )?;
        writeln!(
            f,
            "{:<12} {:>5} {:>8} {:>8} {:>8} {:>10} {:>9} {:>10}",
            "class", "hard", "teacher", "before", "warm", "after-diff", "after-uni", "pred-diff"
        )?;
        for (c, name) in self.classes.iter().enumerate() {
            writeln!(
                f,
                "{:<12} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>10.3} {:>9.3} {:>10.3}",
                name,
                if self.hard_classes.contains(name) {
                    "yes"
                } else {
                    ""
                },
                self.teacher.per_class[c],
                self.before.per_class[c],
                self.warm.per_class[c],
                self.after_difficulty.per_class[c],
                self.after_uniform.per_class[c],
                self.predicted_difficulty
                    .get(c)
                    .copied()
                    .unwrap_or(f32::NAN),
            )?;
        }
        writeln!(
            f,
            "overall      {:>5} {:>8.3} {:>8.3} {:>8.3} {:>10.3} {:>9.3}",
            "",
            self.teacher.overall,
            self.before.overall,
            self.warm.overall,
            self.after_difficulty.overall,
            self.after_uniform.overall
        )?;
        write!(
            f,
            "hard classes: {:?}-selection {:.3} vs uniform {:.3} (before {:.3}, warm {:.3})",
            self.difficulty_selection,
            self.after_difficulty.hard,
            self.after_uniform.hard,
            self.before.hard,
            self.warm.hard
        )
    }
}
