//! sensorium's one HTTP server: the live web view (`GET /`, a page per stream, their
//! server-sent events and MJPEG; [`view`]), `POST /ask` (live questions answered as
//! server-sent events), `GET /api/streams` (health as JSON) and `GET /metrics` (Prometheus
//! text), on axum over hyper, built for a process that runs for days next to untrusted
//! networks:
//!
//! - it listens on loopback unless a bearer token is configured (an address that is not
//!   loopback is refused at start without one); the token is compared in constant time, from
//!   `Authorization: Bearer TOKEN` or, for browsers (whose page loads and `EventSource`
//!   cannot set headers), an `access_token` query parameter (RFC 6750 §2.3);
//! - a client must send its request head within `header_timeout_ms` (hyper closes the
//!   connection otherwise) and its body within `body_timeout_ms` (408), so a slow client holds
//!   neither a thread nor a connection slot for long;
//! - bodies are limited to `max_body_bytes` (413, before anything larger is buffered);
//! - at most `max_connections` connections are served at once; one more is answered 503
//!   and closed;
//! - every error is JSON `{"error": "..."}` with the reason.
//!
//! The server runs on its own small tokio runtime (two worker threads), so nothing in the
//! engine's stage threads depends on async code.

mod ask;
pub mod run;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use sensorium_engine::config::load::parse_listen;
use sensorium_engine::config::HttpConfig;
use sensorium_engine::view::ViewHub;
use sensorium_models::llm::ServiceHandle;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, Semaphore};

/// What the server serves; an endpoint without its part answers 404.
#[derive(Clone, Default)]
pub struct Routes {
    /// `POST /ask`: live questions to the answer service.
    pub ask: Option<ServiceHandle>,
    /// `GET /metrics`: the Prometheus recorder's text.
    pub metrics: Option<PrometheusHandle>,
    /// The live web view and `GET /api/streams`.
    pub view: Option<ViewHub>,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// `listen` is not `host:port`.
    #[error("{field}: {message}")]
    Address { field: String, message: String },
    /// A non-loopback address without a token: anyone on the network could ask and scrape.
    #[error(
        "{field}: {addr} is not a loopback address; set [http] token (or SENSORIUM_HTTP_TOKEN) \
         so that clients must send `Authorization: Bearer TOKEN`, or listen on 127.0.0.1"
    )]
    Exposed { field: String, addr: SocketAddr },
    /// Binding the port or starting the runtime failed.
    #[error("{field}: cannot listen on {addr}: {message}")]
    Bind {
        field: String,
        addr: SocketAddr,
        message: String,
    },
}

/// A running server; [`Server::stop`] (or drop) shuts it down.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Shared by the handlers.
pub(crate) struct Ctx {
    pub(crate) routes: Routes,
    pub(crate) view: Option<view::View>,
    pub(crate) token: Option<String>,
    pub(crate) max_body: usize,
    pub(crate) body_timeout: Duration,
}

impl Server {
    /// Binds `listen` (port 0 picks a free one) and serves `routes` with `cfg`'s limits and
    /// token. `field` names the setting that asked for it, for errors (`http.listen`).
    pub fn start(
        field: &str,
        listen: &str,
        cfg: &HttpConfig,
        routes: Routes,
    ) -> Result<Self, ServerError> {
        let addr = parse_listen(listen).map_err(|message| ServerError::Address {
            field: field.into(),
            message,
        })?;
        let token = cfg.token.as_ref().map(|t| t.expose().to_owned());
        if !addr.ip().is_loopback() && token.is_none() {
            return Err(ServerError::Exposed {
                field: field.into(),
                addr,
            });
        }
        let bind_err = |e: std::io::Error| ServerError::Bind {
            field: field.into(),
            addr,
            message: e.to_string(),
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("http")
            .enable_all()
            .build()
            .map_err(bind_err)?;
        let ctx = Arc::new(Ctx {
            view: routes.view.clone().map(view::View::new),
            routes,
            token,
            max_body: cfg.max_body_bytes,
            body_timeout: Duration::from_millis(cfg.body_timeout_ms),
        });
        let limits = Limits {
            header_timeout: Duration::from_millis(cfg.header_timeout_ms),
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
        };
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || {
                rt.block_on(accept_loop(listener, router(ctx), limits, stopped));
                // Answers still streaming are cut off; their clients see the connection end.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(bind_err)?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
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
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Kernel send buffer per connection, bytes (Linux doubles it).
const SEND_BUFFER: usize = 128 * 1024;

struct Limits {
    header_timeout: Duration,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

async fn accept_loop(
    listener: std::net::TcpListener,
    app: Router,
    limits: Limits,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("http: cannot serve: {e}");
            return;
        }
    };
    loop {
        let (stream, _peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream, limits.max_connections));
            continue;
        };
        // A small kernel send buffer: what a stalled client has not read piles up in its
        // queue in the view hub (bounded, dropped for it alone), not in the kernel.
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        let service = TowerToHyperService::new(app.clone());
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                // One request per connection: an idle keep-alive connection would hold a
                // slot without a deadline.
                .keep_alive(false)
                // A client that half-closes after its request still gets the reply.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

/// Past `max_connections`: a 503 written (for at most a second) and the socket closed.
async fn refuse_busy(mut stream: tokio::net::TcpStream, max: usize) {
    let body = serde_json::json!({
        "error": format!("too many connections ({max} at once); try again")
    })
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn router(ctx: Arc<Ctx>) -> Router {
    let mut r = Router::new();
    if ctx.routes.ask.is_some() {
        r = r.route("/ask", post(ask::ask));
    }
    if ctx.routes.metrics.is_some() {
        r = r.route("/metrics", get(metrics));
    }
    if ctx.view.is_some() {
        r = r
            .route("/", get(view::index))
            .route("/assets/view.js", get(view::script))
            .route("/assets/view.css", get(view::style))
            .route("/streams/{name}", get(view::page))
            .route("/streams/{name}/mjpeg", get(view::mjpeg))
            .route("/api/streams", get(view::streams))
            .route("/api/streams/{name}", get(view::stream_health))
            .route("/api/streams/{name}/events", get(view::events));
    }
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(ctx.clone(), authorize))
        .with_state(ctx)
}

/// `{"error": message}` with `status`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// With a token configured, every request carries `Authorization: Bearer TOKEN`.
async fn authorize(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    // The view's script and style are the same static files for everyone (a page cannot
    // pass its token to the `<script>` and `<link>` it loads); everything else needs it.
    let public = req.uri().path().starts_with("/assets/");
    if let (Some(token), false) = (&ctx.token, public) {
        let query_token = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .map(str::as_bytes)
        });
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .or(query_token)
            .unwrap_or(b"");
        // Constant time in the token's bytes: a wrong guess tells nothing about how much of
        // it was right.
        if !bool::from(given.ct_eq(token.as_bytes())) {
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (send `Authorization: Bearer TOKEN`)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

fn endpoints(ctx: &Ctx) -> String {
    let mut e = Vec::new();
    if ctx.routes.ask.is_some() {
        e.push("POST /ask");
    }
    if ctx.routes.metrics.is_some() {
        e.push("GET /metrics");
    }
    if ctx.view.is_some() {
        e.push("GET / (the live view)");
        e.push("GET /api/streams");
    }
    e.join(", ")
}

async fn not_found(State(ctx): State<Arc<Ctx>>, req: Request) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        &format!(
            "no such endpoint `{}`; use {}",
            req.uri().path(),
            endpoints(&ctx)
        ),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    let allow = if req.uri().path() == "/ask" {
        "POST"
    } else {
        "GET"
    };
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {} not allowed; use {allow}", req.method()),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let Some(handle) = &ctx.routes.metrics else {
        return json_error(StatusCode::NOT_FOUND, "no metrics here");
    };
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
