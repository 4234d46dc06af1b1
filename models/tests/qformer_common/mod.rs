//! The committed Q-Former fixture (tools/qformer_reference.py), shared by the candle and the
//! kernel-backed Q-Former tests.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use sensorium_models::qformer::{FrameInput, MaskDirection, SlotContext};

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
