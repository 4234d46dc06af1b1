//! `sensorium bench`: the table, the JSON report (fields as documented in the README) and
//! the PNG, on the test config and on the tiny model stack; bad arguments.

mod common;

use common::*;
use serde_json::Value;

fn stage<'a>(r: &'a Value, key: &str) -> &'a Value {
    r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == key)
        .unwrap_or_else(|| panic!("no stage {key}: {r}"))
}

#[test]
fn bench_on_the_test_config_prints_the_table_and_writes_json_and_png() {
    let (_d, dir) = tmp();
    let (json, png) = (dir.join("bench.json"), dir.join("bench.png"));
    let o = sensorium(&[
        "bench",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/configs/test.toml"),
        "--duration",
        "6",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = text(&o.stdout);
    for label in [
        "capture -> synchronised frame (ms)",
        "frame -> encoded (ms)",
        "encoded -> Q-Former tokens (ms)",
        "capture -> window record (ms)",
        "tokens -> first answer token (ms)",
        "decode (tok/s)",
        "peak RSS",
    ] {
        assert!(table.contains(label), "{label} missing:\n{table}");
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // 6 s of a live 2 fps source, windows of 10 frames every 5: at least one window.
    let windows = r["streams"][0]["windows_written"].as_u64().unwrap();
    assert!(windows >= 1, "{r}");
    for key in [
        "capture_to_sync",
        "sync_to_encoded",
        "encoded_to_tokens",
        "capture_to_record",
    ] {
        let s = stage(&r, key);
        assert_eq!(s["n"].as_u64(), Some(windows), "{key}: {s}");
        let (p50, p95, max) = (
            s["p50"].as_f64().unwrap(),
            s["p95"].as_f64().unwrap(),
            s["max"].as_f64().unwrap(),
        );
        assert!(0.0 <= p50 && p50 <= p95 && p95 <= max, "{key}: {s}");
    }
    // No model: no answers, and the report says so rather than inventing figures.
    assert_eq!(stage(&r, "decode")["n"], 0);
    assert!(stage(&r, "decode")["p50"].is_null());
    // Per window, capture -> synchronised frame is part of capture -> record, so every order
    // statistic of the first is at most the same one of the second.
    for q in ["min", "p50", "p95", "max"] {
        let sync = stage(&r, "capture_to_sync")[q].as_f64().unwrap();
        let record = stage(&r, "capture_to_record")[q].as_f64().unwrap();
        assert!(sync <= record, "{q}: {sync} > {record}");
    }
    assert_eq!(r["streams"][0]["stream"], "scene");
    assert_eq!(r["streams"][0]["dropped"], 0);
    assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0);
    assert!(r["cpu"]["process_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["duration_s"], 6.0);
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bench_measures_the_answers_of_the_model_stack() {
    let (_d, dir) = tmp();
    let json = dir.join("bench.json");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "bench",
            "--config",
            "benches/latency/synthetic-models.toml",
            "--duration",
            "8",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let answers = r["streams"][0]["answers"].as_u64().unwrap();
    assert!(answers >= 2, "{r}");
    for key in ["tokens_to_first_token", "capture_to_first_token", "decode"] {
        assert_eq!(stage(&r, key)["n"].as_u64(), Some(answers), "{key}: {r}");
    }
    assert!(stage(&r, "decode")["p50"].as_f64().unwrap() > 0.0);
    // The first answer token comes after the window's record was possible: capture -> first
    // token is at least capture -> tokens.
    let first = stage(&r, "capture_to_first_token")["min"].as_f64().unwrap();
    let to_tokens = stage(&r, "capture_to_sync")["min"].as_f64().unwrap();
    assert!(first >= to_tokens, "{first} < {to_tokens}");
}

#[test]
fn bench_refuses_bad_arguments() {
    let o = sensorium(&["bench", "--config", "/nonexistent.toml", "--duration", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent.toml"), "{}", stderr(&o));
    let o = sensorium(&[
        "bench",
        "--config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/configs/test.toml"),
        "--duration",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--duration"), "{}", stderr(&o));
}

/// A progress bar on a terminal (a pseudo-terminal from util-linux `script`), none in a pipe.
#[test]
fn bench_shows_progress_on_a_terminal_only() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/configs/test.toml");
    let piped = sensorium(&["bench", "--config", config, "--duration", "2"]);
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    assert!(!stderr(&piped).contains("bench ["), "{}", stderr(&piped));
    assert!(!stderr(&piped).contains('\r'), "{}", stderr(&piped));
    let cmd = format!(
        "{} bench --config {config} --duration 2",
        env!("CARGO_BIN_EXE_sensorium")
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert_eq!(tty.status.code(), Some(0), "{}", text(&tty.stdout));
    let screen = text(&tty.stdout).replace('\r', "\n");
    assert!(
        screen.contains("bench ["),
        "no progress bar on a terminal:\n{screen}"
    );
    assert!(screen.contains("capture -> window record"), "{screen}");
}
