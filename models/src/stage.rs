//! Adapters from the models to the engine's stage traits: [`AvFrameEncoder`] (Whisper on a
//! synced frame's audio, CLIP/SigLIP on its RGB frame, batched across frames and streams,
//! each frame encoded once) and [`QFormerWindowModel`] (the causal Q-Former per window with
//! per-stream incremental caches; the projected LLM tokens go to an [`AvTokenSink`]).
//!
//! Metrics (the `metrics` facade): `sensorium_model_seconds{stage, part}` histogram per
//! batch, `sensorium_model_items_total{stage, part}` counter.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use sensorium_engine::frame::{FrameFeatures, StreamId, SyncedFrame, Window};
use sensorium_engine::model::{FrameEncoder, StageError, WindowModel};

use crate::audio::AudioEncoder;
use crate::distill::Extractors;
use crate::error::{stage_error, Result};
use crate::qformer::{FrameInput, QFormer, QFormerRunner, RunnerStream, RunnerWindow, StreamFrame};
use crate::tokens::{self, SlotMode};
use crate::vision::VisionEncoder;

/// What [`AvFrameEncoder`] attaches to each frame, and what it reads (the engine's types:
/// the frame stage's typed product is [`FrameFeatures`]).
pub use sensorium_engine::frame::{EncodedFrame, EncoderInput};

fn record(stage: &str, part: &'static str, start: Instant, items: usize) {
    let labels = [("stage", stage.to_string()), ("part", part.to_string())];
    metrics::histogram!("sensorium_model_seconds", &labels).record(start.elapsed().as_secs_f64());
    metrics::counter!("sensorium_model_items_total", &labels).increment(items as u64);
}

/// Frame encoder: Whisper and/or a vision tower, and the distillation's per-frame features
/// ([`Self::with_distill`]): each frame's whole product is computed once, here.
pub struct AvFrameEncoder {
    name: String,
    audio: Option<AudioEncoder>,
    vision: Option<VisionEncoder>,
    visual_slots: SlotMode,
    distill: Option<Extractors>,
}

impl AvFrameEncoder {
    /// `visual_slots` picks the per-frame visual tokens (e.g. `SlotMode::Pool(32)` for
    /// FAVOR's 32 slots, `All` for every patch, `Cls`). Audio keeps all Whisper frames; the
    /// Q-Former projects and pads them to its slot count.
    pub fn new(
        audio: Option<AudioEncoder>,
        vision: Option<VisionEncoder>,
        visual_slots: SlotMode,
    ) -> Self {
        Self {
            name: "encoder".into(),
            audio,
            vision,
            visual_slots,
            distill: None,
        }
    }

    /// Also computes each frame's distillation features with `extractors` (pooling the
    /// tokens just made where the extractor reads them), for the distillation stage.
    pub fn with_distill(mut self, extractors: Extractors) -> Self {
        self.distill = Some(extractors);
        self
    }

    /// The audio encoder, when configured.
    pub fn audio(&self) -> Option<&AudioEncoder> {
        self.audio.as_ref()
    }

    /// The vision encoder, when configured.
    pub fn vision(&self) -> Option<&VisionEncoder> {
        self.vision.as_ref()
    }

    /// The encoders' inputs for frames (same order): the log-mel of a frame's audio when
    /// it has audio longer than half an FFT window, the preprocessed pixels of its video
    /// frame when it has one. Everything before the first trainable weight.
    pub fn prepare(&self, frames: &[&SyncedFrame]) -> Result<Vec<EncoderInput>> {
        let mut out = vec![EncoderInput::default(); frames.len()];
        if let Some(enc) = &self.audio {
            for (o, f) in out.iter_mut().zip(frames) {
                if f.has_audio && f.audio.len() > crate::audio::mel::N_FFT / 2 {
                    o.mel = Some(enc.mel(&f.audio)?);
                }
            }
        }
        if let Some(enc) = &self.vision {
            for (o, f) in out.iter_mut().zip(frames) {
                if let (true, Some(v)) = (f.has_video, &f.video) {
                    let img = [(&v.rgb[..], v.width as usize, v.height as usize)];
                    o.pixels = Some(enc.pixels(&img)?.squeeze(0)?);
                }
            }
        }
        Ok(out)
    }

    /// Encodes prepared inputs into per-frame [`EncodedFrame`]s (same order), batching
    /// inputs of one shape. On training variables this is part of the training graph.
    pub fn encode_inputs(&self, inputs: &[&EncoderInput]) -> Result<Vec<EncodedFrame>> {
        let mut out = vec![EncodedFrame::default(); inputs.len()];
        if let Some(enc) = &self.audio {
            let start = Instant::now();
            let n = batched(
                inputs,
                |i| i.mel.as_ref(),
                |x| enc.encode_mel(x),
                |i, t| out[i].audio = Some(t),
            )?;
            record(&self.name, "audio", start, n);
        }
        if let Some(enc) = &self.vision {
            let start = Instant::now();
            let n = batched(
                inputs,
                |i| i.pixels.as_ref(),
                |x| enc.pixel_slots(x, self.visual_slots),
                |i, t| out[i].visual = Some(t),
            )?;
            record(&self.name, "vision", start, n);
        }
        Ok(out)
    }

    /// Encodes frames into per-frame [`EncodedFrame`]s (same order).
    pub fn encode_frames(&self, frames: &[&SyncedFrame]) -> Result<Vec<EncodedFrame>> {
        let inputs = self.prepare(frames)?;
        self.encode_inputs(&inputs.iter().collect::<Vec<_>>())
    }
}

/// Runs `encode` on the inputs `part` selects, stacked by shape (normally one batch), and
/// hands each row to `put` by input index; returns how many were encoded.
fn batched(
    inputs: &[&EncoderInput],
    part: impl Fn(&EncoderInput) -> Option<&Tensor>,
    encode: impl Fn(&Tensor) -> Result<Tensor>,
    mut put: impl FnMut(usize, Tensor),
) -> Result<usize> {
    let mut groups: Vec<(Vec<usize>, Vec<Tensor>)> = Vec::new();
    for (i, x) in inputs.iter().enumerate() {
        let Some(t) = part(x) else { continue };
        match groups.iter_mut().find(|(_, ts)| ts[0].dims() == t.dims()) {
            Some((idx, ts)) => {
                idx.push(i);
                ts.push(t.clone());
            }
            None => groups.push((vec![i], vec![t.clone()])),
        }
    }
    let mut n = 0;
    for (idx, ts) in groups {
        let y = encode(&Tensor::stack(&ts, 0)?)?;
        for (b, i) in idx.iter().enumerate() {
            put(*i, y.get(b)?);
        }
        n += idx.len();
    }
    Ok(n)
}

impl AvFrameEncoder {
    /// [`Self::encode_frames`] as the engine's per-frame [`FrameFeatures`].
    fn features(
        &self,
        frames: &[&SyncedFrame],
    ) -> std::result::Result<Vec<FrameFeatures>, StageError> {
        let mut enc = self
            .encode_frames(frames)
            .map_err(|e| stage_error(&self.name, e))?;
        if let Some(ex) = &self.distill {
            let start = Instant::now();
            for (e, f) in enc.iter_mut().zip(frames) {
                let tokens = FrameFeatures::Encoded(e.clone());
                e.distill = Some(
                    ex.frame(f, Some(&tokens))
                        .map_err(|err| StageError::new(&self.name, err))?,
                );
            }
            record(&self.name, "distill", start, frames.len());
        }
        Ok(enc.into_iter().map(FrameFeatures::Encoded).collect())
    }
}

impl FrameEncoder for AvFrameEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn encode(
        &mut self,
        frames: &[&SyncedFrame],
    ) -> std::result::Result<Vec<FrameFeatures>, StageError> {
        self.features(frames)
    }
}

/// A shared encoder: loaded once, used by several runtimes (e.g. one per training clip).
pub struct SharedFrameEncoder(pub Arc<AvFrameEncoder>);

impl FrameEncoder for SharedFrameEncoder {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn encode(
        &mut self,
        frames: &[&SyncedFrame],
    ) -> std::result::Result<Vec<FrameFeatures>, StageError> {
        self.0.features(frames)
    }
}

/// A frame "encoder" that only prepares the encoders' inputs ([`EncoderInput`] features):
/// how `train_encoders` captures clips, so the encoders themselves run in the training graph.
pub struct InputPreparer(pub Arc<AvFrameEncoder>);

impl FrameEncoder for InputPreparer {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn encode(
        &mut self,
        frames: &[&SyncedFrame],
    ) -> std::result::Result<Vec<FrameFeatures>, StageError> {
        let p = self
            .0
            .prepare(frames)
            .map_err(|e| stage_error(&self.0.name, e))?;
        Ok(p.into_iter().map(FrameFeatures::Inputs).collect())
    }
}

/// One window's projected AV tokens, as the LLM receives them.
#[derive(Clone, Debug)]
pub struct AvTokens {
    pub stream: StreamId,
    pub window: u64,
    /// Running time of the window, ns.
    pub t_start: u64,
    pub t_end: u64,
    /// `[num_query_tokens, llm_hidden_size]`: to be placed at the prompt's AV placeholder.
    pub tokens: Tensor,
}

/// Receives each window's projected tokens (e.g. the LLM stage's input queue).
pub trait AvTokenSink: Send + Sync {
    fn deliver(&self, tokens: AvTokens);
}

impl<F: Fn(AvTokens) + Send + Sync> AvTokenSink for F {
    fn deliver(&self, tokens: AvTokens) {
        self(tokens)
    }
}

/// The causal Q-Former as a window stage, with one incremental cache per stream. It runs on
/// whatever device its [`QFormerRunner`] was opened on (candle on the CPU, or our CUDA kernels
/// with weights and caches resident on the GPU).
pub struct QFormerWindowModel {
    name: String,
    qformer: QFormerRunner,
    streams: HashMap<StreamId, RunnerStream>,
    sink: Option<Arc<dyn AvTokenSink>>,
}

impl QFormerWindowModel {
    /// On the CPU (candle).
    pub fn new(qformer: QFormer, sink: Option<Arc<dyn AvTokenSink>>) -> Self {
        Self::with_runner(QFormerRunner::Candle(Box::new(qformer)), sink)
    }

    /// On the device `runner` was opened for (see [`QFormerRunner::open`]).
    pub fn with_runner(runner: QFormerRunner, sink: Option<Arc<dyn AvTokenSink>>) -> Self {
        Self {
            name: "qformer".into(),
            qformer: runner,
            streams: HashMap::new(),
            sink,
        }
    }

    /// Where the Q-Former runs, e.g. `cpu (candle)`.
    pub fn device(&self) -> String {
        self.qformer.describe()
    }

    /// Number of streams with cached state.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    fn frames_of(&self, w: &Window) -> std::result::Result<Vec<StreamFrame>, StageError> {
        w.frames
            .iter()
            .zip(&w.valid)
            .map(|(f, valid)| {
                let input = if !*valid {
                    FrameInput::default()
                } else {
                    let enc = match f.features.as_deref() {
                        Some(FrameFeatures::Encoded(e)) => e,
                        other => {
                            let what = match other {
                                None => "no encoder features (is an AvFrameEncoder configured?)"
                                    .to_string(),
                                Some(x) => format!(
                                    "the Q-Former needs encoder tokens, the frame has {}",
                                    x.kind()
                                ),
                            };
                            return Err(StageError::new(&self.name, what)
                                .at(format!("stream {} frame {}", w.stream, f.index)));
                        }
                    };
                    FrameInput {
                        audio: enc.audio.clone(),
                        visual: enc.visual.clone(),
                    }
                };
                Ok(StreamFrame {
                    index: f.index,
                    valid: *valid,
                    input,
                })
            })
            .collect()
    }

    /// Runs windows (any streams) and returns the projected tokens `[B, Q, llm]`.
    pub fn run(&mut self, windows: &[&Window]) -> std::result::Result<Tensor, StageError> {
        let err = |e: crate::error::ModelError| stage_error("qformer", e);
        let start = Instant::now();
        let mut kvs: Vec<RunnerWindow> = Vec::with_capacity(windows.len());
        for w in windows {
            let frames = self.frames_of(w)?;
            let qformer = &self.qformer;
            let st = self
                .streams
                .entry(w.stream.clone())
                .or_insert_with(|| qformer.new_stream());
            kvs.push(qformer.window(st, &frames).map_err(|e| {
                stage_error("qformer", e).at(format!("stream {} window {}", w.stream, w.index))
            })?);
        }
        record(&self.name, "slots", start, windows.len());
        let start = Instant::now();
        let out = self.qformer.query_batch(&kvs).map_err(err)?;
        record(&self.name, "queries", start, windows.len());
        Ok(out.projected)
    }
}

impl WindowModel for QFormerWindowModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        windows: &[&Window],
    ) -> std::result::Result<Vec<serde_json::Map<String, serde_json::Value>>, StageError> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let projected = self.run(windows)?;
        let err = |e: candle_core::Error| stage_error("qformer", e);
        let mut out = Vec::with_capacity(windows.len());
        for (b, w) in windows.iter().enumerate() {
            let tokens = projected.get(b).map_err(err)?;
            let (q, d) = tokens.dims2().map_err(err)?;
            let norm = tokens::mean_norm(&tokens).map_err(|e| stage_error("qformer", e))?;
            let mut m = serde_json::Map::new();
            m.insert(
                "qformer".into(),
                serde_json::json!({ "tokens": q, "dim": d, "norm": norm,
                                    "valid_frames": w.valid_frames() }),
            );
            out.push(m);
            if let Some(sink) = &self.sink {
                sink.deliver(AvTokens {
                    stream: w.stream.clone(),
                    window: w.index,
                    t_start: w.t_start,
                    t_end: w.t_end,
                    tokens,
                });
            }
        }
        Ok(out)
    }

    fn end_stream(&mut self, stream: &str) {
        self.streams.remove(stream);
    }
}
