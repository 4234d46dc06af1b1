//! Text <-> token ids for the decoder: a `tokenizer.json` (HF `tokenizers`), or the byte-level
//! BPE tokenizer rebuilt from a GGUF file's `tokenizer.ggml.*` metadata (model `gpt2`, as
//! llama.cpp writes for Qwen2 and LLaMA 3).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::error::LlmError;
use super::gguf::GgufTokenizerParts;

/// Pre-tokenizer regexes used by llama.cpp for `tokenizer.ggml.pre`.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the few ids the decoding loop needs.
pub struct LlmTokenizer {
    inner: Tokenizer,
    source: String,
}

impl std::fmt::Debug for LlmTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LlmTokenizer({})", self.source)
    }
}

impl LlmTokenizer {
    /// Loads a HF `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, LlmError> {
        let inner = Tokenizer::from_file(path).map_err(|e| LlmError::Tokenizer {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            source: path.display().to_string(),
        })
    }

    /// Rebuilds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.model = gpt2`).
    pub(crate) fn from_gguf_parts(p: GgufTokenizerParts) -> Result<Self, LlmError> {
        let err = |message: String| LlmError::Tokenizer {
            source_name: p.source.clone(),
            message,
        };
        if p.model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model `{}` is not supported (gpt2 byte-level BPE only); put a \
                 tokenizer.json beside the GGUF file and set `tokenizer`",
                p.model
            )));
        }
        let vocab: Vocab = p
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = p
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| err(format!("merge `{m}` is not `a b`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("BPE: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let regex = match p.pre.as_deref() {
            Some("qwen2") => Some(QWEN2_REGEX),
            Some("llama-bpe") | Some("llama3") => Some(LLAMA3_REGEX),
            _ => None,
        };
        let pre: PreTokenizerWrapper = match regex {
            Some(r) => {
                let split = Split::new(
                    SplitPattern::Regex(r.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| err(format!("pre-tokenizer regex: {e}")))?;
                Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, false, false).into(),
                ])
                .into()
            }
            // GPT-2's own regex lives inside the ByteLevel pre-tokenizer.
            None => ByteLevel::new(false, false, true).into(),
        };
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // Control (3) and user-defined (4) tokens are matched whole, before BPE.
        let special: Vec<AddedToken> = p
            .tokens
            .iter()
            .zip(p.types.iter())
            .filter(|(_, &t)| t == 3 || t == 4)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner
            .add_special_tokens(special)
            .map_err(|e| err(format!("special tokens: {e}")))?;
        Ok(Self {
            inner,
            source: p.source,
        })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are matched.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| LlmError::Tokenizer {
                source_name: self.source.clone(),
                message: format!("encoding {text:?}: {e}"),
            })
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| LlmError::Tokenizer {
                source_name: self.source.clone(),
                message: format!("decoding {} ids: {e}", ids.len()),
            })
    }

    /// Id of a token written out (`<|im_end|>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
