//! Connecting to NATS: credentials from the URL, a creds file or the environment, never
//! printed; clear errors for an unreachable server and refused credentials; reconnects with
//! backoff logged once per change of state.

use std::path::PathBuf;
use std::time::Duration;

use sensorium_engine::config::load::strip_userinfo;

use crate::ClusterError;

/// Environment variables holding credentials (so they stay off command lines).
pub const TOKEN_ENV: &str = "SENSORIUM_NATS_TOKEN";
pub const USER_ENV: &str = "SENSORIUM_NATS_USER";
pub const PASSWORD_ENV: &str = "SENSORIUM_NATS_PASSWORD";

/// How to reach the cluster's NATS server.
#[derive(Clone)]
pub struct NatsOptions {
    /// `nats://[user:password@]host:port` (several, comma-separated, for a NATS cluster).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed).
    pub creds: Option<PathBuf>,
    pub token: Option<String>,
    pub user: Option<(String, String)>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("url", &self.display_url())
            .field("creds", &self.creds)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("user", &self.user.as_ref().map(|(u, _)| (u, "***")))
            .finish()
    }
}

impl NatsOptions {
    /// `url` with credentials from the environment ([`TOKEN_ENV`], [`USER_ENV`] +
    /// [`PASSWORD_ENV`]) and an optional creds file.
    pub fn from_env(url: &str, creds: Option<PathBuf>) -> Self {
        let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        let user = match (std::env::var(USER_ENV), std::env::var(PASSWORD_ENV)) {
            (Ok(u), Ok(p)) if !u.is_empty() => Some((u, p)),
            _ => None,
        };
        Self {
            url: url.to_owned(),
            creds,
            token,
            user,
            connect_timeout: Duration::from_secs(3),
        }
    }

    /// The URL as logs and errors show it: without user, password or token.
    pub fn display_url(&self) -> String {
        self.url
            .split(',')
            .map(|u| strip_userinfo(u.trim()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One connection attempt. `name` is the client name the server shows.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ClusterError> {
        let url = self.display_url();
        let mut o = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(Duration::from_secs(5)))
            .ping_interval(Duration::from_secs(2))
            // Forever, with backoff: the engine keeps running while NATS is away.
            .max_reconnects(None)
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)))
                    .min(Duration::from_secs(2))
            })
            .event_callback({
                let url = url.clone();
                let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                move |event| {
                    let url = url.clone();
                    let lost = lost.clone();
                    async move {
                        use std::sync::atomic::Ordering;
                        match event {
                            async_nats::Event::Disconnected => {
                                lost.store(true, Ordering::SeqCst);
                                tracing::warn!(
                                    "nats: lost the connection to {url}; streams keep running, \
                                     results are buffered until it is back"
                                )
                            }
                            async_nats::Event::Connected if lost.swap(false, Ordering::SeqCst) => {
                                tracing::info!("nats: reconnected to {url}")
                            }
                            async_nats::Event::Connected => {
                                tracing::debug!("nats: connected to {url}")
                            }
                            async_nats::Event::ServerError(e) => {
                                tracing::warn!("nats: server error from {url}: {e}")
                            }
                            async_nats::Event::SlowConsumer(_) => {}
                            other => tracing::debug!("nats: {other}"),
                        }
                    }
                }
            });
        if let Some(path) = &self.creds {
            o = o.credentials_file(path).await.map_err(|e| {
                ClusterError::Usage(format!(
                    "cannot read the NATS credentials file {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if let Some((u, p)) = &self.user {
            o = o.user_and_password(u.clone(), p.clone());
        }
        let servers: Vec<String> = self.url.split(',').map(|s| s.trim().to_owned()).collect();
        let addrs: Vec<async_nats::ServerAddr> = servers
            .iter()
            .map(|s| {
                s.parse().map_err(|e| {
                    ClusterError::Usage(format!(
                        "--nats {}: not a NATS URL: {e}",
                        strip_userinfo(s)
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        match o.connect(addrs).await {
            Ok(c) => Ok(c),
            Err(e) => {
                use async_nats::ConnectErrorKind as K;
                // The error's text may quote the URL: show it without credentials.
                let reason = scrub(&e.to_string(), &servers);
                Err(match e.kind() {
                    K::Authentication | K::AuthorizationViolation => {
                        ClusterError::Auth { url, reason }
                    }
                    K::ServerParse => ClusterError::Usage(format!("--nats {url}: {reason}")),
                    _ => ClusterError::Unreachable { url, reason },
                })
            }
        }
    }

    /// Connects, retrying with backoff (logged) while the server is unreachable, until
    /// `give_up` says stop. Refused credentials and bad URLs are returned at once: retrying
    /// cannot fix them.
    pub async fn connect_with_retry(
        &self,
        name: &str,
        give_up: impl Fn() -> bool,
    ) -> Result<async_nats::Client, ClusterError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.connect(name).await {
                Ok(c) => return Ok(c),
                Err(ClusterError::Unreachable { url, reason }) => {
                    if give_up() {
                        return Err(ClusterError::Unreachable { url, reason });
                    }
                    tracing::warn!(
                        "nats: cannot reach {url} ({reason}); retrying in {:.1} s",
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// `text` with every credential of `servers` replaced.
fn scrub(text: &str, servers: &[String]) -> String {
    let mut out = text.to_owned();
    for s in servers {
        out = out.replace(s.as_str(), &strip_userinfo(s));
        if let Some((_, rest)) = s.split_once("://") {
            if let Some((userinfo, _)) = rest.split_once('@') {
                for secret in userinfo.split(':').filter(|p| p.len() > 2) {
                    out = out.replace(secret, "***");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show() {
        let o = NatsOptions {
            url: "nats://alice:s3cret@127.0.0.1:4222,nats://tok3n@10.0.0.2:4222".into(),
            creds: None,
            token: Some("hidden-token".into()),
            user: Some(("bob".into(), "pw-pw".into())),
            connect_timeout: Duration::from_secs(1),
        };
        assert_eq!(
            o.display_url(),
            "nats://127.0.0.1:4222,nats://10.0.0.2:4222"
        );
        let dbg = format!("{o:?}");
        for secret in ["s3cret", "tok3n", "hidden-token", "pw-pw"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        let servers = vec!["nats://alice:s3cret@h:1".to_owned()];
        let s = scrub("failed: nats://alice:s3cret@h:1 said s3cret", &servers);
        assert!(!s.contains("s3cret"), "{s}");
    }
}
