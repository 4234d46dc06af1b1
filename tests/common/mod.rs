//! Helpers for the end-to-end tests of the whole binary: running `sensorium` under a hang
//! guard, media made by GStreamer (through `sensorium_pipelines::testutil`), and checks on
//! the JSON lines it writes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

#[allow(unused_imports)]
pub use sensorium_pipelines::testutil::*;

pub mod web;

/// Only a guard against hangs; tests never assert on time.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// Runs the binary to its end; panics (after killing it) if it outlives the hang guard.
pub fn sensorium(args: &[&str]) -> Output {
    sensorium_within(args, HANG_GUARD)
}

/// [`sensorium`] with another hang guard (training runs take longer than a stream).
pub fn sensorium_within(args: &[&str], guard: Duration) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(guard) {
        Ok(out) => out.expect("binary output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("sensorium {args:?} hung (killed after {guard:?})");
        }
    }
}

/// A committed model fixture (`models/tests/fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/tests/fixtures")
        .join(name)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Stderr lines that report a failure: everything but the per-stream summary lines
/// (`sensorium: stream 'x': N frames, M windows written, D items dropped`) and warnings.
pub fn error_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| !(l.contains(" frames, ") && l.contains(" windows written, ")))
        .filter(|l| !l.starts_with("sensorium: warning: "))
        .map(str::to_owned)
        .collect()
}

/// Stderr lines that are warnings (`sensorium: warning: ...`).
pub fn warning_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("sensorium: warning: "))
        .map(str::to_owned)
        .collect()
}

/// The per-stream summary line of `stream`.
pub fn summary(o: &Output, stream: &str) -> String {
    stderr(o)
        .lines()
        .find(|l| {
            l.starts_with(&format!("sensorium: stream '{stream}': "))
                && l.contains(" windows written, ")
        })
        .unwrap_or_else(|| panic!("no summary for {stream}: {}", stderr(o)))
        .to_owned()
}

/// Every line must be one JSON object (also the last: lines are written whole).
pub fn json_lines(text: &str) -> Vec<Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "last line unterminated: {text:?}"
    );
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

pub fn lines_of(o: &Output) -> Vec<Value> {
    json_lines(&String::from_utf8(o.stdout.clone()).expect("utf-8 stdout"))
}

pub fn lines_in(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read_to_string(path).expect("output file"))
}

pub fn of_stream<'a>(lines: &'a [Value], stream: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["stream"] == stream).collect()
}

pub fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|b| b.as_bool().expect("bool"))
        .collect()
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// Writes `text` to `dir/name`; returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p.display().to_string()
}

/// A config with `[engine]` lines and one `[[stream]]` per (name, source table body).
pub fn config(dir: &Path, engine: &str, streams: &[(&str, String)]) -> String {
    let mut t = format!("[engine]\n{engine}\n");
    for (name, source) in streams {
        t += &format!("[[stream]]\nname = \"{name}\"\n[stream.source]\n{source}\n");
    }
    write(dir, "sensorium.toml", &t)
}

pub fn file_source(path: &Path) -> String {
    format!("kind = \"file\"\npath = \"{}\"", path.display())
}

/// A file that is not media (text with a media extension).
pub fn make_text(path: &Path) {
    std::fs::write(path, "these are meeting notes, not a video\n".repeat(200)).expect("write");
}

/// The first half of `src`, as a new file.
pub fn make_truncated(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src).expect("read media");
    std::fs::write(dst, &bytes[..bytes.len() / 2]).expect("write truncated");
}

pub fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_owned();
    (d, p)
}

/// A `/proc/PID/status` field in its unit (`VmRSS:` in KiB, `Threads:`); `pid` "self" works.
pub fn proc_status(pid: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A numeric environment variable, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
