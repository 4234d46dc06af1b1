//! GGUF k-quants: a random Qwen2-shaped decoder with rows of 256 (q4_k's block) is written at
//! test time as an HF directory and as f32 / q4_k / q8_0 GGUF files from the same weights;
//! all load, the f32 GGUF equals the safetensors model, and the quantised files decode with
//! their divergence from f32 stated; a quantised embedding table is looked up row by row.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use sensorium_models::llm::synth::Qwen2Spec;
use sensorium_models::llm::{argmax, load_model, load_model_with, ComputeDtype, Decoder};

fn spec() -> Qwen2Spec {
    Qwen2Spec {
        vocab_size: 512,
        hidden_size: 256,
        intermediate_size: 512,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10_000.0,
        max_position_embeddings: 256,
        init_std: 0.08,
        seed: 7,
    }
}

fn run(dec: &mut Decoder, prompt: &[u32], n: usize) -> (Vec<Vec<f32>>, Vec<u32>) {
    let logits = dec
        .forward_tokens(prompt, 0, true)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut next = argmax(logits.last().unwrap());
    let mut out = vec![];
    for _ in 0..n {
        out.push(next);
        let pos = dec.cache_len();
        let l = dec.forward_tokens(&[next], pos, false).unwrap();
        next = argmax(&l.squeeze(0).unwrap().to_vec1::<f32>().unwrap());
    }
    (logits, out)
}

fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let scale = b.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    d / scale
}

#[test]
fn q4_k_and_q8_0_files_written_from_the_same_weights_load_and_decode() {
    let tok_json = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    let s = spec();
    let w = s.weights().unwrap();
    s.write_hf_dir(&dir.path().join("hf"), &w, &tok_json, 0, 2)
        .unwrap();
    for (name, dt) in [
        ("f32", GgmlDType::F32),
        ("q4_k", GgmlDType::Q4K),
        ("q8_0", GgmlDType::Q8_0),
    ] {
        s.write_gguf(
            &dir.path().join(format!("{name}.gguf")),
            &w,
            dt,
            &tok_json,
            0,
            2,
        )
        .unwrap();
    }
    let load = |p: &Path| load_model(p, None, ComputeDtype::F32, 64, &Device::Cpu).unwrap();
    let hf = load(&dir.path().join("hf"));
    let prompt = hf
        .tokenizer
        .encode("<|im_start|>user\nWhat is happening in the video?<|im_end|>\n")
        .unwrap();
    let mut hf_dec = hf.decoder;
    let (ref_logits, ref_greedy) = run(&mut hf_dec, &prompt, 16);

    let f32g = load(&dir.path().join("f32.gguf"));
    // The GGUF's own tokenizer metadata (padded to the vocab) encodes like tokenizer.json.
    assert_eq!(
        f32g.tokenizer
            .encode("<|im_start|>user\nWhat is happening in the video?<|im_end|>\n")
            .unwrap(),
        prompt
    );
    let mut d = f32g.decoder;
    let (l, g) = run(&mut d, &prompt, 16);
    assert!(
        rel_err(&l, &ref_logits) < 1e-5,
        "f32 gguf vs safetensors {}",
        rel_err(&l, &ref_logits)
    );
    assert_eq!(g, ref_greedy);

    for name in ["q8_0", "q4_k"] {
        let path = dir.path().join(format!("{name}.gguf"));
        let mut d = load(&path).decoder;
        let (l, g) = run(&mut d, &prompt, 16);
        // Same file, weights dequantised to f32 at load: isolates the quantised kernels
        // (which also round activations to q8) from the weight quantisation itself.
        let mut dq = load_model_with(&path, None, ComputeDtype::F32, true, 64, &Device::Cpu)
            .unwrap()
            .decoder;
        // The embedding table stays quantised; the rows looked up dequantise to exactly what
        // dequantising the whole table at load gives (first and last rows included).
        let ids: Vec<u32> = prompt.iter().copied().chain([0, 511, 7, 0]).collect();
        let rows = |d: &Decoder| d.embed(&ids).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(rows(&d), rows(&dq), "{name}: quantised embedding rows");
        let (ldq, _) = run(&mut dq, &prompt, 16);
        let kernel_err = rel_err(&l, &ldq);
        let err = rel_err(&l, &ref_logits);
        let same = g
            .iter()
            .zip(&ref_greedy)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!("{name}: logits rel err {err:.4} vs f32 weights, {kernel_err:.4} vs its own dequantised weights; greedy agrees {same}/16 with f32");
        assert!(
            kernel_err < 0.05,
            "{name}: kernels vs dequantised weights {kernel_err}"
        );
        assert!(err < 0.6, "{name}: logits relative error {err}");
        assert_eq!(g.len(), 16);
        assert!(g.iter().all(|&t| (t as usize) < 512));
    }
}
