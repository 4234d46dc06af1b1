//! The answering service core on the tiny Qwen2/LLaMA fixtures: AV embeddings injected at the
//! template's placeholder, prefix KV reuse, streaming callback, stop strings, cancellation,
//! bounded per-stream context over 10,000 windows, and errors that name their culprit.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sensorium_models::llm::{
    load_model, Answerer, CancelToken, ComputeDtype, Finish, GenParams, LlmConfig, LlmError,
    Sampler, SamplingConfig, Segment, TemplateKind, WindowMeta,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm")
}

fn config(model: &str, kind: TemplateKind) -> LlmConfig {
    let mut cfg = LlmConfig::new(fixtures().join(model));
    cfg.template.kind = kind;
    cfg.max_tokens = 8;
    cfg.max_context_tokens = 256;
    cfg.context_windows = 3;
    cfg.dtype = ComputeDtype::F32;
    cfg
}

fn meta(stream: &str, index: u64) -> WindowMeta {
    WindowMeta {
        stream: stream.into(),
        index,
        t_start: index * 5_000_000_000,
        t_end: (index + 1) * 5_000_000_000,
        captured: None,
        queued: None,
    }
}

/// Deterministic AV tokens `[n, 64]` for window `seed`.
fn av(n: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = (0..n * 64)
        .map(|i| {
            let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(31));
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
        })
        .collect();
    Tensor::from_vec(v, (n, 64), &Device::Cpu).unwrap()
}

#[test]
fn av_tokens_at_placeholder_equal_text_tokens_with_those_embeddings() {
    // Vicuna (FAVOR) layout: [BOS] "USER: " "<Img>" AV "</Img>" " q\nASSISTANT:". When the AV
    // vectors are rows of the embedding table, the answer must equal a text-only prompt with
    // those token ids in place.
    let cfg = config("llama", TemplateKind::Vicuna);
    let mut a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    let ids: Vec<u32> = vec![40, 41, 300, 301, 7];
    let rows = a.generator().decoder().embed(&ids).unwrap();
    let q = "What is happening?";
    let ans = a
        .answer_window(meta("cam", 0), &rows, q, &CancelToken::new(), &mut |_| {})
        .unwrap();

    let m = load_model(
        &fixtures().join("llama"),
        None,
        ComputeDtype::F32,
        256,
        &Device::Cpu,
    )
    .unwrap();
    let tok = &m.tokenizer;
    let mut prompt = vec![5u32]; // <|begin_of_text|>, the model's bos_token_id
    prompt.extend(tok.encode("USER: ").unwrap());
    prompt.extend(tok.encode("<Img>").unwrap());
    prompt.extend(&ids);
    prompt.extend(tok.encode("</Img>").unwrap());
    let q_ids = tok.encode(&format!(" {q}\nASSISTANT:")).unwrap();
    prompt.extend(&q_ids);
    assert_eq!(ans.prompt_tokens, prompt.len());
    let mut engine = sensorium_models::llm::TextGenerator::new(m.decoder, m.tokenizer);
    let params = GenParams {
        max_tokens: 8,
        stop_ids: vec![6],
        stop_strings: vec!["</s>".into(), "\nUSER:".into()],
    };
    let g = engine
        .generate(
            &[Segment::Tokens(prompt)],
            &params,
            &mut Sampler::new(SamplingConfig::default()),
            &q_ids,
            &CancelToken::new(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(ans.text, g.text.trim());
    assert_eq!(ans.tokens, g.tokens.len());
    assert!(ans.tokens > 0);
}

#[test]
fn prefix_kv_is_reused_and_streamed_text_equals_answer() {
    let cfg = config("qwen2", TemplateKind::Chatml);
    let mut a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    a.push_window(meta("cam", 0), &av(6, 0)).unwrap();
    let mut streamed = String::new();
    let mut n_events = 0;
    let first = a
        .answer("cam", "What do you see?", &CancelToken::new(), &mut |e| {
            streamed.push_str(&e.text);
            n_events += 1;
        })
        .unwrap();
    assert_eq!(first.reused_tokens, 0);
    assert_eq!(streamed.trim(), first.text);
    assert!(n_events >= first.tokens);
    assert!(first.first_token_unix_ms.is_some());
    // Second question on the same window: prefix + window reused, only the question is new.
    let second = a
        .answer("cam", "Is it loud?", &CancelToken::new(), &mut |_| {})
        .unwrap();
    let window_positions = 6; // ChatML window wrapper is just "<AV>"
    let chatml_prefix = a
        .generator()
        .tokenizer()
        .encode("<|im_start|>system\nYou are a helpful assistant. You watch and listen to a live audio-visual stream.<|im_end|>\n<|im_start|>user\n")
        .unwrap()
        .len();
    assert_eq!(second.reused_tokens, chatml_prefix + window_positions + 1); // + "\n" of the question turn
                                                                            // A new window shifts nothing before it: the system prefix and window 0 are reused.
    a.push_window(meta("cam", 1), &av(6, 1)).unwrap();
    let third = a
        .answer("cam", "And now?", &CancelToken::new(), &mut |_| {})
        .unwrap();
    assert_eq!(third.reused_tokens, chatml_prefix + window_positions);
    assert_eq!(third.context_windows, 2);
    assert_eq!((third.t_start, third.t_end), (0, 10_000_000_000));
    // Another stream: only the system prefix is shared.
    a.push_window(meta("mic", 0), &av(6, 2)).unwrap();
    let other = a
        .answer("mic", "And now?", &CancelToken::new(), &mut |_| {})
        .unwrap();
    assert_eq!(other.reused_tokens, chatml_prefix);
}

#[test]
fn stop_string_truncates_and_cancel_stops() {
    let mut cfg = config("qwen2", TemplateKind::Chatml);
    cfg.max_tokens = 12;
    let mut a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    a.push_window(meta("cam", 0), &av(4, 0)).unwrap();
    let full = a
        .answer("cam", "Describe.", &CancelToken::new(), &mut |_| {})
        .unwrap();
    assert_eq!(full.finish, Finish::Length);
    assert_eq!(full.tokens, 12);
    // Use a piece of the unconstrained answer as a stop string.
    let chars: Vec<char> = full.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let before = &full.text[..full.text.find(&stop).unwrap()];
    let mut cfg2 = cfg.clone();
    cfg2.template.stop = vec![stop.clone()];
    let mut b = Answerer::from_config(&cfg2, &Device::Cpu).unwrap();
    b.push_window(meta("cam", 0), &av(4, 0)).unwrap();
    let mut streamed = String::new();
    let cut = b
        .answer("cam", "Describe.", &CancelToken::new(), &mut |e| {
            streamed.push_str(&e.text)
        })
        .unwrap();
    assert_eq!(cut.finish, Finish::Stop);
    assert_eq!(cut.text, before.trim());
    assert!(
        !streamed.contains(&stop),
        "{streamed:?} leaked stop {stop:?}"
    );
    // Cancellation after the third token.
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let mut seen = 0;
    let cancelled = a
        .answer("cam", "Describe.", &cancel, &mut |e| {
            if e.token.is_some() {
                seen += 1;
            }
            if seen == 3 {
                c2.cancel();
            }
        })
        .unwrap();
    assert_eq!(cancelled.finish, Finish::Cancelled);
    assert_eq!(cancelled.tokens, 3);
}

#[test]
fn ten_thousand_windows_keep_context_and_cache_at_their_caps() {
    let mut cfg = config("qwen2", TemplateKind::Chatml);
    cfg.max_tokens = 2;
    cfg.context_windows = 3;
    cfg.max_context_tokens = 96;
    let mut a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    let cap = a.generator().decoder().cache_capacity();
    let bytes = a.generator().decoder().cache_bytes();
    assert_eq!(cap, 96);
    // 2 layers * (k + v) * 2 kv heads * 96 positions * 16 dims * 4 bytes
    assert_eq!(bytes, 2 * 2 * 2 * 96 * 16 * 4);
    let mut max_prompt = 0;
    for i in 0..10_000u64 {
        a.push_window(meta("cam", i), &av(4, i % 17)).unwrap();
        assert_eq!(a.context_windows("cam"), (i as usize + 1).min(3));
        if i % 5 == 0 {
            let ans = a
                .answer("cam", "What now?", &CancelToken::new(), &mut |_| {})
                .unwrap();
            assert_eq!(ans.window, i);
            assert_eq!(ans.context_windows, (i as usize + 1).min(3));
            max_prompt = max_prompt.max(ans.prompt_tokens);
        }
        assert!(a.generator().decoder().cache_len() <= cap);
        assert_eq!(a.generator().decoder().cache_bytes(), bytes);
    }
    assert_eq!(a.context_windows("cam"), 3);
    assert_eq!(a.streams().count(), 1);
    a.end_stream("cam");
    assert_eq!(a.context_windows("cam"), 0);
    // Steady state: the same prompt length every time (3 windows of 4 tokens + text).
    assert!(max_prompt + 2 <= cap, "{max_prompt}");
}

#[test]
fn oldest_windows_are_dropped_to_fit_and_overflow_is_reported() {
    let mut cfg = config("qwen2", TemplateKind::Chatml);
    cfg.max_tokens = 4;
    cfg.context_windows = 8;
    cfg.max_context_tokens = 96;
    let mut a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    for i in 0..8 {
        a.push_window(meta("cam", i), &av(10, i)).unwrap();
    }
    let ans = a
        .answer("cam", "Q?", &CancelToken::new(), &mut |_| {})
        .unwrap();
    assert!(ans.context_windows < 8 && ans.context_windows >= 1);
    assert!(ans.prompt_tokens + 4 <= 96);
    assert_eq!(ans.window, 7);
    // One window bigger than the whole cache.
    a.push_window(meta("cam", 8), &av(90, 8)).unwrap();
    let err = a
        .answer("cam", "Q?", &CancelToken::new(), &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(err, LlmError::ContextOverflow { cap: 96, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_context_tokens"));
}

#[test]
fn bad_inputs_name_their_culprit() {
    let cfg = config("qwen2", TemplateKind::Chatml);
    let mut a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    let err = a
        .push_window(meta("cam7", 3), &av(4, 0).narrow(1, 0, 32).unwrap())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cam7") && msg.contains("window 3") && msg.contains("[4, 32]"),
        "{msg}"
    );
    let ints = Tensor::zeros((4, 64), DType::U32, &Device::Cpu).unwrap();
    assert!(a
        .push_window(meta("cam7", 4), &ints)
        .unwrap_err()
        .to_string()
        .contains("dtype"));
    let err = a
        .answer("nope", "Q?", &CancelToken::new(), &mut |_| {})
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no context for stream `nope`: no window has been seen for it"
    );
    let mut bad = cfg.clone();
    bad.template.window = Some("<Img></Img>".into());
    let err = Answerer::from_config(&bad, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("`window`") && err.to_string().contains("<AV>"),
        "{err}"
    );
    let mut bad = cfg.clone();
    bad.sampling.top_p = 0.0;
    let err = Answerer::from_config(&bad, &Device::Cpu).unwrap_err();
    assert_eq!(err.to_string(), "[llm] `sampling.top_p`: must be in (0, 1]");
}

#[test]
fn llm_config_parses_from_toml() {
    let text = format!(
        r#"
model = "{}"
max_tokens = 16
context_windows = 2
[template]
kind = "vicuna"
[sampling]
temperature = 0.7
top_k = 40
repetition_penalty = 1.5
[[question]]
text = "What is happening?"
every_windows = 2
[[question]]
text = "Any alarm?"
every_s = 30.0
streams = ["door"]
[http]
listen = "127.0.0.1:0"
"#,
        fixtures().join("llama").display()
    );
    let cfg: LlmConfig = toml::from_str(&text).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.questions.len(), 2);
    assert_eq!(cfg.questions[1].streams, vec!["door"]);
    assert_eq!(cfg.template.kind, TemplateKind::Vicuna);
    assert_eq!(cfg.sampling.top_k, 40);
    let err = toml::from_str::<LlmConfig>("model = \"x\"\nmax_tokenz = 3").unwrap_err();
    assert!(err.to_string().contains("max_tokenz"));
}
