//! Exposing the agent's HTTP server safely: `[agent.http]` (timeouts, the
//! scrape bound and the cap on Prometheus' scrape timeout header), the
//! web-config file from `--web.config.file` or `agent.web_config_file`, and
//! the middleware that refuses scrapes past the bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use steward_web::{InFlight, Timeouts, WebConfigError, WebRuntime};

use crate::config::Config;
use crate::generation::Shared;

/// The agent serves HTTP/1.1 only (Prometheus scrapes over it).
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// `[agent.http]`: limits of the HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A client must send its whole request header (and finish the TLS
    /// handshake) within this long of connecting or of its previous
    /// response, or the connection is closed: slow-loris protection.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: f64,
    /// A connection that moves no byte for this long is closed (a client
    /// that stopped reading). Longer than `max_scrape_timeout_secs`, since
    /// a scrape is silent while the collectors run.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: f64,
    /// Scrapes of `/metrics` running at once; more get 503 at once instead
    /// of a queue that grows while each waits past its timeout.
    #[serde(default = "default_max_concurrent_scrapes")]
    pub max_concurrent_scrapes: usize,
    /// Upper bound on Prometheus' `X-Prometheus-Scrape-Timeout-Seconds`: a
    /// client cannot make a scrape hold the collectors for longer.
    #[serde(default = "default_max_scrape_timeout_secs")]
    pub max_scrape_timeout_secs: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout_secs: default_header_read_timeout_secs(),
            idle_timeout_secs: default_idle_timeout_secs(),
            max_concurrent_scrapes: default_max_concurrent_scrapes(),
            max_scrape_timeout_secs: default_max_scrape_timeout_secs(),
        }
    }
}

fn default_header_read_timeout_secs() -> f64 {
    10.0
}
fn default_idle_timeout_secs() -> f64 {
    120.0
}
fn default_max_concurrent_scrapes() -> usize {
    4
}
fn default_max_scrape_timeout_secs() -> f64 {
    60.0
}

impl HttpConfig {
    /// Errors, each prefixed with its key under `agent.http`.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut range = |key: &str, value: f64, max: f64| {
            if !(value > 0.0 && value <= max) {
                errors.push(format!(
                    "http.{key}: {value} is out of range; use a value in (0, {max}]"
                ));
            }
        };
        range(
            "header_read_timeout_secs",
            self.header_read_timeout_secs,
            300.0,
        );
        range("idle_timeout_secs", self.idle_timeout_secs, 3600.0);
        range(
            "max_scrape_timeout_secs",
            self.max_scrape_timeout_secs,
            300.0,
        );
        if self.max_concurrent_scrapes == 0 {
            errors.push(
                "http.max_concurrent_scrapes: 0 would refuse every scrape; use 1 or more".into(),
            );
        }
        if self.idle_timeout_secs <= self.max_scrape_timeout_secs {
            errors.push(format!(
                "http.idle_timeout_secs: {} must exceed max_scrape_timeout_secs ({}), or a long \
                 scrape would be cut while its collectors run",
                self.idle_timeout_secs, self.max_scrape_timeout_secs
            ));
        }
        errors
    }

    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: secs(self.header_read_timeout_secs),
            idle: secs(self.idle_timeout_secs),
        }
    }
}

/// Validated values are finite and positive; anything else is a default
/// rather than a panic.
fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(10))
}

/// The web-config file in force: `--web.config.file` over
/// `agent.web_config_file`.
pub fn web_config_path(config: &Config, flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| config.agent.web_config_file.clone())
}

/// Loads the web configuration in force (plain HTTP without a file).
pub fn load(config: &Config, flag: Option<&Path>) -> Result<WebRuntime, WebConfigError> {
    WebRuntime::load_optional(web_config_path(config, flag).as_deref(), ALPN)
}

/// The state of [`scrape_limit`].
pub type ScrapeLimit = (Arc<Shared>, Arc<InFlight>);

/// Refuses a scrape past `agent.http.max_concurrent_scrapes` with 503.
pub async fn scrape_limit(
    State((shared, in_flight)): State<ScrapeLimit>,
    request: Request,
    next: Next,
) -> Response {
    let max = shared.generation().config.agent.http.max_concurrent_scrapes;
    match in_flight.try_enter(max) {
        Some(_slot) => next.run(request).await,
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!(
                "{max} scrapes are already running (agent.http.max_concurrent_scrapes); \
                 this one is refused rather than queued\n"
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        assert!(HttpConfig::default().validate().is_empty());
        let bad = HttpConfig {
            header_read_timeout_secs: 0.0,
            idle_timeout_secs: 30.0,
            max_concurrent_scrapes: 0,
            max_scrape_timeout_secs: f64::NAN,
        };
        let errors = bad.validate();
        assert!(
            errors[0].starts_with("http.header_read_timeout_secs"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("http.max_scrape_timeout_secs"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("http.max_concurrent_scrapes"),
            "{errors:?}"
        );
        let idle = HttpConfig {
            idle_timeout_secs: 30.0,
            ..HttpConfig::default()
        };
        assert!(idle.validate()[0].starts_with("http.idle_timeout_secs: 30 must exceed"));
    }

    #[test]
    fn flag_overrides_the_config_file_key() {
        let mut config = Config::default();
        assert_eq!(web_config_path(&config, None), None);
        config.agent.web_config_file = Some(PathBuf::from("/etc/steward/web.yml"));
        assert_eq!(
            web_config_path(&config, Some(Path::new("/tmp/w.yml"))),
            Some(PathBuf::from("/tmp/w.yml"))
        );
        assert_eq!(
            web_config_path(&config, None),
            Some(PathBuf::from("/etc/steward/web.yml"))
        );
    }
}
