//! Writes the default model's outputs on fixed inputs, for `tools/default_model_parity.py`
//! to compare with transformers: the Whisper encoder on the log-mel of a 1 kHz tone, the CLIP
//! tower on a drawn frame, the Qwen2 decoder's logits on a tokenised question.
//!
//! `cargo run --release -p sensorium-models --example default_parity -- BUNDLE_DIR OUT.safetensors`

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use sensorium_models::audio::AudioEncoder;
use sensorium_models::llm::{load_model, ComputeDtype, LlmTokenizer};
use sensorium_models::vision::VisionEncoder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: default_parity BUNDLE_DIR OUT.safetensors".into());
    }
    let dir = Path::new(&args[1]);
    let dev = Device::Cpu;
    let mut out: HashMap<String, Tensor> = HashMap::new();

    let audio = AudioEncoder::load(&dir.join("audio"), &dev)?;
    let tone: Vec<f32> = (0..8000)
        .map(|p| 0.4 * (std::f32::consts::TAU * 1000.0 * p as f32 / 16000.0).sin())
        .collect();
    let mel = audio.mel(&tone)?.unsqueeze(0)?;
    out.insert("audio.mel".into(), mel.clone());
    out.insert("audio.hidden".into(), audio.encode_mel(&mel)?);

    let vision = VisionEncoder::load(&dir.join("vision"), &dev)?;
    let s = vision.config.image_size;
    let rgb: Vec<u8> = (0..s * s)
        .flat_map(|i| {
            let (x, y) = (i % s, i / s);
            let inside = (x as i64 - 20).pow(2) + (y as i64 - 30).pow(2) < 100;
            if inside {
                [255u8, 0, 0]
            } else {
                [(x * 2) as u8, (y * 3) as u8, 10]
            }
        })
        .collect();
    let pixels = vision.pixels(&[(&rgb, s, s)])?;
    out.insert("vision.pixels".into(), pixels.clone());
    out.insert("vision.hidden".into(), vision.forward(&pixels)?.0);

    let tok = LlmTokenizer::from_file(&dir.join("llm/tokenizer.json"))?;
    let ids = tok.encode("What colour is the circle? a red circle moving left")?;
    let mut m = load_model(
        &dir.join("llm"),
        None,
        ComputeDtype::F32,
        ids.len() + 1,
        &dev,
    )?;
    let logits = m.decoder.forward_tokens(&ids, 0, true)?;
    out.insert("llm.ids".into(), Tensor::new(ids.as_slice(), &dev)?);
    out.insert("llm.logits".into(), logits);
    candle_core::safetensors::save(&out, &args[2])?;
    Ok(())
}
