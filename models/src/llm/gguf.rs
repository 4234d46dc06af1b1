//! Loading GGUF files (llama.cpp's format; q4_0, q4_k, q8_0, ... and f32/f16) into the shared
//! [`Decoder`], and rebuilding the byte-level BPE tokenizer from `tokenizer.ggml.*` metadata.
//!
//! Tensor names and metadata keys follow llama.cpp (`blk.N.attn_q.weight`, `qwen2.block_count`),
//! as read by candle-transformers 0.11.1 `models/quantized_qwen2.rs` / `quantized_llama.rs`.
//! llama-arch files store q/k rows permuted for interleaved RoPE, qwen2-arch files do not.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul};
use candle_core::{DType, Device};

use super::error::LlmError;
use super::hf_config::{Arch, DecoderConfig, RopeStyle};
use super::model::{Attention, Block, Decoder, Embedding, Lin, Mlp};
use super::q4_vnni::{self, PackedQ4_0};

/// An opened GGUF file: metadata and tensor index; the tensor data is memory-mapped, and each
/// tensor is copied once, from the mapping into its own storage, when it is loaded.
pub struct GgufFile {
    path: std::path::PathBuf,
    content: gguf_file::Content,
    data: memmap2::Mmap,
    /// Each tensor's bytes in `data`, checked against the file at open.
    extents: HashMap<String, std::ops::Range<usize>>,
    /// Dequantise weights to f32 at load (exact f32 matmuls; more memory, no quantised
    /// kernels). Off by default: candle's quantised CPU matmul also rounds activations to q8.
    pub dequantize: bool,
}

/// Every tensor's shape and place against the file, before anything is read: a hostile
/// header (dimensions whose product overflows, offsets past the end, a size that is not a
/// whole number of blocks) is refused naming the tensor, and no buffer of a claimed size
/// is ever allocated. Returns each tensor's byte range in the file.
fn check_tensor_extents(
    content: &gguf_file::Content,
    file_len: u64,
) -> Result<HashMap<String, std::ops::Range<usize>>, String> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut extents = HashMap::with_capacity(names.len());
    for name in names {
        let info = &content.tensor_infos[name];
        let dims = info.shape.dims();
        let elems = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| format!("tensor `{name}`: shape {dims:?} overflows"))?;
        let block = info.ggml_dtype.block_size() as u64;
        if elems % block != 0 {
            return Err(format!(
                "tensor `{name}`: {elems} elements are not whole blocks of {block} ({:?})",
                info.ggml_dtype
            ));
        }
        let bytes = (elems / block)
            .checked_mul(info.ggml_dtype.type_size() as u64)
            .ok_or_else(|| format!("tensor `{name}`: shape {dims:?} overflows"))?;
        let start = content.tensor_data_offset.checked_add(info.offset);
        match start.and_then(|start| Some((start, start.checked_add(bytes)?))) {
            // Within the file, so within usize.
            Some((start, end)) if end <= file_len => {
                extents.insert(name.clone(), start as usize..end as usize);
            }
            _ => {
                return Err(format!(
                    "tensor `{name}`: {bytes} bytes at offset {} run past the end of the file \
                     ({file_len} bytes; truncated or corrupt)",
                    content.tensor_data_offset.saturating_add(info.offset)
                ))
            }
        }
    }
    Ok(extents)
}

/// The candle dtype of a float GGUF tensor; `None` for a quantised one.
fn float_dtype(dtype: GgmlDType) -> Option<DType> {
    match dtype {
        GgmlDType::F32 => Some(DType::F32),
        GgmlDType::F16 => Some(DType::F16),
        GgmlDType::BF16 => Some(DType::BF16),
        _ => None,
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, LlmError> {
        let mut file = std::fs::File::open(path).map_err(|source| LlmError::Io {
            path: path.to_owned(),
            source,
        })?;
        // Buffered: the header is read field by field (a 150k-token vocabulary is 300k reads).
        let content =
            gguf_file::Content::read(&mut std::io::BufReader::with_capacity(1 << 20, &mut file))
                .map_err(|e| LlmError::Checkpoint {
                    path: path.to_owned(),
                    message: format!(
                        "not a readable GGUF file: {}",
                        crate::error::candle_text(&e)
                    ),
                })?;
        let file_len = file
            .metadata()
            .map_err(|source| LlmError::Io {
                path: path.to_owned(),
                source,
            })?
            .len();
        let extents =
            check_tensor_extents(&content, file_len).map_err(|message| LlmError::Checkpoint {
                path: path.to_owned(),
                message,
            })?;
        // SAFETY: mapped read-only; like every mmap-based loader (llama.cpp's, candle's
        // safetensors) we rely on the file not being truncated or rewritten while it is open.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| LlmError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            content,
            data,
            extents,
            dequantize: false,
        })
    }

    pub fn metadata(&self) -> &HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    fn missing(&self, key: &str, what: &str) -> LlmError {
        LlmError::Checkpoint {
            path: self.path.clone(),
            message: format!("metadata `{key}` {what}"),
        }
    }

    fn get(&self, key: &str) -> Result<&gguf_file::Value, LlmError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| self.missing(key, "is missing"))
    }

    /// Any integer-typed metadata value as u64.
    fn uint(&self, key: &str) -> Result<u64, LlmError> {
        use gguf_file::Value as V;
        match self.get(key)? {
            V::U8(v) => Ok(*v as u64),
            V::U16(v) => Ok(*v as u64),
            V::U32(v) => Ok(*v as u64),
            V::U64(v) => Ok(*v),
            V::I32(v) if *v >= 0 => Ok(*v as u64),
            V::I64(v) if *v >= 0 => Ok(*v as u64),
            _ => Err(self.missing(key, "is not a non-negative integer")),
        }
    }

    fn float(&self, key: &str) -> Result<f64, LlmError> {
        use gguf_file::Value as V;
        match self.get(key)? {
            V::F32(v) => Ok(*v as f64),
            V::F64(v) => Ok(*v),
            _ => Err(self.missing(key, "is not a float")),
        }
    }

    fn string(&self, key: &str) -> Result<&str, LlmError> {
        match self.get(key)? {
            gguf_file::Value::String(s) => Ok(s),
            _ => Err(self.missing(key, "is not a string")),
        }
    }

    fn tensor_error(&self, name: &str, e: &candle_core::Error) -> LlmError {
        LlmError::Checkpoint {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {}", crate::error::candle_text(e)),
        }
    }

    /// Tensor `name`'s info and its bytes in the mapping.
    fn raw(&self, name: &str) -> Result<(&gguf_file::TensorInfo, &[u8]), LlmError> {
        match (self.content.tensor_infos.get(name), self.extents.get(name)) {
            (Some(info), Some(range)) => Ok((info, &self.data[range.clone()])),
            _ => Err(LlmError::Checkpoint {
                path: self.path.clone(),
                message: format!("tensor `{name}` is missing"),
            }),
        }
    }

    fn qtensor(
        &self,
        name: &str,
        device: &Device,
    ) -> Result<candle_core::quantized::QTensor, LlmError> {
        let (info, bytes) = self.raw(name)?;
        candle_core::quantized::ggml_file::qtensor_from_ggml(
            info.ggml_dtype,
            bytes,
            info.shape.dims().to_vec(),
            device,
        )
        .map_err(|e| self.tensor_error(name, &e))
    }

    /// Tensor `name` repacked for the AVX-512 VNNI q4_0 kernel, when it is q4_0, the device
    /// is the CPU, the CPU has the instructions and the shape tiles; otherwise `None`.
    fn packed_q4(&self, name: &str, device: &Device) -> Option<PackedQ4_0> {
        let info = self.content.tensor_infos.get(name)?;
        if !device.is_cpu()
            || self.dequantize
            || info.ggml_dtype != GgmlDType::Q4_0
            || !q4_vnni::available()
        {
            return None;
        }
        let (n, k) = info.shape.dims2().ok()?;
        let (_, bytes) = self.raw(name).ok()?;
        PackedQ4_0::from_ggml(bytes, n, k)
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The decoder shape from `{arch}.*` metadata and the embedding tensor.
    pub fn decoder_config(&self) -> Result<DecoderConfig, LlmError> {
        let arch_name = self.string("general.architecture")?.to_owned();
        let arch = match arch_name.as_str() {
            "qwen2" => Arch::Qwen2,
            "llama" => Arch::Llama,
            other => {
                return Err(self.missing(
                    "general.architecture",
                    &format!("is `{other}`; supported: qwen2, llama"),
                ))
            }
        };
        let k = |s: &str| format!("{arch_name}.{s}");
        let hidden = self.uint(&k("embedding_length"))? as usize;
        let heads = self.uint(&k("attention.head_count"))? as usize;
        let kv = self
            .uint(&k("attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(heads);
        if heads.checked_rem(kv) != Some(0) || hidden.checked_rem(heads) != Some(0) {
            return Err(self.missing(
                &k("attention.head_count"),
                &format!("({heads} heads, {kv} kv heads, width {hidden}) is inconsistent"),
            ));
        }
        let head_dim = self
            .uint(&k("rope.dimension_count"))
            .map(|v| v as usize)
            .unwrap_or(hidden / heads);
        let vocab = match self.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => {
                return Err(LlmError::Checkpoint {
                    path: self.path.clone(),
                    message: "tensor `token_embd.weight` is missing".into(),
                })
            }
        };
        let eos = self
            .uint("tokenizer.ggml.eos_token_id")
            .ok()
            .map(|v| v as u32);
        Ok(DecoderConfig {
            arch,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: self.uint(&k("feed_forward_length"))? as usize,
            num_hidden_layers: self.uint(&k("block_count"))? as usize,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim,
            rms_norm_eps: self.float(&k("attention.layer_norm_rms_epsilon"))?,
            rope_theta: self.float(&k("rope.freq_base")).unwrap_or(10_000.0) as f32,
            rope_scaling: None,
            rope_style: match arch {
                Arch::Qwen2 => RopeStyle::Halves,
                Arch::Llama => RopeStyle::Interleaved,
            },
            max_position_embeddings: self.uint(&k("context_length"))? as usize,
            tie_word_embeddings: !self.has("output.weight"),
            attention_bias: self.has("blk.0.attn_q.bias"),
            bos_token_id: self
                .uint("tokenizer.ggml.bos_token_id")
                .ok()
                .map(|v| v as u32),
            eos_token_ids: eos.into_iter().collect(),
        })
    }

    /// Whether tensor `name` is loaded as a dense f32 tensor (stored as floats, or
    /// [`Self::dequantize`]); otherwise it stays quantised.
    fn is_dense(&self, name: &str) -> bool {
        self.dequantize
            || self
                .content
                .tensor_infos
                .get(name)
                .is_some_and(|i| float_dtype(i.ggml_dtype).is_some())
    }

    fn lin(&self, name: &str, bias: bool, device: &Device) -> Result<Lin, LlmError> {
        let weight = format!("{name}.weight");
        let b = if bias {
            Some(self.dense(&format!("{name}.bias"), device)?)
        } else {
            None
        };
        if let Some(p) = self.packed_q4(&weight, device) {
            return Ok(Lin::packed(Arc::new(p), b));
        }
        let w = if self.is_dense(&weight) {
            QMatMul::Tensor(self.dense(&weight, device)?)
        } else {
            let w = self.qtensor(&weight, device)?;
            QMatMul::from_qtensor(w).map_err(|e| self.tensor_error(&weight, &e))?
        };
        Ok(Lin::new(w, b))
    }

    /// Tensor `name` as f32: a float tensor straight from the mapping (one copy), a
    /// quantised one dequantised.
    fn dense(&self, name: &str, device: &Device) -> Result<candle_core::Tensor, LlmError> {
        let (info, bytes) = self.raw(name)?;
        match float_dtype(info.ggml_dtype) {
            Some(dtype) => {
                candle_core::Tensor::from_raw_buffer(bytes, dtype, info.shape.dims(), device)
                    .and_then(|t| t.to_dtype(DType::F32))
            }
            None => self
                .qtensor(name, device)?
                .dequantize(device)
                .and_then(|t| t.to_dtype(DType::F32)),
        }
        .map_err(|e| self.tensor_error(name, &e))
    }

    /// `token_embd.weight`: kept quantised on the CPU when its rows are whole blocks (rows
    /// are dequantised as they are looked up), else dense f32.
    fn embedding(&self, hidden: usize, device: &Device) -> Result<Embedding, LlmError> {
        let name = "token_embd.weight";
        let whole_blocks =
            |i: &gguf_file::TensorInfo| hidden.is_multiple_of(i.ggml_dtype.block_size());
        let quantized = device.is_cpu()
            && !self.is_dense(name)
            && self
                .content
                .tensor_infos
                .get(name)
                .is_some_and(whole_blocks);
        Ok(
            if let Some(p) = quantized.then(|| self.packed_q4(name, device)).flatten() {
                Embedding::Q4Vnni(Arc::new(p))
            } else if quantized {
                Embedding::Quantized(Arc::new(self.qtensor(name, device)?))
            } else {
                Embedding::Dense(self.dense(name, device)?)
            },
        )
    }

    /// Loads the whole decoder; activations and KV cache are f32.
    pub fn load_decoder(&self, cache_cap: usize, device: &Device) -> Result<Decoder, LlmError> {
        let cfg = self.decoder_config()?;
        let embed = self.embedding(cfg.hidden_size, device)?;
        let mut blocks = Vec::new(); // not sized from the header: a hostile one lies
        let bias = cfg.attention_bias;
        for l in 0..cfg.num_hidden_layers {
            let p = |s: &str| format!("blk.{l}.{s}");
            let attn = Attention {
                q: self.lin(&p("attn_q"), bias, device)?,
                k: self.lin(&p("attn_k"), bias, device)?,
                v: self.lin(&p("attn_v"), bias, device)?,
                o: self.lin(&p("attn_output"), false, device)?,
            };
            let mlp = Mlp {
                gate: self.lin(&p("ffn_gate"), false, device)?,
                up: self.lin(&p("ffn_up"), false, device)?,
                down: self.lin(&p("ffn_down"), false, device)?,
            };
            blocks.push(Block {
                attn,
                mlp,
                input_norm: self.dense(&p("attn_norm.weight"), device)?,
                post_norm: self.dense(&p("ffn_norm.weight"), device)?,
            });
        }
        let norm = self.dense("output_norm.weight", device)?;
        let head_name = if cfg.tie_word_embeddings {
            "token_embd"
        } else {
            "output"
        };
        // A tied head is the embedding itself, not a second copy of it.
        let lm_head = match &embed {
            _ if !cfg.tie_word_embeddings => self.lin(head_name, false, device)?,
            Embedding::Dense(t) => Lin::new(QMatMul::Tensor(t.clone()), None),
            Embedding::Q4Vnni(p) => Lin::packed(p.clone(), None),
            Embedding::Quantized(q) => Lin::new(
                QMatMul::from_arc(q.clone())
                    .map_err(|e| self.tensor_error("token_embd.weight", &e))?,
                None,
            ),
        };
        let path = self.path.clone();
        Decoder::from_parts(
            cfg,
            embed,
            blocks,
            norm,
            lm_head,
            cache_cap,
            DType::F32,
            device,
        )
        .map_err(|e| LlmError::Checkpoint {
            path,
            message: format!("building the decoder: {}", crate::error::candle_text(&e)),
        })
    }

    /// `tokenizer.ggml.*` pieces for [`super::tokenizer::LlmTokenizer::from_gguf_metadata`]:
    pub(crate) fn tokenizer_parts(&self) -> Result<GgufTokenizerParts, LlmError> {
        let model = self.string("tokenizer.ggml.model")?.to_owned();
        let strings = |key: &str| -> Result<Vec<String>, LlmError> {
            let v = self
                .get(key)?
                .to_vec()
                .map_err(|_| self.missing(key, "is not an array"))?;
            v.iter()
                .map(|x| match x {
                    gguf_file::Value::String(s) => Ok(s.clone()),
                    _ => Err(self.missing(key, "holds a non-string")),
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = if self.content.metadata.contains_key("tokenizer.ggml.merges") {
            strings("tokenizer.ggml.merges")?
        } else {
            vec![]
        };
        let types = match self.content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| self.missing("tokenizer.ggml.token_type", "is not an array"))?
                .iter()
                .map(|x| x.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        Ok(GgufTokenizerParts {
            source: self.path.display().to_string(),
            model,
            tokens,
            types,
            merges,
            pre: self.string("tokenizer.ggml.pre").ok().map(str::to_owned),
        })
    }
}

/// What the tokenizer needs from GGUF metadata.
pub(crate) struct GgufTokenizerParts {
    pub source: String,
    pub model: String,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    pub pre: Option<String>,
}
