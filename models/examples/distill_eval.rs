//! Developer entry to `distill::eval::run` (the CLI has the same as `sensorium distill-eval`):
//! prints the before/after table and the difficulty-aware vs uniform ablation.
//!
//! `cargo run -p sensorium-models --example distill_eval -- \
//!    [--snr DB] [--warmup N] [--budget N] [--selection weighted|hard] [--lr X] [--seeds N] [--cache DIR]`

use sensorium_models::distill::eval::{self, EvalConfig};
use sensorium_models::distill::labelled::LabelledSpec;
use sensorium_models::distill::{DistillConfig, Selection};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let snr: f64 = get("--snr")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(-20.0);
    let cache = get("--cache").unwrap_or_else(|| {
        std::env::temp_dir()
            .join("sensorium-distill-eval")
            .display()
            .to_string()
    });
    let spec = LabelledSpec::new(cache, 40, snr);
    let mut distill = DistillConfig {
        classes: spec.classes.iter().map(|c| c.name.clone()).collect(),
        ..DistillConfig::default()
    };
    if let Some(lr) = get("--lr") {
        distill.lr = lr.parse()?;
    }
    distill.difficulty.selection = match get("--selection").as_deref() {
        Some("hard") => Selection::Hard,
        None | Some("weighted") => Selection::Weighted,
        Some(other) => return Err(format!("--selection: unknown {other:?}").into()),
    };
    let seeds: u64 = get("--seeds").map(|s| s.parse()).transpose()?.unwrap_or(5);
    let cfg = EvalConfig {
        distill,
        clips: spec,
        test_clips_per_class: 16,
        teacher_frames_per_class: 2,
        teacher: None,
        warmup: get("--warmup")
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(100),
        budget: get("--budget")
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(100),
        seeds: (1..=seeds).collect(),
    };
    println!(
        "{}",
        eval::run(&cfg, Some(&sensorium_pipelines::render::GstTestMedia))?
    );
    Ok(())
}
