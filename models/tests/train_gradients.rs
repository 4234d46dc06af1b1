//! The training path's gradients: autograd against central finite differences for every
//! kind of trainable tensor (Q-Former, projection, LoRA, full LLM), and a check that every
//! trainable tensor receives a non-zero gradient (what catches a fused op without backward
//! silently cutting the graph).

mod train_common;

use candle_core::{Tensor, Var};
use sensorium_models::train::{Example, TrainLlm, Trainer};
use train_common::*;

fn loss(t: &Trainer, ex: &[&Example]) -> f64 {
    t.loss(ex).unwrap().to_scalar::<f32>().unwrap() as f64
}

/// Gives the LoRA B matrices (zero at initialisation, as PEFT does) small values, so that
/// A's gradient is not zero by construction.
fn wake_lora(t: &Trainer) {
    for (n, v) in t.named_vars() {
        if n.contains("lora_B") {
            let r = Tensor::randn(0f32, 0.3, v.shape(), v.device()).unwrap();
            v.set(&r).unwrap();
        }
    }
}

/// A key bias of attention without rotary positions (the Q-Former's BERT layers, the encoder
/// towers'); with RoPE (the LLM) the rotated bias differs per position and does matter.
fn is_key_bias(name: &str) -> bool {
    name.ends_with(".key.bias")
        || (name.ends_with(".k_proj.bias")
            && (name.starts_with("audio.") || name.starts_with("vision.")))
}

fn set_at(v: &Var, i: usize, x: f32) {
    let mut d = v
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    d[i] = x;
    v.set(&Tensor::from_vec(d, v.shape(), v.device()).unwrap())
        .unwrap();
}

/// For every trainable tensor: its gradient exists and is non-zero, and at its largest
/// element autograd agrees with a central difference.
fn check(llm: TrainLlm, want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    check_trainer(trainer(llm, dir.path()), clip, |_| 1e-2, want);
}

/// `step`: each tensor's smallest finite-difference step (f32 rounding of the loss limits how small a
/// gradient a step resolves: about `1e-7 * loss / step`).
fn check_trainer(
    mut t: Trainer,
    clip: fn(u64, usize) -> std::sync::Arc<sensorium_models::train::ClipFeatures>,
    step: fn(&str) -> f32,
    want: &[&str],
) {
    let llm = t.cfg.train_llm;
    t.cfg.diversity_loss = 0.5;
    wake_lora(&t);
    let a = example(&t, clip(1, 5), "What do you see?", "a red ball");
    let b = example(&t, clip(2, 6), "What do you hear?", "a tone");
    let exs = [&a, &b];
    let l = t.loss(&exs).unwrap();
    let grads = l.backward().unwrap();
    let vars = t.named_vars();
    for w in want {
        assert!(
            vars.iter().any(|(n, _)| n.starts_with(w)),
            "no trainable tensor named {w}*"
        );
    }
    let mut worst = 0f64;
    let mut checked = 0;
    for (name, v) in &vars {
        let g = grads
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient (the graph is cut)"));
        let gv = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (i, gmax) = gv
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
            .map(|(i, g)| (i, *g as f64))
            .unwrap();
        // A key bias shifts every score of a query's row by the same amount, which softmax
        // ignores: its gradient is zero in exact arithmetic (BERT and CLIP attention have one).
        if is_key_bias(name) {
            assert!(
                gmax.abs() < 1e-4,
                "{name}: a key bias cannot matter, got {gmax}"
            );
            continue;
        }
        assert!(gmax.abs() > 1e-7, "{name}: zero gradient");
        let x0 = v
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[i];
        let h = step(name).max(x0.abs() * 1e-2);
        set_at(v, i, x0 + h);
        let up = loss(&t, &exs);
        set_at(v, i, x0 - h);
        let down = loss(&t, &exs);
        set_at(v, i, x0);
        let fd = (up - down) / (2.0 * (h as f64));
        let err = (fd - gmax).abs() / gmax.abs().max(1e-3);
        worst = worst.max(err);
        checked += 1;
        assert!(
            err < 0.05,
            "{name}[{i}]: autograd {gmax:.6e} vs finite difference {fd:.6e} (rel err {err:.3})"
        );
    }
    let key_biases = vars.iter().filter(|(n, _)| is_key_bias(n)).count();
    assert_eq!(checked + key_biases, vars.len());
    eprintln!("{llm:?}: {checked} tensors, worst relative error {worst:.4}");
}

#[test]
fn qformer_and_lora_gradients_match_finite_differences() {
    check(
        TrainLlm::Lora,
        &[
            "qformer.video_query_tokens",
            "qformer.llama_proj",
            "qformer.video_Qformer.bert.encoder.layer.1.causal_attention",
            "qformer.speech_pre_qformer_proj",
            "qformer.visual_pre_qformer_proj",
            "lora.base_model.model.model.layers.1.self_attn.o_proj.lora_A",
            "lora.base_model.model.model.layers.0.self_attn.q_proj.lora_B",
        ],
    );
}

#[test]
fn full_llm_gradients_match_finite_differences() {
    check(
        TrainLlm::Full,
        &[
            "qformer.llama_proj",
            "llm.model.embed_tokens.weight",
            "llm.model.layers.0.input_layernorm.weight",
            "llm.model.layers.1.mlp.down_proj.weight",
            "llm.model.norm.weight",
        ],
    );
}

/// `train_encoders`: the Whisper and CLIP towers' tensors (convolutions, patch embedding,
/// attention, MLPs, LayerNorms) get their gradients through the Q-Former, beside LoRA's.
#[test]
fn encoder_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let t = encoder_trainer(TrainLlm::Lora, dir.path());
    let names: Vec<String> = t.named_vars().into_iter().map(|(n, _)| n).collect();
    // Not on the path to the tokens: Whisper's fixed positions, CLIP's text tower and the
    // post-LayerNorm that only the pooled CLS passes through.
    for n in &names {
        assert!(
            !n.contains("embed_positions")
                && !n.contains("text_model")
                && !n.contains("post_layernorm"),
            "{n} should not train"
        );
    }
    // The encoders' gradients are small (they reach the loss through the Q-Former's
    // projections): a larger step keeps f32 rounding below the 5% tolerance.
    check_trainer(
        t,
        input_clip,
        |name| {
            if name.starts_with("audio.") || name.starts_with("vision.") {
                5e-2
            } else {
                1e-2
            }
        },
        &[
            "audio.model.encoder.conv1.weight",
            "audio.model.encoder.conv2.bias",
            "audio.model.encoder.layers.1.self_attn.q_proj.weight",
            "audio.model.encoder.layer_norm.weight",
            "vision.vision_model.embeddings.patch_embedding.weight",
            "vision.vision_model.embeddings.class_embedding",
            "vision.vision_model.embeddings.position_embedding.weight",
            "vision.vision_model.pre_layrnorm.bias",
            "vision.vision_model.encoder.layers.0.mlp.fc1.weight",
            "qformer.llama_proj",
            "lora.base_model.model.model.layers.0.self_attn.q_proj.lora_B",
        ],
    );
}

#[test]
fn the_frozen_llm_trains_only_the_qformer() {
    let dir = tempfile::tempdir().unwrap();
    let t = trainer(TrainLlm::Frozen, dir.path());
    let names: Vec<String> = t.named_vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| n.starts_with("qformer.")), "{names:?}");
    let a = example(&t, clip(1, 5), "What do you see?", "a red ball");
    let grads = t.loss(&[&a]).unwrap().backward().unwrap();
    for (n, v) in t.named_vars() {
        assert!(grads.get(v.as_tensor()).is_some(), "{n}: no gradient");
    }
}
