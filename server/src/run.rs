//! Which servers a run starts: the live view, `GET /api/streams` and `POST /ask` on
//! `[http] listen` (or the older `[llm.http] listen`), `GET /metrics` on `[metrics] listen`;
//! one server when both name the same address. All of them share `[http]`'s token and
//! limits.

use sensorium_engine::config::load::parse_listen;
use sensorium_engine::config::Config;
use sensorium_engine::metrics::PrometheusHandle;
use sensorium_engine::view::ViewHub;
use sensorium_models::llm::ServiceHandle;

use crate::{Routes, Server, ServerError};

/// The running servers; dropping them stops them (the answer service's handles with them).
pub struct Servers(#[allow(dead_code)] Vec<Server>);

/// `SENSORIUM_HTTP_TOKEN`, when set, replaces `[http] token` (keeps it out of files).
pub const TOKEN_ENV: &str = "SENSORIUM_HTTP_TOKEN";

/// Where the view and questions are served, if anywhere: `[http] listen`, else the older
/// `[llm.http] listen`.
pub fn http_listen(config: &Config, llm_listen: Option<String>) -> Option<(&'static str, String)> {
    match (&config.http.listen, llm_listen) {
        (Some(l), _) => Some(("http.listen", l.clone())),
        (None, Some(l)) => Some(("llm.http.listen", l)),
        (None, None) => None,
    }
}

/// Starts the servers `config` asks for (none: an empty [`Servers`]).
pub fn start(
    config: &Config,
    llm_listen: Option<String>,
    ask: Option<ServiceHandle>,
    metrics: Option<PrometheusHandle>,
    view: Option<ViewHub>,
) -> Result<Servers, ServerError> {
    let http = &config.http;
    let main_at = http_listen(config, llm_listen);
    let metrics_at = config.metrics.listen.clone().zip(metrics);
    let same =
        |a: &str, b: &str| matches!((parse_listen(a), parse_listen(b)), (Ok(x), Ok(y)) if x == y);
    let mut servers = Vec::new();
    let mut metrics_routes = None;
    let mut main_routes = main_at.map(|(field, at)| {
        (
            field,
            at,
            Routes {
                ask: ask.clone(),
                metrics: None,
                view: view.clone(),
            },
        )
    });
    if let Some((m_at, handle)) = metrics_at {
        match &mut main_routes {
            Some((_, at, routes)) if same(at, &m_at) => routes.metrics = Some(handle),
            _ => metrics_routes = Some((m_at, handle)),
        }
    }
    if let Some((m_at, handle)) = metrics_routes {
        let routes = Routes {
            metrics: Some(handle),
            ..Routes::default()
        };
        let s = Server::start("metrics.listen", &m_at, http, routes)?;
        tracing::info!("metrics on http://{}/metrics", s.local_addr());
        servers.push(s);
    }
    if let Some((field, at, routes)) = main_routes {
        if routes.ask.is_none() && field == "llm.http.listen" {
            tracing::warn!(
                "{field}: no answer service (no [llm], no questions): POST /ask is not served"
            );
        }
        let (has_ask, has_metrics, has_view) = (
            routes.ask.is_some(),
            routes.metrics.is_some(),
            routes.view.is_some(),
        );
        let s = Server::start(field, &at, http, routes)?;
        let addr = s.local_addr();
        if has_view {
            tracing::info!("live view on http://{addr}/");
        }
        if has_ask {
            tracing::info!("questions on http://{addr}/ask (server-sent events)");
        }
        if has_metrics {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        servers.push(s);
    }
    Ok(Servers(servers))
}
