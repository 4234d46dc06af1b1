//! Hostile HTTP, fuzzed with a fixed budget against one running server: random methods,
//! paths, header sets (oversized, invalid bytes, conflicting lengths, bogus chunked
//! encodings) and bodies. Every request gets a well-formed HTTP reply or a closed
//! connection, never a hang (the client's guard) or a crash, and the server still answers a
//! normal request afterwards.
//!
//! Budget: `SENSORIUM_FUZZ_CASES` cases (default 128; `make fuzz` runs more).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::Device;
use metrics_exporter_prometheus::PrometheusBuilder;
use proptest::prelude::*;
use sensorium_engine::config::HttpConfig;
use sensorium_models::llm::{AnswerService, Answerer, ComputeDtype, LlmConfig};
use sensorium_server::{Routes, Server};

fn cases() -> u32 {
    std::env::var("SENSORIUM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

struct Running {
    _svc: AnswerService,
    server: Server,
}

fn server() -> SocketAddr {
    static S: OnceLock<Running> = OnceLock::new();
    let r = S.get_or_init(|| {
        let mut cfg = LlmConfig::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/llm/qwen2"),
        );
        cfg.max_tokens = 2;
        cfg.max_context_tokens = 160;
        cfg.dtype = ComputeDtype::F32;
        let svc = AnswerService::spawn(
            Answerer::from_config(&cfg, &Device::Cpu).unwrap(),
            8,
            Box::new(|_| {}),
        );
        let http = HttpConfig {
            max_body_bytes: 4096,
            header_timeout_ms: 500,
            body_timeout_ms: 500,
            max_connections: 256,
            ..HttpConfig::default()
        };
        let routes = Routes {
            ask: Some(svc.handle()),
            metrics: Some(PrometheusBuilder::new().build_recorder().handle()),
            view: Some({
                let hub = sensorium_engine::ViewHub::new();
                hub.set_streams(vec!["cam".into()]);
                hub
            }),
        };
        let server = Server::start("http.listen", "127.0.0.1:0", &http, routes).unwrap();
        Running { _svc: svc, server }
    });
    r.server.local_addr()
}

/// Sends raw bytes, then reads until the server closes (or the guard passes: a failure).
fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("server held a hostile connection past the guard: {e}"),
    }
    out
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("DELETE".to_string()),
        Just("OPTIONS".to_string()),
        "[A-Z]{1,10}",
        "[ -~]{0,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/ask".to_string()),
        Just("/metrics".to_string()),
        Just("/ask?x=1&&=".to_string()),
        Just("/../../etc/passwd".to_string()),
        Just(format!("/{}", "a".repeat(9000))),
        "/[ -~]{0,40}",
        "[^\r\n]{0,20}",
    ]
}

fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Content-Length: 5".to_string()),
        Just("Content-Length: -1".to_string()),
        Just("Content-Length: 18446744073709551616".to_string()),
        Just("Content-Length: 3\r\nContent-Length: 7".to_string()),
        Just("Transfer-Encoding: chunked".to_string()),
        Just("Transfer-Encoding: gzip, chunked".to_string()),
        Just("Authorization: Bearer x".to_string()),
        Just("Expect: 100-continue".to_string()),
        Just("Connection: keep-alive".to_string()),
        Just(format!("X-Big: {}", "b".repeat(70_000))),
        "[A-Za-z-]{1,20}: [ -~]{0,40}",
        "[^\r\n]{0,30}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#"{"question": "What is happening?", "stream": "cam"}"#.to_vec()),
        Just(br#"{"question": "Hi?"}"#.to_vec()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"ffffffffffffffff\r\nx\r\n".to_vec()),
        Just(b"zz\r\n".to_vec()),
        Just(vec![b'{'; 5000]),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (method(), path(), prop::collection::vec(header(), 0..6), body(), prop::bool::ANY).prop_map(
            |(m, p, hs, b, v10)| {
                let mut r = format!("{m} {p} HTTP/1.{}\r\nHost: x\r\n", if v10 { 0 } else { 1 });
                for h in hs {
                    r.push_str(&h);
                    r.push_str("\r\n");
                }
                r.push_str("\r\n");
                let mut r = r.into_bytes();
                r.extend(b);
                r
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_get_a_reply_or_a_close(raw in request()) {
        let reply = exchange(server(), &raw);
        if !reply.is_empty() {
            // Interim replies (`100 Continue` to `Expect: 100-continue`) come first.
            let full = String::from_utf8_lossy(&reply).into_owned();
            let mut text = full.as_str();
            while text.starts_with("HTTP/1.1 1") {
                text = text.split_once("\r\n\r\n").map_or("", |(_, rest)| rest);
            }
            if text.is_empty() {
                return Ok(());
            }
            prop_assert!(text.starts_with("HTTP/1."), "not an HTTP reply: {text:?}");
            let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            prop_assert!((200..600).contains(&status), "{text:?}");
            // The server's own faults would be 500s: hostile input is the client's fault.
            prop_assert!(status != 500, "{text:?}");
        }
    }
}

#[test]
fn the_server_still_answers_after_the_fuzzing() {
    let addr = server();
    for _ in 0..3 {
        let _ = exchange(addr, b"\x00\xffGARBAGE\r\n\r\n");
    }
    let reply = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
