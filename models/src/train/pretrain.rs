//! The encoders' pretraining stage ([`Trainer::pretrain_encoders`]): the scene world's
//! per-frame labels read by linear heads ([`super::labels::LabelHead`]) from the vision
//! tower's slots and Whisper's tokens, many frames per step, before the answer training.

use std::sync::Arc;

use candle_core::{Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sensorium_engine::scene::{
    FrameLabels, LabelGroup, Labels, AUDIO_GROUPS, AUDIO_LABELS, VISION_GROUPS, VISION_LABELS,
};

use super::clips::ClipFeatures;
use super::labels::LabelHead;
use super::trainer::{warmup_cosine, Trainer};
use super::TrainError;
use crate::distill::optim::AdamW;
use crate::stage::EncodedFrame;

/// One frame of a training stream with what it shows and sounds like.
#[derive(Clone, Debug)]
pub struct FrameExample {
    pub clip: Arc<ClipFeatures>,
    /// Index into `clip.inputs`.
    pub frame: usize,
    pub labels: FrameLabels,
}

/// What [`Trainer::pretrain_encoders`] reports.
#[derive(Clone, Debug, Default)]
pub struct PretrainSummary {
    pub steps: u64,
    /// Mean label loss over the first and the last tenth of the steps.
    pub first_loss: f64,
    pub last_loss: f64,
    pub seconds: f64,
    pub frames_per_s: f64,
    /// The heads' accuracy on the held-out frames after the last step, per label part
    /// ([`VISION_GROUPS`], [`AUDIO_GROUPS`]; empty without held-out frames).
    pub held_out: Vec<PartAccuracy>,
}

/// How well a label part is read from the encoders' tokens on frames never trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct PartAccuracy {
    /// `vision.objects`, `audio.sound`, ...
    pub part: String,
    pub right: usize,
    pub scored: usize,
}

impl PartAccuracy {
    pub fn accuracy(&self) -> f64 {
        self.right as f64 / self.scored.max(1) as f64
    }
}

/// Flattens each frame's tokens (`[T, W]` each) into one row of a `[B, T * W]` batch.
fn rows(tokens: Vec<Tensor>) -> Result<Tensor, TrainError> {
    Ok(Tensor::stack(&tokens, 0)?.flatten_from(1)?)
}

impl Trainer {
    /// The encoders' pretraining stage: `steps` AdamW steps of `batch` frames each (drawn
    /// epoch by epoch, seeded), the vision tower's slots read by a linear head for the
    /// frame's [`VISION_LABELS`] and Whisper's tokens for its [`AUDIO_LABELS`]; learning rate
    /// `train.lr` with a 10% warm-up then cosine, `train.clip_grad_norm`. Only the encoders
    /// keep what they learnt (the heads are dropped). After the last step the heads read
    /// `held_out` (frames of streams never trained on) and the summary reports their accuracy
    /// per label part. Needs [`Self::with_encoders`].
    pub fn pretrain_encoders(
        &self,
        frames: &[FrameExample],
        held_out: &[FrameExample],
        steps: u64,
        batch: usize,
        progress: &mut dyn FnMut(u64, u64, f64),
    ) -> Result<PretrainSummary, TrainError> {
        let Some(enc) = self.encoders() else {
            return Err(TrainError::Config {
                field: "train.scenes.pretrain_steps".into(),
                message: "pretraining trains the encoders: set train.train_encoders = true".into(),
            });
        };
        if frames.is_empty() || batch == 0 {
            return Err(TrainError::Config {
                field: "train.scenes.pretrain_steps".into(),
                message: "no frames to pretrain on".into(),
            });
        }
        // Token shapes from one frame: which heads there are and how wide they read.
        let probe = enc
            .encoder
            .encode_inputs(&[&frames[0].clip.inputs[frames[0].frame]])?;
        let width = |t: &Option<Tensor>| t.as_ref().map(Tensor::elem_count);
        let seed = self.cfg.seed;
        let vision_head = width(&probe[0].visual)
            .map(|n| LabelHead::new(n, VISION_LABELS, seed ^ 0x715))
            .transpose()?;
        let audio_head = width(&probe[0].audio)
            .map(|n| LabelHead::new(n, AUDIO_LABELS, seed ^ 0xA0D))
            .transpose()?;
        let mut vars: Vec<Var> = enc.vars().into_iter().map(|(_, v)| v).collect();
        for h in vision_head.iter().chain(&audio_head) {
            vars.push(h.weight.clone());
            vars.push(h.bias.clone());
        }
        let heads: [Head; 2] = [
            (
                vision_head,
                |o| o.visual.clone(),
                |l| &l.vision,
                ("vision", &VISION_GROUPS),
            ),
            (
                audio_head,
                |o| o.audio.clone(),
                |l| &l.audio,
                ("audio", &AUDIO_GROUPS),
            ),
        ];
        let mut opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: self.cfg.lr,
                weight_decay: self.cfg.weight_decay,
                ..Default::default()
            },
        )?;
        let warmup = (steps / 10).max(1);
        let start = std::time::Instant::now();
        let mut order: Vec<usize> = Vec::new();
        let mut cursor = 0usize;
        let mut losses = Vec::with_capacity(steps as usize);
        for step in 0..steps {
            let lr = warmup_cosine(self.cfg.lr, step, warmup, steps);
            opt.set_learning_rate(lr);
            let mut pick = Vec::with_capacity(batch);
            while pick.len() < batch {
                if cursor == order.len() {
                    let epoch = (step as usize * batch + pick.len()) / frames.len();
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xF4A3E ^ epoch as u64);
                    order = (0..frames.len()).collect();
                    order.shuffle(&mut rng);
                    cursor = 0;
                }
                pick.push(&frames[order[cursor]]);
                cursor += 1;
            }
            let inputs: Vec<_> = pick.iter().map(|f| &f.clip.inputs[f.frame]).collect();
            let out = enc.encoder.encode_inputs(&inputs)?;
            let mut loss: Option<Tensor> = None;
            for (head, tokens, labels, _) in &heads {
                let Some(h) = head else { continue };
                let x = rows(out.iter().filter_map(tokens).collect())?;
                let (t, m): (Vec<f32>, Vec<f32>) = pick
                    .iter()
                    .flat_map(|f| {
                        let l = labels(&f.labels);
                        l.target.iter().zip(&l.mask)
                    })
                    .unzip();
                let l = h.loss(&x, &t, &m)?;
                loss = Some(match loss.take() {
                    Some(x) => (x + l)?,
                    None => l,
                });
            }
            let Some(loss) = loss else {
                break;
            };
            let value = loss.to_scalar::<f32>()? as f64;
            let mut grads = loss.backward()?;
            let mut sq = 0f64;
            for v in &vars {
                if let Some(g) = grads.get(v.as_tensor()) {
                    sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                }
            }
            let norm = sq.sqrt();
            let clip = self.cfg.clip_grad_norm;
            if clip > 0.0 && norm > clip {
                for v in &vars {
                    if let Some(g) = grads.remove(v.as_tensor()) {
                        grads.insert(v.as_tensor(), (g * (clip / (norm + 1e-6)))?);
                    }
                }
            }
            opt.step(&grads)?;
            losses.push(value);
            self.log(serde_json::json!({
                "pretrain_step": step + 1, "pretrain_loss": value, "lr": lr, "grad_norm": norm,
            }))?;
            progress(step + 1, steps, value);
        }
        let seconds = start.elapsed().as_secs_f64();
        let held_out = self.score_heads(&heads, held_out, batch)?;
        for p in &held_out {
            self.log(serde_json::json!({
                "pretrain_held_out": p.part, "right": p.right, "scored": p.scored,
                "accuracy": p.accuracy(),
            }))?;
        }
        let tenth = (losses.len() / 10).max(1);
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len().max(1) as f64;
        Ok(PretrainSummary {
            steps: losses.len() as u64,
            first_loss: mean(&losses[..tenth.min(losses.len())]),
            last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
            seconds,
            frames_per_s: (losses.len() * batch) as f64 / seconds.max(1e-9),
            held_out,
        })
    }

    /// The heads' accuracy per label part on `frames`, `batch` frames per forward pass.
    fn score_heads(
        &self,
        heads: &[Head],
        frames: &[FrameExample],
        batch: usize,
    ) -> Result<Vec<PartAccuracy>, TrainError> {
        let Some(enc) = self.encoders() else {
            return Ok(Vec::new());
        };
        let mut parts: Vec<PartAccuracy> = Vec::new();
        let mut add = |name: String, (right, scored): (usize, usize)| match parts
            .iter_mut()
            .find(|p| p.part == name)
        {
            Some(p) => {
                p.right += right;
                p.scored += scored;
            }
            None => parts.push(PartAccuracy {
                part: name,
                right,
                scored,
            }),
        };
        for chunk in frames.chunks(batch.max(1)) {
            let inputs: Vec<_> = chunk.iter().map(|f| &f.clip.inputs[f.frame]).collect();
            let out = enc.encoder.encode_inputs(&inputs)?;
            for (head, tokens, labels, (modality, groups)) in heads {
                let Some(h) = head else { continue };
                let x = rows(out.iter().filter_map(tokens).collect())?.detach();
                let logits: Vec<Vec<f32>> = h.logits(&x)?.to_vec2()?;
                for (f, scores) in chunk.iter().zip(&logits) {
                    for g in groups.iter() {
                        add(
                            format!("{modality}.{}", g.name),
                            g.score(scores, labels(&f.labels)),
                        );
                    }
                }
            }
        }
        Ok(parts)
    }
}

/// A label head with what it reads: the tokens it reads from a frame, the labels it learns,
/// and the parts it is scored by.
type Head = (
    Option<LabelHead>,
    fn(&EncodedFrame) -> Option<Tensor>,
    fn(&FrameLabels) -> &Labels,
    (&'static str, &'static [LabelGroup]),
);
