//! The answer service end to end on the tiny Qwen2 fixture: scheduled questions per window,
//! realtime cancellation of stale answers, live questions from lines of text (stdin) and over
//! real HTTP on 127.0.0.1 as Server-Sent Events, and 4xx replies that give the reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use sensorium_models::llm::{
    spawn_line_questions, AnswerService, Answerer, ComputeDtype, HttpEndpoint, LiveEvent,
    LlmConfig, ScheduledQuestion, ServiceOutput, WindowMeta,
};

fn config() -> LlmConfig {
    let mut cfg =
        LlmConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/qwen2"));
    cfg.max_tokens = 6;
    cfg.max_context_tokens = 160;
    cfg.context_windows = 2;
    cfg.dtype = ComputeDtype::F32;
    cfg
}

fn meta(stream: &str, index: u64) -> WindowMeta {
    WindowMeta {
        stream: stream.into(),
        index,
        t_start: index * 5_000_000_000,
        t_end: (index + 1) * 5_000_000_000,
        captured: Some(std::time::Instant::now()),
    }
}

fn av(seed: u64) -> Tensor {
    Tensor::randn(0f32, 0.3, (4, 64), &Device::Cpu)
        .unwrap()
        .affine(1.0, seed as f64 * 0.01)
        .unwrap()
}

type Outputs = Arc<Mutex<Vec<ServiceOutput>>>;

fn spawn(cfg: &LlmConfig) -> (AnswerService, Outputs) {
    let a = Answerer::from_config(cfg, &Device::Cpu).unwrap();
    let outs: Outputs = Arc::default();
    let o = outs.clone();
    let svc = AnswerService::spawn(a, 8, Box::new(move |x| o.lock().unwrap().push(x)));
    (svc, outs)
}

#[test]
fn scheduled_questions_answer_every_window_with_streamed_tokens() {
    let mut cfg = config();
    cfg.cancel_stale = false;
    cfg.questions = vec![
        ScheduledQuestion {
            text: "What is happening?".into(),
            every_windows: None,
            every_s: None,
            streams: vec![],
        },
        ScheduledQuestion {
            text: "Any sound?".into(),
            every_windows: Some(2),
            every_s: None,
            streams: vec![],
        },
    ];
    let (svc, outs) = spawn(&cfg);
    let h = svc.handle();
    for i in 0..4 {
        h.push_window(meta("cam", i), av(i)).unwrap();
    }
    drop(h);
    svc.join();
    let outs = outs.lock().unwrap();
    let records: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            ServiceOutput::Answer(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    // 4 windows x "What is happening?" + windows 0 and 2 x "Any sound?"
    assert_eq!(records.len(), 6);
    let windows: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r.window, r.question.as_str()))
        .collect();
    assert_eq!(
        windows,
        vec![
            (0, "What is happening?"),
            (0, "Any sound?"),
            (1, "What is happening?"),
            (2, "What is happening?"),
            (2, "Any sound?"),
            (3, "What is happening?")
        ]
    );
    for r in &records {
        let streamed: String = outs
            .iter()
            .filter_map(|o| match o {
                ServiceOutput::Token {
                    window,
                    question,
                    event,
                    ..
                } if *window == r.window && *question == r.question => Some(event.text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(streamed.trim(), r.answer);
        assert!(r.capture_to_first_token_ms.is_some());
        assert!(r.first_token_unix_ms <= r.last_token_unix_ms);
        let line = serde_json::to_value(r).unwrap();
        for k in [
            "stream",
            "window",
            "question",
            "answer",
            "t_start_ns",
            "t_end_ns",
            "first_token_unix_ms",
            "last_token_unix_ms",
            "capture_to_first_token_ms",
        ] {
            assert!(line.get(k).is_some(), "{k} missing from {line}");
        }
    }
    assert_eq!(records[5].t_end_ns, 20_000_000_000);
    assert_eq!(records[5].t_start_ns, 10_000_000_000); // 2 context windows: 2 and 3
}

#[test]
fn newer_windows_cancel_or_skip_stale_scheduled_answers() {
    let mut cfg = config();
    cfg.max_tokens = 40;
    cfg.max_context_tokens = 200;
    cfg.questions = vec![ScheduledQuestion {
        text: "What is happening?".into(),
        every_windows: None,
        every_s: None,
        streams: vec![],
    }];
    let (svc, outs) = spawn(&cfg);
    let h = svc.handle();
    for i in 0..6 {
        h.push_window(meta("cam", i), av(i)).unwrap();
    }
    drop(h);
    let stale = svc.join();
    let outs = outs.lock().unwrap();
    let finished: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            ServiceOutput::Answer(r) if r.finish != "cancelled" => Some(r.window),
            _ => None,
        })
        .collect();
    // Every due question is either answered in full or counted stale; the newest window's
    // answer is never stale.
    assert_eq!(finished.len() as u64 + stale, 6);
    eprintln!("stale answers: {stale} of 6");
    assert_eq!(finished.last(), Some(&5));
    for o in outs.iter() {
        if let ServiceOutput::Answer(r) = o {
            if r.finish == "cancelled" {
                assert!(r.window < 5);
            }
        }
    }
}

#[test]
fn line_questions_stream_answers() {
    let (svc, _outs) = spawn(&config());
    let h = svc.handle();
    h.push_window(meta("cam", 0), av(0)).unwrap();
    h.push_window(meta("door", 0), av(1)).unwrap();
    let events: Arc<Mutex<Vec<(String, LiveEvent)>>> = Arc::default();
    let e = events.clone();
    let input =
        std::io::Cursor::new("@cam What is on screen?\nWhat now?\n@door\n@nowhere Hello?\n");
    let t = spawn_line_questions(input, h.clone(), move |line, ev| {
        e.lock().unwrap().push((line.to_owned(), ev.clone()))
    })
    .unwrap();
    t.join().unwrap();
    drop(h);
    svc.join();
    let events = events.lock().unwrap();
    let done: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match e {
            LiveEvent::Done(r) => Some((r.stream.clone(), r.question.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        vec![
            ("cam".to_owned(), "What is on screen?".to_owned()),
            // A bare line goes to the stream with the newest window.
            ("door".to_owned(), "What now?".to_owned()),
        ]
    );
    let errors: Vec<_> = events
        .iter()
        .filter_map(|(l, e)| match e {
            LiveEvent::Error { status, message } => Some((l.clone(), *status, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 2);
    assert_eq!((errors[0].0.as_str(), errors[0].1), ("@door", 400));
    assert_eq!(errors[1].1, 404);
    assert!(errors[1].2.contains("`nowhere`"), "{}", errors[1].2);
}

/// Sends a raw HTTP/1.1 request and returns (status, headers, de-chunked body).
fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (len, tail) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(len.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_owned()
    };
    (status, head.to_owned(), body)
}

#[test]
fn http_endpoint_streams_sse_and_rejects_bad_requests() {
    let (svc, _outs) = spawn(&config());
    let h = svc.handle();
    h.push_window(meta("cam", 0), av(0)).unwrap();
    let ep = HttpEndpoint::start("127.0.0.1:0", h.clone()).unwrap();
    let addr = ep.local_addr();
    assert!(addr.ip().is_loopback());

    let (status, head, body) = http(
        addr,
        "POST",
        "/ask",
        r#"{"question": "What is happening?", "stream": "cam"}"#,
    );
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("text/event-stream"));
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    let tokens: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    let final_json: serde_json::Value =
        serde_json::from_str(last.strip_prefix("event: answer\ndata: ").unwrap()).unwrap();
    let streamed: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(final_json["answer"].as_str().unwrap(), streamed.trim());
    assert_eq!(final_json["stream"], "cam");
    assert_eq!(final_json["question"], "What is happening?");
    let n_tokens = final_json["tokens"].as_u64().unwrap() as usize;
    assert_eq!(
        tokens.iter().filter(|t| !t["token"].is_null()).count(),
        n_tokens
    );
    assert!(n_tokens >= 1);

    let cases = [
        ("POST", "/ask", "{not json", 400, "invalid JSON body"),
        (
            "POST",
            "/ask",
            r#"{"stream": "cam"}"#,
            400,
            "missing field `question`",
        ),
        (
            "POST",
            "/ask",
            r#"{"question": "  "}"#,
            400,
            "`question` is empty",
        ),
        (
            "POST",
            "/ask",
            r#"{"question": "Hi?", "colour": 1}"#,
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/ask",
            r#"{"question": "Hi?", "stream": "attic"}"#,
            404,
            "no context for stream `attic`",
        ),
        ("GET", "/ask", "", 405, "method GET not allowed"),
        ("POST", "/nope", "{}", 404, "no such endpoint `/nope`"),
    ];
    for (method, path, body, want, reason) in cases {
        let (status, _, reply) = http(addr, method, path, body);
        assert_eq!(status, want, "{method} {path} {body}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(v["error"].as_str().unwrap().contains(reason), "{reply}");
    }
    ep.stop();
    drop(h);
    svc.join();
}
