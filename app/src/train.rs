//! `sensorium train` and `sensorium eval`: the glue between the command line and the models
//! crate's training code (`sensorium_models::train`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::anyhow;
use sensorium_engine::Config;
use sensorium_models::llm::{Answerer, LlmConfig, SamplingConfig};
use sensorium_models::qformer::{QFormer, QFormerRunner, StoragePrecision};
use sensorium_models::train::trainer::QFormerInit;
use sensorium_models::train::{
    check_ranges, eval as train_eval, read_manifest, ClipExtractor, ExampleSource, FrameExample,
    ManifestSource, Sample, SceneExamples, TrainConfig, TrainError, TrainableEncoders, Trainer,
};

use crate::exit::{code, Failure};
use crate::sources;
use sensorium_models::setup::{self as model_cfg, ModelSetup, ModelsConfig};

fn fail(code: u8, error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code,
        error: error.into(),
    }
}

/// A training error with its exit code (`exit::models_code`).
fn terr(e: TrainError) -> Failure {
    let e = sensorium_models::Error::from(e);
    let c = crate::exit::models_code(&e);
    fail(c, e)
}

/// The parsed config of a train/eval run.
pub struct TrainSetup {
    pub config: Config,
    pub models: ModelsConfig,
    pub llm: LlmConfig,
    pub train: TrainConfig,
}

/// Parses `[engine]`, `[models]`, `[llm]` and `[train]` of `path` (what `check` validates).
pub fn parse(config: &Config, origin: &str) -> anyhow::Result<Option<TrainConfig>> {
    let Some(t) = &config.train else {
        return Ok(None);
    };
    let tc: TrainConfig = model_cfg::section(t, "train", origin)?;
    Ok(Some(tc))
}

fn setup(path: &Path, need_train: bool) -> Result<TrainSetup, Failure> {
    let config = Config::load(path).map_err(|e| fail(code::USAGE, e))?;
    setup_from(config, path, need_train)
}

fn setup_from(config: Config, path: &Path, need_train: bool) -> Result<TrainSetup, Failure> {
    let origin = path.display().to_string();
    let ms = ModelSetup::parse(&config, &origin).map_err(|e| fail(code::USAGE, e))?;
    let models = ms.models.clone().ok_or_else(|| {
        fail(
            code::USAGE,
            anyhow!(
                "{origin}: [models] is missing: set `audio` and/or `vision` (encoder directories)"
            ),
        )
    })?;
    let llm = ms.llm.clone().ok_or_else(|| {
        fail(
            code::USAGE,
            anyhow!("{origin}: [llm] is missing: set `model` (the LLM directory)"),
        )
    })?;
    let mut train = parse(&config, &origin)
        .map_err(|e| fail(code::USAGE, e))?
        .unwrap_or_default();
    if need_train && config.train.is_none() {
        return Err(fail(
            code::USAGE,
            anyhow!("{origin}: [train] is missing: set at least `manifest`"),
        ));
    }
    // Paths in [train] are relative to the config file, like a user expects.
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &mut Option<PathBuf>| {
        if let Some(x) = p {
            if x.is_relative() {
                *x = base.join(&*x);
            }
        }
    };
    rel(&mut train.manifest);
    rel(&mut train.val_manifest);
    rel(&mut train.output);
    rel(&mut train.init_qformer);
    rel(&mut train.cache);
    Ok(TrainSetup {
        config,
        models,
        llm,
        train,
    })
}

fn extractor(
    s: &TrainSetup,
    slots: Option<usize>,
    cache: Option<PathBuf>,
) -> Result<(ClipExtractor, Option<usize>, Option<usize>), Failure> {
    let (enc, aw, vw) =
        model_cfg::frame_encoder(&s.models, slots).map_err(|e| fail(code::MODEL, e))?;
    let dirs: Vec<&Path> = [&s.models.audio, &s.models.vision]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
    let slots_name = format!("{:?}:{:?}", s.models.visual_slots, s.models.slots.or(slots));
    let ex = ClipExtractor::new(
        &s.config,
        Arc::new(enc),
        &dirs,
        &slots_name,
        sources::source_factory(),
        cache,
    )
    .map_err(terr)?;
    // Trained encoders read log-mel and pixels; their outputs are computed in the graph.
    let ex = if s.train.train_encoders {
        ex.inputs_only()
    } else {
        ex
    };
    Ok((ex, aw, vw))
}

/// `sensorium train`.
pub fn train(
    config: &Path,
    output: Option<PathBuf>,
    steps: Option<u64>,
    resume: bool,
) -> Result<u8, Failure> {
    let mut s = setup(config, true)?;
    if let Some(o) = output {
        s.train.output = Some(o);
    }
    if let Some(n) = steps {
        s.train.steps = Some(n);
        s.train.epochs = None;
    }
    s.train.validate().map_err(terr)?;
    let out = s.train.output.clone().ok_or_else(|| {
        fail(
            code::USAGE,
            anyhow!("field `train.output`: missing (or pass --output DIR)"),
        )
    })?;
    // Where the Q-Former starts: a directory (its config fixes the slots and widths), or a
    // seeded random one shaped for the encoders and LLM.
    let init_dir = s.train.init_qformer.clone().or(s.models.qformer.clone());
    if init_dir.is_none() && !s.models.random {
        return Err(fail(
            code::USAGE,
            anyhow!("field `train.init_qformer`: no Q-Former to start from: set train.init_qformer, models.qformer or models.random = true"),
        ));
    }
    let init_cfg = init_dir
        .as_ref()
        .map(|d| {
            QFormer::load_config(d).map_err(|e| fail(code::MODEL, anyhow!("{}: {e}", d.display())))
        })
        .transpose()?;
    let cache = s.train.cache.clone().or_else(|| Some(out.join("cache")));
    let init_slots = init_cfg.as_ref().map(|c| c.slots_per_frame);
    let (ex, aw, vw) = extractor(&s, init_slots, cache)?;
    let llm_width =
        sensorium_models::llm::DecoderConfig::from_hf_file(&s.llm.model.join("config.json"))
            .map(|c| c.hidden_size)
            .ok();
    let init = match (init_dir, init_cfg) {
        (Some(d), Some(c)) => {
            model_cfg::check_widths(&c, &d, aw, vw, llm_width).map_err(|e| fail(code::USAGE, e))?;
            QFormerInit::Dir(d)
        }
        _ => QFormerInit::Random {
            cfg: model_cfg::random_qformer_config(&s.models, &s.config, aw, vw, llm_width),
            seed: s.models.seed,
            std: s.models.init_std as f32,
        },
    };
    let (train_s, val_s): (Vec<Sample>, Vec<Sample>) = match &s.train.manifest {
        Some(manifest) => {
            let samples = read_manifest(manifest).map_err(terr)?;
            check_ranges(&samples, s.config.engine.fps).map_err(terr)?;
            match &s.train.val_manifest {
                Some(v) => (samples, read_manifest(v).map_err(terr)?),
                None => split(samples, s.train.val_fraction),
            }
        }
        None => (Vec::new(), Vec::new()),
    };

    let mut trainer =
        Trainer::new(s.train.clone(), s.llm.clone(), init, out.clone()).map_err(terr)?;
    if s.train.train_encoders {
        let slots = model_cfg::slot_mode(&s.models, init_slots);
        let enc =
            TrainableEncoders::load(s.models.audio.as_deref(), s.models.vision.as_deref(), slots)
                .map_err(terr)?;
        let n: usize = enc.vars().iter().map(|(_, v)| v.elem_count()).sum();
        tracing::info!("training the encoders too ({n} weights)");
        trainer = trainer.with_encoders(enc).map_err(terr)?;
    }
    if let Some(w) = s
        .train
        .scenes
        .as_ref()
        .map(|c| c.labels_loss)
        .filter(|w| *w > 0.0)
    {
        trainer = trainer
            .with_labels(sensorium_engine::scene::LABELS, w)
            .map_err(terr)?;
    }
    trainer.prepare_output(resume).map_err(terr)?;
    if resume {
        trainer.load_state().map_err(terr)?;
        tracing::info!("resuming at step {}", trainer.step);
    }
    let source = |samples| ManifestSource {
        samples,
        extractor: &ex,
    };
    let mut train_ex = source(train_s).examples(&trainer).map_err(terr)?;
    let mut val_ex = source(val_s).examples(&trainer).map_err(terr)?;
    if let Some(sc) = &s.train.scenes {
        let e = &s.config.engine;
        let scenes = |seeds: [u64; 2]| SceneExamples {
            seeds: seeds[0]..seeds[1],
            seconds: sc.seconds,
            questions: sc.questions,
            tasks: sc.tasks.clone(),
            window_s: e.window as f64 / e.fps,
            aspect: f64::from(e.width) / f64::from(e.height),
            extractor: &ex,
        };
        let pretrain = sc.pretrain_steps > 0 && trainer.step == 0;
        let (examples, frames) = scenes(sc.train_seeds)
            .examples_and_frames(&trainer, pretrain)
            .map_err(terr)?;
        train_ex.extend(examples);
        let (examples, held_out) = scenes(sc.val_seeds)
            .examples_and_frames(&trainer, pretrain)
            .map_err(terr)?;
        val_ex.extend(examples);
        if pretrain {
            pretrain_encoders(
                &trainer,
                &frames,
                &held_out,
                sc.pretrain_steps,
                sc.pretrain_batch,
            )?;
        }
    }
    let st = &ex.stats;
    tracing::info!(
        "features: {} media decoded, {} from cache; {} training / {} validation examples",
        st.decoded.load(Ordering::Relaxed),
        st.cached.load(Ordering::Relaxed),
        train_ex.len(),
        val_ex.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut presses = 0u32;
    ctrlc::set_handler(move || {
        presses += 1;
        if presses > 1 {
            std::process::exit(i32::from(code::INTERRUPTED));
        }
        flag.store(true, Ordering::SeqCst);
    })
    .map_err(|e| {
        fail(
            code::USAGE,
            anyhow!("cannot install the Ctrl-C handler: {e}"),
        )
    })?;

    let total = trainer.total_steps(train_ex.len());
    let bar = sensorium_models::progress::bar(total, "step");
    bar.set_position(trainer.step);
    let started = std::time::Instant::now();
    let first = trainer.step;
    let per = (s.train.batch * s.train.grad_accum) as f64;
    let result = trainer.run(&train_ex, &val_ex, &stop, &mut |step, _total, loss, lr| {
        let rate = (step - first) as f64 * per / started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(step);
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {rate:.1} samples/s"));
    });
    bar.finish_and_clear();
    match result {
        Ok(sum) => {
            tracing::info!(
                "trained {} steps in {:.1} s ({:.2} samples/s, {:.0} tokens/s), final loss {:.4}{}; outputs in {}",
                sum.steps,
                sum.seconds,
                sum.samples_per_s,
                sum.tokens_per_s,
                sum.final_loss,
                sum.val_accuracy
                    .map(|a| format!(", validation accuracy {:.1}%", 100.0 * a))
                    .unwrap_or_default(),
                out.display()
            );
            Ok(code::OK)
        }
        Err(e @ TrainError::Interrupted { .. }) => {
            tracing::error!("{e} in {}", out.join("state").display());
            Ok(code::INTERRUPTED)
        }
        Err(e) => Err(terr(e)),
    }
}

/// The encoders' pretraining stage on the scene streams' per-frame labels, with a bar.
fn pretrain_encoders(
    trainer: &Trainer,
    frames: &[FrameExample],
    held_out: &[FrameExample],
    steps: u64,
    batch: usize,
) -> Result<(), Failure> {
    tracing::info!(
        "pretraining the encoders on {} labelled frames ({steps} steps of {batch})",
        frames.len()
    );
    let bar = sensorium_models::progress::bar(steps, "pretrain");
    let sum = trainer
        .pretrain_encoders(frames, held_out, steps, batch, &mut |step, _, loss| {
            bar.set_position(step);
            bar.set_message(format!("label loss {loss:.4}"));
        })
        .map_err(terr)?;
    bar.finish_and_clear();
    tracing::info!(
        "pretrained the encoders: {} steps in {:.1} s ({:.0} frames/s), label loss {:.4} -> {:.4}",
        sum.steps,
        sum.seconds,
        sum.frames_per_s,
        sum.first_loss,
        sum.last_loss
    );
    if !sum.held_out.is_empty() {
        let parts: Vec<String> = sum
            .held_out
            .iter()
            .map(|p| format!("{} {:.1}% of {}", p.part, 100.0 * p.accuracy(), p.scored))
            .collect();
        tracing::info!("held-out frames ({}): {}", held_out.len(), parts.join(", "));
    }
    Ok(())
}

/// Holds out the last `fraction` of the samples (in manifest order) for validation.
fn split(mut samples: Vec<Sample>, fraction: f64) -> (Vec<Sample>, Vec<Sample>) {
    let n_val = ((samples.len() as f64) * fraction).round() as usize;
    let n_val = n_val.min(samples.len().saturating_sub(1));
    let val = samples.split_off(samples.len() - n_val);
    (samples, val)
}

/// The live inference path of `eval`: extractor (run path), streaming Q-Former, greedy
/// answerer.
fn eval_parts(s: &TrainSetup) -> Result<(ClipExtractor, QFormerRunner, Answerer), Failure> {
    let dir = s.models.qformer.clone().ok_or_else(|| {
        fail(
            code::USAGE,
            anyhow!("field `models.qformer`: eval needs a trained Q-Former directory"),
        )
    })?;
    let dev = candle_core::Device::Cpu;
    let qf = QFormer::load(&dir, &dev).map_err(|e| {
        fail(
            code::MODEL,
            anyhow!("models.qformer '{}': {e}", dir.display()),
        )
    })?;
    let cache = s.train.cache.clone();
    let (ex, aw, vw) = extractor(s, Some(qf.cfg.slots_per_frame), cache)?;
    let mut llm = s.llm.clone();
    llm.sampling = SamplingConfig::default();
    let answerer = Answerer::from_config(&llm, &dev).map_err(|e| {
        fail(
            code::MODEL,
            anyhow!("llm.model '{}': {e}", llm.model.display()),
        )
    })?;
    model_cfg::check_widths(&qf.cfg, &dir, aw, vw, Some(answerer.hidden_size()))
        .map_err(|e| fail(code::USAGE, e))?;
    let (runner, _) = QFormerRunner::open(qf, Some("cpu"), StoragePrecision::F32)
        .map_err(|e| fail(code::MODEL, e))?;
    Ok((ex, runner, answerer))
}

fn print_report(report: &train_eval::EvalReport, json: bool) {
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
        for m in report.misses.iter().take(10) {
            println!(
                "wrong: {} [{}] {:?}: expected {:?}, got {:?}",
                m.origin, m.task, m.question, m.expected, m.got
            );
        }
    }
}

/// `sensorium eval`.
pub fn eval(config: &Path, manifest: &Path, json: bool) -> Result<u8, Failure> {
    let s = setup(config, false)?;
    let (ex, runner, mut answerer) = eval_parts(&s)?;
    let samples = read_manifest(manifest).map_err(terr)?;
    check_ranges(&samples, s.config.engine.fps).map_err(terr)?;
    let report = train_eval::evaluate(&samples, &ex, &runner, &mut answerer).map_err(terr)?;
    print_report(&report, json);
    Ok(code::OK)
}

/// `sensorium eval --bench scenes`: held-out scene streams (seeds from `seed` on), `n`
/// questions, two per window, through the live inference path of `config` (else the
/// default model, or the bundle `model`).
pub fn eval_scenes(
    config: Option<&Path>,
    model: Option<PathBuf>,
    n: usize,
    seed: u64,
    json: bool,
) -> Result<u8, Failure> {
    use sensorium_models::train::scenes::{evaluate_scenes, HELD_OUT_SEEDS};
    if seed < HELD_OUT_SEEDS {
        return Err(fail(
            code::USAGE,
            anyhow!("--seed {seed}: benchmark seeds start at {HELD_OUT_SEEDS} (lower ones may be training seeds)"),
        ));
    }
    if n == 0 {
        return Err(fail(code::USAGE, anyhow!("--questions must be at least 1")));
    }
    let (mut cfg, origin) = match config {
        Some(p) => (
            Config::load(p).map_err(|e| fail(code::USAGE, e))?,
            p.to_owned(),
        ),
        None => {
            // A config of nothing but the model sections (filled from the bundle below).
            let mut c = Config::from_toml_str("[models]\n", "<default model>")
                .map_err(|e| fail(code::USAGE, e))?;
            c.models = None;
            (c, PathBuf::from("<default model>"))
        }
    };
    if model.is_some() || cfg.models.is_none() {
        let dir = model.unwrap_or_else(sensorium_models::bundle::default_dir);
        let b = sensorium_models::bundle::Bundle::load(&dir).map_err(|e| fail(code::MODEL, e))?;
        b.apply(&mut cfg, None).map_err(|e| fail(code::USAGE, e))?;
    }
    let s = setup_from(cfg, &origin, false)?;
    let (ex, runner, mut answerer) = eval_parts(&s)?;
    let e = &s.config.engine;
    let window_s = e.window as f64 / e.fps;
    let report = evaluate_scenes(
        seed..u64::MAX,
        12.0,
        2,
        n,
        window_s,
        f64::from(e.width) / f64::from(e.height),
        &ex,
        &runner,
        &mut answerer,
    )
    .map_err(terr)?;
    print_report(&report, json);
    Ok(code::OK)
}
