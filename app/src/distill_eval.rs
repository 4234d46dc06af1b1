//! `sensorium distill-eval`: online distillation evaluated on labelled synthetic scenes
//! (per-class student accuracy before/after; difficulty-aware vs uniform selection at equal
//! update budgets).

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use sensorium_engine::Config;
use sensorium_models::distill::eval::{self, EvalConfig};
use sensorium_models::distill::labelled::LabelledSpec;
use sensorium_models::distill::{DistillConfig, Selection};
use sensorium_models::setup as model_cfg;

use crate::exit::{code, Failure, WithCode};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WorldArg {
    /// GStreamer test patterns with their sounds (8 classes; needs gst-launch-1.0).
    TestSources,
    /// The default model's scene world: sounding objects, one class per shape.
    Scenes,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SelectionArg {
    Weighted,
    Hard,
}

#[derive(Args, Debug)]
pub struct DistillEvalArgs {
    /// Config whose `[distill]` section sets the training knobs (lr, temperature, batch,
    /// difficulty...). Its `classes`, `teacher` and `features` are not used: the classes are
    /// the synthetic scenes' and the features come from `--audio` / `--vision` (else the
    /// stand-in extractors).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The labelled clips: GStreamer's test sources (8 classes) or the scene world's
    /// sounding objects (circle <-> high tone, square <-> clicks, triangle <-> noise; 2 s
    /// clips; the circle is the hard class). With `scenes`, `--audio default-model/audio
    /// --vision default-model/vision` distils on the default model's own encoders.
    #[arg(long, value_enum, default_value = "test-sources")]
    pub world: WorldArg,
    /// Difficulty-aware arm (the other arm is always uniform); default: the config's, else
    /// weighted.
    #[arg(long, value_enum)]
    pub selection: Option<SelectionArg>,
    /// Updates per arm after the warm-up.
    #[arg(long, default_value_t = 100)]
    pub budget: u64,
    /// Uniform updates before the arms split (a stand-in for a pretrained student).
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Runs (seeds 1..=N), averaged.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// SNR (dB) of the noise buried in the hard classes' sound.
    #[arg(long, default_value_t = -20.0, allow_hyphen_values = true)]
    pub snr: f64,
    /// Clips per class (1 s each; 2 s in `scenes`), of which `--test-clips` are held out.
    #[arg(long, default_value_t = 40)]
    pub clips: usize,
    #[arg(long, default_value_t = 16)]
    pub test_clips: usize,
    /// Labelled frames per class to fit the teacher (when no `--teacher`).
    #[arg(long, default_value_t = 2)]
    pub teacher_frames: usize,
    /// Teacher file over the teacher modality's features, instead of fitting one.
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Whisper checkpoint directory: audio features from the real encoder (mean-pooled
    /// tokens) instead of the stand-in log-mel statistics.
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// CLIP or SigLIP checkpoint directory: visual features from the real tower (patch
    /// tokens mean-pooled) instead of the stand-in colour grid.
    #[arg(long)]
    pub vision: Option<PathBuf>,
    /// Where the generated clips are cached (default: the system temp dir).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// `sensorium distill-eval`: prints the report.
pub fn distill_eval(args: DistillEvalArgs) -> Result<u8, Failure> {
    let mut distill = match &args.config {
        Some(path) => {
            let config = Config::load(path).code(code::USAGE)?;
            let mut t = config.distill.clone().unwrap_or_default();
            // Live-run keys that do not apply to the evaluation.
            for k in ["teacher", "features", "classes"] {
                t.remove(k);
            }
            model_cfg::distill_section(&t, &path.display().to_string()).code(code::USAGE)?
        }
        None => DistillConfig::default(),
    };
    if let Some(s) = args.selection {
        distill.difficulty.selection = match s {
            SelectionArg::Weighted => Selection::Weighted,
            SelectionArg::Hard => Selection::Hard,
        };
    }
    let cache = args
        .cache
        .unwrap_or_else(|| std::env::temp_dir().join("sensorium-distill-eval"));
    let spec = match args.world {
        WorldArg::TestSources => LabelledSpec::new(cache, args.clips, args.snr),
        WorldArg::Scenes => LabelledSpec::scenes(args.clips, args.snr),
    };
    distill.classes = spec.classes.iter().map(|c| c.name.clone()).collect();
    let cfg = EvalConfig {
        distill,
        clips: spec,
        test_clips_per_class: args.test_clips,
        teacher_frames_per_class: args.teacher_frames,
        teacher: args.teacher,
        warmup: args.warmup,
        budget: args.budget,
        seeds: (1..=args.seeds).collect(),
    };
    let extractors = model_cfg::eval_extractors(args.audio.as_deref(), args.vision.as_deref())
        .code(code::MODEL)?;
    match eval::run_with(&cfg, &extractors, crate::sources::test_media()) {
        Ok(report) => {
            println!("{report}");
            Ok(code::OK)
        }
        Err(e) => {
            let e = sensorium_models::Error::from(e);
            let c = crate::exit::models_code(&e);
            Err(anyhow!("distill-eval: {e}")).code(c)
        }
    }
}
