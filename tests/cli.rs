//! The `sensorium` binary end to end: exit codes and one-line errors naming the culprit.

use std::path::Path;
use std::process::{Command, Output};

fn sensorium(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn malformed_toml_exits_2_naming_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "bad.toml",
        "[[stream]]\nname = \"a\"\nsource = { kind = \"test\" \n",
    );
    let o = sensorium(&["run", "--config", &f]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.starts_with(&format!("sensorium: {f}: malformed TOML at line 3")),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn unknown_source_kind_exits_2_naming_kind() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "k.toml",
        "[[stream]]\nname = \"a\"\nsource = { kind = \"webcam\" }\n",
    );
    let o = sensorium(&["check", &f]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("field `stream[0].source.kind`: unknown source kind \"webcam\""),
        "{e}"
    );
}

#[test]
fn invalid_field_value_exits_2_naming_field() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "f.toml",
        "[engine]\nwidth = 225\n[[stream]]\nname = \"a\"\nsource = { kind = \"test\" }\n",
    );
    let o = sensorium(&["run", "-c", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        format!("sensorium: {f}: field `engine.width`: must be even and > 0, got 225")
    );
    let f = write(
        d.path(),
        "g.toml",
        "[[stream]]\nname = \"a\"\nfps = \"fast\"\nsource = { kind = \"test\" }\n",
    );
    let o = sensorium(&["check", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("field `stream[0].fps`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_prints_resolved_config_and_redacts_password() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "c.toml",
        "[engine]\nfps = 4\n[[stream]]\nname = \"door\"\nwidth = 320\n\
         source = { kind = \"rtsp\", url = \"rtsp://admin:hunter2@10.0.0.9/live\", user = \"admin\", password = \"s3cret\" }\n\
         [[stream]]\nname = \"clip\"\nsource = { kind = \"file\", path = \"clip.mp4\" }\n",
    );
    let o = sensorium(&["check", &f]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!out.contains("s3cret") && !out.contains("hunter2"), "{out}");
    assert!(out.contains("password = \"***\""), "{out}");
    assert!(
        out.contains("url = \"rtsp://admin:***@10.0.0.9/live\""),
        "{out}"
    );
    // Defaults filled per stream: live rtsp -> realtime, file -> lossless, fps from engine.
    let back: toml::Value = toml::from_str(&out).unwrap();
    let streams = back["stream"].as_array().unwrap();
    assert_eq!(streams[0]["mode"].as_str(), Some("realtime"));
    assert_eq!(streams[0]["fps"].as_float(), Some(4.0));
    assert_eq!(streams[0]["width"].as_integer(), Some(320));
    assert_eq!(streams[0]["height"].as_integer(), Some(224));
    assert_eq!(streams[1]["mode"].as_str(), Some("lossless"));
}

#[test]
fn check_of_missing_file_exits_2() {
    let o = sensorium(&["check", "/nonexistent/sensorium.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("sensorium: /nonexistent/sensorium.toml: cannot read config"));
}

#[test]
fn missing_input_file_exits_3_naming_it() {
    let o = sensorium(&["run", "--source", "/nonexistent/clip.mp4"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        stderr(&o).trim(),
        "sensorium: stream 'source': media file /nonexistent/clip.mp4 does not exist or is not a file"
    );
}

#[test]
fn unwritable_output_exits_5_naming_it() {
    let o = sensorium(&[
        "run",
        "--source",
        "test:",
        "--output",
        "/nonexistent/dir/out.jsonl",
    ]);
    assert_eq!(o.status.code(), Some(5));
    assert!(
        stderr(&o).starts_with("sensorium: output /nonexistent/dir/out.jsonl: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn usage_errors_exit_2_and_help_lists_exit_codes() {
    assert_eq!(sensorium(&["run"]).status.code(), Some(2));
    assert_eq!(sensorium(&["frobnicate"]).status.code(), Some(2));
    let o = sensorium(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8(o.stdout).unwrap();
    for line in [
        "Exit codes:",
        "  3    source/input error",
        "  130  interrupted",
    ] {
        assert!(help.contains(line), "{help}");
    }
}

#[test]
fn bad_device_exits_2_naming_the_field() {
    let o = sensorium(&["run", "--source", "test:", "--device", "tpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "sensorium: <command line>: field `engine.device`: \"tpu\" is not a device: expected auto, cpu, cuda or cuda:N"
    );
}

/// The engine's own source (no GStreamer in the path): exact windows from `run`, and its
/// fields validated by name.
#[test]
fn synthetic_source_gives_exact_windows_and_checks_its_fields() {
    let d = tempfile::tempdir().unwrap();
    let f = write(
        d.path(),
        "s.toml",
        "[engine]\nfps = 4.0\nwidth = 32\nheight = 24\nwindow = 4\nstride = 2\n\
         [[stream]]\nname = \"gen\"\n\
         source = { kind = \"synthetic\", is_live = false, duration_s = 2.25, chunk_ms = 30 }\n",
    );
    let o = sensorium(&["run", "-c", &f]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // 2.25 s at 4 fps: 9 frames (the last one has audio for 0.25 s = 4000 samples, all of
    // its frame); windows of 4 with stride 2 start at frames 0, 2, 4 and 6, the last one
    // padded (frames 6..=8 cover the end: no window starts at frame 8).
    let starts: Vec<u64> = lines
        .iter()
        .map(|w| w["t_start"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, vec![0, 500_000_000, 1_000_000_000, 1_500_000_000]);
    let frames: Vec<u64> = lines
        .iter()
        .map(|w| w["frames"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, vec![4, 4, 4, 3]);
    let samples: Vec<u64> = lines
        .iter()
        .map(|w| w["audio_samples"].as_u64().unwrap())
        .collect();
    assert_eq!(samples, vec![16000, 16000, 16000, 12000]);
    assert!(lines
        .iter()
        .all(|w| w["has_video"].as_array().unwrap()[0] == true));

    let bad = write(
        d.path(),
        "b.toml",
        "[[stream]]\nname = \"a\"\nsource = { kind = \"synthetic\", freq = 9000.0 }\n",
    );
    let o = sensorium(&["check", &bad]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        format!(
            "sensorium: {bad}: field `stream[0].source.freq`: must be > 0 and < 8000 Hz \
             (16 kHz audio), got 9000"
        )
    );
}

#[test]
fn json_logs_carry_the_same_error_and_log_level_filters() {
    let o = sensorium(&[
        "--log-format",
        "json",
        "run",
        "--source",
        "/nonexistent/clip.mp4",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let lines: Vec<serde_json::Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{}", stderr(&o));
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(
        lines[0]["message"],
        "stream 'source': media file /nonexistent/clip.mp4 does not exist or is not a file"
    );

    // A clean synthetic run prints its summary at info; `--log-level warn` hides it, and a
    // bad RUST_LOG is named once rather than ignored silently.
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "s.toml",
        "[output]\npath = \"/dev/null\"\n[[stream]]\nname = \"a\"\n\
         source = { kind = \"synthetic\", is_live = false, duration_s = 1.0 }\n",
    );
    let go = |args: &[&str], rust_log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sensorium"));
        c.args(args)
            .args(["run", "--config", &cfg])
            .env_remove("RUST_LOG");
        if let Some(v) = rust_log {
            c.env("RUST_LOG", v);
        }
        c.output().expect("binary runs")
    };
    let info = go(&[], None);
    assert_eq!(info.status.code(), Some(0), "{}", stderr(&info));
    assert!(
        stderr(&info).contains("sensorium: stream 'a': 2 frames, 1 windows written"),
        "{}",
        stderr(&info)
    );
    let quiet = go(&["--log-level", "warn"], None);
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(stderr(&quiet), "");
    let env_quiet = go(&[], Some("error"));
    assert_eq!(stderr(&env_quiet), "");
    let bad = go(&[], Some("sensorium=loud"));
    assert!(
        stderr(&bad).starts_with("sensorium: warning: RUST_LOG=\"sensorium=loud\" ignored: "),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_public_http_address_without_a_token_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write(
        d.path(),
        "open.toml",
        "[metrics]\nlisten = \"0.0.0.0:0\"\n[output]\npath = \"/dev/null\"\n[[stream]]\nname = \"a\"\n\
         source = { kind = \"synthetic\", is_live = false, duration_s = 1.0 }\n",
    );
    let o = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(["run", "--config", &cfg])
        .env_remove("SENSORIUM_HTTP_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with(
            "sensorium: metrics.listen: 0.0.0.0:0 is not a loopback address; set [http] token"
        ),
        "{}",
        stderr(&o)
    );
    // With the token from the environment it runs (and never prints the token).
    let o = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(["run", "--config", &cfg])
        .env("SENSORIUM_HTTP_TOKEN", "tok-7c1d")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("metrics on http://0.0.0.0:"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("tok-7c1d"));
}
