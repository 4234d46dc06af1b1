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
