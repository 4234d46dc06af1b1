//! The answering service's core: per-stream bounded context of AV tokens (the last
//! `context_windows` windows; older ones evicted), prompt assembly from the template, and
//! [`Answerer::answer`] which decodes one answer with streaming tokens and reports timings.
//!
//! Memory is bounded for always-on streams: the KV cache is preallocated at
//! `max_context_tokens` and never grows, each stream keeps at most `context_windows` windows,
//! and a prompt that would not fit drops its oldest windows first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::error::{CandleCtx, LlmError};
use super::generate::{CancelToken, Finish, GenParams, Segment, TextGenerator, TokenEvent};
use super::loader::{load_model_with, LoadedModel};
use super::sampling::Sampler;
use super::settings::LlmConfig;
use super::template::TokenLayout;

/// Which window AV tokens belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowMeta {
    pub stream: String,
    pub index: u64,
    /// Running time of the window, ns.
    pub t_start: u64,
    pub t_end: u64,
    /// Capture time of the window's newest frame (for capture -> first-token latency, the
    /// same reference as the window line's `latency_ms`).
    pub captured: Option<Instant>,
    /// When the window's tokens were handed to the answer service (set by
    /// [`super::ServiceHandle::push_window`]): the start of "tokens -> first answer token".
    pub queued: Option<Instant>,
}

impl WindowMeta {
    /// From the engine's window (capture time: its newest valid frame's).
    pub fn from_window(w: &sensorium_engine::Window) -> Self {
        Self {
            stream: w.stream.to_string(),
            index: w.index,
            t_start: w.t_start,
            t_end: w.t_end,
            captured: w.newest_capture(),
            queued: None,
        }
    }
}

#[derive(Debug)]
struct ContextWindow {
    uid: u64,
    meta: WindowMeta,
    embeds: Tensor,
}

/// One answer, with timings.
#[derive(Clone, Debug)]
pub struct Answer {
    pub stream: String,
    /// Newest window in the prompt.
    pub window: u64,
    pub question: String,
    pub text: String,
    pub tokens: usize,
    pub finish: Finish,
    /// Stream time covered by the windows in the prompt, ns.
    pub t_start: u64,
    pub t_end: u64,
    /// Windows in the prompt.
    pub context_windows: usize,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub first_token_at: Option<Instant>,
    pub last_token_at: Option<Instant>,
    pub first_token_unix_ms: Option<u64>,
    pub last_token_unix_ms: Option<u64>,
    /// From the newest window's capture to the first answer token.
    pub capture_to_first_token: Option<Duration>,
    /// From the newest window's tokens reaching the answer service to the first answer
    /// token (queueing behind other answers, prefill, the first decoding step).
    pub queued_to_first_token: Option<Duration>,
}

/// One JSON line per answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AnswerRecord {
    pub stream: String,
    pub window: u64,
    pub question: String,
    pub answer: String,
    pub finish: &'static str,
    pub tokens: usize,
    pub t_start_ns: u64,
    pub t_end_ns: u64,
    pub first_token_unix_ms: Option<u64>,
    pub last_token_unix_ms: Option<u64>,
    pub capture_to_first_token_ms: Option<f64>,
    /// The newest window's Q-Former tokens handed to the answer service -> first answer
    /// token, ms.
    pub tokens_to_first_token_ms: Option<f64>,
    /// Tokens after the first per second of decoding (answers of 2 tokens or more).
    pub decode_tokens_per_s: Option<f64>,
    /// A question asked while the stream ran (stdin, `POST /ask`, a cluster's request), not
    /// a scheduled one.
    pub live: bool,
}

impl AnswerRecord {
    /// The answer's output line: its fields and `"type": "answer"`.
    pub fn line(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("type".into(), "answer".into());
        }
        v
    }
}

impl Answer {
    pub fn record(&self, live: bool) -> AnswerRecord {
        AnswerRecord {
            live,
            stream: self.stream.clone(),
            window: self.window,
            question: self.question.clone(),
            answer: self.text.clone(),
            finish: match self.finish {
                Finish::Stop => "stop",
                Finish::Length => "length",
                Finish::Cancelled => "cancelled",
            },
            tokens: self.tokens,
            t_start_ns: self.t_start,
            t_end_ns: self.t_end,
            first_token_unix_ms: self.first_token_unix_ms,
            last_token_unix_ms: self.last_token_unix_ms,
            capture_to_first_token_ms: self.capture_to_first_token.map(|d| d.as_secs_f64() * 1e3),
            tokens_to_first_token_ms: self.queued_to_first_token.map(|d| d.as_secs_f64() * 1e3),
            decode_tokens_per_s: match (self.first_token_at, self.last_token_at) {
                (Some(f), Some(l)) if self.tokens >= 2 && l > f => {
                    Some((self.tokens - 1) as f64 / l.duration_since(f).as_secs_f64())
                }
                _ => None,
            },
        }
    }
}

/// Decoder, tokenizer, template and every stream's context. Single-threaded: the service
/// thread ([`super::service`]) owns it.
#[derive(Debug)]
pub struct Answerer {
    generator: TextGenerator,
    layout: TokenLayout,
    cfg: LlmConfig,
    contexts: HashMap<String, VecDeque<ContextWindow>>,
    next_uid: u64,
}

fn unix_ms(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Answerer {
    /// Loads the model named by `cfg` on `device`.
    pub fn from_config(cfg: &LlmConfig, device: &Device) -> Result<Self, LlmError> {
        cfg.validate()?;
        let mut m = load_model_with(
            &cfg.model,
            cfg.tokenizer.as_deref(),
            cfg.dtype,
            cfg.dequantize,
            cfg.max_context_tokens,
            device,
        )?;
        if let Some(dir) = &cfg.adapter {
            let err = |message: String| LlmError::Checkpoint {
                path: dir.clone(),
                message,
            };
            let pairs = crate::train::lora::load_adapter(dir, device)
                .map_err(|e| err(format!("adapter: {e}")))?;
            m.decoder
                .set_lora(&pairs)
                .map_err(|e| err(format!("adapter does not fit the model: {e}")))?;
        }
        Self::new(m, cfg)
    }

    /// Wraps an already loaded model (its KV capacity should be `cfg.max_context_tokens`).
    pub fn new(m: LoadedModel, cfg: &LlmConfig) -> Result<Self, LlmError> {
        cfg.validate()?;
        let layout = cfg.template.resolve()?;
        let dc = m.decoder.config();
        let layout = TokenLayout::new(&layout, &m.tokenizer, dc.bos_token_id, &dc.eos_token_ids)?;
        Ok(Self {
            generator: TextGenerator::new(m.decoder, m.tokenizer),
            layout,
            cfg: cfg.clone(),
            contexts: HashMap::new(),
            next_uid: 0,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// Width the AV embeddings must have (the decoder's hidden size).
    pub fn hidden_size(&self) -> usize {
        self.generator.decoder().hidden_size()
    }

    pub fn generator(&self) -> &TextGenerator {
        &self.generator
    }

    /// Adds a window's AV tokens (`[n_tokens, hidden]`, e.g. the Q-Former's 32 projected
    /// queries) to its stream's context, evicting the oldest beyond `context_windows`.
    pub fn push_window(&mut self, meta: WindowMeta, av: &Tensor) -> Result<(), LlmError> {
        let bad = |message: String| LlmError::AvTokens {
            stream: meta.stream.clone(),
            window: meta.index,
            message,
        };
        let h = self.hidden_size();
        match av.dims() {
            [n, w] if *w == h && *n > 0 => {}
            d => {
                return Err(bad(format!(
                    "have shape {d:?}, expected [n_tokens > 0, {h}]"
                )))
            }
        }
        if !av.dtype().is_float() {
            return Err(bad(format!(
                "have dtype {:?}, expected a float type",
                av.dtype()
            )));
        }
        let dec = self.generator.decoder();
        let embeds = av
            .to_device(dec.device())
            .and_then(|t| t.to_dtype(dec.dtype()))
            .ctx(|| {
                format!(
                    "stream `{}` window {} AV embeddings",
                    meta.stream, meta.index
                )
            })?;
        let uid = self.next_uid;
        self.next_uid += 1;
        let ctx = self.contexts.entry(meta.stream.clone()).or_default();
        ctx.push_back(ContextWindow { uid, meta, embeds });
        while ctx.len() > self.cfg.context_windows {
            ctx.pop_front();
        }
        Ok(())
    }

    /// Drops a stream's context.
    pub fn end_stream(&mut self, stream: &str) {
        self.contexts.remove(stream);
    }

    /// Windows held for `stream`.
    pub fn context_windows(&self, stream: &str) -> usize {
        self.contexts.get(stream).map_or(0, |c| c.len())
    }

    /// Streams with context.
    pub fn streams(&self) -> impl Iterator<Item = &str> {
        self.contexts.keys().map(String::as_str)
    }

    /// Newest window of `stream`.
    pub fn latest_window(&self, stream: &str) -> Option<&WindowMeta> {
        self.contexts
            .get(stream)
            .and_then(|c| c.back())
            .map(|w| &w.meta)
    }

    /// [`Answerer::push_window`] then [`Answerer::answer`].
    pub fn answer_window(
        &mut self,
        meta: WindowMeta,
        av: &Tensor,
        question: &str,
        cancel: &CancelToken,
        on_token: &mut dyn FnMut(&TokenEvent),
    ) -> Result<Answer, LlmError> {
        let stream = meta.stream.clone();
        self.push_window(meta, av)?;
        self.answer(&stream, question, cancel, on_token)
    }

    /// Answers `question` about `stream`'s context (its newest windows).
    pub fn answer(
        &mut self,
        stream: &str,
        question: &str,
        cancel: &CancelToken,
        on_token: &mut dyn FnMut(&TokenEvent),
    ) -> Result<Answer, LlmError> {
        let ctx = self
            .contexts
            .get(stream)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| LlmError::UnknownStream(stream.to_owned()))?;
        let q_ids = self
            .layout
            .question_ids(self.generator.tokenizer(), question)?;
        let cap = self.generator.decoder().cache_capacity();
        let max_new = self.cfg.max_tokens;
        let win_len = |w: &ContextWindow| w.embeds.dims()[0] + self.layout.window_overhead();
        // Newest windows first, as many as fit.
        let fixed = self.layout.prefix.len() + q_ids.len();
        let mut used = fixed;
        let mut first = ctx.len();
        for (i, w) in ctx.iter().enumerate().rev() {
            if used + win_len(w) + max_new > cap {
                break;
            }
            used += win_len(w);
            first = i;
        }
        if first == ctx.len() {
            let newest = ctx.back().map(win_len).unwrap_or(0);
            return Err(LlmError::ContextOverflow {
                needed: fixed + newest,
                max_new,
                cap,
            });
        }
        let windows: Vec<&ContextWindow> = ctx.iter().skip(first).collect();
        let mut segments = vec![Segment::Tokens(self.layout.prefix.clone())];
        for w in &windows {
            segments.push(Segment::Tokens(self.layout.window_before.clone()));
            segments.push(Segment::Embeds {
                uid: w.uid,
                embeds: w.embeds.clone(),
            });
            segments.push(Segment::Tokens(self.layout.window_after.clone()));
        }
        segments.push(Segment::Tokens(q_ids.clone()));
        let newest = &windows[windows.len() - 1].meta;
        let (window, t_start, t_end, captured, queued) = (
            newest.index,
            windows[0].meta.t_start,
            newest.t_end,
            newest.captured,
            newest.queued,
        );
        let n_windows = windows.len();
        let params = GenParams {
            max_tokens: max_new,
            stop_ids: self.layout.stop_ids.clone(),
            stop_strings: self.layout.stop_strings.clone(),
        };
        let mut sampler = Sampler::new(self.cfg.sampling.clone());
        let g =
            self.generator
                .generate(&segments, &params, &mut sampler, &q_ids, cancel, on_token)?;
        Ok(Answer {
            stream: stream.to_owned(),
            window,
            question: question.to_owned(),
            text: g.text.trim().to_owned(),
            tokens: g.tokens.len(),
            finish: g.finish,
            t_start,
            t_end,
            context_windows: n_windows,
            prompt_tokens: g.prompt_tokens,
            reused_tokens: g.reused_tokens,
            first_token_at: g.first_token_at,
            last_token_at: g.last_token_at,
            first_token_unix_ms: g.first_token_at.map(unix_ms),
            last_token_unix_ms: g.last_token_at.map(unix_ms),
            capture_to_first_token: match (captured, g.first_token_at) {
                (Some(c), Some(f)) => Some(f.saturating_duration_since(c)),
                _ => None,
            },
            queued_to_first_token: match (queued, g.first_token_at) {
                (Some(q), Some(f)) => Some(f.saturating_duration_since(q)),
                _ => None,
            },
        })
    }
}
