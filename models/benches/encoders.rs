//! Per-frame encoder latency and per-window Q-Former latency on CPU at real model shapes
//! (whisper-base encoder, clip-vit-base-patch16, FAVOR's Q-Former: 2 layers, 768-d, 12
//! heads, 32 queries, 10 frames x 32 slots of 1536-d), with random weights that
//! `benches/bench_encoders.py` generates at bench time and also runs in PyTorch eager.
//!
//! Run through the driver: `python3 benches/bench_encoders.py` (it prints the ratios).
//! Directly: `SENSORIUM_BENCH_DIR=<dir made by the driver> cargo bench -p sensorium-models
//! --bench encoders`. Prints `RESULT <name> <median ms>` lines.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use sensorium_models::audio::AudioEncoder;
use sensorium_models::qformer::{
    FrameInput, QFormer, QFormerBackend, QFormerStream, SlotContext, StreamFrame,
};
use sensorium_models::tokens::SlotMode;
use sensorium_models::vision::VisionEncoder;

mod common;
use common::noise;

fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    sensorium_models::pin_thread_count();
    let Ok(dir) = std::env::var("SENSORIUM_BENCH_DIR") else {
        eprintln!("SENSORIUM_BENCH_DIR is not set: run python3 benches/bench_encoders.py");
        return;
    };
    let dir = PathBuf::from(dir);
    let iters: usize = std::env::var("SENSORIUM_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dev = Device::Cpu;

    // Loading the checkpoints (memory-mapped safetensors; the page cache is warm after the
    // first load, as it is for PyTorch's side of the run).
    let ms = median_ms(iters, || {
        AudioEncoder::load(&dir.join("whisper-base"), &dev).expect("whisper-base");
    });
    println!("RESULT whisper_load {ms:.3}");
    let ms = median_ms(iters, || {
        VisionEncoder::load(&dir.join("clip-b16"), &dev).expect("clip-b16");
    });
    println!("RESULT clip_load {ms:.3}");

    // Whisper-base encoder on one 0.5 s frame (8000 samples -> 50 mel -> 25 frames).
    let audio = AudioEncoder::load(&dir.join("whisper-base"), &dev).expect("whisper-base");
    let wav = noise(8000, 1);
    let ms = median_ms(iters, || {
        audio.mel.compute(&wav).unwrap();
    });
    println!("RESULT whisper_mel_frame {ms:.3}");
    let mel = Tensor::from_vec(audio.mel.compute(&wav).unwrap(), (1, 80, 50), &dev).unwrap();
    let ms = median_ms(iters, || {
        audio.encoder.forward(&mel).unwrap();
    });
    println!("RESULT whisper_encoder_frame {ms:.3}");
    let ms = median_ms(iters, || {
        audio.encode(&[&wav]).unwrap();
    });
    println!("RESULT whisper_e2e_frame {ms:.3}");
    let batch: Vec<Vec<f32>> = (0..10).map(|i| noise(8000, i + 2)).collect();
    let refs: Vec<&[f32]> = batch.iter().map(|v| &v[..]).collect();
    let ms = median_ms(iters, || {
        audio.encode(&refs).unwrap();
    }) / 10.0;
    println!("RESULT whisper_e2e_frame_batch10 {ms:.3}");

    // CLIP ViT-B/16 on one 320x240 RGB frame.
    let vision = VisionEncoder::load(&dir.join("clip-b16"), &dev).expect("clip-b16");
    let rgb: Vec<u8> = noise(320 * 240 * 3, 7)
        .iter()
        .map(|v| ((v + 0.5) * 255.0) as u8)
        .collect();
    let ms = median_ms(iters, || {
        vision.pixels(&[(&rgb, 320, 240)]).unwrap();
    });
    println!("RESULT clip_preprocess_frame {ms:.3}");
    let px = vision.pixels(&[(&rgb, 320, 240)]).unwrap();
    let ms = median_ms(iters, || {
        vision.forward(&px).unwrap();
    });
    println!("RESULT clip_tower_frame {ms:.3}");
    let ms = median_ms(iters, || {
        vision
            .encode_slots(&[(&rgb, 320, 240)], SlotMode::Pool(32))
            .unwrap();
    });
    println!("RESULT clip_e2e_frame {ms:.3}");

    // FAVOR-size Q-Former, one 10-frame window.
    let mut qf = QFormer::load(&dir.join("qformer"), &dev).expect("qformer");
    let frames: Vec<FrameInput> = (0..40u32)
        .map(|i| FrameInput {
            audio: Some(Tensor::from_vec(noise(25 * 1280, 100 + i), (25, 1280), &dev).unwrap()),
            visual: Some(Tensor::from_vec(noise(32 * 768, 200 + i), (32, 768), &dev).unwrap()),
        })
        .collect();
    let valid = [true; 10];
    qf.cfg.context = SlotContext::Window;
    let ms = median_ms(iters, || {
        qf.forward_sequence(&frames[..10], &valid, 0, 10).unwrap();
    });
    println!("RESULT qformer_window_full {ms:.3}");
    // Streaming: stride 1, each new window computes one frame's slot rows + the queries.
    qf.cfg.context = SlotContext::Lookback;
    qf.cfg.lookback = 10;
    let mut st = QFormerStream::new();
    let win = |start: usize| -> Vec<StreamFrame> {
        (start..start + 10)
            .map(|i| StreamFrame {
                index: i as u64,
                valid: true,
                input: frames[i].clone(),
            })
            .collect()
    };
    let w = st.window(&qf, &win(0)).unwrap();
    qf.query_batch(&[&w]).unwrap();
    let mut start = 0;
    let ms = median_ms(iters.min(28), || {
        start += 1;
        let w = st.window(&qf, &win(start)).unwrap();
        qf.query_batch(&[&w]).unwrap();
    });
    println!("RESULT qformer_window_incremental_stride1 {ms:.3}");
}
