//! The decoding loop: prefill a prompt made of text tokens and injected AV embeddings, reusing
//! the longest cached prefix (system prompt, and the stream context when several questions are
//! asked of one window), then sample token by token with stop tokens, stop strings, a token
//! budget, a per-token callback and a cancellation token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::error::{CandleCtx, LlmError};
use super::model::Decoder;
use super::sampling::Sampler;
use super::tokenizer::LlmTokenizer;

/// One part of a prompt.
#[derive(Clone, Debug)]
pub enum Segment {
    Tokens(Vec<u32>),
    /// `[n, hidden]` embeddings; `uid` identifies their content (one per context window) so
    /// that cached KV can be matched.
    Embeds {
        uid: u64,
        embeds: Tensor,
    },
}

impl Segment {
    pub fn len(&self) -> usize {
        match self {
            Segment::Tokens(t) => t.len(),
            Segment::Embeds { embeds, .. } => embeds.dims().first().copied().unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What occupies one KV position: identical keys at identical positions mean identical KV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Tok(u32),
    Av(u64, u32),
}

/// Cooperative cancellation, checked before every decoding step.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why an answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// End-of-turn token or stop string.
    Stop,
    /// `max_tokens` reached (or the KV cache is full).
    Length,
    /// Cancelled (e.g. a newer window made the answer stale).
    Cancelled,
}

/// One streamed token.
#[derive(Clone, Debug, Serialize)]
pub struct TokenEvent {
    /// Index of the token in the answer, from 0.
    pub index: usize,
    /// `None` for the final flush of text held back at the end of the answer.
    pub token: Option<u32>,
    /// New answer text this token completes (may be empty mid-UTF-8 or inside a possible stop
    /// string; the text is released once it is known not to be part of one).
    pub text: String,
}

/// Limits and stops of one generation.
#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    pub stop_ids: Vec<u32>,
    pub stop_strings: Vec<String>,
}

/// Result of one generation.
#[derive(Clone, Debug)]
pub struct Generated {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Prompt positions whose KV came from the cache.
    pub reused_tokens: usize,
    pub first_token_at: Option<Instant>,
    pub last_token_at: Option<Instant>,
}

/// Decoder + tokenizer + a record of what the KV cache holds.
#[derive(Debug)]
pub struct TextGenerator {
    pub(crate) decoder: Decoder,
    pub(crate) tokenizer: LlmTokenizer,
    cached: Vec<Key>,
}

impl TextGenerator {
    pub fn new(decoder: Decoder, tokenizer: LlmTokenizer) -> Self {
        Self {
            decoder,
            tokenizer,
            cached: Vec::new(),
        }
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }

    /// Runs the prompt, reusing cached KV for its longest cached prefix; returns the logits
    /// of the last position and how many positions were reused.
    fn prefill(&mut self, segments: &[Segment]) -> Result<(Vec<f32>, usize, usize), LlmError> {
        let mut keys = Vec::new();
        for s in segments {
            match s {
                Segment::Tokens(t) => keys.extend(t.iter().map(|&t| Key::Tok(t))),
                Segment::Embeds { uid, embeds } => {
                    let n = embeds.dims().first().copied().unwrap_or(0);
                    keys.extend((0..n as u32).map(|j| Key::Av(*uid, j)));
                }
            }
        }
        let total = keys.len();
        if total == 0 {
            return Err(LlmError::Template {
                field: "prompt".into(),
                message: "the prompt is empty".into(),
            });
        }
        let valid = self.cached.len().min(self.decoder.cache_len());
        let mut reuse = keys
            .iter()
            .zip(&self.cached[..valid])
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt position is always recomputed: its logits start the answer.
        reuse = reuse.min(total - 1);
        self.cached.truncate(reuse);
        self.decoder.truncate_cache(reuse);
        // Embeddings of the positions from `reuse` on.
        let mut parts = Vec::new();
        let mut pos = 0usize;
        for s in segments {
            let n = s.len();
            let (lo, hi) = (pos, pos + n);
            pos = hi;
            if hi <= reuse || n == 0 {
                continue;
            }
            let skip = reuse.saturating_sub(lo);
            let t = match s {
                Segment::Tokens(t) => self.decoder.embed(&t[skip..])?,
                Segment::Embeds { embeds, .. } => embeds
                    .narrow(0, skip, n - skip)
                    .and_then(|e| e.to_dtype(self.decoder.dtype()))
                    .ctx(|| "AV embeddings".into())?,
            };
            parts.push(t);
        }
        let x = Tensor::cat(&parts, 0).ctx(|| "prompt embeddings".into())?;
        let logits = self.decoder.forward_embeds(&x, reuse, false)?;
        self.cached = keys;
        let row = logits
            .squeeze(0)
            .and_then(|l| l.to_vec1::<f32>())
            .ctx(|| "logits".into())?;
        Ok((row, reuse, total))
    }

    /// Generates an answer to `segments`. `seen` seeds the repetition penalty.
    pub fn generate(
        &mut self,
        segments: &[Segment],
        params: &GenParams,
        sampler: &mut Sampler,
        seen: &[u32],
        cancel: &CancelToken,
        on_token: &mut dyn FnMut(&TokenEvent),
    ) -> Result<Generated, LlmError> {
        let (mut logits, reused, prompt_tokens) = self.prefill(segments)?;
        let mut seen = seen.to_vec();
        let mut out = Generated {
            text: String::new(),
            tokens: Vec::new(),
            finish: Finish::Length,
            prompt_tokens,
            reused_tokens: reused,
            first_token_at: None,
            last_token_at: None,
        };
        let mut emitted = 0usize; // bytes of text already handed to on_token
        loop {
            if cancel.is_cancelled() {
                out.finish = Finish::Cancelled;
                break;
            }
            if out.tokens.len() >= params.max_tokens {
                out.finish = Finish::Length;
                break;
            }
            let next = sampler.sample(&mut logits, &seen);
            let now = Instant::now();
            out.first_token_at.get_or_insert(now);
            out.last_token_at = Some(now);
            if params.stop_ids.contains(&next) {
                out.finish = Finish::Stop;
                break;
            }
            out.tokens.push(next);
            seen.push(next);
            let full = self.tokenizer.decode(&out.tokens)?;
            let (text_end, stop) = match params
                .stop_strings
                .iter()
                .filter_map(|s| full.find(s.as_str()))
                .min()
            {
                Some(i) => (i, true),
                None => (safe_len(&full, &params.stop_strings), false),
            };
            let delta = match full.get(emitted..text_end) {
                Some(d) if text_end > emitted => {
                    emitted = text_end;
                    d.to_owned()
                }
                _ => String::new(),
            };
            on_token(&TokenEvent {
                index: out.tokens.len() - 1,
                token: Some(next),
                text: delta,
            });
            if stop {
                out.text = full[..text_end].to_owned();
                out.finish = Finish::Stop;
                return Ok(out);
            }
            out.text = full;
            if self.decoder.cache_len() >= self.decoder.cache_capacity() {
                out.finish = Finish::Length;
                break;
            }
            let pos = self.decoder.cache_len();
            let l = self.decoder.forward_tokens(&[next], pos, false)?;
            self.cached.truncate(pos);
            self.cached.push(Key::Tok(next));
            logits = l
                .squeeze(0)
                .and_then(|l| l.to_vec1::<f32>())
                .ctx(|| "logits".into())?;
        }
        // Text held back as a possible stop-string start (or partial UTF-8) is answer text
        // after all: release it.
        if let Some(rest) = out.text.get(emitted..).filter(|r| !r.is_empty()) {
            on_token(&TokenEvent {
                index: out.tokens.len().saturating_sub(1),
                token: None,
                text: rest.to_owned(),
            });
        }
        Ok(out)
    }
}

/// Length of `text` that cannot be the start of a stop string (and ends on a char boundary,
/// outside a replacement char left by an incomplete UTF-8 sequence).
fn safe_len(text: &str, stops: &[String]) -> usize {
    let mut end = text.trim_end_matches('\u{FFFD}').len();
    for s in stops {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text[..end].ends_with(&s[..k]) {
                end = end.min(text[..end].len() - k);
                break;
            }
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::safe_len;

    #[test]
    fn holds_back_possible_stop_prefix() {
        let stops = vec!["\nUSER:".to_owned()];
        assert_eq!(safe_len("a dog\nUS", &stops), 5);
        assert_eq!(safe_len("a dog", &stops), 5);
        assert_eq!(safe_len("a dog\n", &stops), 5);
        assert_eq!(safe_len("caf\u{FFFD}", &[]), 3);
    }
}
