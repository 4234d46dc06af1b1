use sensorium_models::distill::synth::SynthSpec;
use sensorium_models::distill::*;

#[test]
fn scratch_eval() {
    let snr: f64 = std::env::var("SNR").ok().and_then(|s| s.parse().ok()).unwrap_or(-10.0);
    let budget: u64 = std::env::var("BUDGET").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let spec = SynthSpec::new("/tmp/distill-scratch-cache", 40, snr);
    let mut d = DistillConfig::default();
    d.lr = std::env::var("LR").ok().and_then(|s| s.parse().ok()).unwrap_or(0.01);
    if std::env::var("SEL").ok().as_deref() == Some("weighted") { d.difficulty.selection = Selection::Weighted; }
    d.difficulty.threshold = std::env::var("TH").ok().and_then(|s| s.parse().ok()).unwrap_or(0.5);
    d.classes = spec.classes.iter().map(|c| c.name.clone()).collect();
    let cfg = EvalConfig {
        distill: d,
        synth: spec,
        test_clips_per_class: 16,
        teacher_frames_per_class: 2,
        teacher: None,
        budget,
        seeds: vec![1, 2, 3, 4, 5],
    };
    let t = std::time::Instant::now();
    let r = eval::run(&cfg).unwrap();
    println!("{r}\n{:?}", t.elapsed());
}
