//! The live-question HTTP endpoint: `POST /ask` with `{"question": "...", "stream": "..."}`
//! answers as Server-Sent Events, one `data: {...}` per token and a final `event: answer`
//! carrying the whole answer record. Listens on 127.0.0.1 by default; bad requests get a 4xx
//! with the reason as JSON `{"error": "..."}`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Deserialize;
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use super::error::LlmError;
use super::service::{LiveEvent, ServiceHandle};

/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    question: String,
    #[serde(default)]
    stream: Option<String>,
}

/// A running endpoint; [`HttpEndpoint::stop`] (or drop) shuts it down.
pub struct HttpEndpoint {
    server: Arc<Server>,
    addr: SocketAddr,
    join: Option<JoinHandle<()>>,
}

impl HttpEndpoint {
    /// Binds `listen` (e.g. `127.0.0.1:8088`; port 0 picks a free one) and serves in a thread,
    /// one more thread per request so a long answer does not block other clients.
    pub fn start(listen: &str, handle: ServiceHandle) -> Result<Self, LlmError> {
        let err = |message: String| LlmError::Http {
            addr: listen.to_owned(),
            message,
        };
        let server = Server::http(listen).map_err(|e| err(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| err("not an IP listener".into()))?;
        let server = Arc::new(server);
        let s = server.clone();
        let join = std::thread::Builder::new()
            .name("llm-http".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    let h = handle.clone();
                    let _ = std::thread::Builder::new()
                        .name("llm-http-req".into())
                        .spawn(move || serve(req, h));
                }
            })
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            server,
            addr,
            join: Some(join),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.server.unblock();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for HttpEndpoint {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn json_error(status: u16, message: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let body = serde_json::json!({ "error": message }).to_string();
    Response::from_string(body)
        .with_status_code(StatusCode(status))
        .with_header(content_type("application/json"))
}

fn content_type(v: &str) -> Header {
    // Static ASCII names and values: cannot fail.
    Header::from_bytes("Content-Type", v).unwrap_or_else(|_| unreachable!())
}

fn serve(mut req: Request, handle: ServiceHandle) {
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    if path != "/ask" {
        let _ = req.respond(json_error(
            404,
            &format!("no such endpoint `{path}`; use POST /ask"),
        ));
        return;
    }
    if *req.method() != Method::Post {
        let r = json_error(
            405,
            &format!("method {} not allowed; use POST", req.method()),
        )
        .with_header(Header::from_bytes("Allow", "POST").unwrap_or_else(|_| unreachable!()));
        let _ = req.respond(r);
        return;
    }
    if req.body_length().is_some_and(|n| n > MAX_BODY) {
        let _ = req.respond(json_error(
            413,
            &format!("body larger than {MAX_BODY} bytes"),
        ));
        return;
    }
    let mut body = Vec::new();
    let read = req
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    if read.is_err() {
        let _ = req.respond(json_error(400, "could not read the request body"));
        return;
    }
    if body.len() > MAX_BODY {
        let _ = req.respond(json_error(
            413,
            &format!("body larger than {MAX_BODY} bytes"),
        ));
        return;
    }
    let ask: AskBody = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            let _ = req.respond(json_error(
                400,
                &format!("invalid JSON body (expected {{\"question\": \"...\", \"stream\": \"...\"}}): {e}"),
            ));
            return;
        }
    };
    if ask.question.trim().is_empty() {
        let _ = req.respond(json_error(400, "`question` is empty"));
        return;
    }
    if ask.stream.as_deref().is_some_and(|s| s.trim().is_empty()) {
        let _ = req.respond(json_error(
            400,
            "`stream` is empty; omit it for the newest stream",
        ));
        return;
    }
    let rx = match handle.ask(ask.stream, ask.question) {
        Ok(rx) => rx,
        Err(e) => {
            let _ = req.respond(json_error(503, &e.to_string()));
            return;
        }
    };
    // The first event decides the status: an error before any token is a plain error reply.
    let first = match rx.recv() {
        Ok(LiveEvent::Error { status, message }) => {
            let _ = req.respond(json_error(status, &message));
            return;
        }
        Ok(ev) => ev,
        Err(_) => {
            let _ = req.respond(json_error(503, "answer service stopped"));
            return;
        }
    };
    let chunked = !matches!(req.http_version(), tiny_http::HTTPVersion(1, 0));
    let mut w = req.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n{}\r\n",
        if chunked {
            "Transfer-Encoding: chunked\r\n"
        } else {
            "Connection: close\r\n"
        }
    );
    if w.write_all(head.as_bytes())
        .and_then(|_| w.flush())
        .is_err()
    {
        return;
    }
    let send = |w: &mut Box<dyn Write + Send>, data: &str| -> std::io::Result<()> {
        if chunked {
            write!(w, "{:x}\r\n{data}\r\n", data.len())?;
        } else {
            w.write_all(data.as_bytes())?;
        }
        w.flush()
    };
    for ev in std::iter::once(first).chain(rx.iter()) {
        let (text, last) = match &ev {
            LiveEvent::Token(t) => (format!("data: {}\n\n", json(t)), false),
            LiveEvent::Done(rec) => (format!("event: answer\ndata: {}\n\n", json(rec)), true),
            LiveEvent::Error { message, .. } => (
                format!(
                    "event: error\ndata: {}\n\n",
                    serde_json::json!({ "error": message })
                ),
                true,
            ),
        };
        // A client that hung up drops the receiver: the service then cancels the answer.
        if send(&mut w, &text).is_err() {
            return;
        }
        if last {
            break;
        }
    }
    if chunked {
        let _ = w.write_all(b"0\r\n\r\n").and_then(|_| w.flush());
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
