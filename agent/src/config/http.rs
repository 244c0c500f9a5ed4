//! `[agent.http]`: the HTTP server's limits (timeouts, the scrape bound,
//! the cap on Prometheus' scrape timeout header). Schema only; web.rs
//! applies it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use steward_web::Timeouts;

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
