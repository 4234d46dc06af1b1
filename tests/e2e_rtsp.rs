//! RTSP end to end: the engine runtime with the real GStreamer source factory against an
//! in-process RTSP server (127.0.0.1, free port) serving H.264 + Opus. The server is stopped
//! and started again on the same port mid-stream: windows resume after the reconnect, with
//! strictly increasing, non-overlapping times. A camera that goes silent without closing
//! the connection is reconnected after `stall_ms`. An unreachable camera through the binary
//! gives up after its attempts with exit 3 and one line naming the URL, after reporting
//! each failed attempt; one retrying for ever is reported and counted at once.

mod common;

use std::sync::Arc;
use std::time::Instant;

use sensorium_engine::{Config, MemorySink, RunReport, Runtime, StreamEnd};
use sensorium_pipelines::Sources;
use serde_json::Value;

use common::*;

/// Waits until `sink` holds at least `n` records (panics at the hang guard).
fn wait_for_windows(sink: &MemorySink, n: usize, deadline: Instant) -> Vec<Value> {
    loop {
        let records = sink.records.lock().clone();
        if records.len() >= n {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: {} of {n} windows",
            records.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The engine running one RTSP stream `cam` (5 fps, windows of 5) from `url` on its own
/// thread, with `reconnect` lines added to its reconnect table.
struct Live {
    sink: MemorySink,
    stop: sensorium_engine::StopToken,
    run: std::thread::JoinHandle<Result<RunReport, sensorium_engine::Error>>,
    deadline: Instant,
}

impl Live {
    fn start(url: &str, reconnect: &str) -> Live {
        let config: Config = toml::from_str(&format!(
            "[engine]\nfps = 5.0\nwidth = 64\nheight = 48\nwindow = 5\nstride = 5\n\
             [[stream]]\nname = \"cam\"\n\
             [stream.source]\nkind = \"rtsp\"\nurl = \"{url}\"\nlatency_ms = 50\n\
             [stream.source.reconnect]\ninitial_ms = 100\nmax_ms = 400\n{reconnect}\n"
        ))
        .expect("config");
        let sink = MemorySink::default();
        let runtime =
            Runtime::new(config, Arc::new(Sources::new())).with_sink(Box::new(sink.clone()));
        let stop = runtime.shutdown_token();
        Live {
            sink,
            stop,
            run: std::thread::spawn(move || runtime.run()),
            deadline: Instant::now() + HANG_GUARD,
        }
    }

    /// Waits until at least `n` windows were written; returns how many there are.
    fn wait(&self, n: usize) -> usize {
        wait_for_windows(&self.sink, n, self.deadline).len()
    }

    /// Stops the engine: its report and every window line written.
    fn finish(self) -> (RunReport, Vec<Value>) {
        self.stop.trigger();
        let report = self.run.join().expect("runtime thread").expect("runtime");
        let lines = self.sink.records.lock().clone();
        (report, lines)
    }
}

/// Window lines are numbered 0, 1, ... and strictly monotonic, never overlapping.
fn assert_monotonic(lines: &[Value]) {
    for (i, w) in lines.iter().enumerate() {
        assert_eq!(u(&w["index"]), i as u64, "{w}");
        assert_eq!(w["stream"], "cam");
        assert!(u(&w["t_end"]) > u(&w["t_start"]), "{w}");
    }
    for p in lines.windows(2) {
        assert!(
            u(&p[1]["t_start"]) >= u(&p[0]["t_end"]),
            "windows overlap or go back: {} then {}",
            p[0],
            p[1]
        );
    }
}

/// Windows from `from` on that hold all 5 pictures.
fn full_windows(lines: &[Value], from: usize) -> usize {
    lines[from..]
        .iter()
        .filter(|w| u(&w["frames"]) == 5 && bools(&w["has_video"]).iter().all(|v| *v))
        .count()
}

#[test]
fn windows_resume_after_the_server_restarts() {
    let server = RtspServer::start(0);
    let port = server.port();
    let live = Live::start(&server.url(), "max_attempts = 50");

    // Phase 1: windows from the first server.
    live.wait(2);
    server.stop();
    let before = live.sink.records.lock().len();
    // Phase 2: the same camera comes back on the same port.
    let server = RtspServer::start(port);
    assert_eq!(server.port(), port);
    // The first session's buffered frames (at most the window in progress, flushed padded
    // at the discontinuity) and then at least 3 windows that only the new session can fill.
    live.wait(before + 4);
    let (report, lines) = live.finish();
    drop(server);

    let r = report.stream("cam").expect("stream report");
    assert_eq!(r.end, StreamEnd::Stopped, "{r:?}");
    assert_eq!(r.sync.discontinuities, 1, "one reconnect");
    assert_eq!(r.model_error, None);
    assert_eq!(lines.len() as u64, r.windows_written);
    // Strictly monotonic, non-overlapping windows across the reconnect.
    assert_monotonic(&lines);
    // The reconnect closed a segment: exactly one padded window may sit at the seam (or
    // none when the seam fell on a window boundary), and full windows follow it.
    let padded: Vec<usize> = (0..lines.len())
        .filter(|&i| bools(&lines[i]["valid"]).contains(&false))
        .collect();
    assert!(padded.len() <= 2, "padded windows at {padded:?}");
    let after_seam = padded.first().map_or(before, |&i| i + 1);
    let full_after = full_windows(&lines, after_seam);
    assert!(
        full_after >= 2,
        "windows with all 5 pictures after the reconnect: {full_after}"
    );
}

#[test]
fn a_silent_camera_is_reconnected_after_stall_ms() {
    let server = RtspServer::start(0);
    let live = Live::start(&server.url(), "stall_ms = 1500");

    live.wait(2);
    // The camera keeps the session open but sends nothing for 4 s: without the watchdog the
    // data would simply resume in the same session (no discontinuity).
    server.stall_for(std::time::Duration::from_secs(4));
    let before = live.sink.records.lock().len();
    live.wait(before + 4);
    let (report, lines) = live.finish();
    drop(server);

    let r = report.stream("cam").expect("stream report");
    assert_eq!(r.end, StreamEnd::Stopped, "{r:?}");
    assert_eq!(
        r.sync.discontinuities, 1,
        "the stall ended the session once: {r:?}"
    );
    assert_monotonic(&lines);
    let full_after = full_windows(&lines, before);
    assert!(
        full_after >= 2,
        "full windows after the stall: {full_after}"
    );
}

#[test]
fn unreachable_camera_exits_3_naming_the_url() {
    let (_d, dir) = tmp();
    let port = closed_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let cfg = config(
        &dir,
        "",
        &[(
            "door",
            format!(
                "kind = \"rtsp\"\nurl = \"rtsp://admin:hunter2@127.0.0.1:{port}/cam\"\n\
                 [stream.source.reconnect]\ninitial_ms = 20\nmax_attempts = 2"
            ),
        )],
    );
    let o = sensorium(&["run", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let errors = error_lines(&o);
    assert_eq!(errors.len(), 1, "{}", stderr(&o));
    assert!(
        errors[0].starts_with(&format!(
            "sensorium: stream 'door': {url}: giving up after 2 failed connection attempt(s)"
        )),
        "{}",
        errors[0]
    );
    // Never silent: the failed attempt before the last was reported, with the next backoff.
    let warnings = warning_lines(&o);
    assert_eq!(warnings.len(), 1, "{}", stderr(&o));
    assert!(
        warnings[0].starts_with(&format!(
            "sensorium: warning: stream 'door': {url}: connection attempt 1 failed ("
        )) && warnings[0].ends_with("); next attempt in 20 ms"),
        "{}",
        warnings[0]
    );
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    assert!(lines_of(&o).is_empty());
}

/// `sensorium run --source rtsp://127.0.0.1:PORT/x` against a closed port, retrying for
/// ever: the first failed attempt is reported at once with its backoff, the stream's state
/// metric says `reconnecting` and its error counter counts; SIGTERM ends it like Ctrl-C.
#[test]
fn a_dead_camera_is_reported_at_once_and_counted() {
    use std::io::{BufRead, BufReader, Read, Write};
    let port = closed_port();
    let url = format!("rtsp://127.0.0.1:{port}/x");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sensorium"))
        .args([
            "run",
            "--source",
            &url,
            "--metrics",
            "127.0.0.1:0",
            "-o",
            "-",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("binary starts");
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn({
        let pid = pid.clone();
        move || {
            if finished.recv_timeout(HANG_GUARD).is_err() {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
        }
    });
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    let mut metrics = None;
    while err.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push(line.trim_end().to_owned());
        if let Some(a) = line
            .trim_end()
            .strip_prefix("sensorium: metrics on http://")
        {
            metrics = Some(a.trim_end_matches("/metrics").to_owned());
        }
        if line.starts_with("sensorium: warning: ") {
            break;
        }
        line.clear();
    }
    let warning = seen.last().cloned().unwrap_or_default();
    assert!(
        warning.starts_with(&format!(
            "sensorium: warning: stream 'source': {url}: connection attempt 1 failed ("
        )) && warning.ends_with("); next attempt in 500 ms"),
        "{seen:?}"
    );
    let addr = metrics.expect("the metrics address is printed first");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let state = |st: &str, v: u8| {
        body.contains(&format!(
            r#"sensorium_stream_state{{stream="source",state="{st}"}} {v}"#
        )) || body.contains(&format!(
            r#"sensorium_stream_state{{state="{st}",stream="source"}} {v}"#
        ))
    };
    assert!(state("reconnecting", 1) && state("connected", 0), "{body}");
    let errors: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(r#"sensorium_source_errors_total{stream="source"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no error counter in {body}"));
    assert!(errors >= 1, "{body}");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    let status = child.wait().unwrap();
    let _ = done.send(());
    assert_eq!(status.code(), Some(130), "{seen:?} {rest}");
    assert!(
        rest.contains("sensorium: stream 'source': 0 frames, 0 windows written"),
        "{rest}"
    );
}
