//! Encoders against golden fixtures from PyTorch `transformers`
//! (tools/make_encoder_fixtures.py): log-mel front end, Whisper encoder (80 and 128 mel,
//! `model.encoder.` and `encoder.` prefixes, full and sliced positional context), CLIP and
//! SigLIP preprocessing and towers.
//!
//! Relative error is `max|a - b| / max|b|` over the whole tensor (see `ops::max_rel_err`).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use sensorium_models::audio::AudioEncoder;
use sensorium_models::ops::max_rel_err;
use sensorium_models::tokens::SlotMode;
use sensorium_models::vision::VisionEncoder;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn io(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("io.safetensors"), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn check_whisper(name: &str, n_mels: usize) {
    let enc = AudioEncoder::load(&fixture(name), &Device::Cpu).unwrap();
    assert_eq!(enc.mel.n_mels(), n_mels);
    let io = io(name);
    for (tag, frames) in [("long", 50), ("short", 25)] {
        let wav = flat(&io[&format!("{tag}.wav")]);
        // Front end alone.
        let mel = enc.mel.compute(&wav).unwrap();
        let want_mel = flat(&io[&format!("{tag}.mel")]);
        assert_eq!(mel.len(), n_mels * wav.len() / 160);
        let e = max_rel_err(&mel, &want_mel, 1e-6);
        assert!(e <= 1e-4, "{name} {tag} mel rel err {e}");
        // Encoder alone, on HF's mel.
        let mel_t = io[&format!("{tag}.mel")].clone();
        let out = enc.encoder.forward(&mel_t).unwrap();
        assert_eq!(out.dims(), &[1, frames, 32]);
        let want = flat(&io[&format!("{tag}.out")]);
        let e = max_rel_err(&flat(&out), &want, 1e-6);
        assert!(e <= 1e-4, "{name} {tag} encoder rel err {e}");
        // End to end from raw audio.
        let out = enc.encode(&[&wav]).unwrap();
        let e = max_rel_err(&flat(&out), &want, 1e-6);
        assert!(e <= 1e-4, "{name} {tag} end-to-end rel err {e}");
    }
}

#[test]
fn whisper_80_mel_matches_transformers() {
    check_whisper("whisper80", 80);
}

#[test]
fn whisper_128_mel_encoder_prefix_matches_transformers() {
    check_whisper("whisper128", 128);
}

#[test]
fn whisper_batches_and_pads_slots() {
    let enc = AudioEncoder::load(&fixture("whisper80"), &Device::Cpu).unwrap();
    let io = io("whisper80");
    let wav = flat(&io["short.wav"]);
    let half: Vec<f32> = wav.iter().map(|x| x * 0.5).collect();
    let batch = enc.encode(&[&wav, &half]).unwrap();
    let one = enc.encode(&[&half]).unwrap();
    let e = max_rel_err(
        &flat(&batch.get(1).unwrap()),
        &flat(&one.get(0).unwrap()),
        1e-6,
    );
    assert!(e <= 1e-5, "batched vs single rel err {e}");
    // FAVOR: 25 Whisper frames per 0.5 s frame, zero-padded to 32 slots.
    let slots = enc.encode_slots(&[&wav], SlotMode::Pad(32)).unwrap();
    assert_eq!(slots.dims(), &[1, 32, 32]);
    let tail = flat(&slots.narrow(1, 25, 7).unwrap());
    assert!(tail.iter().all(|v| *v == 0.0));
    // Chunks of unequal length in one batch are refused with a clear message.
    let err = enc.encode(&[&wav, &wav[..4000]]).unwrap_err().to_string();
    assert!(err.contains("equal length"), "{err}");
}

fn check_vision(name: &str, tokens: usize, cls: bool) {
    let enc = VisionEncoder::load(&fixture(name), &Device::Cpu).unwrap();
    let io = io(name);
    let img = &io["image"];
    let (h, w, _) = img.dims3().unwrap();
    let rgb = img.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let px = enc.pixels(&[(&rgb, w, h)]).unwrap();
    let want_px = flat(&io["pixels"]);
    let e = max_rel_err(&flat(&px), &want_px, 1e-6);
    assert!(e <= 1e-4, "{name} preprocessing rel err {e}");
    let (hs, pooled) = enc.forward(&io["pixels"]).unwrap();
    assert_eq!(hs.dims(), &[1, tokens, 32]);
    let e = max_rel_err(&flat(&hs), &flat(&io["last_hidden_state"]), 1e-6);
    assert!(e <= 1e-4, "{name} last_hidden_state rel err {e}");
    assert_eq!(pooled.is_some(), cls);
    if let Some(p) = pooled {
        let e = max_rel_err(&flat(&p), &flat(&io["pooled"]), 1e-6);
        assert!(e <= 1e-4, "{name} pooled rel err {e}");
    }
    // Slots: 16 patches pooled to 4 slots = means of 4 consecutive patches.
    let slots = enc
        .encode_slots(&[(&rgb, w, h)], SlotMode::Pool(4))
        .unwrap();
    assert_eq!(slots.dims(), &[1, 4, 32]);
    let (hs, _) = enc.forward(&px).unwrap();
    let patches = hs.narrow(1, usize::from(cls), 16).unwrap();
    let want = patches.narrow(1, 4, 4).unwrap().mean(1).unwrap();
    let e = max_rel_err(&flat(&slots.narrow(1, 1, 1).unwrap()), &flat(&want), 1e-6);
    assert!(e <= 1e-5, "{name} pooled slot rel err {e}");
    let all = enc.encode_slots(&[(&rgb, w, h)], SlotMode::All).unwrap();
    assert_eq!(all.dims(), &[1, 16, 32]);
}

#[test]
fn clip_full_config_matches_transformers() {
    check_vision("clip", 17, true);
}

#[test]
fn siglip_vision_only_matches_transformers() {
    check_vision("siglip", 16, false);
    let enc = VisionEncoder::load(&fixture("siglip"), &Device::Cpu).unwrap();
    let rgb = vec![7u8; 40 * 30 * 3];
    let err = enc
        .encode_slots(&[(&rgb, 40, 30)], SlotMode::Cls)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CLS"), "{err}");
}
