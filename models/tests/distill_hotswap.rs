//! Hot swap under load: the stage answers every window with the current student while the
//! background trainer updates it; no window is dropped or waits for training, every pair is
//! accounted for (trained on or counted as dropped), and the student version seen by
//! inference moves forward during the run.

mod distill_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use distill_common::*;
use sensorium_engine::model::WindowModel;
use sensorium_models::distill::{DistillStage, Extractors};

#[test]
fn inference_keeps_answering_while_the_student_trains() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, clips) = scenes(dir.path(), 8, -10.0);
    let k = spec.classes.len();
    let teacher = fit_visual_teacher(&clips, k, 2);
    let mut cfg = config_for(&spec);
    cfg.batch_size = 8;
    cfg.replay_size = 64;
    cfg.queue_capacity = 16;
    let mut stage = DistillStage::new(cfg.clone(), teacher, Extractors::stand_in()).unwrap();
    assert_eq!(stage.student_version(), 0);

    let stream: Arc<str> = Arc::from("cam0");
    let spf = spec.samples_per_frame();
    let windows: Vec<_> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| clip_window(c, &stream, i as u64, spf))
        .collect();

    // Drive batches of 4 windows (as the runtime batches streams) until inference has seen
    // the student change at least 3 times; the cap only guards against a stuck trainer.
    const MIN_WINDOWS: usize = 200;
    const CAP: usize = 50_000;
    let mut versions = Vec::new();
    let mut n = 0usize;
    while n < MIN_WINDOWS || distinct(&versions) < 4 {
        assert!(n < CAP, "student version never changed in {CAP} windows");
        let batch: Vec<_> = (0..4).map(|j| &windows[(n + j) % windows.len()]).collect();
        let out = stage.process(&batch).unwrap();
        assert_eq!(out.len(), 4, "one output per window");
        for (fields, w) in out.iter().zip(&batch) {
            let student = fields["student"].as_object().unwrap_or_else(|| {
                panic!("window {} got no student prediction: {fields:?}", w.index)
            });
            let class = student["class"].as_str().unwrap();
            assert!(
                cfg.classes.iter().any(|c| c == class),
                "unknown class {class}"
            );
            let p = student["p"].as_f64().unwrap();
            assert!(p >= 1.0 / k as f64 - 1e-6 && p <= 1.0, "p = {p}");
            assert!(fields["teacher"]["class"].is_string());
            versions.push(fields["student_version"].as_u64().unwrap());
        }
        n += 4;
    }
    assert_eq!(versions.len(), n, "every window answered");
    assert!(
        versions.windows(2).all(|v| v[0] <= v[1]),
        "versions only move forward"
    );
    assert_eq!(versions[0], 0);

    let stats = stage.stats().unwrap();
    let summary = stage.shutdown().unwrap();
    let submitted = stats.submitted.load(Ordering::Relaxed);
    let dropped = stats.dropped.load(Ordering::Relaxed);
    println!(
        "{n} windows, {} distinct student versions seen, {submitted} pairs submitted, {dropped} dropped, {} updates",
        distinct(&versions),
        summary.step
    );
    // Every window offered one pair; each was either trained on or counted as dropped.
    assert_eq!(submitted, n as u64);
    assert_eq!(summary.pairs + dropped, submitted);
    assert_eq!(stats.updates.load(Ordering::Relaxed), summary.step);
    assert!(summary.step >= *versions.last().unwrap());
}

fn distinct(v: &[u64]) -> usize {
    let mut d = v.to_vec();
    d.dedup();
    d.len()
}
