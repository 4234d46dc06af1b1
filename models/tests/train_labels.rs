//! Learning from the world's facts: the encoders' pretraining stage fits per-frame labels and
//! leaves no head behind; the Q-Former's label loss joins the step's loss and falls.

mod train_common;

use std::sync::Arc;

use sensorium_engine::scene::{FrameLabels, Labels, AUDIO_LABELS, LABELS, VISION_LABELS};
use sensorium_models::train::{FrameExample, TrainLlm};
use train_common::*;

/// Seeded 0/1 targets on the first `on` labels of `n` (the rest masked out).
fn labels(seed: u64, n: usize, on: usize) -> Labels {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bit = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) & 1
    };
    let target = (0..n)
        .map(|i| if i < on { bit() as f32 } else { 0.0 })
        .collect();
    let mask = (0..n).map(|i| f32::from(u8::from(i < on))).collect();
    Labels { target, mask }
}

fn frames() -> Vec<FrameExample> {
    (0..4u64)
        .flat_map(|c| {
            let clip = input_clip(300 + c, 6);
            (0..6).map(move |f| FrameExample {
                clip: clip.clone(),
                frame: f,
                labels: FrameLabels {
                    vision: labels(c * 10 + f as u64, VISION_LABELS, 4),
                    audio: labels(500 + c * 10 + f as u64, AUDIO_LABELS, 2),
                },
            })
        })
        .collect()
}

#[test]
fn pretraining_fits_the_frame_labels_and_keeps_only_the_encoders() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = encoder_trainer(TrainLlm::Lora, dir.path());
    t.cfg.lr = 1e-2;
    t.cfg.clip_grad_norm = 1.0;
    t.prepare_output(false).unwrap();
    let before: Vec<Vec<f32>> = t
        .encoders()
        .unwrap()
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let names_before: Vec<String> = t.named_vars().into_iter().map(|(n, _)| n).collect();
    let mut seen = 0;
    let s = t
        .pretrain_encoders(&frames(), &frames(), 150, 12, &mut |step, total, _| {
            assert_eq!(total, 150);
            seen = step;
        })
        .unwrap();
    assert_eq!((s.steps, seen), (150, 150));
    // 24 frames, 4 + 2 random bits each: ln 2 = 0.69 per label at chance, for each of the two
    // heads; the first tenth of the steps averages a little under that.
    eprintln!("label loss {} -> {}", s.first_loss, s.last_loss);
    assert!(s.first_loss > 0.6, "starts near chance: {}", s.first_loss);
    assert!(
        s.last_loss < 0.5 * s.first_loss,
        "fits the labels: {} -> {}",
        s.first_loss,
        s.last_loss
    );
    // Scored on the frames it fitted: every frame's four object flags (one item per frame);
    // count and position are masked out everywhere, so nothing of them is scored.
    let part = |name: &str| s.held_out.iter().find(|p| p.part == name).unwrap();
    eprintln!("held out {:?}", s.held_out);
    assert_eq!(part("vision.objects").scored, 24);
    assert!(
        part("vision.objects").accuracy() >= 0.75,
        "{:?}",
        part("vision.objects")
    );
    assert_eq!(
        (part("vision.count").scored, part("vision.position").scored),
        (0, 0)
    );
    assert_eq!(part("audio.sound").scored, 24);
    assert_eq!(part("audio.click").scored, 0);
    let after = t.encoders().unwrap().vars();
    let moved = after
        .iter()
        .zip(&before)
        .filter(|((_, v), b)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                != **b
        })
        .count();
    assert_eq!(moved, after.len(), "every encoder variable learnt");
    let names: Vec<String> = t.named_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, names_before, "the heads are not part of the model");
    let log = std::fs::read_to_string(dir.path().join("train_log.jsonl")).unwrap();
    assert_eq!(log.matches("\"pretrain_step\"").count(), 150);
    assert_eq!(log.matches("\"pretrain_held_out\"").count(), 5);
}

#[test]
fn pretraining_needs_trainable_encoders() {
    let dir = tempfile::tempdir().unwrap();
    let t = trainer(TrainLlm::Lora, dir.path());
    let e = t
        .pretrain_encoders(&frames(), &[], 1, 4, &mut |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.scenes.pretrain_steps") && e.contains("train_encoders = true"),
        "{e}"
    );
}

#[test]
fn the_label_loss_joins_the_step_and_falls() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(TrainLlm::Lora, dir.path())
        .with_labels(LABELS, 1.0)
        .unwrap();
    t.cfg.lr = 1e-2;
    t.cfg.batch = 4;
    t.cfg.clip_grad_norm = 1.0;
    t.prepare_output(false).unwrap();
    assert!(t.named_vars().iter().any(|(n, _)| n == "labels.weight"));
    let mut ex: Vec<_> = (0..4u64)
        .map(|i| example(&t, clip(400 + i, 6), "What is it?", "a red circle"))
        .collect();
    let plain = t.loss(&ex.iter().collect::<Vec<_>>()).unwrap();
    for (i, e) in ex.iter_mut().enumerate() {
        e.labels = Some(Arc::new(labels(i as u64, LABELS, 12)));
    }
    let with = t.loss(&ex.iter().collect::<Vec<_>>()).unwrap();
    let (p, w) = (
        plain.to_scalar::<f32>().unwrap(),
        with.to_scalar::<f32>().unwrap(),
    );
    // Mean BCE of a fresh head on 12 labels is about ln 2 per example, weight 1 over 4.
    assert!(w - p > 0.3 && w - p < 1.5, "label term {}", w - p);
    let first = t.train_step(&ex, 60).unwrap().labels_loss.unwrap();
    let mut last = first;
    for _ in 1..60 {
        last = t.train_step(&ex, 60).unwrap().labels_loss.unwrap();
    }
    assert!(last < 0.3 * first, "label loss {first} -> {last}");
}
