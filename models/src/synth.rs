//! Untrained parts of a model written in their Hugging Face layouts, deterministically from a
//! seed: a Whisper encoder (`WhisperForConditionalGeneration` names, encoder tensors only), a
//! vision-only CLIP tower (`CLIPVisionModel`), each with its `preprocessor_config.json`, and a
//! byte-level BPE `tokenizer.json` trained on a small corpus, for `sensorium train` to train
//! a model from scratch. transformers' `from_pretrained` and our loaders
//! ([`crate::audio::AudioEncoder`], [`crate::vision::VisionEncoder`],
//! [`crate::llm::LlmTokenizer`]) read them as they read downloaded checkpoints.
//!
//! Init follows HF's `_init_weights` in spirit: matrices (and convolutions, CLS and position
//! embeddings) are N(0, `init_std`), LayerNorm weights 1, biases 0; Whisper's
//! `embed_positions` are the fixed sinusoids HF computes. candle's CPU RNG cannot be seeded, so
//! values come from a seeded `StdRng` (Box-Muller, as `llm::synth`), in a fixed tensor order:
//! the same spec writes byte-identical files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    TokenizerBuilder,
};

use crate::error::{ModelError, Result};

/// Shape and init of a synthetic Whisper encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct WhisperSpec {
    pub d_model: usize,
    pub encoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub num_mel_bins: usize,
    /// Encoder frames (half the mel frames); 1500 is Whisper's 30 s, 25 is one 0.5 s frame.
    pub max_source_positions: usize,
    pub seed: u64,
    /// Std of the normal init of matrices.
    pub init_std: f32,
}

impl WhisperSpec {
    fn validate(&self) -> Result<()> {
        let d = self.d_model;
        let bad = |m: String| Err(ModelError::InvalidInput(format!("WhisperSpec: {m}")));
        if self.encoder_attention_heads == 0 || !d.is_multiple_of(self.encoder_attention_heads) {
            return bad(format!(
                "d_model {d} is not a multiple of encoder_attention_heads {}",
                self.encoder_attention_heads
            ));
        }
        // HF's sinusoids divide by channels / 2 - 1.
        if d < 4 || !d.is_multiple_of(2) {
            return bad(format!("d_model {d} must be even and at least 4"));
        }
        if self.encoder_ffn_dim == 0 || self.num_mel_bins == 0 || self.max_source_positions == 0 {
            return bad(
                "encoder_ffn_dim, num_mel_bins and max_source_positions must be > 0".into(),
            );
        }
        check_std(self.init_std, "WhisperSpec")
    }

    /// HF `WhisperConfig` (`config.json`) with a minimal one-layer decoder, which transformers
    /// needs to build the model but we never write weights for.
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "activation_dropout": 0.0,
            "activation_function": "gelu",
            "apply_spec_augment": false,
            "architectures": ["WhisperForConditionalGeneration"],
            "attention_dropout": 0.0,
            "begin_suppress_tokens": [220, 50256],
            "bos_token_id": 1,
            "classifier_proj_size": 256,
            "d_model": self.d_model,
            "decoder_attention_heads": self.encoder_attention_heads,
            "decoder_ffn_dim": self.encoder_ffn_dim,
            "decoder_layerdrop": 0.0,
            "decoder_layers": 1,
            "decoder_start_token_id": 1,
            "dropout": 0.0,
            "dtype": "float32",
            "encoder_attention_heads": self.encoder_attention_heads,
            "encoder_ffn_dim": self.encoder_ffn_dim,
            "encoder_layerdrop": 0.0,
            "encoder_layers": self.encoder_layers,
            "eos_token_id": 2,
            "init_std": self.init_std,
            "is_encoder_decoder": true,
            "mask_feature_length": 10,
            "mask_feature_min_masks": 0,
            "mask_feature_prob": 0.0,
            "mask_time_length": 10,
            "mask_time_min_masks": 2,
            "mask_time_prob": 0.05,
            "max_source_positions": self.max_source_positions,
            "max_target_positions": 16,
            "median_filter_width": 7,
            "model_type": "whisper",
            "num_mel_bins": self.num_mel_bins,
            "pad_token_id": 0,
            "scale_embedding": false,
            "suppress_tokens": null,
            "tie_word_embeddings": true,
            "use_cache": true,
            "use_weighted_layer_sum": false,
            "vocab_size": 64
        })
    }

    /// HF `WhisperFeatureExtractor` (`preprocessor_config.json`) for this many mel bins.
    pub fn preprocessor_json(&self) -> serde_json::Value {
        json!({
            "chunk_length": 30,
            "dither": 0.0,
            "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": self.num_mel_bins,
            "hop_length": 160,
            "n_fft": 400,
            "n_samples": 480_000,
            "nb_max_frames": 3000,
            "padding_side": "right",
            "padding_value": 0.0,
            "processor_class": "WhisperProcessor",
            "return_attention_mask": false,
            "sampling_rate": 16000
        })
    }

    /// The encoder tensors under `model.encoder.`, in draw order.
    fn tensors(&self) -> Vec<Synth> {
        let (d, f, m) = (self.d_model, self.encoder_ffn_dim, self.num_mel_bins);
        let p = |n: &str| format!("model.encoder.{n}");
        let mut t = vec![
            Synth::normal(p("conv1.weight"), &[d, m, 3]),
            Synth::zeros(p("conv1.bias"), &[d]),
            Synth::normal(p("conv2.weight"), &[d, d, 3]),
            Synth::zeros(p("conv2.bias"), &[d]),
            Synth::given(
                p("embed_positions.weight"),
                &[self.max_source_positions, d],
                sinusoids(self.max_source_positions, d),
            ),
        ];
        for l in 0..self.encoder_layers {
            let p = |n: &str| format!("model.encoder.layers.{l}.{n}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                t.push(Synth::normal(
                    p(&format!("self_attn.{proj}.weight")),
                    &[d, d],
                ));
                // Whisper's k_proj has no bias.
                if proj != "k_proj" {
                    t.push(Synth::zeros(p(&format!("self_attn.{proj}.bias")), &[d]));
                }
            }
            t.extend(layer_norm(p("self_attn_layer_norm"), d));
            t.push(Synth::normal(p("fc1.weight"), &[f, d]));
            t.push(Synth::zeros(p("fc1.bias"), &[f]));
            t.push(Synth::normal(p("fc2.weight"), &[d, f]));
            t.push(Synth::zeros(p("fc2.bias"), &[d]));
            t.extend(layer_norm(p("final_layer_norm"), d));
        }
        t.extend(layer_norm(p("layer_norm"), d));
        t
    }
}

/// Writes an untrained Whisper encoder to `dir`: `config.json`, `preprocessor_config.json` and
/// `model.safetensors` (f32, encoder tensors only; transformers initialises the unused
/// decoder itself and warns that its weights are missing).
pub fn write_whisper(spec: &WhisperSpec, dir: &Path) -> Result<()> {
    spec.validate()?;
    write_checkpoint(
        dir,
        &spec.config_json(),
        &spec.preprocessor_json(),
        spec.tensors(),
        spec.seed,
        spec.init_std,
    )
}

/// `dir/config.json`, `dir/preprocessor_config.json` and `dir/model.safetensors` (the
/// tensors drawn from `seed`).
fn write_checkpoint(
    dir: &Path,
    config: &serde_json::Value,
    preprocessor: &serde_json::Value,
    tensors: Vec<Synth>,
    seed: u64,
    init_std: f32,
) -> Result<()> {
    create_dir(dir)?;
    write_json(&dir.join("config.json"), config)?;
    write_json(&dir.join("preprocessor_config.json"), preprocessor)?;
    write_safetensors(&dir.join("model.safetensors"), tensors, seed, init_std)
}

/// Shape and init of a synthetic CLIP vision tower.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipVisionSpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Side of the square input (resize and crop size).
    pub image_size: usize,
    pub patch_size: usize,
    pub seed: u64,
    /// Std of the normal init of matrices.
    pub init_std: f32,
}

impl ClipVisionSpec {
    fn validate(&self) -> Result<()> {
        let h = self.hidden_size;
        let bad = |m: String| Err(ModelError::InvalidInput(format!("ClipVisionSpec: {m}")));
        if self.num_attention_heads == 0 || h == 0 || !h.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {h} is not a positive multiple of num_attention_heads {}",
                self.num_attention_heads
            ));
        }
        if self.patch_size == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return bad(format!(
                "image_size {} is not a positive multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.intermediate_size == 0 {
            return bad("intermediate_size must be > 0".into());
        }
        check_std(self.init_std, "ClipVisionSpec")
    }

    /// HF `CLIPVisionConfig` (`config.json`) of a vision-only `CLIPVisionModel`.
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "architectures": ["CLIPVisionModel"],
            "attention_dropout": 0.0,
            "dtype": "float32",
            "hidden_act": "quick_gelu",
            "hidden_size": self.hidden_size,
            "image_size": self.image_size,
            "initializer_factor": 1.0,
            "initializer_range": self.init_std,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": 1e-5,
            "model_type": "clip_vision_model",
            "num_attention_heads": self.num_attention_heads,
            "num_channels": 3,
            "num_hidden_layers": self.num_hidden_layers,
            "patch_size": self.patch_size,
            "projection_dim": 512
        })
    }

    /// HF `CLIPImageProcessor` (`preprocessor_config.json`): resize the shortest edge to
    /// `image_size`, centre-crop to `image_size` square, CLIP's mean/std.
    pub fn preprocessor_json(&self) -> serde_json::Value {
        let s = self.image_size;
        json!({
            "crop_size": {"height": s, "width": s},
            "do_center_crop": true,
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_rescale": true,
            "do_resize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "rescale_factor": 1.0 / 255.0,
            "size": {"shortest_edge": s}
        })
    }

    /// The tower's tensors under `vision_model.`, in draw order.
    fn tensors(&self) -> Vec<Synth> {
        let (h, i, p) = (self.hidden_size, self.intermediate_size, self.patch_size);
        let n_pos = (self.image_size / p).pow(2) + 1;
        let v = |n: &str| format!("vision_model.{n}");
        let mut t = vec![
            Synth::normal(v("embeddings.class_embedding"), &[h]),
            Synth::normal(v("embeddings.patch_embedding.weight"), &[h, 3, p, p]),
            Synth::normal(v("embeddings.position_embedding.weight"), &[n_pos, h]),
        ];
        t.extend(layer_norm(v("pre_layrnorm"), h));
        for l in 0..self.num_hidden_layers {
            let p = |n: &str| format!("vision_model.encoder.layers.{l}.{n}");
            t.extend(layer_norm(p("layer_norm1"), h));
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                t.push(Synth::normal(
                    p(&format!("self_attn.{proj}.weight")),
                    &[h, h],
                ));
                t.push(Synth::zeros(p(&format!("self_attn.{proj}.bias")), &[h]));
            }
            t.extend(layer_norm(p("layer_norm2"), h));
            t.push(Synth::normal(p("mlp.fc1.weight"), &[i, h]));
            t.push(Synth::zeros(p("mlp.fc1.bias"), &[i]));
            t.push(Synth::normal(p("mlp.fc2.weight"), &[h, i]));
            t.push(Synth::zeros(p("mlp.fc2.bias"), &[h]));
        }
        t.extend(layer_norm(v("post_layernorm"), h));
        t
    }
}

/// Writes an untrained vision-only CLIP tower to `dir`: `config.json`,
/// `preprocessor_config.json` and `model.safetensors` (f32).
pub fn write_clip_vision(spec: &ClipVisionSpec, dir: &Path) -> Result<()> {
    spec.validate()?;
    write_checkpoint(
        dir,
        &spec.config_json(),
        &spec.preprocessor_json(),
        spec.tensors(),
        spec.seed,
        spec.init_std,
    )
}

/// Trains a byte-level BPE tokenizer (GPT-2 / Qwen2 style: ByteLevel pre-tokenizer without a
/// prefix space, ByteLevel decoder and post-processor without offset trimming, no normaliser)
/// on `corpus` (one sequence per item) and saves it as a HF `tokenizer.json` at `out`.
///
/// `special` become special tokens with the lowest ids (0, 1, ... in the given order); then
/// come the 256 byte symbols, so every text round-trips, then the learned merges up to
/// `vocab_size` tokens in all (fewer when the corpus runs out of pairs to merge; size the
/// decoder's embedding from `vocab_size`, not from the tokenizer). The same corpus gives a
/// byte-identical file.
pub fn train_bpe_tokenizer(
    corpus: &[String],
    vocab_size: usize,
    special: &[&str],
    out: &Path,
) -> Result<()> {
    let base = special.len() + ByteLevel::alphabet().len();
    if vocab_size < base {
        return Err(ModelError::InvalidInput(format!(
            "tokenizer vocab_size {vocab_size} is below the {} special tokens + 256 byte symbols",
            special.len()
        )));
    }
    if special.iter().any(|s| s.is_empty()) {
        return Err(ModelError::InvalidInput(
            "tokenizer special tokens must not be empty".into(),
        ));
    }
    let failed = |e: tokenizers::Error| {
        ModelError::InvalidInput(format!("training tokenizer {}: {e}", out.display()))
    };
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(special.iter().map(|s| AddedToken::from(*s, true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    // One ByteLevel for all three roles, as Qwen2's tokenizer.json has it.
    let byte_level = ByteLevel::default()
        .add_prefix_space(false)
        .trim_offsets(false);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(byte_level.into()))
    .with_post_processor(Some(byte_level.into()))
    .with_decoder(Some(byte_level.into()))
    .build()
    .map_err(failed)?;
    tokenizer
        .train(&mut trainer, corpus.iter())
        .map_err(failed)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    tokenizer
        .save(out, true)
        .map_err(|e| write_failed(out, e))?;
    Ok(())
}

/// Seeded N(0, `std`) samples (Box-Muller on a `StdRng`).
fn normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random::<f32>();
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// HF Whisper's `sinusoids(length, channels)`: `[length, channels]` row-major, sines in the
/// first half of each row, cosines in the second, timescales up to 10000. Computed in f32 in
/// torch's order of operations, so the values match HF's to float rounding.
fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let increment = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let inv_timescales: Vec<f32> = (0..half).map(|i| (-increment * i as f32).exp()).collect();
    let mut out = Vec::with_capacity(length * channels);
    for t in 0..length {
        let scaled: Vec<f32> = inv_timescales.iter().map(|inv| t as f32 * inv).collect();
        out.extend(scaled.iter().map(|x| x.sin()));
        out.extend(scaled.iter().map(|x| x.cos()));
    }
    out
}

/// How a synthetic tensor's values are made.
enum Values {
    Normal,
    Fill(f32),
    Given(Vec<f32>),
}

/// One tensor to write: HF name, shape, init.
struct Synth {
    name: String,
    shape: Vec<usize>,
    values: Values,
}

impl Synth {
    fn normal(name: String, shape: &[usize]) -> Self {
        Self::new(name, shape, Values::Normal)
    }

    fn zeros(name: String, shape: &[usize]) -> Self {
        Self::new(name, shape, Values::Fill(0.0))
    }

    fn given(name: String, shape: &[usize], v: Vec<f32>) -> Self {
        Self::new(name, shape, Values::Given(v))
    }

    fn new(name: String, shape: &[usize], values: Values) -> Self {
        Self {
            name,
            shape: shape.to_vec(),
            values,
        }
    }
}

/// LayerNorm `name.weight` = 1, `name.bias` = 0.
fn layer_norm(name: String, dim: usize) -> [Synth; 2] {
    [
        Synth::new(format!("{name}.weight"), &[dim], Values::Fill(1.0)),
        Synth::zeros(format!("{name}.bias"), &[dim]),
    ]
}

fn check_std(std: f32, what: &str) -> Result<()> {
    if std.is_finite() && std >= 0.0 {
        Ok(())
    } else {
        Err(ModelError::InvalidInput(format!(
            "{what}: init_std {std} must be finite and >= 0"
        )))
    }
}

/// Draws `tensors` in order from a `StdRng` seeded with `seed` and writes them as f32
/// safetensors with the `{"format": "pt"}` metadata transformers expects.
fn write_safetensors(path: &Path, tensors: Vec<Synth>, seed: u64, std: f32) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let n: usize = t.shape.iter().product();
        let values = match t.values {
            Values::Normal => normal(&mut rng, n, std),
            Values::Fill(x) => vec![x; n],
            Values::Given(v) => v,
        };
        let bytes = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        data.push((t.name, t.shape, bytes));
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| ModelError::TensorShape {
                    path: path.to_path_buf(),
                    tensor: format!("{name} ({e})"),
                    found: vec![bytes.len() / 4],
                    expected: shape.clone(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| write_failed(path, e))?;
    std::fs::write(path, bytes).map_err(|e| write_failed(path, e))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| write_failed(dir, e))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::InvalidInput(format!("{}: {e}", path.display())))?;
    std::fs::write(path, text + "\n").map_err(|e| write_failed(path, e))
}

/// `ModelError` has no write variant; like `QFormer::save_random` we report the path with
/// `MissingFile` and say what failed.
fn write_failed(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::MissingFile {
        path: PathBuf::from(path),
        message: format!("cannot write: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    use crate::audio::AudioEncoder;
    use crate::llm::LlmTokenizer;
    use crate::tokens::SlotMode;
    use crate::vision::VisionEncoder;

    fn whisper_spec(seed: u64) -> WhisperSpec {
        WhisperSpec {
            d_model: 32,
            encoder_layers: 2,
            encoder_attention_heads: 4,
            encoder_ffn_dim: 64,
            num_mel_bins: 80,
            max_source_positions: 25,
            seed,
            init_std: 0.02,
        }
    }

    fn clip_spec(seed: u64) -> ClipVisionSpec {
        ClipVisionSpec {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            image_size: 32,
            patch_size: 8,
            seed,
            init_std: 0.02,
        }
    }

    fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect()
    }

    fn all_finite(t: &candle_core::Tensor) -> bool {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite())
    }

    #[test]
    fn whisper_loads_and_encodes() {
        let dir = tempfile::tempdir().unwrap();
        write_whisper(&whisper_spec(1), dir.path()).unwrap();
        let enc = AudioEncoder::load(dir.path(), &Device::Cpu).unwrap();
        let sine: Vec<f32> = (0..8000)
            .map(|i| (std::f32::consts::TAU * 440.0 * i as f32 / 16000.0).sin() * 0.5)
            .collect();
        let y = enc.encode(&[&sine]).unwrap();
        assert_eq!(y.dims(), &[1, 25, 32]);
        assert!(all_finite(&y));
        let pre: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("preprocessor_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(pre["feature_size"], 80);
    }

    #[test]
    fn whisper_positions_are_hf_sinusoids() {
        // transformers' sinusoids(3, 4): increment ln(10000) / 1, timescales [1, 1e-4].
        let s = sinusoids(3, 4);
        let want = [
            0.0,
            0.0,
            1.0,
            1.0,
            1f64.sin(),
            1e-4f64.sin(),
            1f64.cos(),
            1e-4f64.cos(),
            2f64.sin(),
            2e-4f64.sin(),
            2f64.cos(),
            2e-4f64.cos(),
        ];
        for (a, b) in s.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{s:?}");
        }
    }

    #[test]
    fn whisper_is_deterministic_per_seed() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_whisper(&whisper_spec(7), a.path()).unwrap();
        write_whisper(&whisper_spec(7), b.path()).unwrap();
        write_whisper(&whisper_spec(8), c.path()).unwrap();
        assert_eq!(read_all(a.path()), read_all(b.path()));
        let (wa, wc) = (
            std::fs::read(a.path().join("model.safetensors")).unwrap(),
            std::fs::read(c.path().join("model.safetensors")).unwrap(),
        );
        assert_eq!(wa.len(), wc.len());
        assert_ne!(wa, wc);
    }

    #[test]
    fn clip_vision_loads_and_encodes() {
        let dir = tempfile::tempdir().unwrap();
        write_clip_vision(&clip_spec(1), dir.path()).unwrap();
        let enc = VisionEncoder::load(dir.path(), &Device::Cpu).unwrap();
        let rgb: Vec<u8> = (0..64 * 64 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let y = enc.encode_slots(&[(&rgb, 64, 64)], SlotMode::All).unwrap();
        assert_eq!(y.dims(), &[1, 16, 32]);
        assert!(all_finite(&y));
        let cls = enc.encode_slots(&[(&rgb, 64, 64)], SlotMode::Cls).unwrap();
        assert_eq!(cls.dims(), &[1, 1, 32]);
        assert!(all_finite(&cls));
    }

    #[test]
    fn clip_vision_is_deterministic_per_seed() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        write_clip_vision(&clip_spec(3), a.path()).unwrap();
        write_clip_vision(&clip_spec(3), b.path()).unwrap();
        write_clip_vision(&clip_spec(4), c.path()).unwrap();
        assert_eq!(read_all(a.path()), read_all(b.path()));
        assert_ne!(
            std::fs::read(a.path().join("model.safetensors")).unwrap(),
            std::fs::read(c.path().join("model.safetensors")).unwrap()
        );
    }

    #[test]
    fn bad_specs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = whisper_spec(0);
        w.encoder_attention_heads = 5;
        assert!(matches!(
            write_whisper(&w, dir.path()),
            Err(ModelError::InvalidInput(_))
        ));
        let mut c = clip_spec(0);
        c.patch_size = 7;
        assert!(matches!(
            write_clip_vision(&c, dir.path()),
            Err(ModelError::InvalidInput(_))
        ));
        let out = dir.path().join("tokenizer.json");
        assert!(matches!(
            train_bpe_tokenizer(&[], 100, &[], &out),
            Err(ModelError::InvalidInput(_))
        ));
    }

    const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

    fn corpus() -> Vec<String> {
        ["a red circle moving left", "two", "yes", "the sound"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn tokenizer_round_trips_and_has_special_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("tokenizer.json");
        train_bpe_tokenizer(&corpus(), 300, &SPECIAL, &path).unwrap();
        let tok = LlmTokenizer::from_file(&path).unwrap();
        // The tiny corpus runs out of pairs before 300 tokens.
        let n = tok.vocab_size();
        assert!(n > 3 + 256 && n <= 300, "{n}");
        for (i, s) in SPECIAL.iter().enumerate() {
            assert_eq!(tok.token_id(s), Some(i as u32));
            assert_eq!(tok.encode(s).unwrap(), vec![i as u32]);
        }
        let mut texts = corpus();
        texts.extend(["café ☕ naïve\n  two  spaces\t".to_string(), String::new()]);
        for t in &texts {
            let ids = tok.encode(t).unwrap();
            assert_eq!(&tok.decode(&ids).unwrap(), t);
        }
        let text = "a red circle";
        assert!(tok.encode(text).unwrap().len() < text.len());
        let chat = "<|im_start|>yes<|im_end|>";
        let ids = tok.encode(chat).unwrap();
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
    }

    #[test]
    fn tokenizer_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        train_bpe_tokenizer(&corpus(), 300, &SPECIAL, &a).unwrap();
        train_bpe_tokenizer(&corpus(), 300, &SPECIAL, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }
}
