//! The model sections of a config (`[models]`, `[llm]`, `[distill]`): parsed from the
//! engine's opaque tables into the model crate's types (errors name the file and the field,
//! e.g. `llm.sampling.temperature`), validated, and loaded into the engine's stages
//! (frame encoder, window model stack, answer service, distillation). Errors are
//! [`SetupError`]s: the CLI maps config errors to exit code 2 and model errors to 4.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::distill::{AudioFeatureExtractor, VisualFeatureExtractor};
use crate::distill::{
    DistillConfig, DistillError, DistillStage, Extractors, Teacher, VisionTowerFeatures,
    WhisperAudioFeatures,
};
use crate::llm::{Answerer, LlmConfig, LlmError};
use crate::qformer::{AudioSync, QFormer, QFormerConfig, QFormerRunner, StoragePrecision};
use crate::stage::{AvFrameEncoder, QFormerWindowModel};
use crate::tokens::SlotMode;
use crate::{audio::AudioEncoder, vision::VisionEncoder};
use candle_core::Device;
use sensorium_engine::{Config, ConfigError, QueueMode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A [`SetupError::Mismatch`] from a format string.
macro_rules! mismatch {
    ($($t:tt)*) => {
        SetupError::Mismatch(format!($($t)*))
    };
}

/// Why the model sections could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A section does not deserialize (the failing key is named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A field has a value the schema allows but the models do not.
    #[error("{origin}: field `{field}`: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
    /// A section is inconsistent as a whole.
    #[error("{origin}: [{section}]: {message}")]
    Section {
        origin: String,
        section: String,
        message: String,
    },
    /// A model does not load or does not start: `what` names the field and file, `source`
    /// is the model's own error, typed (a `ModelError`, `LlmError` or `DistillError`:
    /// `error.downcast_ref`). Its text is part of this one's, so it is not also a `source`
    /// (an error chain would print it twice).
    #[error("{what}: {error}")]
    Load {
        what: String,
        error: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The models do not fit each other (a width, the projection); the file and field are
    /// named.
    #[error("{0}")]
    Mismatch(String),
}

/// How the frame encoder turns a vision tower's tokens into per-frame visual slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisualSlots {
    /// Adaptive average pooling of the patch tokens to `slots` (FAVOR: 32).
    #[default]
    Pool,
    /// Every patch token.
    All,
    /// The CLS token only (CLIP).
    Cls,
}

/// `[models]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Whisper checkpoint directory (HF layout: config.json + model.safetensors).
    pub audio: Option<PathBuf>,
    /// CLIP or SigLIP checkpoint directory (HF layout).
    pub vision: Option<PathBuf>,
    /// Q-Former checkpoint directory (models/QFORMER_LAYOUT.md); or set `random`.
    pub qformer: Option<PathBuf>,
    /// Seeded random Q-Former weights, for development (no checkpoint needed).
    pub random: bool,
    /// Seed and N(0, std) of the random Q-Former.
    pub seed: u64,
    pub init_std: f64,
    pub visual_slots: VisualSlots,
    /// Slots per frame for `visual_slots = "pool"`; default: the Q-Former's slots_per_frame.
    pub slots: Option<usize>,
    /// Shape of the random Q-Former.
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub queries: usize,
    /// Projection width (the LLM's hidden size); default: the `[llm]` model's, else 768.
    pub projection: Option<usize>,
    /// The random Q-Former's block-causal slot self-attention (false: FAVOR's ablation
    /// without it).
    pub causal_slots: bool,
    /// The random Q-Former's audio: `frame` (each frame its own) or `window` (pooled over
    /// each window: the coarse-sync ablation).
    pub audio_sync: AudioSync,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            audio: None,
            vision: None,
            qformer: None,
            random: false,
            seed: 0,
            init_std: 0.02,
            visual_slots: VisualSlots::Pool,
            slots: None,
            hidden_size: 768,
            layers: 2,
            heads: 12,
            queries: 32,
            projection: None,
            causal_slots: true,
            audio_sync: AudioSync::Frame,
        }
    }
}

/// Which distillation features: the real encoders of `[models]` where configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureChoice {
    /// Whisper / vision-tower features for each modality `[models]` has, else the stand-in.
    #[default]
    Auto,
    /// Both modalities from `[models]` encoders (an error if one is missing).
    Encoders,
    /// The stand-in extractors (log-mel statistics, colour grid).
    StandIn,
}

/// `[distill]`: the model crate's `DistillConfig` plus what the CLI needs to build it.
#[derive(Clone, Debug, PartialEq)]
pub struct DistillSetup {
    pub config: DistillConfig,
    /// Teacher file (safetensors: `classifier.weight`/`classifier.bias`, or zero-shot).
    pub teacher: PathBuf,
    pub features: FeatureChoice,
}

/// All model sections, parsed and validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSetup {
    pub models: Option<ModelsConfig>,
    pub llm: Option<LlmConfig>,
    pub distill: Option<DistillSetup>,
}

fn field_err(origin: &str, field: &str, message: impl std::fmt::Display) -> SetupError {
    SetupError::Field {
        origin: origin.into(),
        field: field.into(),
        message: message.to_string(),
    }
}

/// Deserializes a section with the failing key path in the error (the engine's helper).
pub fn section<T: DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    origin: &str,
) -> Result<T, SetupError> {
    Ok(sensorium_engine::config::load::deserialize_section(
        table.clone(),
        name,
        origin,
    )?)
}

impl ModelSetup {
    /// Parses and validates the sections of `config` (read from `origin`).
    pub fn parse(config: &Config, origin: &str) -> Result<Self, SetupError> {
        let models: Option<ModelsConfig> = config
            .models
            .as_ref()
            .map(|t| section(t, "models", origin))
            .transpose()?;
        if let Some(m) = &models {
            m.validate(origin)?;
        }
        let llm = match &config.llm {
            None => None,
            Some(t) => {
                let mut llm: LlmConfig = section(t, "llm", origin)?;
                llm.validate().map_err(|e| match e {
                    LlmError::Settings { field, message } => {
                        field_err(origin, &format!("llm.{field}"), message)
                    }
                    e => section_err(origin, "llm", e),
                })?;
                // Files are finite: without an explicit choice, every scheduled question is
                // answered (no stale cancelling) when no stream drops data anyway.
                let all_lossless = config
                    .resolved_streams()
                    .iter()
                    .all(|r| r.params.mode == QueueMode::Lossless);
                if !t.contains_key("cancel_stale") && all_lossless {
                    llm.cancel_stale = false;
                }
                let qf = models
                    .as_ref()
                    .is_some_and(|m| m.random || m.qformer.is_some());
                if !qf {
                    return Err(field_err(
                        origin,
                        "models.qformer",
                        "[llm] needs the Q-Former's tokens: set models.qformer or models.random",
                    ));
                }
                Some(llm)
            }
        };
        let distill = config
            .distill
            .as_ref()
            .map(|t| parse_distill(t, origin, models.as_ref()))
            .transpose()?;
        Ok(Self {
            models,
            llm,
            distill,
        })
    }

    /// The sections with every default filled in (for `sensorium check`).
    pub fn resolve_into(&self, config: &mut Config) {
        if let Some(m) = &self.models {
            config.models = table(m);
        }
        if let Some(l) = &self.llm {
            config.llm = table(l);
        }
        if let Some(d) = &self.distill {
            let mut t = table(&d.config).unwrap_or_default();
            t.insert(
                "teacher".into(),
                toml::Value::String(d.teacher.display().to_string()),
            );
            if let Ok(toml::Value::String(s)) = toml::Value::try_from(d.features) {
                t.insert("features".into(), toml::Value::String(s));
            }
            config.distill = Some(t);
        }
    }
}

/// A section serialized back into a table (only for display).
fn table<T: Serialize>(v: &T) -> Option<toml::Table> {
    toml::Table::try_from(v).ok()
}

impl ModelsConfig {
    fn validate(&self, origin: &str) -> Result<(), SetupError> {
        let e = |f: &str, m: &str| Err(field_err(origin, &format!("models.{f}"), m));
        if self.random && self.qformer.is_some() {
            return e(
                "random",
                "set either `qformer` (a checkpoint) or `random`, not both",
            );
        }
        if self.audio.is_none() && self.vision.is_none() {
            return e("audio", "set `audio` and/or `vision` (encoder directories)");
        }
        if self.slots == Some(0) {
            return e("slots", "must be at least 1");
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return e("init_std", "must be > 0");
        }
        if self.random {
            if self.heads == 0 || !self.hidden_size.is_multiple_of(self.heads) {
                return e("heads", "must divide hidden_size");
            }
            if self.layers == 0 || self.queries == 0 {
                return e("layers", "layers and queries must be at least 1");
            }
        }
        if self.projection == Some(0) {
            return e("projection", "must be at least 1");
        }
        Ok(())
    }
}

/// The `DistillConfig` fields of a `[distill]` table (without the CLI's own keys), not yet
/// validated.
pub fn distill_section(t: &toml::Table, origin: &str) -> Result<DistillConfig, SetupError> {
    section(t, "distill", origin)
}

fn parse_distill(
    table: &toml::Table,
    origin: &str,
    models: Option<&ModelsConfig>,
) -> Result<DistillSetup, SetupError> {
    let mut t = table.clone();
    let teacher = match t.remove("teacher") {
        Some(toml::Value::String(s)) => PathBuf::from(s),
        Some(_) => {
            return Err(field_err(
                origin,
                "distill.teacher",
                "must be a path string",
            ))
        }
        None => {
            return Err(field_err(
                origin,
                "distill.teacher",
                "missing: the teacher file (classifier.weight/bias or zero-shot text_embeds)",
            ))
        }
    };
    let features: FeatureChoice = match t.remove("features") {
        None => FeatureChoice::Auto,
        Some(v) => FeatureChoice::deserialize(v)
            .map_err(|e| field_err(origin, "distill.features", e.to_string().trim()))?,
    };
    let config: DistillConfig = distill_section(&t, origin)?;
    config.validate().map_err(|e| match e {
        DistillError::Config { field, message } => {
            field_err(origin, &format!("distill.{field}"), message)
        }
        e => section_err(origin, "distill", e),
    })?;
    if features == FeatureChoice::Encoders
        && !models.is_some_and(|m| m.audio.is_some() && m.vision.is_some())
    {
        return Err(field_err(
            origin,
            "distill.features",
            "\"encoders\" needs both models.audio and models.vision",
        ));
    }
    Ok(DistillSetup {
        config,
        teacher,
        features,
    })
}

/// The loaded model stages, ready for the runtime.
pub struct Loaded {
    pub encoder: Option<AvFrameEncoder>,
    pub qformer: Option<QFormerWindowModel>,
    pub answerer: Option<Answerer>,
    pub distill: Option<DistillStage>,
}

fn section_err(origin: &str, section: &str, e: impl std::fmt::Display) -> SetupError {
    SetupError::Section {
        origin: origin.into(),
        section: section.into(),
        message: e.to_string(),
    }
}

fn load_err(
    what: &str,
    dir: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SetupError {
    failed(format!("{what} '{}'", dir.display()), e)
}

/// A [`SetupError::Load`]: `what` failed with the model's error `e`.
fn failed(
    what: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> SetupError {
    SetupError::Load {
        what: what.into(),
        error: Box::new(e),
    }
}

/// Loads every configured model (encoders and LLM on the CPU; the Q-Former on `engine.device`). Errors name the file and, for checkpoints, the tensor.
pub fn load(setup: &ModelSetup, config: &Config) -> Result<Loaded, SetupError> {
    let dev = Device::Cpu;
    let m = setup.models.clone().unwrap_or_default();
    let progress = crate::progress::spinner("loading models");
    progress.set_message("encoders");
    let (audio, vision) = load_encoders(&m)?;
    progress.set_message("language model");
    let answerer = setup
        .llm
        .as_ref()
        .map(|l| Answerer::from_config(l, &dev).map_err(|e| load_err("llm.model", &l.model, e)))
        .transpose()?;
    progress.set_message("Q-Former");
    let (aw, vw) = (
        audio.as_ref().map(|a| a.width()),
        vision.as_ref().map(|v| v.width()),
    );
    let llm_width = answerer.as_ref().map(|a| a.hidden_size());

    let qformer = if let Some(dir) = &m.qformer {
        let qf = QFormer::load(dir, &dev).map_err(|e| load_err("models.qformer", dir, e))?;
        check_widths(&qf.cfg, dir, aw, vw, llm_width)?;
        Some(qf)
    } else if m.random {
        let cfg = random_qformer_config(&m, config, aw, vw, llm_width);
        let qf = QFormer::random(cfg, m.seed, m.init_std as f32, &dev)
            .map_err(|e| failed("models.random: random Q-Former", e))?;
        Some(qf)
    } else {
        None
    };
    if let (Some(p), Some(q)) = (m.projection, &qformer) {
        if p != q.cfg.llm_hidden_size {
            return Err(mismatch!(
                "models.projection = {p} but the Q-Former projects to {}",
                q.cfg.llm_hidden_size
            ));
        }
    }
    let mode = slot_mode(&m, qformer.as_ref().map(|q| q.cfg.slots_per_frame));
    let distill = setup
        .distill
        .as_ref()
        .map(|d| build_distill(d, aw, vw))
        .transpose()?;
    // The frame stage computes each frame's whole product once: the encoders' tokens and
    // the distillation's features (pooled from those tokens where configured).
    let encoder = (audio.is_some() || vision.is_some() || distill.is_some()).then(|| {
        let enc = AvFrameEncoder::new(audio, vision, mode);
        match &distill {
            Some(d) => enc.with_distill(d.extractors().clone()),
            None => enc,
        }
    });
    progress.finish_and_clear();
    Ok(Loaded {
        encoder,
        qformer: qformer
            .map(|q| open_qformer(q, &config.engine.device, config.engine.window))
            .transpose()?,
        answerer,
        distill,
    })
}

/// The shape of `[models] random = true`'s Q-Former for the encoders and LLM at hand.
pub fn random_qformer_config(
    m: &ModelsConfig,
    config: &Config,
    aw: Option<usize>,
    vw: Option<usize>,
    llm_width: Option<usize>,
) -> QFormerConfig {
    let width = vw.or(aw).unwrap_or(768);
    QFormerConfig {
        hidden_size: m.hidden_size,
        num_hidden_layers: m.layers,
        num_attention_heads: m.heads,
        intermediate_size: 4 * m.hidden_size,
        num_query_tokens: m.queries,
        slots_per_frame: m.slots.unwrap_or(32),
        audio_width: aw.unwrap_or(width),
        audio_slot_width: width,
        audio_proj: true,
        visual_width: vw.unwrap_or(width),
        visual_slot_width: width,
        visual_proj: false,
        max_slot_positions: m.slots.unwrap_or(32) * 128,
        slot_attention_heads: m.heads,
        lookback: config.engine.window,
        llm_hidden_size: m.projection.or(llm_width).unwrap_or(768),
        causal_slots: m.causal_slots,
        audio_sync: m.audio_sync,
        ..QFormerConfig::default()
    }
}

/// The frame encoder of `[models]` (what `run` and `train` put between synchroniser and
/// windows), with the encoders' widths. `slots`: the Q-Former's slots per frame, when known.
pub fn frame_encoder(
    m: &ModelsConfig,
    slots: Option<usize>,
) -> Result<(AvFrameEncoder, Option<usize>, Option<usize>), SetupError> {
    let (audio, vision) = load_encoders(m)?;
    let (aw, vw) = (
        audio.as_ref().map(|a| a.width()),
        vision.as_ref().map(|v| v.width()),
    );
    Ok((
        AvFrameEncoder::new(audio, vision, slot_mode(m, slots)),
        aw,
        vw,
    ))
}

/// The encoders `[models]` names.
fn load_encoders(
    m: &ModelsConfig,
) -> Result<(Option<AudioEncoder>, Option<VisionEncoder>), SetupError> {
    let dev = Device::Cpu;
    let audio = m
        .audio
        .as_ref()
        .map(|d| AudioEncoder::load(d, &dev).map_err(|e| load_err("models.audio", d, e)))
        .transpose()?;
    let vision = m
        .vision
        .as_ref()
        .map(|d| VisionEncoder::load(d, &dev).map_err(|e| load_err("models.vision", d, e)))
        .transpose()?;
    Ok((audio, vision))
}

/// The visual tokens per frame: `models.slots`, else the Q-Former's slots, else 32.
pub fn slot_mode(m: &ModelsConfig, qformer_slots: Option<usize>) -> SlotMode {
    let slots = m.slots.or(qformer_slots).unwrap_or(32);
    match m.visual_slots {
        VisualSlots::Pool => SlotMode::Pool(slots),
        VisualSlots::All => SlotMode::All,
        VisualSlots::Cls => SlotMode::Cls,
    }
}

/// Puts the Q-Former on `[engine] device` / `--device`: our CUDA kernels (weights and caches
/// resident on the GPU) or candle on the CPU. `auto` without a usable GPU says so once.
fn open_qformer(q: QFormer, device: &str, window: usize) -> Result<QFormerWindowModel, SetupError> {
    let (runner, note) = QFormerRunner::open(q, Some(device), StoragePrecision::F32)
        .map_err(|e| failed(format!("engine.device '{device}'"), e))?;
    // The first live window should not pay for kernel loading and GEMM set-up.
    runner.warm_up(window).map_err(|e| {
        failed(
            format!("engine.device '{device}': Q-Former warm-up failed"),
            e,
        )
    })?;
    if let Some(note) = note {
        tracing::info!("{note}");
    }
    let model = QFormerWindowModel::with_runner(runner, None);
    tracing::info!("Q-Former on {}", model.device());
    Ok(model)
}

/// The Q-Former checkpoint must fit the configured encoders and LLM.
pub fn check_widths(
    cfg: &QFormerConfig,
    dir: &Path,
    audio: Option<usize>,
    vision: Option<usize>,
    llm: Option<usize>,
) -> Result<(), SetupError> {
    let file = dir.join("config.json");
    let pairs = [
        (
            "audio_width",
            cfg.audio_width,
            audio,
            "the audio encoder's d_model",
        ),
        (
            "visual_width",
            cfg.visual_width,
            vision,
            "the vision tower's hidden_size",
        ),
        (
            "llm_hidden_size",
            cfg.llm_hidden_size,
            llm,
            "the LLM's hidden_size",
        ),
    ];
    for (field, have, want, what) in pairs {
        if let Some(w) = want {
            if have != w {
                return Err(mismatch!(
                    "{}: `{field}` = {have} does not match {what} ({w})",
                    file.display()
                ));
            }
        }
    }
    Ok(())
}

fn build_distill(
    d: &DistillSetup,
    audio_width: Option<usize>,
    vision_width: Option<usize>,
) -> Result<DistillStage, SetupError> {
    let stand_in = Extractors::stand_in();
    let use_enc = d.features != FeatureChoice::StandIn;
    // The frame stage computes these per frame (`AvFrameEncoder::with_distill`), pooling the
    // tokens of [models]' encoders, so each frame is encoded once.
    let audio: Arc<dyn AudioFeatureExtractor> = match audio_width {
        Some(w) if use_enc => Arc::new(WhisperAudioFeatures::upstream(w)),
        _ => stand_in.audio.clone(),
    };
    let visual: Arc<dyn VisualFeatureExtractor> = match vision_width {
        Some(w) if use_enc => Arc::new(VisionTowerFeatures::upstream(w)),
        _ => stand_in.visual.clone(),
    };
    let teacher_dim = match d.config.direction {
        crate::distill::Direction::VisualToAudio => visual.dim(),
        crate::distill::Direction::AudioToVisual => audio.dim(),
    };
    let teacher = Teacher::load(&d.teacher, d.config.num_classes(), teacher_dim)
        .map_err(|e| failed("distill.teacher", e))?;
    DistillStage::new(d.config.clone(), teacher, Extractors { audio, visual })
        .map_err(|e| failed("[distill]", e))
}

/// Feature extractors for `distill-eval`: the real Whisper encoder and CLIP/SigLIP tower
/// (vision tokens mean-pooled over all patches) for the directories given, the stand-in
/// extractors for the modalities without one.
pub fn eval_extractors(
    audio: Option<&Path>,
    vision: Option<&Path>,
) -> Result<Extractors, SetupError> {
    let dev = Device::Cpu;
    let mut ex = Extractors::stand_in();
    if let Some(d) = audio {
        let enc = AudioEncoder::load(d, &dev).map_err(|e| load_err("--audio", d, e))?;
        ex.audio = Arc::new(WhisperAudioFeatures::with_encoder(Arc::new(enc)));
    }
    if let Some(d) = vision {
        let enc = VisionEncoder::load(d, &dev).map_err(|e| load_err("--vision", d, e))?;
        ex.visual = Arc::new(VisionTowerFeatures::with_encoder(
            Arc::new(enc),
            SlotMode::All,
        ));
    }
    Ok(ex)
}
