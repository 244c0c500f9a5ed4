//! The one extension point of this crate: a `Collector` produces metric
//! families at scrape time, under a deadline, without knowing about HTTP.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::metrics::MetricFamily;

/// What a collector gets for one scrape.
#[derive(Debug, Clone, Copy)]
pub struct CollectContext {
    /// The moment by which the collector's result must be ready. The scraper
    /// enforces it with a timeout; collectors use it to bound their own I/O
    /// (query timeouts, connect timeouts) so they fail cleanly, not by being
    /// dropped mid-way.
    pub deadline: Instant,
}

impl CollectContext {
    pub fn with_timeout(timeout: Duration) -> Self {
        CollectContext {
            deadline: Instant::now() + timeout,
        }
    }

    /// Time left before the deadline (zero when passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Why a collector produced nothing (or only part) this scrape. The message
/// names the target and the cause; it is shown in logs and `/health`, so it
/// must never contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{0}")]
    Failed(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("not supported on this host: {0}")]
    Unsupported(String),
}

impl CollectError {
    pub fn failed(msg: impl Into<String>) -> Self {
        CollectError::Failed(msg.into())
    }
}

impl From<std::io::Error> for CollectError {
    fn from(e: std::io::Error) -> Self {
        CollectError::Failed(e.to_string())
    }
}

/// The result of one collection. A collector that reaches its target only
/// partly returns the families it has *and* reports the error, so e.g.
/// `nginx_up 0` is still exported when the status page is down.
#[derive(Debug, Default)]
pub struct Collected {
    pub families: Vec<MetricFamily>,
    pub error: Option<CollectError>,
}

impl From<Vec<MetricFamily>> for Collected {
    fn from(families: Vec<MetricFamily>) -> Self {
        Collected {
            families,
            error: None,
        }
    }
}

/// A source of metric families.
#[async_trait]
pub trait Collector: Send + Sync {
    /// The name used in `collect[]`/`exclude[]` filters, in
    /// `<namespace>_scrape_collector_*{collector="<name>"}` and in `/health`
    /// (e.g. `cpu`, `meminfo`, `nginx`, `postgres`).
    fn name(&self) -> &str;

    /// Prefix of the scrape self-metrics (`node` for node collectors, so
    /// `node_scrape_collector_success` matches node_exporter; `steward` for
    /// the others).
    fn namespace(&self) -> &str {
        "steward"
    }

    /// An instance label for collectors that may exist several times (one
    /// per nginx target, PHP-FPM pool, database): distinguishes them in
    /// `/health` and in the self-metrics. `None` for singletons.
    fn instance(&self) -> Option<&str> {
        None
    }

    /// Collects families. Must honour `ctx.deadline` for its own I/O;
    /// blocking work (statfs, large /proc reads) goes to a blocking thread.
    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError>;
}
