//! The committed Q-Former fixture (tools/qformer_reference.py), shared by the candle and the
//! kernel-backed Q-Former tests.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use sensorium_models::qformer::{FrameInput, MaskDirection, QFormerConfig, SlotContext};

/// The fixture directory (weights in our safetensors layout + `io.safetensors`).
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qformer")
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Reference inputs and outputs, and the 9 fixture frames as Q-Former inputs.
pub struct Fixture {
    pub io: HashMap<String, Tensor>,
    pub frames: Vec<FrameInput>,
}

pub fn fixture() -> Fixture {
    let io = candle_core::safetensors::load(dir().join("io.safetensors"), &Device::Cpu).unwrap();
    let ha = flat(&io["has_audio"]);
    let hv = flat(&io["has_video"]);
    let frames = (0..9)
        .map(|i| FrameInput {
            audio: (ha[i] > 0.5).then(|| io["audio"].get(i).unwrap()),
            visual: (hv[i] > 0.5).then(|| io["visual"].get(i).unwrap()),
        })
        .collect();
    Fixture { io, frames }
}

/// The reference cases: (name, frames used, mask direction, slot context).
pub const CASES: [(&str, usize, MaskDirection, SlotContext); 4] = [
    ("past_window", 5, MaskDirection::Past, SlotContext::Window),
    (
        "future_window",
        5,
        MaskDirection::Future,
        SlotContext::Window,
    ),
    (
        "past_lookback",
        9,
        MaskDirection::Past,
        SlotContext::Lookback,
    ),
    (
        "past_lookback_pad",
        9,
        MaskDirection::Past,
        SlotContext::Lookback,
    ),
];

/// A tiny Q-Former (2 slots per frame, lookback 4) for streaming tests.
pub fn tiny_cfg() -> QFormerConfig {
    QFormerConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        num_query_tokens: 3,
        slots_per_frame: 2,
        audio_width: 6,
        audio_slot_width: 4,
        visual_width: 4,
        visual_slot_width: 4,
        max_slot_positions: 30, // period 15 frames: the run below wraps positions twice
        slot_attention_heads: 2,
        lookback: 4,
        llm_hidden_size: 10,
        ..QFormerConfig::default()
    }
}

/// Deterministic inputs of frame `i`; some frames lack audio (i % 7 == 3) or video (i % 5 == 2).
pub fn frame_input(i: usize) -> FrameInput {
    let dev = Device::Cpu;
    let a: Vec<f32> = (0..2 * 6)
        .map(|j| ((i * 31 + j * 7) as f32 * 0.37).sin())
        .collect();
    let v: Vec<f32> = (0..2 * 4)
        .map(|j| ((i * 17 + j * 5) as f32 * 0.23).cos())
        .collect();
    FrameInput {
        audio: (i % 7 != 3).then(|| Tensor::from_vec(a, (2, 6), &dev).unwrap()),
        visual: (i % 5 != 2).then(|| Tensor::from_vec(v, (2, 4), &dev).unwrap()),
    }
}
