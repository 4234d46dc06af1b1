//! Unit-level checks of the distillation pieces against hand-computed values: config parsing
//! and validation, the KL * T^2 loss, the difficulty formula, teachers (linear, zero-shot,
//! bad files), stand-in extractors and audio statistics, the replay cap and the gate.

use std::path::Path;

use candle_core::{Device, Tensor};
use sensorium_models::distill::student::Rng;
use sensorium_models::distill::{
    audio_stats, distillation_loss, AudioFeatureExtractor, DifficultyConfig, DifficultyModel,
    Direction, DistillConfig, DistillError, DistillTrainer, GridVisualFeatures, Pair, Selection,
    SpectralAudioFeatures, Teacher, VisualFeatureExtractor,
};

#[test]
fn config_reads_the_distill_section_and_names_bad_fields() {
    let text = r#"
        [engine]
        fps = 2.0
        [distill]
        classes = ["dog", "car", "rain"]
        direction = "audio_to_visual"
        temperature = 3.0
        checkpoint = "/tmp/s.safetensors"
        [distill.difficulty]
        selection = "hard"
        threshold = 0.6
    "#;
    let c = DistillConfig::from_toml_str(text, "test.toml").unwrap();
    assert_eq!(c.classes, ["dog", "car", "rain"]);
    assert_eq!(c.direction, Direction::AudioToVisual);
    assert_eq!(c.temperature, 3.0);
    assert_eq!(c.difficulty.selection, Selection::Hard);
    assert_eq!(c.difficulty.threshold, 0.6);
    assert_eq!(c.batch_size, 32, "unset fields keep defaults");

    let bad = |body: &str| {
        DistillConfig::from_toml_str(&format!("[distill]\n{body}"), "x.toml")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad("classes = [\"a\", \"b\"]\ntemperature = -1.0"),
        "distill config: field `temperature`: must be > 0, got -1"
    );
    assert_eq!(
        bad("classes = [\"a\", \"a\"]"),
        "distill config: field `classes`: duplicate class \"a\""
    );
    assert_eq!(
        bad("classes = [\"a\", \"b\"]\nbatch_size = 64\nreplay_size = 8"),
        "distill config: field `replay_size`: must be >= batch_size (64), got 8"
    );
    assert!(bad("classes = [\"a\", \"b\"]\ntemprature = 1.0").contains("temprature"));
    assert!(
        bad("classes = [\"a\", \"b\"]\n[distill.difficulty]\nselection = \"easy\"")
            .contains("easy")
    );
    let e = DistillConfig::from_toml_str("[engine]\nfps = 2.0", "y.toml").unwrap_err();
    assert_eq!(e.to_string(), "distill config y.toml: no [distill] section");
}

#[test]
fn loss_is_temperature_scaled_kl_teacher_to_student() {
    let dev = Device::Cpu;
    let s = Tensor::new(&[[1.0f32, 0.0, -1.0], [0.5, 0.5, 0.0]], &dev).unwrap();
    let t = Tensor::new(&[[3.0f32, 0.0, 0.0], [0.0, 2.0, 0.0]], &dev).unwrap();
    let temp = 2.0;
    let got = distillation_loss(&s, &t, temp)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    // Hand computation in f64.
    let sm = |v: [f64; 3]| {
        let e: Vec<f64> = v.iter().map(|x| (x / temp).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect::<Vec<_>>()
    };
    let rows = [
        ([1.0, 0.0, -1.0], [3.0, 0.0, 0.0]),
        ([0.5, 0.5, 0.0], [0.0, 2.0, 0.0]),
    ];
    let want: f64 = rows
        .iter()
        .map(|(s, t)| {
            let (q, p) = (sm(*s), sm(*t));
            (0..3).map(|i| p[i] * (p[i] / q[i]).ln()).sum::<f64>()
        })
        .sum::<f64>()
        / 2.0
        * temp
        * temp;
    assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    let zero = distillation_loss(&t, &t, temp)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(zero.abs() < 1e-6);
}

#[test]
fn difficulty_follows_the_documented_logistic() {
    let cfg = DifficultyConfig::default();
    let mut m = DifficultyModel::new(cfg.clone(), 3);
    // Unseen: d = h = 1, q = 0.5, s = snr_ref -> sigmoid(bias + w_d + w_h).
    let z0: f64 = cfg.bias + cfg.w_disagreement + cfg.w_entropy;
    assert!((m.difficulty(2) as f64 - 1.0 / (1.0 + (-z0).exp())).abs() < 1e-6);
    // First observation replaces the prior (1/n weighting): student agrees with p = [0.8, 0.1, 0.1].
    let p = [0.8f32, 0.1, 0.1];
    m.observe(0, 0.9, &p, 0.0);
    let h = -(0.8f64 * 0.8f64.ln() + 2.0 * 0.1 * 0.1f64.ln()) / 3f64.ln();
    let snr_term = ((cfg.snr_ref_db - 0.0) / cfg.snr_scale_db).clamp(-3.0, 3.0);
    let z = cfg.bias
        + cfg.w_disagreement * 0.0
        + cfg.w_entropy * h
        + cfg.w_teacher_confidence * (2.0 * 0.9 - 1.0)
        + cfg.w_snr * snr_term;
    assert!((m.difficulty(0) as f64 - 1.0 / (1.0 + (-z).exp())).abs() < 1e-5);
    assert_eq!(m.agreement(0), 1.0);
    // A disagreeing observation moves the EMA by 1/2 (second observation).
    m.observe(0, 0.9, &[0.1, 0.8, 0.1], 0.0);
    assert!((m.agreement(0) - 0.5).abs() < 1e-6);
    // Selection weights.
    assert!(m.is_hard(2));
    let mut uni = cfg.clone();
    uni.selection = Selection::Uniform;
    assert_eq!(DifficultyModel::new(uni, 3).selection_weight(1, true), 1.0);
    let mut w = cfg;
    w.selection = Selection::Weighted;
    let wm = DifficultyModel::new(w.clone(), 3);
    assert!((wm.selection_weight(1, true) - (w.floor + wm.difficulty(1) as f64)).abs() < 1e-9);
}

/// Column `j` of the student's linear weight [K, D].
fn column(t: &DistillTrainer, j: usize) -> Vec<f32> {
    let v = t.snapshot().unwrap().values().unwrap();
    v[0].chunks(2).map(|row| row[j]).collect()
}

fn selection_run(selection: Selection) -> (f32, f32, Vec<f32>) {
    let mut cfg = DistillConfig {
        classes: vec!["x".into(), "y".into()],
        batch_size: 8,
        replay_size: 8,
        update_interval: 1000,
        ..DistillConfig::default()
    };
    cfg.difficulty.selection = selection;
    cfg.difficulty.w_entropy = 0.0;
    let mut t = DistillTrainer::new(&cfg, 2).unwrap();
    // Pair A: the teacher agrees with the untrained student, clean sound -> easy.
    // Pair B: the other class, sound far below the noise (-20 dB) -> hard.
    let (a, b) = (vec![1.0, 0.0], vec![0.0, 1.0]);
    let ca =
        sensorium_models::distill::teacher::argmax(&t.snapshot().unwrap().logits(&a).unwrap()).0;
    let mut la = vec![0.0; 2];
    la[ca] = 5.0;
    let mut lb = vec![0.0; 2];
    lb[1 - ca] = 5.0;
    t.observe(Pair {
        student_features: a,
        teacher_logits: la,
        snr_db: 40.0,
    })
    .unwrap();
    t.observe(Pair {
        student_features: b,
        teacher_logits: lb,
        snr_db: -20.0,
    })
    .unwrap();
    assert_eq!(t.step(), 0, "update_interval not reached");
    let d = t.difficulty().difficulties();
    assert!(d[ca] < 0.5 && d[1 - ca] >= 0.5, "A easy, B hard: {d:?}");
    let (c0, c1) = (column(&t, 0), column(&t, 1));
    t.update().unwrap();
    let moved = |before: &[f32], after: Vec<f32>| {
        before
            .iter()
            .zip(&after)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    (moved(&c0, column(&t, 0)), moved(&c1, column(&t, 1)), d)
}

#[test]
fn hard_selection_spends_updates_only_on_hard_classes() {
    // Only feature 1 is non-zero in the hard pair: an update drawn from it alone leaves the
    // weights of feature 0 untouched except for weight decay (lr * wd * |w| < 1e-6).
    let (easy_col, hard_col, _) = selection_run(Selection::Hard);
    assert!(easy_col < 1e-6, "feature-0 weights moved by {easy_col}");
    assert!(hard_col > 1e-3, "feature-1 weights moved by {hard_col}");
    // Uniform selection draws both pairs, so both columns move.
    let (easy_col, hard_col, _) = selection_run(Selection::Uniform);
    assert!(easy_col > 1e-3 && hard_col > 1e-3, "{easy_col} {hard_col}");
}

#[test]
fn gate_drops_unconfident_teacher_pairs_and_replay_is_capped() {
    let cfg = DistillConfig {
        classes: vec!["a".into(), "b".into()],
        confidence_gate: 0.9,
        batch_size: 4,
        replay_size: 6,
        ..DistillConfig::default()
    };
    let mut t = DistillTrainer::new(&cfg, 3).unwrap();
    let mut rng = Rng::new(1);
    for i in 0..40 {
        // Even i: confident teacher (p = 0.993); odd i: unsure (p = 0.62).
        let margin = if i % 2 == 0 { 5.0 } else { 0.5 };
        t.observe(Pair {
            student_features: (0..3).map(|_| rng.normal() as f32).collect(),
            teacher_logits: vec![margin, 0.0],
            snr_db: 10.0,
        })
        .unwrap();
    }
    assert_eq!(t.counters().pairs, 40);
    assert_eq!(t.counters().gated, 20);
    assert_eq!(t.replay_len(), 6);
    // 20 accepted pairs, one update per pair from the 4th on.
    assert_eq!(t.step(), 17);
    let e = t
        .observe(Pair {
            student_features: vec![0.0; 2],
            teacher_logits: vec![1.0, 0.0],
            snr_db: 0.0,
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("student features 2 (expected 3)"),
        "{e}"
    );
}

fn write_st(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let map: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                Tensor::from_vec(d.clone(), s.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

#[test]
fn zero_shot_teacher_scores_by_scaled_cosine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.safetensors");
    // 3 classes, E = 2, D = 3 with a projection; logit_scale = ln(10).
    write_st(
        &path,
        &[
            (
                "text_embeds",
                vec![3, 2],
                vec![2.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            ),
            (
                "visual_projection.weight",
                vec![2, 3],
                vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            ),
            ("logit_scale", vec![1], vec![10f32.ln()]),
        ],
    );
    let t = Teacher::load(&path, 3, 3).unwrap();
    assert!(t.is_zero_shot());
    let l = t.logits(&[3.0, 4.0, 100.0]).unwrap();
    // z = (3, 4) / 5; cos with (1,0), (0,1), (1,1)/sqrt2.
    let want = [10.0 * 0.6, 10.0 * 0.8, 10.0 * 1.4 / 2f32.sqrt()];
    for (g, w) in l.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{l:?} vs {want:?}");
    }
    // Width mismatch without projection is refused, naming file and tensor.
    write_st(&path, &[("text_embeds", vec![3, 2], vec![1.0; 6])]);
    let e = Teacher::load(&path, 3, 3).unwrap_err().to_string();
    assert!(
        e.contains("text.safetensors: tensor `text_embeds`: embedding width 2"),
        "{e}"
    );
}

#[test]
fn linear_teacher_file_errors_name_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.safetensors");
    write_st(
        &path,
        &[
            ("classifier.weight", vec![2, 3], vec![1.0; 6]),
            ("classifier.bias", vec![2], vec![0.5, -0.5]),
        ],
    );
    let t = Teacher::load(&path, 2, 3).unwrap();
    assert_eq!(t.logits(&[1.0, 2.0, 3.0]).unwrap(), vec![6.5, 5.5]);
    let e = Teacher::load(&path, 2, 4).unwrap_err();
    assert!(matches!(e, DistillError::Weights { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: tensor `classifier.weight`: expected shape [2, 4], got [2, 3]",
            path.display()
        )
    );
    let e = Teacher::load(&path, 3, 3).unwrap_err().to_string();
    assert!(e.contains("expected shape [3, 3]"), "{e}");
    std::fs::write(&path, b"garbage!").unwrap();
    let e = Teacher::load(&path, 2, 3).unwrap_err().to_string();
    assert!(
        e.contains("head.safetensors") && e.contains("bad header"),
        "{e}"
    );
    let missing = dir.path().join("nope.safetensors");
    let e = Teacher::load(&missing, 2, 3).unwrap_err().to_string();
    assert!(e.starts_with(&missing.display().to_string()), "{e}");
}

#[test]
fn stand_in_extractors_have_documented_shapes_and_reject_bad_input() {
    let a = SpectralAudioFeatures::default();
    assert_eq!(a.dim(), 50);
    let tone: Vec<f32> = (0..8000)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
        .collect();
    let f = a.extract(&tone).unwrap();
    assert_eq!(f.len(), 50);
    // The strongest spectral-shape band is the one holding 1 kHz (mel band centres).
    let (peak, _) = sensorium_models::distill::teacher::argmax(&f[..24]);
    let mel = |x: f32| 2595.0 * (1.0 + x / 700.0).log10();
    let hz = |m: f32| 700.0 * (10f32.powf(m / 2595.0) - 1.0);
    let centre = |b: usize| hz(mel(50.0) + (mel(8000.0) - mel(50.0)) * (b + 1) as f32 / 25.0);
    assert!(
        centre(peak) > 850.0 && centre(peak) < 1200.0,
        "band {peak} centre {}",
        centre(peak)
    );
    assert!(a
        .extract(&[])
        .unwrap_err()
        .to_string()
        .contains("no samples"));
    let e = a.extract(&[0.0, f32::NAN]).unwrap_err().to_string();
    assert_eq!(e, "audio samples: sample 1 is not finite");

    let v = GridVisualFeatures::default();
    assert_eq!(v.dim(), 200);
    let red = [255u8, 0, 0].repeat(16 * 16);
    let f = v.extract(&red, 16, 16).unwrap();
    assert_eq!(&f[..3], &[1.0, 0.0, 0.0]);
    assert_eq!(&f[192..198], &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(&f[198..], &[0.0, 0.0], "solid colour has no texture");
    let e = v.extract(&red[..10], 16, 16).unwrap_err().to_string();
    assert_eq!(e, "video frame: 16x16 RGB needs 768 bytes, got 10");
}

#[test]
fn audio_stats_separate_tones_from_noise() {
    let mut rng = Rng::new(9);
    let noise: Vec<f32> = (0..8000).map(|_| 0.1 * rng.normal() as f32).collect();
    let tone: Vec<f32> = (0..8000)
        .map(|i| 0.1 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin())
        .collect();
    let (n, t) = (audio_stats(&noise), audio_stats(&tone));
    assert!((n.energy_db - -20.0).abs() < 0.5, "{n:?}");
    assert!((t.energy_db - -23.0).abs() < 0.5, "{t:?}");
    assert!(n.snr_db < 6.0, "{n:?}");
    assert!(t.snr_db > 30.0, "{t:?}");
    let silent = audio_stats(&[0.0; 100]);
    assert_eq!(silent.snr_db, 0.0);
    assert_eq!(silent.energy_db, -120.0);
}
