//! `POST /ask` with `{"question": "...", "stream": "..."}`: the answer streams as server-sent
//! events, one `data: {...}` per token and a final `event: answer` carrying the whole answer
//! record (`event: error` if the model fails midway). An error before the first token is a
//! plain JSON error with the status that fits (400 bad body, 404 unknown stream, 503 no
//! service). A client that hangs up cancels its answer.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sensorium_models::llm::LiveEvent;
use serde::Deserialize;

use crate::{json_error, Ctx};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    question: String,
    #[serde(default)]
    stream: Option<String>,
}

pub(crate) async fn ask(State(ctx): State<Arc<Ctx>>, body: Body) -> Response {
    let Some(handle) = ctx.routes.ask.clone() else {
        return json_error(StatusCode::NOT_FOUND, "no answer service here");
    };
    let body = match read_body(&ctx, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ask: AskBody = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!(
                "invalid JSON body (expected {{\"question\": \"...\", \"stream\": \"...\"}}): {e}"
            ),
            )
        }
    };
    if ask.question.trim().is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "`question` is empty");
    }
    if ask.stream.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return json_error(
            StatusCode::BAD_REQUEST,
            "`stream` is empty; omit it for the newest stream",
        );
    }
    let rx = match handle.ask(ask.stream, ask.question) {
        Ok(rx) => rx,
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    // The service answers on a blocking channel: one blocking task forwards its events into
    // an async one, and stops (dropping the service's receiver: the answer is cancelled)
    // when the client has gone.
    let (tx, mut events) = tokio::sync::mpsc::channel::<LiveEvent>(64);
    // (The finished answer's line reaches the run's output, and every viewer of the stream,
    // from the answer service itself.)
    tokio::task::spawn_blocking(move || {
        for ev in rx.iter() {
            let last = !matches!(ev, LiveEvent::Token(_));
            if tx.blocking_send(ev).is_err() || last {
                break;
            }
        }
    });
    // The first event decides the status: an error before any token is a plain error reply.
    let first = match events.recv().await {
        Some(LiveEvent::Error { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_error(status, &message);
        }
        Some(ev) => ev,
        None => return json_error(StatusCode::SERVICE_UNAVAILABLE, "answer service stopped"),
    };
    let sse = stream::unfold(
        (Some(first), events, false),
        |(pending, mut events, done)| async move {
            if done {
                return None;
            }
            let ev = match pending {
                Some(ev) => ev,
                None => events.recv().await?,
            };
            let (event, last) = sse_event(&ev);
            Some((Ok::<_, Infallible>(event), (None, events, last)))
        },
    );
    Sse::new(sse).into_response()
}

fn sse_event(ev: &LiveEvent) -> (Event, bool) {
    match ev {
        LiveEvent::Token(t) => (Event::default().data(json(t)), false),
        LiveEvent::Done(rec) => (Event::default().event("answer").data(json(rec)), true),
        LiveEvent::Error { message, .. } => (
            Event::default()
                .event("error")
                .data(serde_json::json!({ "error": message }).to_string()),
            true,
        ),
    }
}

/// The whole body within the size and time limits, or the error reply.
async fn read_body(ctx: &Ctx, body: Body) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {} bytes", ctx.max_body),
        )
    };
    // A declared length past the limit is refused before reading anything.
    if axum::body::HttpBody::size_hint(&body).lower() > ctx.max_body as u64 {
        return Err(too_large());
    }
    let collect = Limited::new(body, ctx.max_body).collect();
    match tokio::time::timeout(ctx.body_timeout, collect).await {
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "request body not received within {} ms",
                ctx.body_timeout.as_millis()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "could not read the request body",
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
