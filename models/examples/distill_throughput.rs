//! Throughput figures of online distillation on this machine (not a test: no asserts):
//! trainer updates/s at the default batch size, and stage windows/s with the background
//! trainer running, next to the same stage fed while its student is never updated
//! (`update_interval` larger than the run), so the ratio shows what training costs inference.
//!
//! `cargo run -p sensorium-models --example distill_throughput [-- --windows N]`

use std::sync::Arc;
use std::time::Instant;

use sensorium_engine::frame::{SyncedFrame, VideoFrame, Window, NS_PER_SEC};
use sensorium_models::distill::labelled::{self, LabelledSpec};
use sensorium_models::distill::{
    DistillConfig, DistillStage, DistillTrainer, Extractors, GridVisualFeatures, Pair, Teacher,
    VisualFeatureExtractor,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--windows")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let spec = LabelledSpec::new(
        std::env::temp_dir().join("sensorium-distill-eval"),
        8,
        -10.0,
    );
    let clips = labelled::generate(&spec, Some(&sensorium_pipelines::render::GstTestMedia))?;
    let k = spec.classes.len();
    let vis = GridVisualFeatures::default();
    let (xs, ys): (Vec<_>, Vec<_>) = clips
        .iter()
        .filter(|c| c.index < 2)
        .map(|c| {
            (
                vis.extract(&c.frames[0], c.width, c.height).unwrap(),
                c.class,
            )
        })
        .unzip();
    let teacher = Teacher::fit_linear(&xs, &ys, k, 300, 1)?;
    let cfg = DistillConfig {
        classes: spec.classes.iter().map(|c| c.name.clone()).collect(),
        ..DistillConfig::default()
    };

    // Trainer alone.
    let mut t = DistillTrainer::new(&cfg, 50)?;
    let mut rng = sensorium_models::distill::student::Rng::new(1);
    let pairs: Vec<Pair> = (0..256)
        .map(|i| Pair {
            student_features: (0..50).map(|_| rng.normal() as f32).collect(),
            teacher_logits: (0..k).map(|c| if c == i % k { 5.0 } else { 0.0 }).collect(),
            snr_db: 10.0,
        })
        .collect();
    for p in &pairs {
        t.observe(p.clone())?;
    }
    let start = Instant::now();
    let updates = 500;
    for _ in 0..updates {
        t.update()?;
    }
    let ups = updates as f64 / start.elapsed().as_secs_f64();
    println!(
        "trainer: {ups:.0} updates/s (batch {}, 50 features, {k} classes)",
        cfg.batch_size
    );

    let stream: Arc<str> = Arc::from("bench");
    let spf = spec.samples_per_frame();
    let windows: Vec<Window> = clips
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let frames = c
                .frames
                .iter()
                .enumerate()
                .map(|(f, rgb)| SyncedFrame {
                    stream: stream.clone(),
                    index: (2 * i + f) as u64,
                    t: (2 * i + f) as u64 * NS_PER_SEC / 2,
                    duration: NS_PER_SEC / 2,
                    video: Some(VideoFrame {
                        pts: 0,
                        width: c.width,
                        height: c.height,
                        rgb: Arc::from(rgb.as_slice()),
                        captured: Instant::now(),
                    }),
                    audio: Arc::from(&c.audio[f * spf..(f + 1) * spf]),
                    has_video: true,
                    has_audio: true,
                    captured: None,
                    features: None,
                    timing: Default::default(),
                })
                .collect();
            Window {
                stream: stream.clone(),
                index: i as u64,
                t_start: 0,
                t_end: 0,
                frames,
                valid: vec![true, true],
            }
        })
        .collect();
    let mut rates = Vec::new();
    for (label, interval) in [("idle student", usize::MAX / 2), ("training", 1)] {
        let mut c = cfg.clone();
        c.update_interval = interval;
        // The frames carry no frame-stage features: the stage computes each frame's.
        let stage = DistillStage::new(c, teacher.clone(), Extractors::stand_in())?;
        let start = Instant::now();
        for i in 0..n {
            stage.predict(&windows[i % windows.len()])?;
        }
        let wps = n as f64 / start.elapsed().as_secs_f64();
        let summary = stage.shutdown()?;
        println!(
            "stage ({label}): {wps:.0} windows/s over {n} windows, {} updates",
            summary.step
        );
        rates.push(wps);
    }
    println!(
        "inference rate while training / idle: {:.2}",
        rates[1] / rates[0]
    );
    Ok(())
}
