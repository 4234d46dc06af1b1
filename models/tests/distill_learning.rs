//! Online distillation learns: on synthetic GStreamer scenes (8 classes, 3 with sound buried
//! in noise), a visual teacher fitted on 2 labelled frames per class teaches an audio student
//! from chance to >= 90% held-out accuracy within a bounded number of updates; the reverse
//! direction works too; the eval entry point reports before/after and the ablation.

mod distill_common;

use distill_common::*;
use sensorium_models::distill::eval::{self, student_accuracy, EvalConfig};
use sensorium_models::distill::teacher::argmax;
use sensorium_models::distill::{
    AudioFeatureExtractor, Direction, DistillTrainer, GridVisualFeatures, Pair, Selection,
    SpectralAudioFeatures, Teacher, VisualFeatureExtractor,
};

const HARD_SNR_DB: f64 = -14.0;
/// Updates allowed to reach 90% held-out accuracy.
const UPDATE_BOUND: u64 = 400;

#[test]
fn visual_teacher_teaches_audio_student_to_90_percent_within_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 24, HARD_SNR_DB);
    let k = spec.classes.len();
    assert_eq!(k, 8);
    assert_eq!(clips.len(), 8 * 24);
    let spf = spec.samples_per_frame();

    // The teacher: fitted on 2 labelled frames per class, saved and loaded as safetensors.
    let fitted = fit_visual_teacher(&clips, k, 2);
    let path = dir.path().join("teacher.safetensors");
    fitted.save(&path).unwrap();
    let vis = GridVisualFeatures::default();
    let teacher = Teacher::load(&path, k, vis.dim()).unwrap();
    assert!(!teacher.is_zero_shot());

    let (train, test): (Vec<_>, Vec<_>) = clips.iter().partition(|c| c.index < 16);
    let vfeat = |c: &sensorium_models::distill::labelled::Clip| {
        let per: Vec<Vec<f32>> = c
            .frames
            .iter()
            .map(|f| vis.extract(f, c.width, c.height).unwrap())
            .collect();
        (0..per[0].len())
            .map(|i| per.iter().map(|v| v[i]).sum::<f32>() / per.len() as f32)
            .collect::<Vec<f32>>()
    };
    // Loaded teacher == fitted teacher, and it recognises every held-out scene.
    for c in &test {
        let x = vfeat(c);
        assert_eq!(teacher.logits(&x).unwrap(), fitted.logits(&x).unwrap());
        assert_eq!(
            argmax(&teacher.logits(&x).unwrap()).0,
            c.class,
            "teacher on clip {c:?}",
            c = (c.class, c.index)
        );
    }

    let pairs: Vec<Pair> = train
        .iter()
        .map(|c| Pair {
            student_features: clip_audio_features(c, spf),
            teacher_logits: teacher.logits(&vfeat(c)).unwrap(),
            snr_db: sensorium_models::distill::audio_stats(&c.audio).snr_db,
        })
        .collect();
    let test_x: Vec<(usize, Vec<f32>)> = test
        .iter()
        .map(|c| (c.class, clip_audio_features(c, spf)))
        .collect();
    let test_ref: Vec<(usize, &[f32])> = test_x.iter().map(|(c, x)| (*c, x.as_slice())).collect();
    let hard = [5, 6, 7];

    let cfg = config_for(&spec);
    let audio_dim = SpectralAudioFeatures::default().dim();
    let mut trainer = DistillTrainer::new(&cfg, audio_dim).unwrap();
    let before = student_accuracy(&trainer.snapshot().unwrap(), &test_ref, k, &hard).unwrap();
    // Chance is 1/8; a near-zero random head predicts one or two classes everywhere.
    assert!(
        before.overall <= 0.3,
        "untrained student should be near chance (1/8), got {}",
        before.overall
    );

    let mut reached = None;
    let mut i = 0;
    while trainer.step() < UPDATE_BOUND {
        let updated = trainer.observe(pairs[i % pairs.len()].clone()).unwrap();
        i += 1;
        if updated.is_some() && trainer.step().is_multiple_of(10) {
            let acc = student_accuracy(&trainer.snapshot().unwrap(), &test_ref, k, &hard).unwrap();
            if acc.overall >= 0.9 {
                reached = Some((trainer.step(), acc));
                break;
            }
        }
    }
    let (steps, acc) = reached.unwrap_or_else(|| {
        panic!("student did not reach 90% held-out accuracy within {UPDATE_BOUND} updates")
    });
    println!(
        "reached {:.3} held-out accuracy (hard classes {:.3}) after {steps} updates, from {:.3}",
        acc.overall, acc.hard, before.overall
    );
    assert!(steps <= UPDATE_BOUND);
    assert_eq!(
        trainer.counters().gated,
        0,
        "a confident teacher is never gated"
    );
}

#[test]
fn audio_teacher_teaches_visual_student() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 12, 10.0);
    let k = spec.classes.len();
    let spf = spec.samples_per_frame();
    let aud = SpectralAudioFeatures::default();
    let vis = GridVisualFeatures::default();
    // Audio teacher fitted on 3 labelled clips per class (clean sounds).
    let (xs, ys): (Vec<_>, Vec<_>) = clips
        .iter()
        .filter(|c| c.index < 3)
        .map(|c| (clip_audio_features(c, spf), c.class))
        .unzip();
    let teacher = Teacher::fit_linear(&xs, &ys, k, 300, 3).unwrap();
    let mut cfg = config_for(&spec);
    cfg.direction = Direction::AudioToVisual;
    let mut trainer = DistillTrainer::new(&cfg, vis.dim()).unwrap();
    let (train, test): (Vec<_>, Vec<_>) = clips.iter().partition(|c| c.index < 8);
    let pairs: Vec<Pair> = train
        .iter()
        .map(|c| Pair {
            student_features: vis.extract(&c.frames[0], c.width, c.height).unwrap(),
            teacher_logits: teacher.logits(&clip_audio_features(c, spf)).unwrap(),
            snr_db: 30.0,
        })
        .collect();
    for i in 0.. {
        trainer.observe(pairs[i % pairs.len()].clone()).unwrap();
        if trainer.step() == 200 {
            break;
        }
    }
    let student = trainer.snapshot().unwrap();
    let correct = test
        .iter()
        .filter(|c| {
            let x = vis.extract(&c.frames[1], c.width, c.height).unwrap();
            argmax(&student.logits(&x).unwrap()).0 == c.class
        })
        .count();
    assert!(
        correct * 10 >= test.len() * 9,
        "visual student: {correct}/{} after 200 updates",
        test.len()
    );
    let _ = aud.name();
}

#[test]
fn eval_reports_before_after_and_ablation_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        sensorium_models::distill::labelled::LabelledSpec::new(dir.path().join("media"), 12, -20.0);
    let cfg = EvalConfig {
        distill: config_for(&spec),
        clips: spec,
        test_clips_per_class: 4,
        teacher_frames_per_class: 2,
        teacher: None,
        warmup: 20,
        budget: 40,
        seeds: vec![1, 2],
    };
    let a = eval::run(&cfg, Some(&sensorium_pipelines::render::GstTestMedia)).unwrap();
    println!("{a}");
    assert_eq!(a.classes.len(), 8);
    assert_eq!(a.hard_classes, ["circular", "pinwheel", "zone-plate"]);
    assert_eq!((a.train_clips, a.test_clips), (64, 32));
    assert_eq!(a.teacher.overall, 1.0);
    assert!(a.before.overall <= 0.3, "before: {}", a.before.overall);
    assert!(a.after_uniform.overall > a.before.overall + 0.3);
    assert!(a.after_difficulty.overall > a.before.overall + 0.3);
    assert_eq!(a.difficulty_selection, Selection::Weighted);
    assert_eq!(a.predicted_difficulty.len(), 8);
    // Same inputs, same numbers: the eval is reproducible.
    let b = eval::run(&cfg, Some(&sensorium_pipelines::render::GstTestMedia)).unwrap();
    assert_eq!(a.after_difficulty, b.after_difficulty);
    assert_eq!(a.after_uniform, b.after_uniform);
    let text = a.to_string();
    assert!(text.contains("hard classes: Weighted-selection"), "{text}");
}

/// The scene world's labelled clips (`distill-eval --world scenes`): three shape classes,
/// each clip one sounding object of its class drawn and heard by the scene renderer (no
/// GStreamer), seeded; the circle's high tone is buried in noise (the hard class).
#[test]
fn scene_world_clips_are_sounding_shapes() {
    use sensorium_models::distill::labelled::{self, ClipWorld, LabelledSpec};
    let spec = LabelledSpec::scenes(5, -20.0);
    assert_eq!(spec.world, ClipWorld::Scenes);
    let names: Vec<&str> = spec.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["circle", "square", "triangle"]);
    let clips = labelled::generate(&spec, None).unwrap();
    assert_eq!(clips.len(), 15);
    let spf = spec.samples_per_frame();
    let rms = |a: &[f32]| (a.iter().map(|x| x * x).sum::<f32>() / a.len() as f32).sqrt();
    let peak = |a: &[f32]| a.iter().fold(0f32, |m, x| m.max(x.abs()));
    for c in &clips {
        assert_eq!(c.frames.len(), 4);
        assert!(c.frames.iter().all(|f| f.len() == 64 * 64 * 3));
        assert_eq!(c.audio.len(), 4 * spf);
        let lit = c.frames[0]
            .chunks(3)
            .filter(|p| p.iter().any(|&v| v > 100))
            .count();
        // One object of 1/8-1/4 of the frame height: between a few and a few hundred pixels.
        assert!(
            (10..1200).contains(&lit),
            "class {} clip {}: {lit} lit pixels",
            c.class,
            c.index
        );
        match c.class {
            // A tone under 20 dB more noise: loud everywhere.
            0 => assert!(
                rms(&c.audio) > 0.5,
                "circle {}: rms {}",
                c.index,
                rms(&c.audio)
            ),
            // Clicks: short bursts over silence, a high peak over a low rms.
            1 => assert!(peak(&c.audio) > 8.0 * rms(&c.audio).max(1e-6) || peak(&c.audio) < 1e-2),
            // Uniform noise: peak close to sqrt(3) rms.
            _ => assert!(peak(&c.audio) < 2.0 * rms(&c.audio), "triangle {}", c.index),
        }
    }
    let again = labelled::generate(&spec, None).unwrap();
    assert!(clips
        .iter()
        .zip(&again)
        .all(|(a, b)| a.frames == b.frames && a.audio == b.audio));
}
