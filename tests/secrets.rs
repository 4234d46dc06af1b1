//! A camera password never leaks. An RTSP camera that demands basic auth is watched through
//! `check`, `run` (trace-level logs, text and JSON), `probe`, `/metrics`, a wrong password
//! and an unreachable host; every byte written to stdout, stderr, the output file and the
//! metrics page is searched for the password (and the wrong one): zero occurrences. The
//! windows written prove the password was used.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PASSWORD: &str = "Pw-9f3e-sekret";
const WRONG: &str = "Wr0ng-77aa";

fn run_config(dir: &Path, name: &str, source: &str, extra: &str) -> String {
    write(
        dir,
        name,
        &format!(
            "[engine]\nfps = 5.0\nwidth = 64\nheight = 48\nwindow = 5\nstride = 5\n{extra}\n\
             [[stream]]\nname = \"door\"\n[stream.source]\nkind = \"rtsp\"\nlatency_ms = 50\n\
             {source}\n"
        ),
    )
}

/// Everything a command printed.
fn all_output(o: &std::process::Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// Runs `sensorium ARGS run --config CFG` until `out` holds two windows, scrapes /metrics,
/// then SIGTERM: stdout + stderr + metrics page.
fn watch(args: &[&str], cfg: &str, out: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args(args)
        .args(["run", "--config", cfg, "--metrics", "127.0.0.1:0", "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let pid = child.id().to_string();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut addr = None;
    let mut line = String::new();
    while addr.is_none() && err.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if let Some(i) = line.find("metrics on http://") {
            let rest = &line[i + "metrics on http://".len()..];
            addr = rest.split('/').next().map(str::to_owned);
        }
        line.clear();
    }
    let addr = addr.unwrap_or_else(|| panic!("no metrics address in: {seen}"));
    let deadline = Instant::now() + HANG_GUARD;
    while std::fs::read_to_string(out).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            Instant::now() < deadline,
            "no windows (auth failed?): {seen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    assert!(metrics.contains("sensorium_stream_state"), "{metrics}");
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let mut stdout = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    assert_eq!(child.wait().unwrap().code(), Some(130), "{seen}{rest}");
    format!("{seen}{rest}{stdout}{metrics}")
}

#[test]
fn the_camera_password_appears_nowhere() {
    let server = RtspServer::serving(
        0,
        &Serve {
            auth: Some(("admin".into(), PASSWORD.into())),
            ..Serve::default()
        },
    );
    let port = server.port();
    let (_d, dir) = tmp();
    let in_url = format!("url = \"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/cam\"");
    let in_fields = format!(
        "url = \"rtsp://127.0.0.1:{port}/cam\"\nuser = \"admin\"\npassword = \"{PASSWORD}\""
    );
    let mut everything = String::new();
    for (i, source) in [in_url, in_fields].iter().enumerate() {
        let cfg = run_config(&dir, &format!("cam{i}.toml"), source, "");
        let o = sensorium(&["check", &cfg]);
        assert_eq!(o.status.code(), Some(0), "{}", all_output(&o));
        assert!(text(&o.stdout).contains("***"), "{}", text(&o.stdout));
        everything.push_str(&all_output(&o));
        for args in [
            &["--log-level", "trace"][..],
            &["--log-format", "json", "--log-level", "debug"],
        ] {
            let out = dir.join(format!("out{i}-{}.jsonl", args.len()));
            everything.push_str(&watch(args, &cfg, &out));
            let written = std::fs::read_to_string(&out).unwrap();
            assert!(lines_in(&out).len() >= 2);
            everything.push_str(&written);
        }
    }
    // Error paths: a wrong password (given up after two attempts), a dead host.
    let wrong = run_config(
        &dir,
        "wrong.toml",
        &format!(
            "url = \"rtsp://admin:{WRONG}@127.0.0.1:{port}/cam\"\n\
             [stream.source.reconnect]\ninitial_ms = 50\nmax_attempts = 2"
        ),
        "",
    );
    let o = sensorium(&["--log-level", "trace", "run", "--config", &wrong]);
    assert_eq!(o.status.code(), Some(3), "{}", all_output(&o));
    assert!(
        stderr(&o).contains(&format!("rtsp://127.0.0.1:{port}/cam: giving up after 2")),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Unauthorized (401)"), "{}", stderr(&o));
    everything.push_str(&all_output(&o));
    let dead = run_config(
        &dir,
        "dead.toml",
        &format!(
            "url = \"rtsp://127.0.0.1:{}/cam\"\nuser = \"admin\"\npassword = \"{PASSWORD}\"\n\
             [stream.source.reconnect]\ninitial_ms = 20\nmax_attempts = 2",
            closed_port()
        ),
        "",
    );
    let o = sensorium(&["--log-level", "trace", "run", "--config", &dead]);
    assert_eq!(o.status.code(), Some(3), "{}", all_output(&o));
    everything.push_str(&all_output(&o));
    let o = sensorium(&[
        "probe",
        &format!("rtsp://admin:{PASSWORD}@127.0.0.1:{port}/cam"),
    ]);
    everything.push_str(&all_output(&o));
    let o = sensorium(&[
        "probe",
        &format!("rtsp://admin:{WRONG}@127.0.0.1:{port}/cam"),
    ]);
    everything.push_str(&all_output(&o));

    assert!(
        everything.len() > 2_000,
        "too little output to mean anything"
    );
    for secret in [PASSWORD, WRONG] {
        let hits = everything.matches(secret).count();
        assert_eq!(hits, 0, "{secret} appears {hits} times in:\n{everything}");
    }
    server.stop();
}
