//! The HTTP server for real, on 127.0.0.1 with raw TCP clients: `POST /ask` streams an
//! answer of the tiny Qwen2 fixture as server-sent events; bad requests get 4xx with the
//! reason; the hardening holds: non-loopback refused without a token, bearer token checked,
//! body limit (413), slow head (closed) and slow body (408), connection cap (503), and
//! `GET /metrics` behind the same token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Tensor};
use metrics_exporter_prometheus::PrometheusBuilder;
use sensorium_engine::config::{HttpConfig, Secret};
use sensorium_models::llm::{AnswerService, Answerer, ComputeDtype, LlmConfig, WindowMeta};
use sensorium_server::{Routes, Server, ServerError};

/// Client-side guard only: a read that outlives it means the server held the connection.
const GUARD: Duration = Duration::from_secs(30);

fn service() -> AnswerService {
    let mut cfg = LlmConfig::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/llm/qwen2"),
    );
    cfg.max_tokens = 6;
    cfg.max_context_tokens = 160;
    cfg.context_windows = 2;
    cfg.dtype = ComputeDtype::F32;
    let a = Answerer::from_config(&cfg, &Device::Cpu).unwrap();
    let svc = AnswerService::spawn(a, 8, Box::new(|_| {}));
    let av = Tensor::randn(0f32, 0.3, (4, 64), &Device::Cpu).unwrap();
    let meta = WindowMeta {
        stream: "cam".into(),
        index: 0,
        t_start: 0,
        t_end: 5_000_000_000,
        captured: Some(std::time::Instant::now()),
        queued: None,
    };
    svc.handle().push_window(meta, av).unwrap();
    svc
}

/// `POST /ask` on a free loopback port with `cfg`'s limits.
fn ask_server(svc: &AnswerService, cfg: &HttpConfig) -> Server {
    let routes = Routes {
        ask: Some(svc.handle()),
        metrics: None,
        view: None,
    };
    Server::start("http.listen", "127.0.0.1:0", cfg, routes).unwrap()
}

fn metrics_only() -> Routes {
    let recorder = PrometheusBuilder::new().build_recorder();
    Routes {
        ask: None,
        metrics: Some(recorder.handle()),
        view: None,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s
}

/// Everything the server sends until it closes; panics if the guard passes first.
fn read_all(s: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("server held the connection past the guard: {e}"),
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// (status, head, de-chunked body) of a raw response.
fn parse(raw: &str) -> (u16, String, String) {
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((len, tail)) = rest.split_once("\r\n") {
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

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = connect(addr);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    // One write; a server that answers from the head alone (503 at the connection cap) may
    // close before the body is sent: the answer is still there to read.
    let _ = s.write_all(req.as_bytes());
    parse(&read_all(&mut s))
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    v["error"].as_str().unwrap().to_owned()
}

#[test]
fn ask_streams_sse_and_rejects_bad_requests() {
    let svc = service();
    let server = ask_server(&svc, &HttpConfig::default());
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    let (status, head, body) = request(
        addr,
        "POST",
        "/ask",
        "",
        r#"{"question": "What is happening?", "stream": "cam"}"#,
    );
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("text/event-stream"), "{head}");
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    let tokens: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let last = events.last().unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(last.strip_prefix("event: answer\ndata: ").unwrap()).unwrap();
    let streamed: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(answer["answer"].as_str().unwrap(), streamed.trim());
    assert_eq!(answer["stream"], "cam");
    assert_eq!(answer["question"], "What is happening?");
    let n = answer["tokens"].as_u64().unwrap() as usize;
    assert!(n >= 1);
    assert_eq!(tokens.iter().filter(|t| !t["token"].is_null()).count(), n);

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
        ("GET", "/ask", "", 405, "method GET not allowed; use POST"),
        (
            "POST",
            "/nope",
            "{}",
            404,
            "no such endpoint `/nope`; use POST /ask",
        ),
        ("GET", "/metrics", "", 404, "no such endpoint `/metrics`"),
    ];
    for (method, path, body, want, reason) in cases {
        let (status, _, reply) = request(addr, method, path, "", body);
        assert_eq!(status, want, "{method} {path} {body}: {reply}");
        assert!(error_of(&reply).contains(reason), "{reply}");
    }
    server.stop();
    svc.join();
}

#[test]
fn a_public_address_needs_a_token() {
    let err = Server::start(
        "http.listen",
        "0.0.0.0:0",
        &HttpConfig::default(),
        metrics_only(),
    )
    .err()
    .expect("refused");
    assert!(matches!(err, ServerError::Exposed { .. }));
    assert_eq!(
        err.to_string(),
        "http.listen: 0.0.0.0:0 is not a loopback address; set [http] token (or \
         SENSORIUM_HTTP_TOKEN) so that clients must send `Authorization: Bearer TOKEN`, or \
         listen on 127.0.0.1"
    );
    let cfg = HttpConfig {
        token: Some(Secret::new("s3cret-token")),
        ..HttpConfig::default()
    };
    let server = Server::start("http.listen", "0.0.0.0:0", &cfg, metrics_only()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", server.local_addr().port())
        .parse()
        .unwrap();
    for (headers, want) in [
        ("", 401),
        ("Authorization: Bearer s3cret-toke\r\n", 401),
        ("Authorization: Bearer s3cret-token-and-more\r\n", 401),
        ("Authorization: Basic s3cret-token\r\n", 401),
        ("Authorization: Bearer s3cret-token\r\n", 200),
    ] {
        let (status, head, body) = request(addr, "GET", "/metrics", headers, "");
        assert_eq!(status, want, "{headers:?}: {head}\n{body}");
        if want == 401 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{head}"
            );
            assert!(error_of(&body).contains("bearer token"), "{body}");
            assert!(!body.contains("s3cret"), "{body}");
        } else {
            assert!(head.contains("text/plain"), "{head}");
        }
    }
}

#[test]
fn bodies_past_the_limit_get_413_and_a_huge_claim_is_not_believed() {
    let svc = service();
    let cfg = HttpConfig {
        max_body_bytes: 1024,
        ..HttpConfig::default()
    };
    let server = ask_server(&svc, &cfg);
    let addr = server.local_addr();
    let big = format!(r#"{{"question": "{}"}}"#, "x".repeat(2000));
    let (status, _, body) = request(addr, "POST", "/ask", "", &big);
    assert_eq!(status, 413, "{body}");
    assert_eq!(error_of(&body), "body larger than 1024 bytes");
    // A head that claims 4 GiB: answered at once, nothing of that size is buffered.
    let mut s = connect(addr);
    write!(
        s,
        "POST /ask HTTP/1.1\r\nHost: x\r\nContent-Length: 4294967296\r\n\r\n{{\"question\""
    )
    .unwrap();
    let (status, _, body) = parse(&read_all(&mut s));
    assert_eq!(status, 413, "{body}");
    server.stop();
    svc.join();
}

#[test]
fn slow_clients_are_cut_off_and_the_connection_cap_answers_503() {
    let svc = service();
    let cfg = HttpConfig {
        header_timeout_ms: 300,
        body_timeout_ms: 300,
        max_connections: 2,
        ..HttpConfig::default()
    };
    let server = ask_server(&svc, &cfg);
    let addr = server.local_addr();

    // A head that never ends: the server closes the connection (hyper answers 408 or just
    // closes); the guard would fail the read if it held on.
    let mut slow_head = connect(addr);
    write!(slow_head, "POST /ask HTTP/1.1\r\nHost: x\r\n").unwrap();
    let reply = read_all(&mut slow_head);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply:?}"
    );

    // A body that never ends: 408 with the reason.
    let mut slow_body = connect(addr);
    write!(
        slow_body,
        "POST /ask HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"question\": "
    )
    .unwrap();
    let (status, _, body) = parse(&read_all(&mut slow_body));
    assert_eq!(status, 408, "{body}");
    assert_eq!(error_of(&body), "request body not received within 300 ms");

    // Two connections held open (heads unfinished) fill the cap: a third gets 503 at once.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(addr);
            write!(s, "POST /ask HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // The server accepts in order: make sure both were taken before the third arrives.
    std::thread::sleep(Duration::from_millis(50));
    let (status, head, body) = request(addr, "POST", "/ask", "", r#"{"question": "Hi?"}"#);
    assert_eq!(status, 503, "{head}\n{body}");
    assert_eq!(
        error_of(&body),
        "too many connections (2 at once); try again"
    );
    // Once the held ones are cut off (header timeout), requests are served again.
    for s in &mut held {
        let _ = read_all(s);
    }
    let (status, _, body) = request(
        addr,
        "POST",
        "/ask",
        "",
        r#"{"question": "Hi?", "stream": "cam"}"#,
    );
    assert_eq!(status, 200, "{body}");
    server.stop();
    svc.join();
}

fn view_server(cfg: &HttpConfig) -> (Server, sensorium_engine::ViewHub) {
    let hub = sensorium_engine::ViewHub::new();
    hub.set_streams(vec!["cam".into()]);
    let routes = Routes {
        view: Some(hub.clone()),
        ..Routes::default()
    };
    (
        Server::start("http.listen", "127.0.0.1:0", cfg, routes).unwrap(),
        hub,
    )
}

#[test]
fn the_view_serves_pages_health_and_names_unknown_streams() {
    let (server, _hub) = view_server(&HttpConfig::default());
    let addr = server.local_addr();
    let (status, head, body) = request(addr, "GET", "/", "", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("text/html") && body.contains("/assets/view.js"),
        "{body}"
    );
    let (status, head, body) = request(addr, "GET", "/assets/view.js", "", "");
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript") && body.contains("EventSource"));
    let (status, _, body) = request(addr, "GET", "/streams/cam", "", "");
    assert_eq!(status, 200);
    assert!(body.contains("id=\"spectrogram\""), "{body}");
    // Configured but not started: listed as connecting.
    let (status, _, body) = request(addr, "GET", "/api/streams", "", "");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["streams"][0]["stream"], "cam", "{body}");
    assert_eq!(v["streams"][0]["state"], "connecting", "{body}");
    for path in [
        "/streams/nope",
        "/api/streams/nope",
        "/api/streams/nope/events",
        "/streams/nope/mjpeg",
    ] {
        let (status, _, body) = request(addr, "GET", path, "", "");
        assert_eq!(status, 404, "{path}");
        assert_eq!(
            error_of(&body),
            "no stream named 'nope' (GET /api/streams lists them)"
        );
    }
    // No answer service here: the view says what it serves.
    let (status, _, body) = request(addr, "POST", "/ask", "", "{}");
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("GET / (the live view)"), "{body}");
}

#[test]
fn a_browser_may_send_the_token_as_a_query_parameter() {
    let cfg = HttpConfig {
        token: Some(Secret::new("view-token")),
        ..HttpConfig::default()
    };
    let (server, _hub) = view_server(&cfg);
    let addr = server.local_addr();
    for (path, want) in [
        ("/api/streams", 401),
        ("/api/streams?access_token=view-toke", 401),
        ("/api/streams?access_token=view-token-x", 401),
        ("/api/streams?x=1&access_token=view-token", 200),
        ("/streams/cam?access_token=view-token", 200),
        ("/streams/cam", 401),
        // The page's script and style are public static files.
        ("/assets/view.js", 200),
        ("/assets/view.css", 200),
    ] {
        let (status, _, body) = request(addr, "GET", path, "", "");
        assert_eq!(status, want, "{path}: {body}");
        assert!(!body.contains("view-token"), "{body}");
    }
}
