//! The live web view, tested in a real browser (Debian's headless Chromium through
//! chromedriver) against a running `sensorium run`: the picture changes, the spectrogram is
//! drawn, windows are listed, a question typed in the box is answered token by token, and
//! the health panel follows a camera through an outage. Screenshots go to `target/view/`
//! (the README's are copies). Then 10 concurrent viewers, one of which never reads: the
//! pipeline writes the same windows and drops nothing more, with memory bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::web::{free_port, http, Browser, Running};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../view");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A checksum of the page's current picture, read back from its pixels.
const FRAME_HASH: &str = "const img = document.getElementById('frame');
  if (!img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const x = c.getContext('2d'); x.drawImage(img, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data;
  let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0;
  return h;";

#[test]
fn the_page_shows_the_stream_and_answers_token_by_token() {
    let (_d, dir) = tmp();
    let out = dir.join("out.jsonl");
    let run = Running::start(&[
        "run",
        "--source",
        "scene:5",
        "-q",
        "What do you hear?",
        "--http",
        "127.0.0.1:0",
        "-o",
        out.to_str().unwrap(),
    ]);
    let base = format!("http://{}", run.addr);
    let browser = Browser::start();
    browser.goto(&format!("{base}/streams/source"));
    browser.wait_for(
        "frames",
        WAIT,
        "return window.sensoriumView && sensoriumView.frames >= 3",
    );
    browser.wait_for(
        "a decoded picture",
        WAIT,
        &format!("return (function() {{ {FRAME_HASH} }})() !== null"),
    );
    let first = browser.js(FRAME_HASH);
    let shot_a = browser.screenshot(Some("#frame"));
    let frames_a = browser.js("return sensoriumView.frames").as_u64().unwrap();
    browser.wait_for(
        "more frames",
        WAIT,
        &format!("return sensoriumView.frames >= {}", frames_a + 4),
    );
    std::thread::sleep(Duration::from_millis(300));
    let second = browser.js(FRAME_HASH);
    let shot_b = browser.screenshot(Some("#frame"));
    assert_ne!(first, second, "the picture's pixels did not change");
    assert_ne!(
        shot_a, shot_b,
        "two screenshots of the picture are identical"
    );

    // The spectrogram canvas is drawn (silence is drawn too: not the background black).
    let drawn = browser.js("const c = document.getElementById('spectrogram');
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] || d[i+1] || d[i+2]) n++;
         return n;");
    let drawn = drawn.as_u64().unwrap();
    assert!(drawn > 2000, "{drawn} spectrogram pixels drawn");
    assert!(
        browser
            .js("return sensoriumView.melDrawn")
            .as_u64()
            .unwrap()
            >= 3
    );

    // Windows as they are formed, and scheduled answers.
    browser.wait_for(
        "a window row",
        WAIT,
        "return document.querySelectorAll('#windows tbody tr').length >= 1",
    );
    browser.wait_for(
        "a scheduled answer",
        WAIT,
        "return document.querySelectorAll('#answers li .a:not(.pending)').length >= 1",
    );
    assert!(browser.js("return sensoriumView.tokens").as_u64().unwrap() >= 1);

    // A live question through the box: the answer grows token by token.
    browser.type_into("#question", "What do you see?");
    browser.click("#askbutton");
    browser.wait_for(
        "the live answer",
        WAIT,
        "return sensoriumView.liveDone === true",
    );
    let steps: Vec<String> =
        serde_json::from_value(browser.js("return sensoriumView.liveSteps")).unwrap();
    let answer = browser.text_of("#live .a");
    assert!(
        steps.len() >= 2,
        "answer {answer:?} arrived in {} step(s): {steps:?}",
        steps.len()
    );
    for w in steps.windows(2) {
        assert!(
            w[1].starts_with(&w[0]) && w[1].len() > w[0].len(),
            "{steps:?}"
        );
    }
    assert!(
        !answer.trim().is_empty() && !answer.contains("error"),
        "{answer:?}"
    );
    // Every viewer sees the finished live answer in the stream's answer list too.
    browser.wait_for(
        "the live answer in the list",
        WAIT,
        "return [...document.querySelectorAll('#answers li')].some(li =>
           li.textContent.includes('What do you see?') && !li.querySelector('.pending'))",
    );
    browser.wait_for("health", WAIT, "return sensoriumView.state === 'connected'");
    std::fs::write(shots().join("stream-page.png"), browser.screenshot(None)).unwrap();

    // The index lists the stream with its state.
    browser.goto(&format!("{base}/"));
    browser.wait_for(
        "the index",
        WAIT,
        "return document.querySelectorAll('#streams tbody tr').length === 1",
    );
    assert!(browser.text_of("#streams tbody").contains("source"));
    std::fs::write(shots().join("index.png"), browser.screenshot(None)).unwrap();
    drop(browser);
    let (code, err) = run.stop();
    assert_eq!(code, Some(130), "{err}");
}

#[test]
fn the_health_panel_follows_a_camera_through_an_outage() {
    let server = RtspServer::start(0);
    let port = server.port();
    let (_d, dir) = tmp();
    let cfg = write(
        &dir,
        "cam.toml",
        &format!(
            "[engine]\nfps = 10\nwidth = 160\nheight = 120\nwindow = 10\nstride = 10\n\n\
             [[stream]]\nname = \"cam\"\nmode = \"realtime\"\n\
             [stream.source]\nkind = \"rtsp\"\nurl = \"rtsp://127.0.0.1:{port}/cam\"\n\
             latency_ms = 50\n[stream.source.reconnect]\ninitial_ms = 100\nmax_ms = 400\n"
        ),
    );
    let out = dir.join("out.jsonl");
    // With a token: the page is opened with it in its address and passes it on to its
    // event stream.
    let run = Running::start_with_env(
        &[
            "run",
            "--config",
            &cfg,
            "--http",
            "127.0.0.1:0",
            "-o",
            out.to_str().unwrap(),
        ],
        &[("SENSORIUM_HTTP_TOKEN", "view-secret")],
    );
    assert_eq!(http(&run.addr, "GET", "/api/streams", None).0, 401);
    let browser = Browser::start();
    browser.goto(&format!(
        "http://{}/streams/cam?access_token=view-secret",
        run.addr
    ));
    let state_is =
        |s: &str| format!("return document.getElementById('state').textContent === '{s}'");
    browser.wait_for("connected", WAIT, &state_is("connected"));
    server.stop();
    browser.wait_for("reconnecting", WAIT, &state_is("reconnecting"));
    let error = browser.text_of("#h-error");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error:?}");
    std::fs::write(shots().join("reconnecting.png"), browser.screenshot(None)).unwrap();
    let server = RtspServer::start(port);
    browser.wait_for("connected again", WAIT, &state_is("connected"));
    browser.wait_for(
        "the reconnect counted",
        WAIT,
        "return document.getElementById('h-reconnects').textContent !== '0'",
    );
    drop(browser);
    let (code, err) = run.stop();
    assert_eq!(code, Some(130), "{err}");
    server.stop();
}

/// The run's summary line of `stream` (`... N frames, M windows written, D items dropped`).
fn summary_line(stderr: &str, stream: &str) -> String {
    stderr
        .lines()
        .find(|l| l.contains(&format!("stream '{stream}':")) && l.contains("windows written"))
        .unwrap_or_default()
        .to_owned()
}

/// The records of a run, without what depends on timing.
fn windows_of(path: &std::path::Path) -> Vec<Value> {
    lines_in(path)
        .into_iter()
        .filter(|l| l.get("type").is_none())
        .map(|mut l| {
            let m = l.as_object_mut().unwrap();
            m.remove("latency_ms");
            m.remove("timing");
            l
        })
        .collect()
}

#[test]
fn ten_viewers_one_stalled_leave_the_pipeline_unchanged() {
    let (_d, dir) = tmp();
    // A live scene stream: noisy pictures make large JPEGs, so the stalled viewer's
    // connection fills within seconds.
    let cfg = write(
        &dir,
        "scene.toml",
        "[engine]\nfps = 10\nwidth = 320\nheight = 240\nwindow = 10\nstride = 5\n\n\
         [[stream]]\nname = \"scene\"\nmode = \"realtime\"\n\
         source = { kind = \"scene\", seed = 3, window_s = 1.0, duration_s = 12.0 }\n",
    );
    // Unwatched (the view served, nobody looking): its peak memory at the same point.
    let alone = dir.join("alone.jsonl");
    let mut run = Running::start(&[
        "run",
        "--config",
        &cfg,
        "--http",
        "127.0.0.1:0",
        "-o",
        alone.to_str().unwrap(),
    ]);
    while windows_of(&alone).len() < 18 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let hwm_alone_kib = proc_status(&run.pid(), "VmHWM:").unwrap();
    let (code, err) = run.wait_exit(WAIT);
    assert_eq!(code, Some(0), "{err}");
    let dropped_alone = summary_line(&err, "scene");

    // Watched by 10 viewers; one never reads.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let watched = dir.join("watched.jsonl");
    let run = Running::start(&[
        "run",
        "--config",
        &cfg,
        "--http",
        &addr,
        "--metrics",
        &addr,
        "-o",
        watched.to_str().unwrap(),
    ]);
    let request = format!(
        "GET /api/streams/scene/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut readers = Vec::new();
    for _ in 0..9 {
        let (addr, request) = (addr.clone(), request.clone());
        readers.push(std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut frames = 0u64;
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                if line == "event: frame" {
                    frames += 1;
                }
            }
            frames
        }));
    }
    // The stalled viewer: a tiny receive buffer, and it never reads.
    let stalled = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stalled.set_recv_buffer_size(4096).unwrap();
    stalled
        .connect(&addr.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let mut stalled: std::net::TcpStream = stalled.into();
    stalled.write_all(request.as_bytes()).unwrap();

    // Peak memory near the end of the stream, while every viewer is connected.
    let deadline = Instant::now() + WAIT;
    while windows_of(&watched).len() < 18 {
        assert!(Instant::now() < deadline, "{}", run.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, metrics) = http(&addr, "GET", "/metrics", None);
    let hwm_kib = proc_status(&run.pid(), "VmHWM:").unwrap();
    // The stream ends by itself (EOS): the process exits 0 and the viewers see the end.
    let mut run = run;
    let (code, err) = run.wait_exit(WAIT);
    assert_eq!(code, Some(0), "{err}");
    let frames: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);

    // The pipeline: the same windows, nothing more dropped.
    let (a, w) = (windows_of(&alone), windows_of(&watched));
    assert_eq!(a.len(), w.len(), "windows alone vs watched");
    assert_eq!(a, w, "window records (timing aside) differ");
    let dropped_watched = summary_line(&err, "scene");
    assert!(
        dropped_alone.ends_with("0 items dropped"),
        "{dropped_alone}"
    );
    assert!(
        dropped_watched.ends_with("0 items dropped"),
        "{dropped_watched}"
    );
    // The readers saw the stream; the stalled viewer lost frames, counted, alone.
    for f in &frames {
        assert!(
            *f >= 100,
            "a reading viewer got only {f} frames of 120: {frames:?}"
        );
    }
    let lost: f64 = metrics
        .lines()
        .find(|l| l.starts_with("sensorium_view_events_dropped_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(lost >= 10.0, "stalled viewer's drops: {lost}\n{metrics}");
    eprintln!(
        "viewers' frames {frames:?}, stalled viewer dropped {lost}, peak RSS {} MiB \
         watched vs {} MiB unwatched",
        hwm_kib / 1024,
        hwm_alone_kib / 1024
    );
    // Ten viewers cost their bounded queues (8 frames each at most) and one rendered
    // frame, not a backlog.
    assert!(
        hwm_kib < hwm_alone_kib + 32 * 1024,
        "peak RSS {} MiB watched vs {} MiB unwatched",
        hwm_kib / 1024,
        hwm_alone_kib / 1024
    );
}
