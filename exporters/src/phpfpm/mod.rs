//! PHP-FPM pool metrics with the names, types and labels of hipages
//! php-fpm_exporter (`phpfpm_up{pool,scrape_uri}`, ...), read by talking
//! FastCGI straight to each pool's socket: no web server in between.
//!
//! Per-process series (`phpfpm_process_*{pool,child,scrape_uri}`) are off by
//! default: they multiply with `pm.max_children` and are what users of the
//! anchor most often ask to turn off.

pub mod fastcgi;
mod status;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::probe::client::budget;

pub use status::{families, parse_status, PoolStatus, ProcessStatus};

/// Largest status answer accepted. A full status lists every worker in a
/// few hundred bytes each, so this covers thousands of workers.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// One `[[phpfpm]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhpFpmPool {
    /// Name of this pool in `/health` and logs; the `pool` label comes from
    /// the status page itself (defaults to the scrape URI when empty).
    #[serde(default)]
    pub name: String,
    /// The pool socket and status path in the anchor's syntax:
    /// `unix:///run/php/php8.2-fpm.sock;/status` or `tcp://127.0.0.1:9000/status`.
    /// The path must equal the pool's `pm.status_path`.
    #[serde(default = "default_scrape_uri")]
    pub scrape_uri: String,
    /// Upper bound of one status request; the scrape deadline may cut it shorter.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Export `phpfpm_process_*` for every worker (high cardinality).
    #[serde(default)]
    pub per_process_metrics: bool,
    /// Count idle/active/total from the process list instead of trusting the
    /// pool totals (the anchor's `--phpfpm.fix-process-count`).
    #[serde(default)]
    pub fix_process_count: bool,
}

impl Default for PhpFpmPool {
    fn default() -> Self {
        PhpFpmPool {
            name: String::new(),
            scrape_uri: default_scrape_uri(),
            timeout_secs: default_timeout_secs(),
            per_process_metrics: false,
            fix_process_count: false,
        }
    }
}

fn default_scrape_uri() -> String {
    "tcp://127.0.0.1:9000/status".into()
}
fn default_timeout_secs() -> f64 {
    5.0
}

impl PhpFpmPool {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = parse_scrape_uri(&self.scrape_uri) {
            errors.push(format!("scrape_uri: {e}"));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        errors
    }

    /// The pool's name in `/health` and logs: `name`, or the scrape URI.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.scrape_uri
        } else {
            &self.name
        }
    }
}

/// Splits `unix:///sock;/status` or `tcp://host:port/status` into the
/// socket address and the status path.
pub fn parse_scrape_uri(raw: &str) -> Result<(fastcgi::Address, String), String> {
    if let Some(rest) = raw.strip_prefix("unix://") {
        let (socket, path) = rest.split_once(';').unwrap_or((rest, "/status"));
        if !socket.starts_with('/') {
            return Err(format!(
                "{raw:?}: the socket path must be absolute, e.g. unix:///run/php/php-fpm.sock;/status"
            ));
        }
        if !path.starts_with('/') {
            return Err(format!(
                "{raw:?}: the status path after ';' must start with /"
            ));
        }
        return Ok((fastcgi::Address::Unix(socket.into()), path.to_string()));
    }
    if let Some(rest) = raw.strip_prefix("tcp://") {
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/status"),
        };
        let port_ok = host_port
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "{raw:?}: write host:port after tcp://, e.g. tcp://127.0.0.1:9000/status"
            ));
        }
        return Ok((
            fastcgi::Address::Tcp(host_port.to_string()),
            path.to_string(),
        ));
    }
    Err(format!(
        "{raw:?}: use unix:///path/to/pool.sock;/status or tcp://host:port/status"
    ))
}

/// Builds one collector per configured pool.
pub fn collectors(targets: &[PhpFpmPool]) -> Vec<Arc<dyn Collector>> {
    targets
        .iter()
        .filter_map(|t| match PhpFpmCollector::new(t.clone()) {
            Ok(c) => Some(Arc::new(c) as Arc<dyn Collector>),
            Err(e) => {
                tracing::error!(pool = %t.display_name(), "php-fpm pool disabled: {e}");
                None
            }
        })
        .collect()
}

/// Scrapes one pool.
pub struct PhpFpmCollector {
    pool: PhpFpmPool,
    address: fastcgi::Address,
    status_path: String,
    failures: AtomicU64,
    /// The pool name last read from the status page, so `phpfpm_up 0`
    /// keeps the labels of the series it replaces.
    last_pool_name: Mutex<Option<String>>,
}

impl PhpFpmCollector {
    pub fn new(pool: PhpFpmPool) -> Result<Self, String> {
        let (address, status_path) = parse_scrape_uri(&pool.scrape_uri)?;
        Ok(PhpFpmCollector {
            pool,
            address,
            status_path,
            failures: AtomicU64::new(0),
            last_pool_name: Mutex::new(None),
        })
    }

    async fn read_status(&self, ctx: &CollectContext) -> Result<PoolStatus, String> {
        let params: BTreeMap<&str, String> = [
            ("SCRIPT_FILENAME", self.status_path.clone()),
            ("SCRIPT_NAME", self.status_path.clone()),
            ("REQUEST_URI", format!("{}?json&full", self.status_path)),
            ("DOCUMENT_URI", self.status_path.clone()),
            ("QUERY_STRING", "json&full".to_string()),
            ("REQUEST_METHOD", "GET".to_string()),
            ("SERVER_SOFTWARE", "steward".to_string()),
            ("REMOTE_ADDR", "127.0.0.1".to_string()),
            ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
            ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
        ]
        .into();
        let timeout = budget(ctx, self.pool.timeout_secs);
        let response = fastcgi::request(&self.address, &params, timeout, MAX_ANSWER_BYTES).await?;
        let (code, body) = fastcgi::split_cgi(&response.stdout)?;
        if !(200..300).contains(&code) {
            let stderr = String::from_utf8_lossy(&response.stderr);
            let stderr = stderr.trim();
            return Err(format!(
                "status path {:?} answered {code}{}; set the pool's pm.status_path = {}",
                self.status_path,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stderr.chars().take(200).collect::<String>())
                },
                self.status_path
            ));
        }
        parse_status(body)
    }
}

#[async_trait]
impl Collector for PhpFpmCollector {
    fn name(&self) -> &str {
        "phpfpm"
    }

    fn instance(&self) -> Option<&str> {
        Some(self.pool.display_name())
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let result = self.read_status(&ctx).await;
        let mut last = self
            .last_pool_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (status, error) = match result {
            Ok(s) => {
                *last = Some(s.pool.clone());
                (Some(s), None)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                (
                    None,
                    Some(CollectError::failed(format!(
                        "php-fpm pool {:?} ({}): {e}",
                        self.pool.display_name(),
                        self.pool.scrape_uri
                    ))),
                )
            }
        };
        let pool_label = last.clone().unwrap_or_else(|| self.pool.name.clone());
        drop(last);
        Ok(Collected {
            families: families(
                status.as_ref(),
                &pool_label,
                &self.pool.scrape_uri,
                self.failures.load(Ordering::Relaxed),
                self.pool.per_process_metrics,
                self.pool.fix_process_count,
            ),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_uris() {
        assert_eq!(
            parse_scrape_uri("unix:///run/php/fpm.sock;/st").unwrap(),
            (
                fastcgi::Address::Unix("/run/php/fpm.sock".into()),
                "/st".into()
            )
        );
        assert_eq!(
            parse_scrape_uri("tcp://127.0.0.1:9000/status").unwrap(),
            (
                fastcgi::Address::Tcp("127.0.0.1:9000".into()),
                "/status".into()
            )
        );
        assert_eq!(
            parse_scrape_uri("tcp://[::1]:9000").unwrap().1,
            "/status".to_string()
        );
        for bad in [
            "http://x/status",
            "tcp://127.0.0.1/status",
            "unix://rel.sock;/s",
            "unix:///s;status",
        ] {
            assert!(parse_scrape_uri(bad).is_err(), "{bad}");
        }
        let p = PhpFpmPool {
            scrape_uri: "nope".into(),
            timeout_secs: 0.0,
            ..Default::default()
        };
        let errors = p.validate();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("scrape_uri:") && errors[1].starts_with("timeout_secs:"));
    }

    #[tokio::test]
    async fn unreachable_pool_is_up_0_quickly() {
        let dir = std::env::temp_dir().join(format!("steward-fpm-test-{}", std::process::id()));
        let c = PhpFpmCollector::new(PhpFpmPool {
            name: "gone".into(),
            scrape_uri: format!("unix://{}/missing.sock;/status", dir.display()),
            ..Default::default()
        })
        .unwrap();
        let collected = c
            .collect(CollectContext::with_timeout(
                std::time::Duration::from_secs(2),
            ))
            .await
            .unwrap();
        let err = collected.error.unwrap().to_string();
        assert!(
            err.contains("gone") && err.contains("missing.sock"),
            "{err}"
        );
        let text = crate::exposition::encode(&collected.families);
        assert!(text.contains("phpfpm_up{pool=\"gone\""), "{text}");
        assert!(
            text.contains("phpfpm_scrape_failures{pool=\"gone\",scrape_uri=\"unix://"),
            "{text}"
        );
    }
}
