//! `DistillStage` end to end: it resumes its student from the configured checkpoint (or the
//! previous one when the latest is corrupt), answers windows that lack a modality, and keeps
//! answering when training fails.

mod distill_common;

use std::sync::Arc;

use distill_common::*;
use sensorium_engine::model::{FrameEncoder, WindowModel};
use sensorium_models::distill::{
    audio_stats, prev_path, DistillError, DistillFeatures, DistillStage, Extractors,
};
use sensorium_models::stage::AvFrameEncoder;
use sensorium_models::tokens::SlotMode;

#[test]
fn stage_resumes_from_checkpoint_and_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 4, 0.0);
    let teacher = fit_visual_teacher(&clips, spec.classes.len(), 2);
    let path = dir.path().join("ckpt").join("student.safetensors");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut cfg = config_for(&spec);
    cfg.batch_size = 8;
    cfg.checkpoint = Some(path.clone());
    cfg.checkpoint_every = 5;
    let stream: Arc<str> = Arc::from("s");
    let spf = spec.samples_per_frame();

    let mut stage =
        DistillStage::new(cfg.clone(), teacher.clone(), Extractors::stand_in()).unwrap();
    assert!(stage.resume_info().loaded.is_none());
    for (i, c) in clips.iter().enumerate() {
        let w = clip_window(c, &stream, i as u64, spf);
        stage.process(&[&w]).unwrap();
    }
    let summary = stage.shutdown().unwrap();
    assert!(summary.step > 0);
    assert_eq!(summary.checkpoint.as_deref(), Some(path.as_path()));

    let stage = DistillStage::new(cfg.clone(), teacher.clone(), Extractors::stand_in()).unwrap();
    assert_eq!(stage.resume_info().loaded.as_deref(), Some(path.as_path()));
    assert_eq!(stage.student_version(), summary.step);
    assert_eq!(stage.shutdown().unwrap().step, summary.step);
    assert!(prev_path(&path).exists());

    // Corrupt the latest checkpoint: refused by name, the previous one is used.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let stage = DistillStage::new(cfg, teacher, Extractors::stand_in()).unwrap();
    let info = stage.resume_info();
    assert_eq!(info.loaded.as_deref(), Some(prev_path(&path).as_path()));
    assert_eq!(info.refused.len(), 1);
    let msg = info.refused[0].to_string();
    assert!(
        msg.starts_with(&format!("corrupt checkpoint {}: truncated", path.display())),
        "{msg}"
    );
    assert_eq!(stage.student_version(), summary.step);
}

#[test]
fn window_without_audio_gets_only_a_teacher_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 2, 0.0);
    let teacher = fit_visual_teacher(&clips, spec.classes.len(), 2);
    let mut stage = DistillStage::new(config_for(&spec), teacher, Extractors::stand_in()).unwrap();
    let stream: Arc<str> = Arc::from("silent");
    let mut w = clip_window(&clips[0], &stream, 0, spec.samples_per_frame());
    for f in &mut w.frames {
        f.has_audio = false;
        f.audio = Arc::from(Vec::<f32>::new());
    }
    let p = stage.predict(&w).unwrap();
    assert!(p.student.is_none());
    assert_eq!(p.teacher.as_ref().unwrap().class, "ball");
    assert!(!p.submitted, "no pair without the student's modality");
    let out = stage.process(&[&w]).unwrap();
    assert!(out[0]["student"].is_null());
    assert_eq!(out[0]["teacher"]["class"], "ball");
    let stats = stage.stats().unwrap();
    assert_eq!(
        stats.submitted.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn training_failure_does_not_stop_inference() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 4, 0.0);
    let teacher = fit_visual_teacher(&clips, spec.classes.len(), 2);
    let mut cfg = config_for(&spec);
    cfg.batch_size = 4;
    // The checkpoint directory does not exist: the first checkpoint write fails.
    let bad = dir.path().join("missing-dir").join("s.safetensors");
    cfg.checkpoint = Some(bad.clone());
    cfg.checkpoint_every = 1;
    let mut stage = DistillStage::new(cfg, teacher, Extractors::stand_in()).unwrap();
    let stream: Arc<str> = Arc::from("s");
    let stats = stage.stats().unwrap();
    let mut answered = 0;
    for round in 0..4 {
        for (i, c) in clips.iter().enumerate() {
            let w = clip_window(
                c,
                &stream,
                (round * clips.len() + i) as u64,
                spec.samples_per_frame(),
            );
            let out = stage.process(&[&w]).unwrap();
            assert!(out[0]["student"]["class"].is_string());
            answered += 1;
        }
    }
    assert_eq!(answered, 4 * clips.len());
    let err = stage.shutdown().unwrap_err();
    assert!(matches!(err, DistillError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("s.safetensors.tmp"), "{err}");
    let recorded = stats.error.lock().clone().unwrap();
    assert_eq!(recorded, err.to_string());
}

/// Frames 0..8 of one stream, from 4 clips of 2 frames.
fn stream_frames(
    clips: &[sensorium_models::distill::labelled::Clip],
    stream: &Arc<str>,
    spf: usize,
) -> Vec<sensorium_engine::frame::SyncedFrame> {
    clips[..4]
        .iter()
        .enumerate()
        .flat_map(|(i, c)| clip_window(c, stream, i as u64, spf).frames)
        .collect()
}

fn window_of(
    frames: &[sensorium_engine::frame::SyncedFrame],
    index: u64,
) -> sensorium_engine::frame::Window {
    sensorium_engine::frame::Window {
        stream: frames[0].stream.clone(),
        index,
        t_start: frames[0].t,
        t_end: frames[frames.len() - 1].t + frames[frames.len() - 1].duration,
        valid: vec![true; frames.len()],
        frames: frames.to_vec(),
    }
}

#[test]
fn overlapping_windows_encode_each_frame_once() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 2, 0.0);
    let teacher = fit_visual_teacher(&clips, spec.classes.len(), 2);
    let mut cfg = config_for(&spec);
    cfg.update_interval = 1_000_000; // keep the student fixed: outputs comparable
    let stage = DistillStage::new(cfg, teacher, Extractors::stand_in()).unwrap();
    let stream: Arc<str> = Arc::from("live");
    let frames = stream_frames(&clips, &stream, spec.samples_per_frame());
    assert_eq!(frames.len(), 8);
    // Window 4, stride 2: frames [0..4), [2..6), [4..8).
    let windows: Vec<_> = (0..3)
        .map(|i| window_of(&frames[2 * i..2 * i + 4], i as u64))
        .collect();
    // Used on its own (frames without the frame stage's product) the stage computes every
    // frame slot's features: it keeps no per-frame cache of its own.
    let first: Vec<_> = windows.iter().map(|w| stage.predict(w).unwrap()).collect();
    assert_eq!(
        stage.frames_encoded(),
        12,
        "12 frame slots, computed by the stage"
    );

    // In a run the frame stage computes each frame's features once (8 distinct frames) and
    // every window holding the frame shares them: the stage computes none, same answers.
    let mut encoder =
        AvFrameEncoder::new(None, None, SlotMode::All).with_distill(Extractors::stand_in());
    let refs: Vec<_> = frames.iter().collect();
    let products = encoder.encode(&refs).unwrap();
    assert_eq!(products.len(), 8, "one product per distinct frame");
    let ex = Extractors::stand_in();
    let upstream: Vec<_> = frames
        .iter()
        .zip(products)
        .map(|(f, p)| {
            let v = f.video.as_ref().unwrap();
            let want = DistillFeatures {
                audio: Some(ex.audio.extract(&f.audio).unwrap()),
                visual: Some(ex.visual.extract(&v.rgb, v.width, v.height).unwrap()),
                snr_db: audio_stats(&f.audio).snr_db,
            };
            assert_eq!(
                p.distill(),
                Some(&want),
                "the frame stage's features of frame {}",
                f.index
            );
            let mut f = f.clone();
            f.features = Some(Arc::new(p));
            f
        })
        .collect();
    for (i, want) in first.iter().enumerate() {
        let got = stage
            .predict(&window_of(&upstream[2 * i..2 * i + 4], 10 + i as u64))
            .unwrap();
        assert_eq!(got.student, want.student);
        assert_eq!(got.teacher, want.teacher);
    }
    assert_eq!(
        stage.frames_encoded(),
        12,
        "nothing more computed by the stage"
    );
}
