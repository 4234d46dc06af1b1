//! CPU benchmark driver for the LLM decoder, used by benches/bench_llm.py to compare with
//! llama.cpp on the same GGUF file.
//!
//!   llm_bench gen <dir> [--layers N] [--tokenizer tokenizer.json]
//!                                        random Qwen2.5-0.5B-shaped model: <dir>/hf (f32
//!                                        safetensors), <dir>/f32.gguf, <dir>/q4_0.gguf
//!   llm_bench run <model> [--prompt N] [--gen M]
//!                                        greedy decode; prints one JSON line with load time,
//!                                        time to first token and decode tokens/s
//!
//! The prompt is the fixed id sequence `100 + (7 i) % 400` so other engines can feed the same.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use sensorium_models::llm::synth::Qwen2Spec;
use sensorium_models::llm::{argmax, load_model, ComputeDtype};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    sensorium_models::pin_thread_count();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let dir = PathBuf::from(args.get(2).ok_or("gen <dir>")?);
            let mut spec = Qwen2Spec::qwen2_5_0_5b();
            spec.num_hidden_layers = arg(&args, "--layers", spec.num_hidden_layers);
            let tok = args
                .iter()
                .position(|a| a == "--tokenizer")
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/tokenizer.json")
                });
            let t = Instant::now();
            let w = spec.weights()?;
            eprintln!("weights generated in {:.1}s", t.elapsed().as_secs_f64());
            spec.write_hf_dir(&dir.join("hf"), &w, &tok, 0, 2)?;
            spec.write_gguf(&dir.join("f32.gguf"), &w, GgmlDType::F32, &tok, 0, 2)?;
            spec.write_gguf(&dir.join("q4_0.gguf"), &w, GgmlDType::Q4_0, &tok, 0, 2)?;
            eprintln!(
                "written to {} in {:.1}s",
                dir.display(),
                t.elapsed().as_secs_f64()
            );
        }
        Some("run") => {
            let model = PathBuf::from(args.get(2).ok_or("run <model>")?);
            let n_prompt: usize = arg(&args, "--prompt", 128);
            let n_gen: usize = arg(&args, "--gen", 32);
            let prompt: Vec<u32> = (0..n_prompt).map(|i| 100 + (7 * i as u32) % 400).collect();
            let t = Instant::now();
            let m = load_model(
                &model,
                None,
                ComputeDtype::F32,
                n_prompt + n_gen + 8,
                &Device::Cpu,
            )?;
            let load_s = t.elapsed().as_secs_f64();
            let mut dec = m.decoder;
            let t0 = Instant::now();
            let l = dec.forward_tokens(&prompt, 0, false)?;
            let first_logits = l.squeeze(0)?.to_vec1::<f32>()?;
            let mut next = argmax(&first_logits);
            let ttft = t0.elapsed().as_secs_f64();
            let mut out = vec![next];
            let t1 = Instant::now();
            for _ in 1..n_gen {
                let pos = dec.cache_len();
                let l = dec.forward_tokens(&[next], pos, false)?;
                next = argmax(&l.squeeze(0)?.to_vec1::<f32>()?);
                out.push(next);
            }
            let dt = t1.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({
                    "engine": "sensorium",
                    "model": model.display().to_string(),
                    "load_s": load_s,
                    "prompt_tokens": n_prompt,
                    "gen_tokens": n_gen,
                    "ttft_ms": ttft * 1e3,
                    "decode_tok_s": (n_gen - 1) as f64 / dt,
                    "tokens": out,
                    "first_logits_head": &first_logits[..16],
                })
            );
        }
        _ => {
            return Err(
                "usage: llm_bench gen <dir> [--layers N] | run <model> [--prompt N] [--gen M]"
                    .into(),
            )
        }
    }
    Ok(())
}
