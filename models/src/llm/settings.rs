//! `[llm]` configuration: model files, prompt template, sampling, per-stream context caps,
//! scheduled questions and the live-question inputs (stdin, HTTP). The integrator embeds
//! [`LlmConfig`] in the engine's config as `llm: Option<LlmConfig>`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::LlmError;
use super::loader::ComputeDtype;
use super::sampling::SamplingConfig;
use super::template::TemplateConfig;

/// `[llm]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// HF model directory (config.json + safetensors + tokenizer.json) or a `.gguf` file.
    pub model: PathBuf,
    /// tokenizer.json to use instead of the model's own (e.g. beside a GGUF file).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// A LoRA adapter directory in PEFT's layout (`adapter_config.json` +
    /// `adapter_model.safetensors`), e.g. `sensorium train`'s `adapter/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<PathBuf>,
    /// Compute dtype of safetensors models (auto: f32 on CPU, bf16 on CUDA).
    #[serde(default)]
    pub dtype: ComputeDtype,
    /// Dequantise GGUF weights at load (exact f32 matmuls, more memory).
    #[serde(default)]
    pub dequantize: bool,
    #[serde(default)]
    pub template: TemplateConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// Most tokens per answer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Windows of AV tokens kept per stream (older ones are evicted).
    #[serde(default = "default_context_windows")]
    pub context_windows: usize,
    /// KV cache capacity in positions (prompt + answer); preallocated once.
    #[serde(default = "default_max_context_tokens")]
    pub max_context_tokens: usize,
    /// Realtime streams: a newer window cancels a scheduled answer still running on an older
    /// one of the same stream.
    #[serde(default = "yes")]
    pub cancel_stale: bool,
    /// Questions asked on a schedule.
    #[serde(default, rename = "question")]
    pub questions: Vec<ScheduledQuestion>,
    /// Read live questions from stdin (`stream: question` or `question` per line).
    #[serde(default)]
    pub stdin: bool,
    /// HTTP endpoint for live questions; off unless `listen` is set.
    #[serde(default)]
    pub http: HttpConfig,
}

/// `[[llm.question]]`: asked on every window, every N windows, or every S seconds of stream time.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduledQuestion {
    pub text: String,
    /// Ask on every Nth window (default 1 when `every_s` is unset).
    #[serde(default)]
    pub every_windows: Option<u64>,
    /// Ask when at least this many seconds of stream time passed since the last ask.
    #[serde(default)]
    pub every_s: Option<f64>,
    /// Only these streams (empty: all).
    #[serde(default)]
    pub streams: Vec<String>,
}

/// `[llm.http]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// e.g. `127.0.0.1:8088`; POST /ask with `{"question": "...", "stream": "..."}`.
    pub listen: Option<String>,
}

fn default_max_tokens() -> usize {
    64
}
fn default_context_windows() -> usize {
    4
}
fn default_max_context_tokens() -> usize {
    2048
}
fn yes() -> bool {
    true
}

impl LlmConfig {
    /// A config with defaults for everything but the model path.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            tokenizer: None,
            adapter: None,
            dtype: ComputeDtype::Auto,
            dequantize: false,
            template: TemplateConfig::default(),
            sampling: SamplingConfig::default(),
            max_tokens: default_max_tokens(),
            context_windows: default_context_windows(),
            max_context_tokens: default_max_context_tokens(),
            cancel_stale: true,
            questions: vec![],
            stdin: false,
            http: HttpConfig::default(),
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |field: &str, message: &str| {
            Err(LlmError::Settings {
                field: field.into(),
                message: message.into(),
            })
        };
        if self.max_tokens == 0 {
            return bad("max_tokens", "must be at least 1");
        }
        if self.context_windows == 0 {
            return bad("context_windows", "must be at least 1");
        }
        if self.max_context_tokens <= self.max_tokens {
            return bad("max_context_tokens", "must exceed max_tokens");
        }
        let s = &self.sampling;
        if s.temperature.is_nan() || s.temperature < 0.0 {
            return bad("sampling.temperature", "must be >= 0");
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) || s.top_p.is_nan() {
            return bad("sampling.top_p", "must be in (0, 1]");
        }
        if s.repetition_penalty.is_nan() || s.repetition_penalty <= 0.0 {
            return bad("sampling.repetition_penalty", "must be > 0");
        }
        for (i, q) in self.questions.iter().enumerate() {
            let field = format!("question[{i}]");
            if q.text.trim().is_empty() {
                return bad(&field, "text is empty");
            }
            match (q.every_windows, q.every_s) {
                (Some(_), Some(_)) => return bad(&field, "set every_windows or every_s, not both"),
                (Some(0), None) => return bad(&field, "every_windows must be >= 1"),
                (None, Some(s)) if s.is_nan() || s <= 0.0 => {
                    return bad(&field, "every_s must be > 0")
                }
                _ => {}
            }
        }
        Ok(())
    }
}
