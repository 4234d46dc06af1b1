//! A tiny trainable stack for the training tests: a random causal Q-Former over 8-wide audio
//! and visual tokens, the committed tiny Qwen2 fixture (hidden 64, vocab 512) and synthetic
//! clips whose frames are seeded random tokens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use sensorium_models::llm::LlmConfig;
use sensorium_models::qformer::{FrameInput, QFormerConfig};
use sensorium_models::train::trainer::QFormerInit;
use sensorium_models::train::{
    ClipFeatures, ClipWindow, Example, TrainConfig, TrainLlm, Trainer, Turn,
};

pub fn qwen2_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/qwen2")
}

pub fn qformer_cfg() -> QFormerConfig {
    QFormerConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        layer_norm_eps: 1e-6,
        num_query_tokens: 4,
        slots_per_frame: 2,
        audio_width: 8,
        audio_slot_width: 8,
        audio_proj: true,
        visual_width: 8,
        visual_slot_width: 8,
        visual_proj: true,
        max_slot_positions: 64,
        slot_attention_heads: 2,
        lookback: 2,
        llm_hidden_size: 64,
        ..QFormerConfig::default()
    }
}

pub fn train_cfg(llm: TrainLlm) -> TrainConfig {
    let mut c = TrainConfig {
        manifest: Some("unused.jsonl".into()),
        train_llm: llm,
        lr: 1e-2,
        clip_grad_norm: 0.0,
        ..TrainConfig::default()
    };
    c.lora.r = 16;
    c.lora.alpha = 2.0 * c.lora.r as f64;
    c.lora.dropout = 0.0;
    c
}

pub fn llm_cfg() -> LlmConfig {
    let mut l = LlmConfig::new(qwen2_dir());
    l.max_context_tokens = 256;
    l.max_tokens = 16;
    l.context_windows = 2;
    l
}

pub fn trainer(llm: TrainLlm, out: &std::path::Path) -> Trainer {
    let init = QFormerInit::Random {
        cfg: qformer_cfg(),
        seed: 7,
        std: 0.2,
    };
    Trainer::new(train_cfg(llm), llm_cfg(), init, out.to_path_buf()).unwrap()
}

/// SplitMix64-driven uniform values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A clip of `frames` frames (3 audio tokens, 2 visual tokens each) in windows of 3, stride 3.
pub fn clip(seed: u64, frames: usize) -> Arc<ClipFeatures> {
    let dev = Device::Cpu;
    let f = (0..frames)
        .map(|i| FrameInput {
            audio: Some(
                Tensor::from_vec(values(seed * 1000 + 2 * i as u64, 24), (3, 8), &dev).unwrap(),
            ),
            visual: Some(
                Tensor::from_vec(values(seed * 1000 + 2 * i as u64 + 1, 16), (2, 8), &dev).unwrap(),
            ),
        })
        .collect();
    let windows = (0..frames.div_ceil(3))
        .map(|w| ClipWindow {
            first: 3 * w as u64,
            valid: (0..3).map(|j| 3 * w + j < frames).collect(),
            t_start: 3 * w as u64 * 500_000_000,
            t_end: ((3 * w + 3).min(frames)) as u64 * 500_000_000,
        })
        .collect();
    Arc::new(ClipFeatures {
        frames: f,
        inputs: Vec::new(),
        windows,
    })
}

/// An example over the last two windows of `clip`.
pub fn example(t: &Trainer, clip: Arc<ClipFeatures>, q: &str, a: &str) -> Example {
    let n = clip.windows.len();
    let turn = Turn {
        question: q.into(),
        answer: a.into(),
    };
    t.example(
        clip,
        (n.saturating_sub(2)..n).collect(),
        "test",
        "test",
        &turn,
    )
    .unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A trainer whose encoders (the committed tiny Whisper and CLIP, 32-d) train too; the
/// Q-Former reads 32-d audio and visual tokens, 2 visual slots per frame.
pub fn encoder_trainer(llm: TrainLlm, out: &std::path::Path) -> Trainer {
    let cfg = QFormerConfig {
        audio_width: 32,
        visual_width: 32,
        ..qformer_cfg()
    };
    let init = QFormerInit::Random {
        cfg,
        seed: 7,
        std: 0.2,
    };
    let enc = sensorium_models::train::TrainableEncoders::load(
        Some(&fixture("whisper80")),
        Some(&fixture("clip")),
        sensorium_models::tokens::SlotMode::Pool(2),
    )
    .unwrap();
    Trainer::new(train_cfg(llm), llm_cfg(), init, out.to_path_buf())
        .unwrap()
        .with_encoders(enc)
        .unwrap()
}

/// A clip of `frames` frames carrying the encoders' inputs (8 mel frames of 80 bins, 32x32
/// pixels; seeded), in windows of 3, stride 3.
pub fn input_clip(seed: u64, frames: usize) -> Arc<ClipFeatures> {
    let dev = Device::Cpu;
    let inputs = (0..frames)
        .map(|i| sensorium_models::stage::EncoderInput {
            mel: Some(
                Tensor::from_vec(values(seed * 1000 + 2 * i as u64, 640), (80, 8), &dev).unwrap(),
            ),
            pixels: Some(
                Tensor::from_vec(
                    values(seed * 1000 + 2 * i as u64 + 1, 3 * 32 * 32),
                    (3, 32, 32),
                    &dev,
                )
                .unwrap(),
            ),
        })
        .collect();
    let c = clip(seed, frames);
    Arc::new(ClipFeatures {
        frames: vec![FrameInput::default(); frames],
        inputs,
        windows: c.windows.clone(),
    })
}
