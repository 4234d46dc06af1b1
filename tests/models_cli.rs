//! The binary with the model stack configured, on the committed tiny fixture models (Whisper,
//! CLIP, Qwen2 with tokenizer) and a seeded random Q-Former: `run` writes window lines with
//! Q-Former (and distillation) fields and one answer line per scheduled question; `check`
//! names bad `[llm]` fields (exit 2); a wrong-shaped checkpoint tensor exits 4 naming the file
//! and the tensor; `distill-eval` prints its table.

mod common;

use common::{fixture, sensorium, text};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A 2 fps test source of `seconds` (finite, not live) with windows of 2 frames.
fn base_config(seconds: f64) -> String {
    format!(
        r#"
[engine]
fps = 2.0
width = 64
height = 48
window = 2
stride = 2

[[stream]]
name = "cam"
source = {{ kind = "test", pattern = "ball", wave = "ticks", is_live = false, duration_s = {seconds} }}
"#
    )
}

fn models_section(audio: &Path) -> String {
    format!(
        r#"
[models]
audio = "{}"
vision = "{}"
random = true
seed = 7
init_std = 0.2
slots = 4
hidden_size = 16
layers = 2
heads = 2
queries = 3
"#,
        audio.display(),
        fixture("clip").display()
    )
}

fn llm_section() -> String {
    format!(
        r#"
[llm]
model = "{}"
max_tokens = 4
[[llm.question]]
text = "What is happening?"
every_windows = 1
"#,
        fixture("llm/qwen2").display()
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_with_models_and_llm_writes_window_and_answer_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    let out = dir.path().join("out.jsonl");
    std::fs::write(
        &cfg,
        base_config(2.0) + &models_section(&fixture("whisper80")) + &llm_section(),
    )
    .unwrap();
    let o = sensorium(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let all = lines(&out);
    let (answers, windows): (Vec<&Value>, Vec<&Value>) =
        all.iter().partition(|v| v["type"] == "answer");
    // 2 s at 2 fps = 4 frames = 2 windows of 2.
    assert_eq!(windows.len(), 2);
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["index"], i as u64);
        assert_eq!(w["stream"], "cam");
        let q = &w["qformer"];
        assert_eq!(q["tokens"], 3, "{w}");
        assert_eq!(q["dim"], 64, "Qwen2 fixture hidden size: {w}");
        assert_eq!(q["valid_frames"], 2);
        assert!(q["norm"].as_f64().unwrap() > 0.0);
        assert!(w.get("student").is_none(), "no [distill]: {w}");
    }
    // One answer per scheduled question per window (a file source: nothing stale).
    assert_eq!(answers.len(), 2, "{all:?}");
    let mut by_window: Vec<u64> = answers
        .iter()
        .map(|a| a["window"].as_u64().unwrap())
        .collect();
    by_window.sort();
    assert_eq!(by_window, vec![0, 1]);
    for a in &answers {
        assert_eq!(a["stream"], "cam");
        assert_eq!(a["question"], "What is happening?");
        assert_eq!(a["live"], false);
        assert!(a["answer"].is_string());
        let n = a["tokens"].as_u64().unwrap();
        assert!((1..=4).contains(&n), "{a}");
        let finish = a["finish"].as_str().unwrap();
        assert!(finish == "length" || finish == "stop", "{a}");
        if finish == "length" {
            assert_eq!(n, 4);
        }
        assert!(a["t_end_ns"].as_u64().unwrap() > a["t_start_ns"].as_u64().unwrap());
        assert!(a["first_token_unix_ms"].as_u64().is_some());
    }
    // Output to a file: tokens are echoed on stdout, one header per answer.
    let stdout = text(&o.stdout);
    assert_eq!(stdout.matches("What is happening?").count(), 2, "{stdout}");
    assert!(stdout.contains("[cam #0]") && stdout.contains("[cam #1]"));
    assert!(text(&o.stderr).contains("2 scheduled answers, 0 stale"));
}

#[test]
fn run_with_distill_reports_student_and_teacher() {
    let dir = tempfile::tempdir().unwrap();
    // A linear teacher over the CLIP fixture's 32-d pooled visual tokens, 3 classes.
    let teacher = dir.path().join("teacher.safetensors");
    let (k, d) = (3usize, 32usize);
    let weight: Vec<f32> = (0..k * d)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    sensorium_models::distill::Teacher::linear(weight, vec![0.0, 0.5, -0.5], d)
        .unwrap()
        .save(&teacher)
        .unwrap();
    let cfg = dir.path().join("run.toml");
    let out = dir.path().join("out.jsonl");
    let distill = format!(
        r#"
[distill]
classes = ["dog", "car", "rain"]
teacher = "{}"
confidence_gate = 0.0
batch_size = 2
replay_size = 8
"#,
        teacher.display()
    );
    std::fs::write(
        &cfg,
        base_config(3.0) + &models_section(&fixture("whisper80")) + &distill,
    )
    .unwrap();
    let o = sensorium(&[
        "run",
        "-c",
        cfg.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    let windows = lines(&out);
    assert_eq!(windows.len(), 3);
    let classes = ["dog", "car", "rain"];
    let (mut students, mut teachers) = (0, 0);
    for w in &windows {
        assert_eq!(w["qformer"]["tokens"], 3, "{w}");
        assert!(w["student_version"].as_u64().is_some(), "{w}");
        let any = |key: &str| w[key].as_array().unwrap().iter().any(|x| x == true);
        // The (visual) teacher answers exactly when the window has video, the (audio)
        // student exactly when it has audio (a fast non-live source may miss either at times).
        assert_eq!(w["teacher"].is_object(), any("has_video"), "{w}");
        assert_eq!(w["student"].is_object(), any("has_audio"), "{w}");
        if any("has_video") {
            teachers += 1;
            let t = &w["teacher"];
            assert!(classes.contains(&t["class"].as_str().unwrap()), "{w}");
            let p = t["p"].as_f64().unwrap();
            assert!((1.0 / 3.0 - 1e-6..=1.0).contains(&p), "{w}");
        }
        if any("has_audio") {
            students += 1;
            assert!(classes.contains(&w["student"]["class"].as_str().unwrap()));
        }
    }
    assert!(teachers >= 1, "no window had video: {windows:?}");
    // The teacher file is 32-d: it loaded only because the visual features are the CLIP
    // fixture's pooled tokens (the stand-in grid features have another width), and the
    // stage read them from the frame encoder (upstream-only extractors fail otherwise).
    let err = text(&o.stderr);
    assert!(err.contains("sensorium: distill: "), "{err}");
    assert!(students >= 1, "no window had audio: {windows:?}");
}

#[test]
fn check_names_bad_llm_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let cases = [
        (
            "[llm.sampling]\ntemperature = -1.0\n",
            "llm.sampling.temperature",
        ),
        ("max_tokens = \"many\"\n", "llm.max_tokens"),
        ("colour = 3\n", "llm"),
    ];
    for (extra, field) in cases {
        let llm = format!(
            "[llm]\nmodel = \"{}\"\n{extra}",
            fixture("llm/qwen2").display()
        );
        let body = base_config(1.0) + &models_section(&fixture("whisper80")) + &llm;
        std::fs::write(&cfg, body).unwrap();
        let o = sensorium(&["check", cfg.to_str().unwrap()]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(&format!("field `{field}")), "{extra}: {err}");
        assert!(err.contains(cfg.to_str().unwrap()), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // The good config passes and shows the sections with defaults filled in.
    let body = base_config(1.0) + &models_section(&fixture("whisper80")) + &llm_section();
    std::fs::write(&cfg, body).unwrap();
    let o = sensorium(&["check", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let shown: toml::Table = text(&o.stdout).parse().unwrap();
    assert_eq!(shown["llm"]["max_tokens"].as_integer(), Some(4));
    assert_eq!(shown["llm"]["context_windows"].as_integer(), Some(4));
    assert_eq!(shown["models"]["queries"].as_integer(), Some(3));
    // A file source is lossless: scheduled answers are not cancelled as stale.
    assert_eq!(shown["llm"]["cancel_stale"].as_bool(), Some(false));
}

#[test]
fn wrong_shaped_checkpoint_tensor_exits_4_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let whisper = dir.path().join("whisper");
    std::fs::create_dir(&whisper).unwrap();
    std::fs::copy(
        fixture("whisper80/config.json"),
        whisper.join("config.json"),
    )
    .unwrap();
    let dev = candle_core::Device::Cpu;
    let mut t: HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(fixture("whisper80/model.safetensors"), &dev).unwrap();
    let name = "model.encoder.layer_norm.weight";
    assert!(t.contains_key(name));
    t.insert(
        name.into(),
        candle_core::Tensor::zeros(31, candle_core::DType::F32, &dev).unwrap(),
    );
    let file = whisper.join("model.safetensors");
    candle_core::safetensors::save(&t, &file).unwrap();

    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, base_config(1.0) + &models_section(&whisper)).unwrap();
    let o = sensorium(&["run", "--config", cfg.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert!(err.contains(name), "{err}");
    assert!(err.contains("[31]") && err.contains("[32]"), "{err}");
    assert!(o.stdout.is_empty(), "nothing runs: {}", text(&o.stdout));
}

#[test]
fn distill_eval_prints_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let o = sensorium(&[
        "distill-eval",
        "--clips",
        "6",
        "--test-clips",
        "2",
        "--warmup",
        "0",
        "--budget",
        "30",
        "--seeds",
        "1",
        "--snr",
        "10",
        "--cache",
        dir.path().to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let rows: Vec<&str> = out.lines().collect();
    assert!(rows[0].starts_with("distill-eval: VisualToAudio, 32 train / 16 held-out clips"));
    assert!(rows[0].contains("30 updates per arm, 1 seed(s)"));
    assert_eq!(
        rows[1],
        "features: audio spectral-stand-in (50 floats), visual grid-stand-in (200 floats)"
    );
    let header: Vec<&str> = rows[2].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "class",
            "hard",
            "teacher",
            "before",
            "warm",
            "after-diff",
            "after-uni",
            "pred-diff"
        ]
    );
    let classes = [
        "ball",
        "snow",
        "smpte",
        "checkers",
        "red",
        "circular",
        "pinwheel",
        "zone-plate",
    ];
    for (row, class) in rows[3..11].iter().zip(classes) {
        assert!(row.starts_with(class), "{row}");
        let hard = ["circular", "pinwheel", "zone-plate"].contains(&class);
        assert_eq!(row.split_whitespace().nth(1) == Some("yes"), hard, "{row}");
    }
    // overall: teacher before warm after-diff after-uni
    let overall: Vec<f64> = rows[11]
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(overall.len(), 5, "{}", rows[11]);
    let (before, after_d, after_u) = (overall[1], overall[3], overall[4]);
    // Easy setting (hard classes only 10 dB SNR): distillation helps in both arms.
    assert!(after_d >= before && after_u >= before, "{}", rows[11]);
    assert!(after_d > before, "{}", rows[11]);
    assert!(rows[12].starts_with("hard classes: Weighted-selection"));
    assert_eq!(rows.len(), 13);
}

/// The evaluation on the real encoders (the committed tiny Whisper and CLIP fixtures): their
/// features feed the teacher and the student; a missing checkpoint exits 4 naming the flag.
#[test]
fn distill_eval_runs_on_the_real_encoders() {
    let dir = tempfile::tempdir().unwrap();
    let (audio, vision) = (fixture("whisper80"), fixture("clip"));
    let args = |audio: &str| {
        vec![
            "distill-eval".to_string(),
            "--clips=6".into(),
            "--test-clips=2".into(),
            "--warmup=0".into(),
            "--budget=30".into(),
            "--seeds=1".into(),
            "--snr=10".into(),
            format!("--cache={}", dir.path().display()),
            format!("--audio={audio}"),
            format!("--vision={}", vision.display()),
        ]
    };
    let run = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_sensorium"))
            .args(a)
            .output()
            .unwrap()
    };
    let o = run(args(&audio.display().to_string()));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(
        rows[1],
        "features: audio whisper-mean (32 floats), visual vision-mean (32 floats)"
    );
    // The teacher, fitted on two labelled frames per class of CLIP features, recognises the
    // held-out scenes (the tiny random tower still separates the test patterns).
    let teacher: f64 = rows[11].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(teacher >= 0.9, "{}", rows[11]);

    let o = run(args("/nonexistent/whisper"));
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        text(&o.stderr).trim(),
        "sensorium: --audio '/nonexistent/whisper': /nonexistent/whisper/config.json: cannot \
         read: No such file or directory (os error 2)"
    );
}

#[test]
fn example_models_config_runs_from_the_repository_root() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--config",
            "pipelines/configs/models.toml",
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let all = lines(&out);
    let answers = all.iter().filter(|v| v["type"] == "answer").count();
    let windows = all.iter().filter(|v| v["qformer"].is_object()).count();
    assert_eq!((windows, answers, all.len()), (2, 2, 4), "{all:?}");
}

#[test]
fn stdin_question_is_answered_as_a_live_answer_line() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("live.toml");
    let out = dir.path().join("out.jsonl");
    // A live source (3 s of wall time), no scheduled questions, questions from stdin.
    let body = base_config(3.0).replace("is_live = false", "is_live = true")
        + &models_section(&fixture("whisper80"))
        + &format!(
            "[llm]\nmodel = \"{}\"\nmax_tokens = 3\nstdin = true\n",
            fixture("llm/qwen2").display()
        );
    std::fs::write(&cfg, body).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args([
            "run",
            "-c",
            cfg.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ask once the first window is out (a question before any window has no context).
    let mut waited = 0;
    while !std::fs::read_to_string(&out).is_ok_and(|t| t.contains("\"qformer\"")) {
        assert!(waited < 600, "no window line after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"@cam What now?\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let all = lines(&out);
    let answers: Vec<&Value> = all.iter().filter(|v| v["type"] == "answer").collect();
    assert_eq!(answers.len(), 1, "{all:?}");
    let a = answers[0];
    assert_eq!(
        (a["live"].as_bool(), a["stream"].as_str()),
        (Some(true), Some("cam"))
    );
    assert_eq!(a["question"], "What now?");
    assert!((1..=3).contains(&a["tokens"].as_u64().unwrap()), "{a}");
    // The tokens were echoed on stdout under the question line.
    assert!(
        text(&o.stdout).starts_with("[@cam What now?]\n"),
        "{}",
        text(&o.stdout)
    );
    assert!(all.iter().filter(|v| v["qformer"].is_object()).count() >= 2);
}

#[test]
fn qformer_checkpoint_that_does_not_fit_the_encoders_exits_4() {
    use sensorium_models::qformer::{QFormer, QFormerConfig};
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("qformer");
    // Whisper-large width (1280) against the 32-d Whisper fixture.
    let qcfg = QFormerConfig {
        hidden_size: 16,
        num_attention_heads: 2,
        intermediate_size: 32,
        num_query_tokens: 3,
        slots_per_frame: 4,
        audio_width: 1280,
        audio_slot_width: 32,
        visual_width: 32,
        visual_slot_width: 32,
        max_slot_positions: 64,
        slot_attention_heads: 2,
        lookback: 2,
        llm_hidden_size: 64,
        ..QFormerConfig::default()
    };
    QFormer::save_random(&qcfg, 1, 0.02, &qdir).unwrap();
    let models = models_section(&fixture("whisper80")).replace(
        "random = true\n",
        &format!("qformer = \"{}\"\n", qdir.display()),
    );
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, base_config(1.0) + &models).unwrap();
    let o = sensorium(&["run", "--config", cfg.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    let file = qdir.join("config.json");
    assert!(
        err.contains(&format!("{}: `audio_width` = 1280", file.display())),
        "{err}"
    );
    assert!(err.contains("d_model (32)"), "{err}");
}

#[test]
fn device_choice_for_the_qformer_is_reported_and_cuda_without_a_gpu_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let run = |device: &str| {
        Command::new(env!("CARGO_BIN_EXE_sensorium"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["run", "--config", "pipelines/configs/models.toml"])
            .args(["--device", device, "--output"])
            .arg(dir.path().join(format!("{device}.jsonl")))
            .output()
            .unwrap()
    };
    let cpu = run("cpu");
    assert_eq!(cpu.status.code(), Some(0), "{}", text(&cpu.stderr));
    assert!(text(&cpu.stderr).contains("Q-Former on cpu (candle)"));
    assert!(!text(&cpu.stderr).contains("no CUDA device"));

    let auto = run("auto");
    assert_eq!(auto.status.code(), Some(0), "{}", text(&auto.stderr));
    let err = text(&auto.stderr);
    let cuda = run("cuda");
    if err.contains("no CUDA device") {
        // No usable GPU: `auto` says why exactly once and runs on the CPU; `cuda` is refused
        // with one line naming the setting, as a model error.
        assert_eq!(err.matches("no CUDA device").count(), 1, "{err}");
        assert!(err.contains("Q-Former on cpu (candle)"), "{err}");
        assert_eq!(cuda.status.code(), Some(4), "{}", text(&cuda.stderr));
        let e = text(&cuda.stderr);
        assert!(e.contains("engine.device 'cuda'"), "{e}");
        assert!(
            !dir.path().join("cuda.jsonl").exists()
                || lines(&dir.path().join("cuda.jsonl")).is_empty()
        );
    } else {
        // A GPU is here: both pick our CUDA kernels.
        assert!(err.contains("Q-Former on cuda"), "{err}");
        assert_eq!(cuda.status.code(), Some(0), "{}", text(&cuda.stderr));
    }
}
