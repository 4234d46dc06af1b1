//! The training loop. What is trained and how follows FAVOR: the encoders are frozen (their
//! outputs come cached from [`super::clips`]) unless `train_encoders` asks for them too
//! ([`Trainer::with_encoders`]: small models); the causal Q-Former and its LLM projection are
//! trained; the LLM is frozen, carries LoRA pairs, or is trained whole. The loss is
//! next-token cross-entropy on the answer tokens only (system prompt, question and AV
//! positions masked, as LLaVA/FAVOR do), averaged over the step's answer tokens, plus
//! `diversity_loss` × the mean off-diagonal cosine similarity of the Q-Former's output
//! tokens. AdamW, linear warm-up then cosine (or constant), global-norm clipping, gradient
//! accumulation.
//!
//! Determinism: the data order of epoch `e` is a permutation seeded by `seed + e`, the LoRA
//! dropout of a step is seeded by `(seed, step)`, so everything a step does follows from the
//! step number, the weights and the optimizer moments. A resumed run loads exactly those
//! and continues bit for bit (on the same machine and build).
//!
//! Output directory (every file written to a temporary name, then renamed):
//! ```text
//! train.json          what was trained (refuses an output holding a different model)
//! qformer/            config.json + model.safetensors (models/QFORMER_LAYOUT.md)
//! adapter/            PEFT LoRA adapter (train_llm = "lora")
//! audio/, vision/     the trained encoders in their HF layout (train_encoders = true)
//! llm/                full HF checkpoint + tokenizer (train_llm = "full")
//! state/              trainer.safetensors: weights, AdamW moments, step (for --resume)
//! best/               the outputs at the best validation accuracy
//! train_log.jsonl     one line per step (loss, lr, grad norm) and per evaluation
//! train_curves.png    loss and validation accuracy curves, redrawn at every evaluation
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sensorium_engine::scene::Labels;

use super::clips::{ClipExtractor, ClipFeatures};
use super::config::{Schedule, TrainConfig, TrainLlm};
use super::data::{Sample, Turn};
use super::encoders::TrainableEncoders;
use super::eval::normalise_answer;
use super::labels::LabelHead;
use super::lora::LoraParams;
use super::{replace_dir, TrainError};
use crate::checkpoint::Weights;
use crate::distill::optim::{AdamState, AdamW};
use crate::llm::model::LoraDropout;
use crate::llm::{Decoder, DecoderConfig, LlmConfig, LlmTokenizer, TokenLayout};
use crate::qformer::{FrameInput, QFormer, QFormerBackend, QFormerConfig, SlotContext};
use crate::tensor_file;

/// Where the Q-Former's first weights come from.
#[derive(Clone, Debug)]
pub enum QFormerInit {
    /// A Q-Former directory (`init_qformer` or `[models] qformer`).
    Dir(PathBuf),
    /// Seeded random weights N(0, std) of this shape.
    Random {
        cfg: QFormerConfig,
        seed: u64,
        std: f32,
    },
}

/// One learnt answer: a clip's windows, a question, the answer's tokens.
#[derive(Clone, Debug)]
pub struct Example {
    pub clip: Arc<ClipFeatures>,
    /// Indices into `clip.windows`, oldest first (at most `llm.context_windows`).
    pub windows: Vec<usize>,
    pub task: String,
    pub question: String,
    pub answer: String,
    /// The question turn's tokens (template applied).
    pub question_ids: Vec<u32>,
    /// The answer's tokens followed by the end-of-turn token.
    pub answer_ids: Vec<u32>,
    pub origin: String,
    /// The window's facts for the auxiliary label loss (scene examples; see
    /// [`Trainer::with_labels`]).
    pub labels: Option<Arc<Labels>>,
}

/// What [`Trainer::run`] reports at the end.
#[derive(Clone, Debug, Default)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub val_accuracy: Option<f64>,
    pub best_accuracy: Option<f64>,
    pub seconds: f64,
    pub samples_per_s: f64,
    pub tokens_per_s: f64,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean cross-entropy per answer token (plus the diversity term).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// Answer tokens learnt.
    pub tokens: usize,
    /// The auxiliary label loss's mean over the step's examples (when it is on).
    pub labels_loss: Option<f64>,
}

/// One evaluation.
#[derive(Clone, Debug)]
pub struct EvalPoint {
    pub loss: f64,
    pub correct: usize,
    pub total: usize,
}

impl EvalPoint {
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up over `warmup` steps, then
/// cosine to 0.
pub(super) fn warmup_cosine(lr: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = (step - warmup) as f64 / span;
    lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}

/// The trainable model: Q-Former (+ LoRA or a trainable LLM) with its optimizer.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub llm_cfg: LlmConfig,
    pub qformer: QFormer,
    qvars: Vec<(String, Var)>,
    pub decoder: Decoder,
    pub tokenizer: LlmTokenizer,
    pub layout: TokenLayout,
    /// The token every answer ends with: the template's end-of-turn (ChatML `<|im_end|>`).
    answer_end: u32,
    lora: Option<LoraParams>,
    /// Every LLM weight as a variable (`train_llm = "full"`).
    llm_vars: Option<Vec<(String, Var)>>,
    opt: AdamW,
    pub step: u64,
    output: PathBuf,
    /// Best validation accuracy seen (for `best/`).
    best: Option<f64>,
    /// The current epoch's example order (epoch, permutation), made when first needed.
    order: Option<(u64, Vec<usize>)>,
    /// The encoders as variables (`train_encoders`): clips then carry the encoders' inputs
    /// and every step runs the encoders in the graph.
    encoders: Option<TrainableEncoders>,
    /// The auxiliary label head and its loss weight ([`Self::with_labels`]).
    labels: Option<(LabelHead, f64)>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Output {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn llm_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Llm(crate::llm::LlmError::Checkpoint {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn save_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TrainError> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    let tmp = path.with_extension("tmp-write");
    candle_core::safetensors::save(&map, &tmp).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// A Q-Former directory's config and f32 tensors by name (names and shapes are checked
/// when the trainable model is built from them).
fn qformer_tensors(dir: &Path) -> Result<(QFormerConfig, HashMap<String, Tensor>), TrainError> {
    let cfg = QFormer::load_config(dir)?;
    let mut out = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    for f in files {
        for (n, t) in candle_core::safetensors::load(&f, &Device::Cpu)? {
            out.insert(n, t.to_dtype(DType::F32)?);
        }
    }
    Ok((cfg, out))
}

impl Trainer {
    /// Builds the trainable model. `llm_cfg.model` must be a dense (safetensors) HF
    /// directory: quantised weights have no gradient path.
    pub fn new(
        cfg: TrainConfig,
        llm_cfg: LlmConfig,
        init: QFormerInit,
        output: PathBuf,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        let dev = Device::Cpu;
        let model_dir = llm_cfg.model.clone();
        if !model_dir.is_dir() {
            return Err(TrainError::Config {
                field: "llm.model".into(),
                message: format!(
                    "{}: training needs a Hugging Face model directory (safetensors); quantised GGUF weights cannot be trained through",
                    model_dir.display()
                ),
            });
        }
        let dcfg = DecoderConfig::from_hf_file(&model_dir.join("config.json"))?;
        let tok_path = llm_cfg
            .tokenizer
            .clone()
            .unwrap_or_else(|| model_dir.join("tokenizer.json"));
        let tokenizer = LlmTokenizer::from_file(&tok_path)?;
        let files = vec![model_dir.join("model.safetensors")];
        let (mut decoder, llm_vars) = match cfg.train_llm {
            TrainLlm::Full => {
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
                let d = Decoder::from_var_builder(dcfg.clone(), vb, llm_cfg.max_context_tokens)
                    .map_err(|e| llm_err(&model_dir, e))?;
                let mut loaded: HashMap<String, Tensor> = HashMap::new();
                for f in &files {
                    loaded.extend(
                        crate::checkpoint::load_safetensors(f, &dev).map_err(|e| llm_err(f, e))?,
                    );
                }
                let mut vars: Vec<(String, Var)> = varmap
                    .data()
                    .lock()
                    .map_err(|_| llm_err(&model_dir, "variable map poisoned"))?
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                vars.sort_by(|a, b| a.0.cmp(&b.0));
                for (n, v) in &vars {
                    let t = loaded
                        .get(n)
                        .ok_or_else(|| llm_err(&files[0], format!("missing tensor {n:?}")))?;
                    v.set(&t.to_dtype(DType::F32)?)
                        .map_err(|e| llm_err(&files[0], format!("{n}: {e}")))?;
                }
                (d, Some(vars))
            }
            _ => {
                // SAFETY: read-only mmap of the checkpoint for the length of the load.
                let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev) }
                    .map_err(|e| llm_err(&model_dir, e))?;
                let d = Decoder::from_var_builder(dcfg.clone(), vb, llm_cfg.max_context_tokens)
                    .map_err(|e| llm_err(&model_dir, e))?;
                (d, None)
            }
        };
        let lora = match cfg.train_llm {
            TrainLlm::Lora => {
                let l = LoraParams::init(&decoder, &cfg.lora, cfg.seed)?;
                l.attach(&mut decoder)?;
                Some(l)
            }
            _ => None,
        };
        let text_layout = llm_cfg.template.resolve()?;
        let layout = TokenLayout::new(
            &text_layout,
            &tokenizer,
            dcfg.bos_token_id,
            &dcfg.eos_token_ids,
        )?;
        let answer_end = text_layout
            .stop
            .first()
            .and_then(|s| tokenizer.token_id(s))
            .or(layout.stop_ids.first().copied())
            .ok_or_else(|| TrainError::Config {
                field: "llm.template".into(),
                message: "the template's end-of-turn token is not in the tokenizer's vocabulary: answers could not be taught to stop".into(),
            })?;

        let (qcfg, tensors, origin) = match init {
            QFormerInit::Dir(d) => {
                let (c, t) = qformer_tensors(&d)?;
                (c, t, d.join("model.safetensors"))
            }
            QFormerInit::Random { cfg, seed, std } => {
                cfg.validate().map_err(|m| TrainError::Config {
                    field: "models".into(),
                    message: m,
                })?;
                let t = crate::qformer::model::random_tensors(&cfg, seed, std, &dev)?;
                (cfg, t, PathBuf::from("<random qformer>"))
            }
        };
        if qcfg.llm_hidden_size != dcfg.hidden_size {
            return Err(TrainError::Config {
                field: "models.projection".into(),
                message: format!(
                    "the Q-Former projects to width {}, the LLM's hidden_size is {}",
                    qcfg.llm_hidden_size, dcfg.hidden_size
                ),
            });
        }
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut qvars = Vec::with_capacity(names.len());
        for n in names {
            qvars.push((n.clone(), Var::from_tensor(&tensors[n])?));
        }
        let vt: HashMap<String, Tensor> = qvars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let qformer = QFormer::from_weights(qcfg, &Weights::from_tensors(vt, &origin, &dev))?;

        let mut all: Vec<Var> = qvars.iter().map(|(_, v)| v.clone()).collect();
        if let Some(l) = &lora {
            all.extend(l.vars().into_iter().map(|(_, v)| v));
        }
        if let Some(v) = &llm_vars {
            all.extend(v.iter().map(|(_, v)| v.clone()));
        }
        let opt = AdamW::new(
            all,
            ParamsAdamW {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )?;
        Ok(Self {
            cfg,
            llm_cfg,
            qformer,
            qvars,
            decoder,
            tokenizer,
            answer_end,
            layout,
            lora,
            llm_vars,
            opt,
            step: 0,
            output,
            best: None,
            order: None,
            encoders: None,
            labels: None,
        })
    }

    /// Trains the encoders too (`train_encoders`): their variables join the optimizer, clips
    /// captured with [`ClipExtractor::inputs_only`] are encoded in the graph, and `audio/`
    /// and `vision/` are written beside `qformer/`. Call before [`Self::load_state`].
    pub fn with_encoders(mut self, encoders: TrainableEncoders) -> Result<Self, TrainError> {
        self.encoders = Some(encoders);
        self.reset_optimizer()?;
        Ok(self)
    }

    /// Adds the auxiliary label loss (weight `weight`): a linear head reads `n` window facts
    /// (e.g. [`sensorium_engine::scene::LABELS`]) from the last window's query tokens, and
    /// examples that carry [`Example::labels`] add its masked binary cross-entropy to the
    /// step's loss. The encoders and the Q-Former thus learn from the world's facts directly,
    /// not only through the LLM. Call after [`Self::with_encoders`], before
    /// [`Self::load_state`].
    pub fn with_labels(mut self, n: usize, weight: f64) -> Result<Self, TrainError> {
        let c = &self.qformer.cfg;
        let head = LabelHead::new(c.num_query_tokens * c.hidden_size, n, self.cfg.seed)?;
        self.labels = Some((head, weight));
        self.reset_optimizer()?;
        Ok(self)
    }

    /// A fresh AdamW over every trainable variable (after variables were added).
    fn reset_optimizer(&mut self) -> Result<(), TrainError> {
        let vars = self.named_vars().into_iter().map(|(_, v)| v).collect();
        self.opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: self.cfg.lr,
                weight_decay: self.cfg.weight_decay,
                ..Default::default()
            },
        )?;
        Ok(())
    }

    /// The trainable encoders, when they are trained.
    pub fn encoders(&self) -> Option<&TrainableEncoders> {
        self.encoders.as_ref()
    }

    /// Every trainable variable with its name (`qformer.…`, `lora.…`, `llm.…`).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .qvars
            .iter()
            .map(|(n, x)| (format!("qformer.{n}"), x.clone()))
            .collect();
        if let Some(l) = &self.lora {
            v.extend(l.vars().into_iter().map(|(n, x)| (format!("lora.{n}"), x)));
        }
        if let Some(l) = &self.llm_vars {
            v.extend(l.iter().map(|(n, x)| (format!("llm.{n}"), x.clone())));
        }
        if let Some(e) = &self.encoders {
            v.extend(e.vars());
        }
        if let Some((h, _)) = &self.labels {
            v.push(("labels.weight".into(), h.weight.clone()));
            v.push(("labels.bias".into(), h.bias.clone()));
        }
        v
    }

    /// Turns samples into examples (one per gpt turn); decodes through `extractor`.
    pub fn examples(
        &self,
        samples: &[Sample],
        extractor: &ClipExtractor,
    ) -> Result<Vec<Example>, TrainError> {
        let mut out = Vec::new();
        let bar = crate::progress::bar(samples.len() as u64, "clip features");
        for s in samples {
            bar.inc(1);
            let clip = extractor.features(s)?;
            let mut windows = clip.windows_in(s.start_s, s.end_s);
            if windows.is_empty() {
                return Err(TrainError::Manifest {
                    origin: s.origin.clone(),
                    message: format!(
                        "no window of {} lies in [{:?}, {:?}) s",
                        s.media.files()[0].display(),
                        s.start_s,
                        s.end_s
                    ),
                });
            }
            let keep = self.llm_cfg.context_windows;
            if windows.len() > keep {
                windows.drain(..windows.len() - keep);
            }
            for t in &s.turns {
                out.push(self.example(clip.clone(), windows.clone(), &s.task, &s.origin, t)?);
            }
        }
        Ok(out)
    }

    /// One example: `turn` about `windows` (indices into `clip.windows`, oldest first),
    /// tokenised for this LLM and template; the answer is taught to end with the template's
    /// end-of-turn token. What any example source (manifest, generator) builds on.
    pub fn example(
        &self,
        clip: Arc<ClipFeatures>,
        windows: Vec<usize>,
        task: &str,
        origin: &str,
        turn: &Turn,
    ) -> Result<Example, TrainError> {
        let mut answer_ids = self.tokenizer.encode(&turn.answer)?;
        answer_ids.push(self.answer_end);
        Ok(Example {
            clip,
            windows,
            task: task.to_owned(),
            question: turn.question.clone(),
            answer: turn.answer.clone(),
            question_ids: self.layout.question_ids(&self.tokenizer, &turn.question)?,
            answer_ids,
            origin: origin.to_owned(),
            labels: None,
        })
    }

    /// The Q-Former's output for each window of `ex`, exactly as the streaming path computes
    /// it for that window: `(hidden [Q, H], projected [Q, llm])`.
    pub fn av_tokens(&self, ex: &Example) -> Result<Vec<(Tensor, Tensor)>, TrainError> {
        let n = ex.clip.frames.len() as u64;
        let encoded = self.encode_frames(ex)?;
        let mut out = Vec::new();
        for &wi in &ex.windows {
            let w = &ex.clip.windows[wi];
            let k = w.valid.len() as u64;
            let end = w.first + k;
            let lo = w.first.saturating_sub(self.history_frames());
            let mut frames = Vec::with_capacity((end - lo) as usize);
            let mut valid = Vec::with_capacity((end - lo) as usize);
            for j in lo..end {
                let v = if j < w.first {
                    j < n
                } else {
                    w.valid[(j - w.first) as usize] && j < n
                };
                valid.push(v);
                frames.push(match (v, &encoded) {
                    (false, _) => FrameInput::default(),
                    (true, Some(e)) => e.get(&j).cloned().unwrap_or_default(),
                    (true, None) => ex.clip.frames[j as usize].clone(),
                });
            }
            let o = self
                .qformer
                .forward_sequence(&frames, &valid, lo, k as usize)?;
            out.push((o.hidden.squeeze(0)?, o.projected.squeeze(0)?));
        }
        Ok(out)
    }

    /// Frames before a window that its slots still see (the causal Q-Former's lookback
    /// reaches `lookback - 1` frames back per layer).
    fn history_frames(&self) -> u64 {
        let c = &self.qformer.cfg;
        match c.context {
            SlotContext::Lookback => (c.num_hidden_layers * c.lookback.saturating_sub(1)) as u64,
            SlotContext::Window => 0,
        }
    }

    /// With trained encoders, the features of every frame `ex`'s windows read (their
    /// lookback included), encoded once in the graph; `None` when the clip carries
    /// features already.
    fn encode_frames(&self, ex: &Example) -> Result<Option<HashMap<u64, FrameInput>>, TrainError> {
        if ex.clip.inputs.is_empty() {
            return Ok(None);
        }
        let Some(enc) = &self.encoders else {
            return Err(TrainError::Config {
                field: "train.train_encoders".into(),
                message: format!(
                    "{}: the clip carries encoder inputs but no encoders are trained",
                    ex.origin
                ),
            });
        };
        let history = self.history_frames();
        let n = ex.clip.inputs.len() as u64;
        let mut idx: Vec<u64> = Vec::new();
        for &wi in &ex.windows {
            let w = &ex.clip.windows[wi];
            let end = (w.first + w.valid.len() as u64).min(n);
            idx.extend(w.first.saturating_sub(history)..end);
        }
        idx.sort_unstable();
        idx.dedup();
        let inputs: Vec<_> = idx.iter().map(|&j| &ex.clip.inputs[j as usize]).collect();
        let out = enc.encoder.encode_inputs(&inputs)?;
        Ok(Some(
            idx.into_iter()
                .zip(out)
                .map(|(j, f)| {
                    (
                        j,
                        FrameInput {
                            audio: f.audio,
                            visual: f.visual,
                        },
                    )
                })
                .collect(),
        ))
    }

    fn embed(&self, ids: &[u32]) -> Result<Option<Tensor>, TrainError> {
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.decoder.embed(ids)?))
    }

    /// The prompt's embeddings as `sensorium run` lays it out: prefix, each window wrapped
    /// around its AV tokens, the question turn.
    pub fn prompt_embeds(
        &self,
        ex: &Example,
        av: &[(Tensor, Tensor)],
    ) -> Result<Tensor, TrainError> {
        let mut parts: Vec<Tensor> = Vec::new();
        parts.extend(self.embed(&self.layout.prefix)?);
        for (_, p) in av {
            parts.extend(self.embed(&self.layout.window_before)?);
            parts.push(p.to_dtype(self.decoder.dtype())?);
            parts.extend(self.embed(&self.layout.window_after)?);
        }
        parts.extend(self.embed(&ex.question_ids)?);
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// One example's training input (prompt, then the answer shifted right: teacher
    /// forcing) and the prompt's length.
    fn train_input(
        &self,
        ex: &Example,
        av: &[(Tensor, Tensor)],
    ) -> Result<(Tensor, usize), TrainError> {
        let prompt = self.prompt_embeds(ex, av)?;
        let p = prompt.dim(0)?;
        let m = ex.answer_ids.len();
        let mut parts = vec![prompt];
        parts.extend(self.embed(&ex.answer_ids[..m - 1])?);
        Ok((Tensor::cat(&parts, 0)?, p))
    }

    /// The mean diversity term over the Q-Former outputs `av` of one example's windows.
    fn diversity_of(av: &[(Tensor, Tensor)]) -> Result<Tensor, TrainError> {
        let div = av
            .iter()
            .map(|(h, _)| diversity(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::stack(&div, 0)?.mean_all()?)
    }

    /// Summed answer-token cross-entropy and the diversity term of one example whose
    /// windows' Q-Former outputs are `av`.
    fn example_loss(
        &self,
        ex: &Example,
        av: &[(Tensor, Tensor)],
        dropout: Option<&mut LoraDropout>,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let (input, p) = self.train_input(ex, av)?;
        let m = ex.answer_ids.len();
        let logits = self.decoder.forward_train(&input, dropout)?;
        let rows = logits.narrow(0, p - 1, m)?;
        let targets = Tensor::new(ex.answer_ids.as_slice(), &Device::Cpu)?.unsqueeze(1)?;
        let logp = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
        let nll = logp.gather(&targets, 1)?.sum_all()?.neg()?;
        Ok((nll, Self::diversity_of(av)?))
    }

    /// `examples`' share of a step's loss: their answer cross-entropy over the step's
    /// `tokens`, plus the diversity and label terms over the step's `n` examples. A run of
    /// consecutive examples about the same window(s) (a sample's turns, a scene window's
    /// questions) encodes them and runs the Q-Former once; every answer goes through the
    /// LLM in one padded batch.
    fn partial_loss(
        &self,
        examples: &[&Example],
        tokens: usize,
        n: usize,
        dropout: Option<&mut LoraDropout>,
    ) -> Result<(Tensor, f64), TrainError> {
        let mut terms: Vec<Tensor> = Vec::new();
        let mut labels_sum = 0f64;
        let mut inputs = Vec::with_capacity(examples.len());
        let mut spans = Vec::with_capacity(examples.len());
        let mut targets: Vec<u32> = Vec::new();
        let mut i = 0;
        while i < examples.len() {
            let ex = examples[i];
            let g = examples[i..]
                .iter()
                .take_while(|e| same_windows(e, ex))
                .count();
            let av = self.av_tokens(ex)?;
            let share = g as f64 / n as f64;
            if self.cfg.diversity_loss > 0.0 {
                terms.push((Self::diversity_of(&av)? * (self.cfg.diversity_loss * share))?);
            }
            if let (Some((head, w)), Some(labels), Some((hidden, _))) =
                (&self.labels, &ex.labels, av.last())
            {
                let ll = head.loss(
                    &hidden.flatten_all()?.unsqueeze(0)?,
                    &labels.target,
                    &labels.mask,
                )?;
                labels_sum += ll.to_scalar::<f32>()? as f64 * g as f64;
                terms.push((ll * (*w * share))?);
            }
            for e in &examples[i..i + g] {
                let (input, p) = self.train_input(e, &av)?;
                inputs.push(input);
                spans.push((p, e.answer_ids.len()));
                targets.extend_from_slice(&e.answer_ids);
            }
            i += g;
        }
        if inputs.is_empty() {
            return Err(TrainError::Config {
                field: "train.manifest".into(),
                message: "no examples".into(),
            });
        }
        let logits = self.decoder.forward_train_batch(&inputs, dropout)?;
        let rows = spans
            .iter()
            .enumerate()
            .map(|(b, &(p, m))| logits.get(b)?.narrow(0, p - 1, m))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let rows = Tensor::cat(&rows, 0)?;
        let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?.unsqueeze(1)?;
        let logp = candle_nn::ops::log_softmax(&rows, D::Minus1)?;
        let nll = (logp.gather(&targets, 1)?.sum_all()?.neg()? / tokens as f64)?;
        let total = terms.into_iter().try_fold(nll, |acc, t| acc + t)?;
        Ok((total, labels_sum))
    }

    /// The loss of a set of examples as one step computes it (answer-token mean
    /// cross-entropy + diversity term), without dropout: what the gradient tests probe.
    pub fn loss(&self, examples: &[&Example]) -> Result<Tensor, TrainError> {
        let tokens: usize = examples.iter().map(|e| e.answer_ids.len()).sum();
        Ok(self.partial_loss(examples, tokens, examples.len(), None)?.0)
    }

    /// Learning rate at `step` (0-based).
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let c = &self.cfg;
        match c.schedule {
            Schedule::Constant if step >= c.warmup_steps => c.lr,
            _ => warmup_cosine(c.lr, step, c.warmup_steps, total),
        }
    }

    /// Total optimizer steps for `n` training examples.
    pub fn total_steps(&self, n: usize) -> u64 {
        let per_step = (self.cfg.batch * self.cfg.grad_accum) as u64;
        match (self.cfg.steps, self.cfg.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => (e * n as u64).div_ceil(per_step),
            (None, None) => (n as u64).div_ceil(per_step),
        }
    }

    /// Index of the example at position `c` of the endless epoch-by-epoch order.
    fn example_at(&mut self, c: u64, train: &[Example]) -> usize {
        let n = train.len();
        let epoch = c / n as u64;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.cfg.seed.wrapping_add(epoch));
            let v = if self.cfg.group_windows {
                let mut runs = window_runs(train);
                runs.shuffle(&mut rng);
                runs.into_iter().flatten().collect()
            } else {
                let mut v: Vec<usize> = (0..n).collect();
                v.shuffle(&mut rng);
                v
            };
            self.order = Some((epoch, v));
        }
        self.order
            .as_ref()
            .map_or(0, |(_, v)| v[(c % n as u64) as usize])
    }

    /// Indices into `train` of the `batch * grad_accum` examples the next step learns.
    pub fn step_examples(&mut self, train: &[Example]) -> Vec<usize> {
        let per = (self.cfg.batch * self.cfg.grad_accum) as u64;
        let base = self.step * per;
        (0..per).map(|i| self.example_at(base + i, train)).collect()
    }

    /// One optimizer step over `batch * grad_accum` examples.
    pub fn train_step(&mut self, train: &[Example], total: u64) -> Result<StepStats, TrainError> {
        let b = self.cfg.batch;
        let idx = self.step_examples(train);
        let tokens: usize = idx.iter().map(|i| train[*i].answer_ids.len()).sum();
        let lr = self.lr_at(self.step, total);
        self.opt.set_learning_rate(lr);
        let mut dropout =
            (self.lora.is_some() && self.cfg.lora.dropout > 0.0).then(|| LoraDropout {
                p: self.cfg.lora.dropout as f32,
                rng: rand::rngs::StdRng::seed_from_u64(
                    self.cfg.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ),
            });
        let vars = self.named_vars();
        let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut last: Option<GradStore> = None;
        let mut loss_sum = 0f64;
        let mut labels_sum = 0f64;
        for micro in idx.chunks(b) {
            let exs: Vec<&Example> = micro.iter().map(|&i| &train[i]).collect();
            let (l, ls) = self.partial_loss(&exs, tokens, idx.len(), dropout.as_mut())?;
            labels_sum += ls;
            loss_sum += l.to_scalar::<f32>()? as f64;
            let grads = l.backward()?;
            for (slot, (_, v)) in acc.iter_mut().zip(&vars) {
                if let Some(g) = grads.get(v.as_tensor()) {
                    *slot = Some(match slot.take() {
                        Some(s) => (s + g)?,
                        None => g.clone(),
                    });
                }
            }
            last = Some(grads);
        }
        let mut grads = last.ok_or_else(|| TrainError::Config {
            field: "train.batch".into(),
            message: "an empty step".into(),
        })?;
        let mut sq = 0f64;
        for g in acc.iter().flatten() {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let norm = sq.sqrt();
        let scale = if self.cfg.clip_grad_norm > 0.0 && norm > self.cfg.clip_grad_norm {
            self.cfg.clip_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        for (g, (_, v)) in acc.into_iter().zip(&vars) {
            if let Some(g) = g {
                let g = if scale != 1.0 { (g * scale)? } else { g };
                grads.insert(v.as_tensor(), g);
            } else {
                grads.remove(v.as_tensor());
            }
        }
        self.opt.step(&grads)?;
        self.step += 1;
        Ok(StepStats {
            loss: loss_sum,
            grad_norm: norm,
            lr,
            tokens,
            labels_loss: self.labels.is_some().then(|| labels_sum / idx.len() as f64),
        })
    }

    /// Greedy answer to `ex` with the current weights (the same prompt as serving).
    pub fn greedy_answer(&mut self, ex: &Example) -> Result<String, TrainError> {
        let av = self.av_tokens(ex)?;
        let prompt = self.prompt_embeds(ex, &av)?;
        self.greedy(&prompt)
    }

    /// Greedy decoding after `prompt` (the answer service's stop rules). Not the service's
    /// `TextGenerator::generate`: that reuses cached prefix K/V across answers, which would go stale
    /// here, where the weights change between evaluations.
    fn greedy(&mut self, prompt: &Tensor) -> Result<String, TrainError> {
        let prompt = prompt.detach();
        let mut logits = self.decoder.forward_embeds(&prompt, 0, false)?;
        let mut ids: Vec<u32> = Vec::new();
        for _ in 0..self.llm_cfg.max_tokens {
            let row = logits.detach().squeeze(0)?.to_vec1::<f32>()?;
            let next = crate::llm::argmax(&row);
            if self.layout.stop_ids.contains(&next) {
                break;
            }
            ids.push(next);
            let text = self.tokenizer.decode(&ids)?;
            if let Some(cut) = self
                .layout
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                return Ok(text[..cut].trim().to_owned());
            }
            let pos = self.decoder.cache_len();
            if pos >= self.decoder.cache_capacity() {
                break;
            }
            let e = self.decoder.embed(&[next])?.detach();
            logits = self.decoder.forward_embeds(&e, pos, false)?;
        }
        Ok(self.tokenizer.decode(&ids)?.trim().to_owned())
    }

    /// Validation loss (mean over answer tokens) and exact-match accuracy.
    pub fn evaluate(&mut self, val: &[Example]) -> Result<EvalPoint, TrainError> {
        let mut nll = 0f64;
        let mut tokens = 0usize;
        let mut correct = 0;
        for ex in val {
            let av = self.av_tokens(ex)?;
            let (l, _) = self.example_loss(ex, &av, None)?;
            nll += l.to_scalar::<f32>()? as f64;
            tokens += ex.answer_ids.len();
            let a = self.greedy(&self.prompt_embeds(ex, &av)?)?;
            if normalise_answer(&a) == normalise_answer(&ex.answer) {
                correct += 1;
            }
        }
        Ok(EvalPoint {
            loss: nll / tokens.max(1) as f64,
            correct,
            total: val.len(),
        })
    }

    fn fingerprint(&self) -> serde_json::Value {
        let canon = |p: &Path| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.to_owned())
                .display()
                .to_string()
        };
        serde_json::json!({
            "format": "sensorium-train 1",
            "llm": canon(&self.llm_cfg.model),
            "train_llm": self.cfg.train_llm,
            "lora": if self.lora.is_some() { serde_json::to_value(&self.cfg.lora).ok() } else { None },
            "qformer": self.qformer.cfg,
            "train_encoders": self.encoders.as_ref().map(|e| e.sources().iter().map(|(k, p)| serde_json::json!({"kind": k, "source": canon(p)})).collect::<Vec<_>>()),
        })
    }

    /// Checks the output directory: a fresh one, or one this same model trained into.
    /// Without `resume`, an existing run's state is refused rather than overwritten.
    pub fn prepare_output(&self, resume: bool) -> Result<(), TrainError> {
        let out = &self.output;
        let meta = out.join("train.json");
        if meta.is_file() {
            let text = std::fs::read_to_string(&meta).map_err(|e| io_err(&meta, e))?;
            let old: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| io_err(&meta, e))?;
            if old != self.fingerprint() {
                return Err(TrainError::Output {
                    path: out.clone(),
                    message: "holds a different model (LLM, Q-Former shape or train_llm differ); choose another --output".into(),
                });
            }
            if !resume && out.join("state").exists() {
                return Err(TrainError::Output {
                    path: out.clone(),
                    message: "holds a training run of this model: pass --resume to continue it, or choose another --output".into(),
                });
            }
        } else if out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|e| io_err(out, e))?
                .next()
                .is_some()
        {
            return Err(TrainError::Output {
                path: out.clone(),
                message: "exists and is not a sensorium training output; choose an empty or new directory".into(),
            });
        }
        if resume && !out.join("state/trainer.safetensors").is_file() {
            return Err(TrainError::State {
                path: out.join("state"),
                message: "no resumable state to continue (train without --resume first)".into(),
            });
        }
        std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
        let text =
            serde_json::to_string_pretty(&self.fingerprint()).map_err(|e| io_err(&meta, e))?;
        tensor_file::write_atomic(&meta, text.as_bytes()).map_err(|e| io_err(&meta, e))
    }

    /// Writes `qformer/` (+ `adapter/` or `llm/`) into `dir`.
    fn save_model(&self, dir: &Path) -> Result<(), TrainError> {
        let qdir = dir.join("qformer");
        replace_dir(&qdir, |d| {
            let mut v = serde_json::to_value(&self.qformer.cfg).map_err(|e| io_err(d, e))?;
            v["model_type"] = "causal_qformer".into();
            std::fs::write(d.join("config.json"), v.to_string()).map_err(|e| io_err(d, e))?;
            let t: Vec<(String, Tensor)> = self
                .qvars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            save_tensors(&d.join("model.safetensors"), &t)
        })?;
        if let Some(l) = &self.lora {
            replace_dir(&dir.join("adapter"), |d| l.save(d, &self.llm_cfg.model))?;
        }
        if let Some(e) = &self.encoders {
            e.save(dir)?;
        }
        if let Some(vars) = &self.llm_vars {
            replace_dir(&dir.join("llm"), |d| {
                let src = &self.llm_cfg.model;
                for f in [
                    "config.json",
                    "generation_config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                ] {
                    let from = if f == "tokenizer.json" {
                        self.llm_cfg
                            .tokenizer
                            .clone()
                            .unwrap_or_else(|| src.join(f))
                    } else {
                        src.join(f)
                    };
                    if from.is_file() {
                        std::fs::copy(&from, d.join(f)).map_err(|e| io_err(&from, e))?;
                    }
                }
                let mut t: Vec<(String, Tensor)> = vars
                    .iter()
                    .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                    .collect();
                // Tied embeddings are one variable; HF stores them once too.
                t.retain(|(n, _)| {
                    n != "lm_head.weight" || !self.decoder.config().tie_word_embeddings
                });
                save_tensors(&d.join("model.safetensors"), &t)
            })?;
        }
        Ok(())
    }

    /// Saves everything a resumed run needs (and the outputs) atomically.
    pub fn save_state(&self) -> Result<(), TrainError> {
        self.save_model(&self.output)?;
        let st = self.opt.state()?;
        let vars = self.named_vars();
        replace_dir(&self.output.join("state"), |d| {
            let mut t: Vec<(String, Tensor)> = vars
                .iter()
                .map(|(n, v)| (format!("w.{n}"), v.as_tensor().clone()))
                .collect();
            for (i, (m, v)) in st.m.iter().zip(&st.v).enumerate() {
                t.push((format!("m.{i}"), Tensor::new(m.as_slice(), &Device::Cpu)?));
                t.push((format!("v.{i}"), Tensor::new(v.as_slice(), &Device::Cpu)?));
            }
            t.push((
                "step".into(),
                Tensor::new(&[self.step as u32, st.step as u32], &Device::Cpu)?,
            ));
            save_tensors(&d.join("trainer.safetensors"), &t)
        })
    }

    /// Loads a state saved by [`Self::save_state`] for this same model.
    pub fn load_state(&mut self) -> Result<(), TrainError> {
        let path = self.output.join("state/trainer.safetensors");
        let bad = |m: String| TrainError::State {
            path: path.clone(),
            message: m,
        };
        let mut t =
            candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
        let vars = self.named_vars();
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (i, (n, var)) in vars.iter().enumerate() {
            let w = t
                .remove(&format!("w.{n}"))
                .ok_or_else(|| bad(format!("no weights for {n}: saved by a different model")))?;
            var.set(&w).map_err(|e| bad(format!("{n}: {e}")))?;
            let take =
                |t: &mut HashMap<String, Tensor>, k: String| -> Result<Vec<f32>, TrainError> {
                    t.remove(&k)
                        .ok_or_else(|| bad(format!("no optimizer moment {k}")))?
                        .to_vec1::<f32>()
                        .map_err(|e| bad(e.to_string()))
                };
            m.push(take(&mut t, format!("m.{i}"))?);
            v.push(take(&mut t, format!("v.{i}"))?);
        }
        let steps = t
            .remove("step")
            .ok_or_else(|| bad("no step".into()))?
            .to_vec1::<u32>()
            .map_err(|e| bad(e.to_string()))?;
        if steps.len() != 2 {
            return Err(bad("malformed step".into()));
        }
        self.opt
            .set_state(&AdamState {
                step: steps[1] as u64,
                m,
                v,
            })
            .map_err(|e| bad(e.to_string()))?;
        self.step = steps[0] as u64;
        Ok(())
    }

    /// Redraws `train_curves.png` from the whole log (so a resumed run's plot has its
    /// history too).
    fn plot(&self) -> Result<(), TrainError> {
        let path = self.output.join("train_log.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        let mut loss = Vec::new();
        let mut acc = Vec::new();
        for l in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            let Some(step) = v["step"].as_u64() else {
                continue;
            };
            if let Some(x) = v["loss"].as_f64() {
                loss.push((step, x));
            }
            if let Some(x) = v["val_accuracy"].as_f64() {
                acc.push((step, x));
            }
        }
        super::plot::write_curves(&self.output.join("train_curves.png"), &loss, &acc)
    }

    pub(super) fn log(&self, line: serde_json::Value) -> Result<(), TrainError> {
        let path = self.output.join("train_log.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        writeln!(f, "{line}").map_err(|e| io_err(&path, e))
    }

    /// Trains to the configured number of steps (continuing from `self.step`), evaluating,
    /// logging and saving on the way. `stop` (Ctrl-C) saves a resumable state and returns
    /// [`TrainError::Interrupted`]. `progress` is called after every step with
    /// `(step, total, loss, lr)`.
    pub fn run(
        &mut self,
        train: &[Example],
        val: &[Example],
        stop: &AtomicBool,
        progress: &mut dyn FnMut(u64, u64, f64, f64),
    ) -> Result<TrainSummary, TrainError> {
        if train.is_empty() {
            return Err(TrainError::Config {
                field: "train.manifest".into(),
                message: "no training examples".into(),
            });
        }
        let total = self.total_steps(train.len());
        let start = std::time::Instant::now();
        let first_step = self.step;
        let mut last_loss = f64::NAN;
        let mut samples = 0u64;
        let mut tokens = 0u64;
        let mut val_acc = None;
        while self.step < total {
            let st = self.train_step(train, total)?;
            last_loss = st.loss;
            samples += (self.cfg.batch * self.cfg.grad_accum) as u64;
            tokens += st.tokens as u64;
            let mut line = serde_json::json!({
                "step": self.step, "loss": st.loss, "lr": st.lr, "grad_norm": st.grad_norm,
            });
            if let Some(l) = st.labels_loss {
                line["labels_loss"] = l.into();
            }
            self.log(line)?;
            progress(self.step, total, st.loss, st.lr);
            let at_end = self.step == total;
            let eval_now = !val.is_empty()
                && (at_end
                    || (self.cfg.eval_every > 0 && self.step.is_multiple_of(self.cfg.eval_every)));
            if eval_now {
                let e = self.evaluate(val)?;
                val_acc = Some(e.accuracy());
                self.log(serde_json::json!({
                    "step": self.step, "val_loss": e.loss, "val_accuracy": e.accuracy(),
                    "val_correct": e.correct, "val_total": e.total,
                }))?;
                self.plot()?;
                if self.best.is_none_or(|b| e.accuracy() > b) {
                    self.best = Some(e.accuracy());
                    self.save_model(&self.output.join("best"))?;
                }
            }
            let save_now = at_end
                || (self.cfg.save_every > 0 && self.step.is_multiple_of(self.cfg.save_every));
            if save_now {
                self.save_state()?;
            }
            if stop.load(Ordering::SeqCst) && !at_end {
                if !save_now {
                    self.save_state()?;
                }
                return Err(TrainError::Interrupted { step: self.step });
            }
        }
        if first_step == total {
            // Nothing left to do (a finished run resumed): outputs are already there.
            self.save_model(&self.output)?;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok(TrainSummary {
            steps: self.step,
            final_loss: last_loss,
            val_accuracy: val_acc,
            best_accuracy: self.best,
            seconds: secs,
            samples_per_s: samples as f64 / secs.max(1e-9),
            tokens_per_s: tokens as f64 / secs.max(1e-9),
        })
    }
}

/// FAVOR's diversity term: mean off-diagonal cosine similarity of the rows of `h` `[Q, H]`.
/// Whether two examples are about the same window(s) of the same clip (so one encoder and
/// Q-Former pass serves both).
fn same_windows(a: &Example, b: &Example) -> bool {
    Arc::ptr_eq(&a.clip, &b.clip) && a.windows == b.windows
}

/// The runs of consecutive examples about the same window(s) of the same clip, as index
/// ranges in order.
fn window_runs(train: &[Example]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=train.len() {
        let split = i == train.len() || !same_windows(&train[i], &train[start]);
        if split {
            runs.push(start..i);
            start = i;
        }
    }
    runs
}

pub fn diversity(h: &Tensor) -> Result<Tensor, TrainError> {
    let q = h.dim(0)?;
    if q < 2 {
        return Ok(Tensor::zeros((), DType::F32, h.device())?);
    }
    let norm = h.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-8, f64::MAX)?;
    let u = h.broadcast_div(&norm)?;
    let s = u.matmul(&u.t()?)?;
    // The diagonal of U U^T is each row's squared norm.
    let off = (s.sum_all()? - u.sqr()?.sum_all()?)?;
    Ok((off / (q * (q - 1)) as f64)?)
}
