//! Training throughput of `sensorium train`'s step at FAVOR's shape: the causal Q-Former
//! (BERT-base width, 2 layers, 32 queries, 32 slots, Whisper-large audio width 1280, visual 768,
//! one 10-frame window) into the LLM at `MODEL_DIR` with LoRA (FAVOR's r = 32 on q/k/v/o),
//! batch 1. Prints one JSON object: steps/s, samples/s, tokens/s and the process's peak RSS.
//! `benches/train_vs_torch.py` runs it beside the same step in PyTorch + PEFT.
//!
//! `cargo run --release -p sensorium-models --example train_bench -- MODEL_DIR TOKENIZER STEPS`

use std::sync::Arc;

use candle_core::{Device, Tensor};
use sensorium_models::llm::{DecoderConfig, LlmConfig};
use sensorium_models::qformer::{FrameInput, QFormerConfig};
use sensorium_models::train::trainer::QFormerInit;
use sensorium_models::train::{ClipFeatures, ClipWindow, TrainConfig, TrainLlm, Trainer, Turn};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sensorium_models::pin_thread_count();
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: train_bench MODEL_DIR TOKENIZER STEPS".into());
    }
    let steps: u64 = args[3].parse()?;
    let model = std::path::PathBuf::from(&args[1]);
    let hidden = DecoderConfig::from_hf_file(&model.join("config.json"))?.hidden_size;
    let qcfg = QFormerConfig {
        llm_hidden_size: hidden,
        ..QFormerConfig::default()
    };
    let mut train = TrainConfig {
        manifest: Some("bench".into()),
        train_llm: TrainLlm::Lora,
        steps: Some(steps + 1),
        ..TrainConfig::default()
    };
    train.lora.dropout = 0.1;
    let mut llm = LlmConfig::new(&model);
    llm.tokenizer = Some(args[2].clone().into());
    llm.max_context_tokens = 256;
    let init = QFormerInit::Random {
        cfg: qcfg.clone(),
        seed: 1,
        std: 0.02,
    };
    let out = std::env::temp_dir().join("sensorium-train-bench");
    let mut t = Trainer::new(train, llm, init, out)?;

    let dev = Device::Cpu;
    let frames = (0..10)
        .map(|_| -> candle_core::Result<FrameInput> {
            Ok(FrameInput {
                audio: Some(Tensor::randn(0f32, 1.0, (25, qcfg.audio_width), &dev)?),
                visual: Some(Tensor::randn(0f32, 1.0, (32, qcfg.visual_width), &dev)?),
            })
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let clip = Arc::new(ClipFeatures {
        frames,
        inputs: Vec::new(),
        windows: vec![ClipWindow {
            first: 0,
            valid: vec![true; 10],
            t_start: 0,
            t_end: 5_000_000_000,
        }],
    });
    let turn = Turn {
        question: "What do you hear?".into(),
        answer: "a dog barking".into(),
    };
    let ex = t.example(clip, vec![0], "bench", "bench", &turn)?;
    let positions = t.layout.prefix.len()
        + t.layout.window_overhead()
        + qcfg.num_query_tokens
        + ex.question_ids.len()
        + ex.answer_ids.len()
        - 1;
    let train_set = vec![ex];
    let total = steps + 1;
    t.train_step(&train_set, total)?; // warm-up: allocations, first GEMM plans
    let start = std::time::Instant::now();
    let mut answer_tokens = 0;
    for _ in 0..steps {
        answer_tokens += t.train_step(&train_set, total)?.tokens;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "system": "sensorium (candle)",
            "steps": steps,
            "seconds": secs,
            "samples_per_s": steps as f64 / secs,
            "tokens_per_s": (steps as usize * positions) as f64 / secs,
            "answer_tokens_per_s": answer_tokens as f64 / secs,
            "positions": positions,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}
