//! Prompt layouts with audio-visual tokens: a cached prefix (BOS, system prompt, start of the
//! user turn), one wrapper per context window around the `<AV>` placeholder, and the question
//! turn. Presets for Qwen ChatML, Llama-3 and FAVOR's Vicuna layout
//! (`[BOS] "USER: <Img>" <AV tokens> "</Img> {prompt}\nASSISTANT:"`); every part can be
//! overridden in config.
//!
//! Each part is tokenised on its own (as FAVOR/MiniGPT-4 tokenise the text around the image
//! placeholder), so the prefix's token ids, and hence its KV cache, never depend on the stream.

use serde::{Deserialize, Serialize};

use super::error::LlmError;
use super::tokenizer::LlmTokenizer;

/// Placeholder for the AV tokens inside `window`.
pub const AV_PLACEHOLDER: &str = "<AV>";

/// Which preset to start from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    /// Qwen / Qwen2.5 instruct (`<|im_start|>` ... `<|im_end|>`).
    #[default]
    Chatml,
    /// Llama-3 instruct headers.
    Llama3,
    /// FAVOR / Vicuna v1.1 (`USER: <Img>...</Img> q\nASSISTANT:`).
    Vicuna,
}

/// `[llm.template]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TemplateConfig {
    pub kind: TemplateKind,
    /// System prompt (`{system}` in the prefix); `None` uses the preset's.
    pub system: Option<String>,
    /// Text before the first window; may use `{system}`.
    pub prefix: Option<String>,
    /// One window's wrapper; must contain `<AV>` exactly once.
    pub window: Option<String>,
    /// The question turn; must contain `{question}`.
    pub question: Option<String>,
    /// Start the prompt with the model's BOS token.
    pub bos: Option<bool>,
    /// Extra strings that end an answer (the preset's end-of-turn tokens always do).
    pub stop: Vec<String>,
}

/// A resolved layout, text form.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub bos: bool,
    pub prefix: String,
    pub window_before: String,
    pub window_after: String,
    pub question: String,
    /// End-of-turn tokens (ids looked up in the vocabulary) and stop strings.
    pub stop: Vec<String>,
}

impl TemplateConfig {
    pub fn resolve(&self) -> Result<Layout, LlmError> {
        let (bos, system, prefix, window, question, stop): (bool, &str, &str, &str, &str, &[&str]) =
            match self.kind {
                TemplateKind::Chatml => (
                    false,
                    "You are a helpful assistant. You watch and listen to a live audio-visual stream.",
                    "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
                    "<AV>",
                    "\n{question}<|im_end|>\n<|im_start|>assistant\n",
                    &["<|im_end|>", "<|endoftext|>"],
                ),
                TemplateKind::Llama3 => (
                    true,
                    "You are a helpful assistant. You watch and listen to a live audio-visual stream.",
                    "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n",
                    "<AV>",
                    "\n{question}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                    &["<|eot_id|>", "<|end_of_text|>"],
                ),
                TemplateKind::Vicuna => (
                    true,
                    "",
                    "{system}USER: ",
                    "<Img><AV></Img>",
                    " {question}\nASSISTANT:",
                    &["</s>", "\nUSER:"],
                ),
            };
        let system = self.system.as_deref().unwrap_or(system);
        let prefix = self
            .prefix
            .as_deref()
            .unwrap_or(prefix)
            .replace("{system}", system);
        let window = self.window.as_deref().unwrap_or(window);
        let question = self.question.as_deref().unwrap_or(question).to_owned();
        let parts: Vec<&str> = window.split(AV_PLACEHOLDER).collect();
        if parts.len() != 2 {
            return Err(LlmError::Template {
                field: "window".into(),
                message: format!(
                    "{window:?} must contain {AV_PLACEHOLDER} exactly once (found {})",
                    parts.len() - 1
                ),
            });
        }
        if question.matches("{question}").count() != 1 {
            return Err(LlmError::Template {
                field: "question".into(),
                message: format!("{question:?} must contain {{question}} exactly once"),
            });
        }
        let mut all_stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        all_stop.extend(self.stop.iter().cloned());
        Ok(Layout {
            bos: self.bos.unwrap_or(bos),
            prefix,
            window_before: parts[0].to_owned(),
            window_after: parts[1].to_owned(),
            question,
            stop: all_stop,
        })
    }
}

/// A layout turned into token ids for one tokenizer.
#[derive(Clone, Debug)]
pub struct TokenLayout {
    /// BOS (if any) + prefix: computed once, its KV reused by every answer.
    pub prefix: Vec<u32>,
    pub window_before: Vec<u32>,
    pub window_after: Vec<u32>,
    question: String,
    /// Token ids that end an answer.
    pub stop_ids: Vec<u32>,
    /// Strings that end an answer (those that are not single tokens).
    pub stop_strings: Vec<String>,
}

impl TokenLayout {
    pub fn new(
        layout: &Layout,
        tok: &LlmTokenizer,
        bos_id: Option<u32>,
        eos_ids: &[u32],
    ) -> Result<Self, LlmError> {
        let mut prefix = Vec::new();
        if layout.bos {
            prefix.push(bos_id.ok_or_else(|| LlmError::Template {
                field: "bos".into(),
                message:
                    "the template starts with BOS but the model defines no bos_token_id".into(),
            })?);
        }
        prefix.extend(tok.encode(&layout.prefix)?);
        let mut stop_ids: Vec<u32> = eos_ids.to_vec();
        let mut stop_strings = Vec::new();
        for s in &layout.stop {
            match tok.token_id(s) {
                Some(id) => stop_ids.push(id),
                None => stop_strings.push(s.clone()),
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        Ok(Self {
            prefix,
            window_before: tok.encode(&layout.window_before)?,
            window_after: tok.encode(&layout.window_after)?,
            question: layout.question.clone(),
            stop_ids,
            stop_strings,
        })
    }

    /// Token ids of the question turn.
    pub fn question_ids(&self, tok: &LlmTokenizer, question: &str) -> Result<Vec<u32>, LlmError> {
        tok.encode(&self.question.replace("{question}", question))
    }

    /// Text positions one window adds around its AV tokens.
    pub fn window_overhead(&self) -> usize {
        self.window_before.len() + self.window_after.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_lay_out_the_prompt() {
        let v = TemplateConfig {
            kind: TemplateKind::Vicuna,
            ..Default::default()
        }
        .resolve()
        .unwrap();
        // FAVOR: [BOS] "USER: <Img>" <AV> "</Img> {prompt}\nASSISTANT:"
        assert!(v.bos);
        let one_window = format!(
            "{}{}<AV>{}{}",
            v.prefix, v.window_before, v.window_after, v.question
        );
        assert_eq!(one_window, "USER: <Img><AV></Img> {question}\nASSISTANT:");
        let l3 = TemplateConfig {
            kind: TemplateKind::Llama3,
            system: Some("S".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            l3.prefix,
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        );
        assert!(l3.stop.contains(&"<|eot_id|>".to_string()));
        let c = TemplateConfig {
            window: Some("[clip]<AV>[/clip]".into()),
            stop: vec!["###".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(!c.bos);
        assert_eq!(
            (c.window_before.as_str(), c.window_after.as_str()),
            ("[clip]", "[/clip]")
        );
        assert_eq!(c.stop, vec!["<|im_end|>", "<|endoftext|>", "###"]);
        let err = TemplateConfig {
            question: Some("no placeholder".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("`question`"), "{err}");
    }
}
