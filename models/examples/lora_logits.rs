//! Prints the logits of every position of a token sequence from an HF decoder with a PEFT
//! LoRA adapter applied the way `sensorium run` applies `[llm] adapter` (unmerged), as JSON:
//! `{"logits": [[...], ...]}`. Used by `tools/peft_check.py` to compare with PEFT.
//!
//! `cargo run --release -p sensorium-models --example lora_logits -- MODEL_DIR ADAPTER_DIR 1,2,3`

use candle_core::Device;
use sensorium_models::llm::{load_model, ComputeDtype};
use sensorium_models::train::lora::load_adapter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: lora_logits MODEL_DIR ADAPTER_DIR TOKEN_IDS(comma-separated)".into());
    }
    let dev = Device::Cpu;
    let ids: Vec<u32> = args[3]
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut m = load_model(
        std::path::Path::new(&args[1]),
        None,
        ComputeDtype::F32,
        ids.len() + 1,
        &dev,
    )?;
    let pairs = load_adapter(std::path::Path::new(&args[2]), &dev)?;
    m.decoder.set_lora(&pairs)?;
    let logits = m.decoder.forward_tokens(&ids, 0, true)?;
    let rows = logits.to_vec2::<f32>()?;
    println!("{}", serde_json::json!({ "logits": rows }));
    Ok(())
}
