//! Redis metrics with redis_exporter 1.45's names, types and labels (INFO
//! sections, keyspace per db, command stats, `redis_up`), exact-key sizes
//! (`redis_key_size`, the exporter's `--check-single-keys`) and job-queue
//! depths (`steward_queue_jobs`), all without SCAN, over one RESP
//! connection per target that is kept between scrapes.
//!
//! Job queues follow Laravel's key layout (see [`QueueKeys`]): a queue named
//! `default` is the list `<prefix>queues:default` (ready jobs), the sorted
//! sets `<prefix>queues:default:delayed` and `...:reserved`. Every count is
//! O(1) (LLEN, ZCARD). Another framework whose queue is a list plus sorted
//! sets with fixed suffixes is reached through `prefix` and `queue_prefix`.

mod config;
mod info;
mod keys;
pub mod resp;

pub use config::{QueueKeys, RedisScrapeTarget};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::BufStream;

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::{Labels, MetricFamily};
use crate::probe::client::budget;
use config::Address;
use resp::{Io, Reply};
use steward_tls as tls;

/// Builds one collector per configured target. With several targets every
/// series carries `target="<name>"` so they stay distinct in one scrape.
pub fn collectors(targets: &[RedisScrapeTarget]) -> Vec<Arc<dyn Collector>> {
    let several = targets.len() > 1;
    targets
        .iter()
        .filter_map(|t| match RedisCollector::new(t.clone(), several) {
            Ok(c) => Some(Arc::new(c) as Arc<dyn Collector>),
            Err(e) => {
                tracing::error!(target = %t.name, "redis target disabled: {e}");
                None
            }
        })
        .collect()
}

/// Connection and counters kept across scrapes.
#[derive(Default)]
struct State {
    conn: Option<BufStream<Box<dyn Io>>>,
    failures: u64,
    /// Keys of a queue or check that held the wrong type, by key kind.
    key_errors: BTreeMap<String, u64>,
}

/// Scrapes one Redis.
pub struct RedisCollector {
    target: RedisScrapeTarget,
    address: Address,
    /// `rediss://`: the client configuration and the name the server's
    /// certificate must carry.
    tls: Option<(Arc<tls::ClientConfig>, tls::ServerName<'static>)>,
    plan: keys::Plan,
    labels: Labels,
    state: tokio::sync::Mutex<State>,
}

/// What one exchange read.
#[derive(Default)]
struct Reading {
    info: String,
    config: BTreeMap<String, String>,
    keys: keys::KeyReading,
}

impl RedisCollector {
    pub fn new(target: RedisScrapeTarget, label_target: bool) -> Result<Self, String> {
        let address = Address::parse(&target.addr)?;
        let tls = match &address {
            Address::Tls { host, .. } => {
                let name = target.tls_server_name.as_deref().unwrap_or(host);
                Some((
                    tls::client_config(&target.tls_files())?,
                    tls::server_name(name)?,
                ))
            }
            _ => None,
        };
        let plan = keys::Plan::new(&target)?;
        let mut labels: Labels = Vec::new();
        if label_target {
            labels.push(("target".into(), target.name.clone()));
        }
        Ok(RedisCollector {
            target,
            address,
            tls,
            plan,
            labels,
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    async fn connect(&self) -> Result<BufStream<Box<dyn Io>>, String> {
        let io: Box<dyn Io> = match &self.address {
            Address::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Address::Tls { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                let _ = s.set_nodelay(true);
                let (config, name) = self.tls.clone().ok_or("TLS is not set up")?;
                Box::new(tls::handshake(config, name, s, "the host in addr").await?)
            }
            Address::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?,
            ),
        };
        let mut conn = BufStream::new(io);
        if let Some(password) = &self.target.password {
            let mut auth = vec![b"AUTH".to_vec()];
            if let Some(user) = &self.target.user {
                auth.push(user.as_bytes().to_vec());
            }
            auth.push(password.as_bytes().to_vec());
            match resp::pipeline(&mut conn, &[auth]).await?.pop() {
                Some(Reply::Status(_)) => {}
                // The server's message names neither the password nor the
                // user's secret (`WRONGPASS invalid username-password pair`).
                Some(Reply::Error(e)) => return Err(format!("AUTH refused: {e}")),
                other => return Err(format!("unexpected AUTH answer {other:?}")),
            }
        }
        Ok(conn)
    }

    /// The whole exchange of one scrape on an open connection.
    async fn read(&self, conn: &mut BufStream<Box<dyn Io>>) -> Result<Reading, String> {
        let cmd = |args: &[&str]| -> Vec<Vec<u8>> {
            args.iter().map(|a| a.as_bytes().to_vec()).collect()
        };
        let mut replies = resp::pipeline(
            conn,
            &[
                cmd(&["INFO", "ALL"]),
                cmd(&["CONFIG", "GET", "maxmemory"]),
                cmd(&["CONFIG", "GET", "maxclients"]),
                cmd(&["CONFIG", "GET", "io-threads"]),
                cmd(&["CONFIG", "GET", "databases"]),
            ],
        )
        .await?
        .into_iter();
        let mut reading = Reading::default();
        match replies.next() {
            Some(Reply::Bulk(Some(text))) => {
                reading.info = String::from_utf8_lossy(&text).into_owned()
            }
            Some(Reply::Error(e)) => return Err(format!("INFO refused: {e}")),
            other => return Err(format!("unexpected INFO answer {other:?}")),
        }
        // CONFIG may be renamed or denied by ACL: those values are then
        // simply absent, as with the exporter.
        for reply in replies {
            if let Reply::Array(Some(items)) = reply {
                for pair in items.chunks(2) {
                    if let [k, v] = pair {
                        if let (Some(k), Some(v)) = (k.text(), v.text()) {
                            reading.config.insert(k, v);
                        }
                    }
                }
            }
        }

        if !self.plan.is_empty() {
            reading.keys = keys::read(conn, &self.plan).await?;
        }
        Ok(reading)
    }

    fn families(&self, reading: Option<&Reading>, state: &State) -> Vec<MetricFamily> {
        let labels = &self.labels;
        let mut up = MetricFamily::gauge("redis_up", "Information about the Redis instance");
        up.push_owned(labels.clone(), f64::from(u8::from(reading.is_some())));
        let mut out = vec![up];
        if let Some(r) = reading {
            let fields = info::parse(&r.info);
            let databases = r.config.get("databases").and_then(|d| d.parse().ok());
            out.extend(info::families(&fields, databases, labels));
            for (name, key) in [
                ("redis_config_maxmemory", "maxmemory"),
                ("redis_config_maxclients", "maxclients"),
                ("redis_config_io_threads", "io-threads"),
            ] {
                if let Some(v) = r.config.get(key).and_then(|v| v.parse::<f64>().ok()) {
                    let mut f = MetricFamily::gauge(
                        name,
                        format!("config_{} metric", key.replace('-', "_")),
                    );
                    f.push_owned(labels.clone(), v);
                    out.push(f);
                }
            }
            out.extend(r.keys.families(labels));
        }
        let mut errors = MetricFamily::counter(
            "steward_redis_key_check_errors_total",
            "Key checks that failed: a checked or queue key of a type the check cannot size (e.g. a string where a queue list belongs), or a check_keys SCAN the server refused (key=\"scan:<pattern>\").",
        );
        for (key, n) in &state.key_errors {
            let mut l = labels.clone();
            l.push(("key".into(), key.clone()));
            errors.push_owned(l, *n as f64);
        }
        out.push(errors);
        let mut failure_labels: Labels = vec![
            ("collector".into(), "redis".into()),
            ("instance".into(), self.target.name.clone()),
        ];
        failure_labels.extend(labels.iter().filter(|(k, _)| k != "target").cloned());
        let mut failures = MetricFamily::counter(
            "steward_scrape_failures_total",
            "Scrapes of a target that failed (unreachable, error status, or a page that does not parse).",
        );
        failures.push_owned(failure_labels, state.failures as f64);
        out.push(failures);
        out
    }
}

#[async_trait]
impl Collector for RedisCollector {
    fn name(&self) -> &str {
        "redis"
    }

    fn instance(&self) -> Option<&str> {
        Some(&self.target.name)
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let timeout: Duration = budget(&ctx, self.target.timeout_secs);
        let mut state = self.state.lock().await;
        let exchange = async {
            let mut conn = match state.conn.take() {
                Some(c) => c,
                None => self.connect().await?,
            };
            let reading = self.read(&mut conn).await?;
            Ok::<_, String>((conn, reading))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        let (reading, error) = match result {
            Ok((conn, reading)) => {
                // Kept only after a complete exchange: a connection cut
                // mid-reply would hand the next scrape a stale answer.
                state.conn = Some(conn);
                (Some(reading), None)
            }
            Err(e) => {
                state.failures += 1;
                (
                    None,
                    Some(CollectError::failed(format!(
                        "redis target {:?} ({}): {e}",
                        self.target.name, self.target.addr
                    ))),
                )
            }
        };
        if let Some(r) = &reading {
            for key in &r.keys.wrong_types {
                *state.key_errors.entry(key.clone()).or_default() += 1;
            }
        }
        Ok(Collected {
            families: self.families(reading.as_ref(), &state),
            error,
        })
    }
}
