//! The untrained start of the default model, seeded: a small Whisper-format audio encoder, a
//! small CLIP-format vision tower and a small Qwen2-format LLM with its own byte-level BPE
//! tokenizer (trained on the scene world's questions and answers), each in its Hugging Face
//! layout, plus the `sensorium train` config that trains them (and a random causal Q-Former)
//! on the scene world. `make train-default` runs it, then trains.
//!
//! `cargo run --release --example init_default -- OUT_DIR [STEPS] [PRETRAIN_STEPS] [KEY=VALUE...]`
//!
//! The optional `KEY=VALUE` overrides change the recipe for experiments (the shipped model
//! uses the defaults): `slots=` (visual slots per frame), `patch=` (the vision tower's patch
//! size), `vision_width=`, `vision_layers=`, `train_seeds=A..B`.

use std::path::{Path, PathBuf};

use sensorium_engine::scene::{self, Rng, SceneTimeline, WorldParams};
use sensorium_models::llm::synth::Qwen2Spec;
use sensorium_models::synth::{self, ClipVisionSpec, WhisperSpec};

/// What the default model is trained with (recorded in the bundle too).
const FPS: f64 = 2.0;
const SIZE: u32 = 64;
const WINDOW: usize = 4;
const SYSTEM: &str = "You watch and listen.";
const SPECIAL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const VOCAB: usize = 384;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = PathBuf::from(args.get(1).map_or("target/default-init", String::as_str));
    let steps: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4200);
    let pretrain: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8000);
    let recipe = Recipe::from_args(args.iter().skip(4))?;
    std::fs::create_dir_all(&out)?;

    // The tokenizer learns the world's words and the template's pieces.
    let window_s = WINDOW as f64 / FPS;
    let mut corpus: Vec<String> = vec![
        format!("<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"),
        "<|im_end|>\n<|im_start|>assistant\n".into(),
    ];
    for seed in 0..400u64 {
        let mut tl = SceneTimeline::new(
            seed,
            WorldParams {
                window_s,
                aspect: 1.0,
            },
        );
        let mut r = Rng::for_item(seed, 7);
        for w in 0..6 {
            let t0 = w as f64 * window_s;
            for q in scene::questions(&mut tl, t0, t0 + window_s, &mut r) {
                corpus.push(q.question);
                corpus.push(q.answer);
            }
        }
    }
    corpus.sort();
    corpus.dedup();
    let tok = out.join("tokenizer.json");
    synth::train_bpe_tokenizer(&corpus, VOCAB, &SPECIAL, &tok)?;

    synth::write_whisper(
        &WhisperSpec {
            d_model: 64,
            encoder_layers: 2,
            encoder_attention_heads: 4,
            encoder_ffn_dim: 128,
            num_mel_bins: 80,
            max_source_positions: 25,
            seed: 11,
            init_std: 0.05,
        },
        &out.join("audio"),
    )?;
    synth::write_clip_vision(
        &ClipVisionSpec {
            hidden_size: recipe.vision_width,
            intermediate_size: 2 * recipe.vision_width,
            num_hidden_layers: recipe.vision_layers,
            num_attention_heads: 4,
            image_size: SIZE as usize,
            patch_size: recipe.patch,
            seed: 12,
            init_std: 0.05,
        },
        &out.join("vision"),
    )?;
    let llm = Qwen2Spec {
        vocab_size: VOCAB,
        hidden_size: 128,
        intermediate_size: 256,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10000.0,
        max_position_embeddings: 256,
        init_std: 0.05,
        seed: 13,
    };
    let weights = llm.weights()?;
    llm.write_hf_dir(&out.join("llm"), &weights, &tok, 0, 2)?;

    std::fs::write(
        out.join("train.toml"),
        train_config(&out, steps, pretrain, &recipe),
    )?;
    eprintln!(
        "init_default: untrained parts and train.toml in {} ({} corpus lines)",
        out.display(),
        corpus.len()
    );
    Ok(())
}

/// The recipe's shapes (defaults: the shipped model).
struct Recipe {
    slots: usize,
    patch: usize,
    vision_width: usize,
    vision_layers: usize,
    train_seeds: [u64; 2],
}

impl Recipe {
    fn from_args<'a>(args: impl Iterator<Item = &'a String>) -> anyhow::Result<Self> {
        let mut r = Recipe {
            slots: 16,
            patch: 8,
            vision_width: 64,
            vision_layers: 2,
            train_seeds: [1000, 3000],
        };
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("`{arg}`: expected KEY=VALUE"))?;
            let num = || -> anyhow::Result<usize> {
                value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("`{arg}`: {key} must be a whole number"))
            };
            match key {
                "slots" => r.slots = num()?,
                "patch" => r.patch = num()?,
                "vision_width" => r.vision_width = num()?,
                "vision_layers" => r.vision_layers = num()?,
                "train_seeds" => {
                    let (a, b) = value
                        .split_once("..")
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                        .ok_or_else(|| anyhow::anyhow!("`{arg}`: expected train_seeds=A..B"))?;
                    r.train_seeds = [a, b];
                }
                _ => anyhow::bail!("`{arg}`: unknown key `{key}`"),
            }
        }
        Ok(r)
    }
}

fn train_config(out: &Path, steps: u64, pretrain: u64, recipe: &Recipe) -> String {
    let Recipe {
        slots,
        train_seeds: [seed_lo, seed_hi],
        ..
    } = recipe;
    // The parts by absolute path: `sensorium train` may run from any directory.
    let dir = out
        .canonicalize()
        .unwrap_or_else(|_| out.to_path_buf())
        .display()
        .to_string()
        .replace('\\', "/");
    format!(
        r#"# The default model: every part trained on the scene world (written by init_default).
[engine]
fps = {FPS:?}
width = {SIZE}
height = {SIZE}
window = {WINDOW}
stride = {WINDOW}

[models]
audio = "{dir}/audio"
vision = "{dir}/vision"
random = true
seed = 1
init_std = 0.05
hidden_size = 64
layers = 2
heads = 4
queries = 8
slots = {slots}

[llm]
model = "{dir}/llm"
context_windows = 1
max_tokens = 40
max_context_tokens = 256

[llm.template]
system = "{SYSTEM}"

[train]
output = "run"
train_encoders = true
train_llm = "full"
steps = {steps}
# A window's four questions share a step: the window is encoded once for all four.
batch = 32
group_windows = true
lr = 2e-3
warmup_steps = 200
weight_decay = 0.01
clip_grad_norm = 1.0
eval_every = 500
save_every = 500
seed = 1

[train.scenes]
train_seeds = [{seed_lo}, {seed_hi}]
val_seeds = [1, 6]
seconds = 12.0
questions = 4
# Stage 1: the encoders learn to see and hear from the streams' per-frame labels.
pretrain_steps = {pretrain}
pretrain_batch = 64
# Stage 2 (the answers) keeps a label loss on the Q-Former's query tokens.
labels_loss = 1.0
"#
    )
}
