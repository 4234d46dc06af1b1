//! Which HTTP servers `sensorium run` starts: `POST /ask` on `[http] listen` (or the older
//! `[llm.http] listen`), `GET /metrics` on `[metrics] listen`; one server when both name the
//! same address. All of them share `[http]`'s token and limits.

use sensorium_engine::config::Config;
use sensorium_engine::config_load::parse_listen;
use sensorium_engine::metrics::PrometheusHandle;
use sensorium_models::llm::ServiceHandle;
use sensorium_server::{Routes, Server, ServerError};

/// The running servers; dropping them stops them (the answer service's handles with them).
pub struct Servers(#[allow(dead_code)] Vec<Server>);

/// `SENSORIUM_HTTP_TOKEN`, when set, replaces `[http] token` (keeps it out of files).
pub const TOKEN_ENV: &str = "SENSORIUM_HTTP_TOKEN";

pub fn start(
    config: &Config,
    llm_listen: Option<String>,
    ask: Option<ServiceHandle>,
    metrics: Option<PrometheusHandle>,
) -> Result<Servers, ServerError> {
    let http = &config.http;
    let ask_at = match (&http.listen, llm_listen) {
        (Some(l), _) => Some(("http.listen", l.clone())),
        (None, Some(l)) => Some(("llm.http.listen", l)),
        (None, None) => None,
    };
    let metrics_at = config.metrics.listen.clone().zip(metrics);
    let same =
        |a: &str, b: &str| matches!((parse_listen(a), parse_listen(b)), (Ok(x), Ok(y)) if x == y);
    let mut servers = Vec::new();
    let mut announce = |s: Server, what: &[&str]| {
        for w in what {
            tracing::info!(
                "{w} on http://{}{}",
                s.local_addr(),
                match *w {
                    "questions" => "/ask (server-sent events)",
                    _ => "/metrics",
                }
            );
        }
        servers.push(s);
    };
    match (ask_at, metrics_at) {
        (Some((field, at)), Some((m_at, handle))) if same(&at, &m_at) => {
            let routes = Routes {
                ask: ask.clone(),
                metrics: Some(handle),
            };
            let s = Server::start(field, &at, http, routes)?;
            announce(
                s,
                if ask.is_some() {
                    &["questions", "metrics"]
                } else {
                    &["metrics"]
                },
            );
        }
        (ask_at, metrics_at) => {
            if let Some((m_at, handle)) = metrics_at {
                let routes = Routes {
                    ask: None,
                    metrics: Some(handle),
                };
                announce(
                    Server::start("metrics.listen", &m_at, http, routes)?,
                    &["metrics"],
                );
            }
            match (ask_at, ask) {
                (Some((field, at)), Some(handle)) => {
                    let routes = Routes {
                        ask: Some(handle),
                        metrics: None,
                    };
                    announce(Server::start(field, &at, http, routes)?, &["questions"]);
                }
                (Some((field, _)), None) => tracing::warn!(
                    "{field}: no answer service (no [llm], no questions): POST /ask is not served"
                ),
                (None, _) => {}
            }
        }
    }
    Ok(Servers(servers))
}
