//! MySQL/MariaDB metrics with mysqld_exporter 0.14's names, types and labels
//! (its default collectors: global status, global variables, replica status,
//! InnoDB compression tables, query response time; processlist opt-in), over
//! one long-lived connection per target that is re-opened when lost.

pub mod families;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Value};
use serde::{Deserialize, Serialize};

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::MetricFamily;
use families::{FamilySet, TextRows};

/// One `[[mysql]]` entry: a MySQL or MariaDB server to scrape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlScrapeTarget {
    /// Name of this target, used in `/health`, logs and (with several
    /// targets) as the `target` label.
    #[serde(default)]
    pub name: String,
    /// Host name or IP address (ignored when `socket` is set).
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Unix socket path; when set, used instead of host/port.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default = "default_user")]
    pub user: String,
    /// Secret: prefer `password_file` or `${ENV}`.
    #[serde(default)]
    pub password: Option<String>,
    /// Upper bound for opening the connection (the scrape deadline applies
    /// too, whichever is sooner).
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// `lock_wait_timeout` of Steward's session, so a scrape never waits
    /// long behind metadata locks (mysqld_exporter uses 2).
    #[serde(default = "default_lock_wait_timeout_secs")]
    pub lock_wait_timeout_secs: u64,
    /// `SHOW ALL SLAVES STATUS` / `SHOW SLAVE STATUS` (needs SLAVE MONITOR
    /// on MariaDB >= 10.5, REPLICATION CLIENT on MySQL).
    #[serde(default = "default_true")]
    pub slave_status: bool,
    /// information_schema.innodb_cmp and innodb_cmpmem.
    #[serde(default = "default_true")]
    pub innodb_cmp: bool,
    /// Percona/MariaDB QUERY_RESPONSE_TIME histograms (only when the
    /// plugin is loaded and `query_response_time_stats` is ON).
    #[serde(default = "default_true")]
    pub query_response_time: bool,
    /// information_schema.processlist thread counts (off by default, like
    /// mysqld_exporter: labels by user and client host).
    #[serde(default)]
    pub processlist: bool,
    /// Only threads at least this long in their state are counted.
    #[serde(default)]
    pub processlist_min_time_secs: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    3306
}
fn default_user() -> String {
    "exporter".into()
}
fn default_connect_timeout_secs() -> f64 {
    5.0
}
fn default_lock_wait_timeout_secs() -> u64 {
    2
}
fn default_true() -> bool {
    true
}

impl Default for MysqlScrapeTarget {
    fn default() -> Self {
        MysqlScrapeTarget {
            name: String::new(),
            host: default_host(),
            port: default_port(),
            socket: None,
            user: default_user(),
            password: None,
            connect_timeout_secs: default_connect_timeout_secs(),
            lock_wait_timeout_secs: default_lock_wait_timeout_secs(),
            slave_status: true,
            innodb_cmp: true,
            query_response_time: true,
            processlist: false,
            processlist_min_time_secs: 0,
        }
    }
}

impl MysqlScrapeTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must be set (used in /health, logs and labels)".into());
        }
        if self.socket.is_none() && self.host.trim().is_empty() {
            errors.push("host: must be set when socket is not".into());
        }
        if self.socket.is_none() && self.port == 0 {
            errors.push("port: must be 1-65535".into());
        }
        if let Some(s) = &self.socket {
            if !s.is_absolute() {
                errors.push(format!("socket: {} must be an absolute path", s.display()));
            }
        }
        if self.user.is_empty() {
            errors.push("user: must be set".into());
        }
        if !(self.connect_timeout_secs.is_finite() && self.connect_timeout_secs > 0.0) {
            errors.push("connect_timeout_secs: must be a positive number of seconds".into());
        }
        errors
    }

    /// Where the target is, for messages (never contains the password).
    fn address(&self) -> String {
        match &self.socket {
            Some(s) => format!("unix:{}", s.display()),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Builds one collector per configured target. With several targets every
/// series carries `target="<name>"` so they stay distinct in one scrape.
pub fn collectors(targets: &[MysqlScrapeTarget]) -> Vec<Arc<dyn Collector>> {
    let several = targets.len() > 1;
    targets
        .iter()
        .map(|t| {
            Arc::new(MysqlCollector {
                target: t.clone(),
                target_label: several.then(|| t.name.clone()),
                state: tokio::sync::Mutex::new(State::default()),
            }) as Arc<dyn Collector>
        })
        .collect()
}

/// Connection and counters kept across scrapes.
#[derive(Default)]
struct State {
    conn: Option<Conn>,
    scrapes_total: f64,
    /// `mysql_exporter_scrape_errors_total{collector}`.
    scrape_errors: BTreeMap<String, f64>,
    /// Last error logged, so a target that stays down logs once, not on
    /// every scrape.
    last_logged: Option<String>,
}

/// Collects one MySQL/MariaDB target.
pub struct MysqlCollector {
    target: MysqlScrapeTarget,
    target_label: Option<String>,
    state: tokio::sync::Mutex<State>,
}

/// A failed query: server errors (missing grant, unknown table) leave the
/// connection usable; everything else (I/O, protocol, timeout) drops it.
enum QueryFailure {
    Server(String),
    Connection(String),
}

impl QueryFailure {
    fn message(&self) -> &str {
        match self {
            QueryFailure::Server(m) | QueryFailure::Connection(m) => m,
        }
    }
}

fn classify(e: mysql_async::Error) -> QueryFailure {
    match e {
        mysql_async::Error::Server(s) => QueryFailure::Server(s.to_string()),
        other => QueryFailure::Connection(other.to_string()),
    }
}

/// Runs `sql` and returns all rows of its first result set as text.
async fn text_query(
    conn: &mut Conn,
    sql: &str,
    deadline: Instant,
) -> Result<TextRows, QueryFailure> {
    let run = async {
        let mut result = conn.query_iter(sql).await?;
        let columns: Vec<String> = result
            .columns_ref()
            .iter()
            .map(|c| c.name_str().into_owned())
            .collect();
        let rows: Vec<mysql_async::Row> = result.collect().await?;
        result.drop_result().await?;
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.as_ref(i) {
                        None | Some(Value::NULL) => None,
                        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                        Some(Value::Int(v)) => Some(v.to_string()),
                        Some(Value::UInt(v)) => Some(v.to_string()),
                        Some(Value::Float(v)) => Some(v.to_string()),
                        Some(Value::Double(v)) => Some(v.to_string()),
                        Some(other) => Some(other.as_sql(true)),
                    })
                    .collect()
            })
            .collect();
        Ok::<_, mysql_async::Error>(TextRows { columns, rows })
    };
    match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(r) => r.map_err(classify),
        Err(_) => Err(QueryFailure::Connection(format!(
            "query {sql:?} did not finish before the scrape deadline"
        ))),
    }
}

/// The sub-collectors, named as mysqld_exporter names them in
/// `mysql_exporter_collector_duration_seconds{collector}`.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    GlobalStatus,
    GlobalVariables,
    SlaveStatus,
    InnodbCmp,
    InnodbCmpMem,
    QueryResponseTime,
    Processlist,
}

impl Part {
    fn label(self) -> &'static str {
        match self {
            Part::GlobalStatus => "collect.global_status",
            Part::GlobalVariables => "collect.global_variables",
            Part::SlaveStatus => "collect.slave_status",
            Part::InnodbCmp => "collect.info_schema.innodb_cmp",
            Part::InnodbCmpMem => "collect.info_schema.innodb_cmpmem",
            Part::QueryResponseTime => "collect.info_schema.query_response_time",
            Part::Processlist => "collect.info_schema.processlist",
        }
    }
}

impl MysqlCollector {
    fn parts(&self) -> Vec<Part> {
        let t = &self.target;
        let mut parts = vec![Part::GlobalStatus, Part::GlobalVariables];
        if t.slave_status {
            parts.push(Part::SlaveStatus);
        }
        if t.innodb_cmp {
            parts.push(Part::InnodbCmp);
            parts.push(Part::InnodbCmpMem);
        }
        if t.query_response_time {
            parts.push(Part::QueryResponseTime);
        }
        if t.processlist {
            parts.push(Part::Processlist);
        }
        parts
    }

    fn opts(&self) -> OptsBuilder {
        let t = &self.target;
        let mut opts = OptsBuilder::default()
            .user(Some(t.user.clone()))
            .pass(t.password.clone())
            // Stay on the address configured: by default the driver
            // switches to the server's unix socket after a TCP connect.
            .prefer_socket(false)
            .stmt_cache_size(0)
            // Known values skip the driver's extra round trip at connect.
            .max_allowed_packet(Some(16 * 1024 * 1024))
            .wait_timeout(Some(28_800))
            .init(vec![format!(
                "SET SESSION lock_wait_timeout = {}",
                t.lock_wait_timeout_secs.max(1)
            )]);
        opts = match &t.socket {
            Some(path) => opts.socket(Some(path.display().to_string())),
            None => opts.ip_or_hostname(t.host.clone()).tcp_port(t.port),
        };
        opts
    }

    /// Makes sure a working connection exists: pings a kept one (the
    /// server may have restarted since), opens a new one otherwise.
    async fn ensure_connection(&self, state: &mut State, deadline: Instant) -> Result<(), String> {
        if let Some(conn) = state.conn.as_mut() {
            match tokio::time::timeout_at(deadline.into(), conn.ping()).await {
                Ok(Ok(())) => return Ok(()),
                _ => state.conn = None,
            }
        }
        let window = Duration::from_secs_f64(self.target.connect_timeout_secs.max(0.001));
        let connect_deadline = deadline.min(Instant::now() + window);
        match tokio::time::timeout_at(connect_deadline.into(), Conn::new(self.opts())).await {
            Ok(Ok(conn)) => {
                state.conn = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err(format!(
                "cannot connect: no answer within {:.1}s",
                window.as_secs_f64()
            )),
        }
    }

    async fn run_part(
        &self,
        part: Part,
        conn: &mut Conn,
        deadline: Instant,
        out: &mut FamilySet,
    ) -> Result<(), QueryFailure> {
        match part {
            Part::GlobalStatus => families::global_status(
                &text_query(conn, "SHOW GLOBAL STATUS", deadline).await?,
                out,
            ),
            Part::GlobalVariables => families::global_variables(
                &text_query(conn, "SHOW GLOBAL VARIABLES", deadline).await?,
                out,
            ),
            Part::SlaveStatus => {
                // MariaDB first (all connections), then MySQL's lock-free
                // variants, then MySQL 8.4's only spelling.
                let mut last = None;
                for sql in [
                    "SHOW ALL SLAVES STATUS",
                    "SHOW SLAVE STATUS NONBLOCKING",
                    "SHOW SLAVE STATUS NOLOCK",
                    "SHOW SLAVE STATUS",
                    "SHOW REPLICA STATUS",
                ] {
                    match text_query(conn, sql, deadline).await {
                        Ok(rows) => {
                            families::slave_status(&rows, out);
                            return Ok(());
                        }
                        Err(QueryFailure::Server(m)) => last = Some(m),
                        Err(e) => return Err(e),
                    }
                }
                return Err(QueryFailure::Server(last.unwrap_or_default()));
            }
            Part::InnodbCmp => families::innodb_cmp(
                &text_query(
                    conn,
                    "SELECT page_size, compress_ops, compress_ops_ok, compress_time, \
                     uncompress_ops, uncompress_time FROM information_schema.innodb_cmp",
                    deadline,
                )
                .await?,
                out,
            ),
            Part::InnodbCmpMem => families::innodb_cmpmem(
                &text_query(
                    conn,
                    "SELECT page_size, buffer_pool_instance, pages_used, pages_free, \
                     relocation_ops, relocation_time FROM information_schema.innodb_cmpmem",
                    deadline,
                )
                .await?,
                out,
            ),
            Part::QueryResponseTime => {
                // Not an error when the plugin is absent or switched off.
                let enabled =
                    match text_query(conn, "SELECT @@query_response_time_stats", deadline).await {
                        Ok(rows) => {
                            rows.rows
                                .first()
                                .and_then(|r| r.first().cloned().flatten())
                                .and_then(|v| families::parse_status(&v))
                                .unwrap_or(0.0)
                                != 0.0
                        }
                        Err(QueryFailure::Server(_)) => false,
                        Err(e) => return Err(e),
                    };
                if !enabled {
                    return Ok(());
                }
                let tables = [
                    (
                        "QUERY_RESPONSE_TIME",
                        "mysql_info_schema_query_response_time_seconds",
                        "The number of all queries by duration they took to execute.",
                    ),
                    (
                        "QUERY_RESPONSE_TIME_READ",
                        "mysql_info_schema_read_query_response_time_seconds",
                        "The number of read queries by duration they took to execute.",
                    ),
                    (
                        "QUERY_RESPONSE_TIME_WRITE",
                        "mysql_info_schema_write_query_response_time_seconds",
                        "The number of write queries by duration they took to execute.",
                    ),
                ];
                for (i, (table, name, help)) in tables.into_iter().enumerate() {
                    let sql = format!("SELECT TIME, COUNT, TOTAL FROM INFORMATION_SCHEMA.{table}");
                    match text_query(conn, &sql, deadline).await {
                        Ok(rows) => families::query_response_time(&rows, name, help, out),
                        // Only the combined table is required.
                        Err(QueryFailure::Server(_)) if i > 0 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Part::Processlist => {
                let sql = format!(
                    "SELECT user, SUBSTRING_INDEX(host, ':', 1) AS host, \
                     COALESCE(command, '') AS command, COALESCE(state, '') AS state, \
                     COUNT(*) AS processes, SUM(time) AS seconds \
                     FROM information_schema.processlist \
                     WHERE ID != connection_id() AND TIME >= {} \
                     GROUP BY user, SUBSTRING_INDEX(host, ':', 1), command, state",
                    self.target.processlist_min_time_secs
                );
                families::processlist(&text_query(conn, &sql, deadline).await?, out)
            }
        }
        Ok(())
    }

    fn log_error(&self, state: &mut State, message: &str) {
        if state.last_logged.as_deref() != Some(message) {
            tracing::warn!(target_name = %self.target.name, address = %self.target.address(), error = %message, "mysql target failed");
            state.last_logged = Some(message.to_string());
        }
    }
}

#[async_trait]
impl Collector for MysqlCollector {
    fn name(&self) -> &str {
        "mysql"
    }

    fn instance(&self) -> Option<&str> {
        Some(&self.target.name)
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        // Finish a little before the scraper's own timeout so `mysql_up 0`
        // is reported instead of the collector being cut off.
        let remaining = ctx.remaining();
        let deadline = Instant::now()
            + remaining.saturating_sub((remaining / 10).min(Duration::from_millis(500)));
        let mut out = FamilySet::default();
        let mut errors: Vec<String> = Vec::new();

        let Ok(mut state) = tokio::time::timeout_at(deadline.into(), self.state.lock()).await
        else {
            let mut families =
                vec![MetricFamily::gauge("mysql_up", "Whether the MySQL server is up.").value(0.0)];
            finish(&mut families, self.target_label.as_deref());
            return Ok(Collected {
                families,
                error: Some(CollectError::failed(format!(
                    "mysql target {:?}: a previous scrape still holds the connection",
                    self.target.name
                ))),
            });
        };
        state.scrapes_total += 1.0;
        let mut durations: Vec<(&'static str, f64)> = Vec::new();

        let started = Instant::now();
        let up = match self.ensure_connection(&mut state, deadline).await {
            Ok(()) => {
                durations.push(("connection", started.elapsed().as_secs_f64()));
                true
            }
            Err(e) => {
                *state.scrape_errors.entry("connection".into()).or_default() += 1.0;
                errors.push(e);
                false
            }
        };

        if up {
            for part in self.parts() {
                let Some(mut conn) = state.conn.take() else {
                    break;
                };
                let t0 = Instant::now();
                let result = self.run_part(part, &mut conn, deadline, &mut out).await;
                durations.push((part.label(), t0.elapsed().as_secs_f64()));
                match result {
                    Ok(()) => state.conn = Some(conn),
                    Err(failure) => {
                        *state.scrape_errors.entry(part.label().into()).or_default() += 1.0;
                        let hint = if part == Part::SlaveStatus
                            && failure.message().contains("SLAVE MONITOR")
                        {
                            " (grant SLAVE MONITOR on MariaDB >= 10.5, REPLICATION CLIENT on MySQL)"
                        } else {
                            ""
                        };
                        errors.push(format!("{}: {}{hint}", part.label(), failure.message()));
                        if let QueryFailure::Server(_) = failure {
                            state.conn = Some(conn);
                        }
                        // A lost connection is re-opened on the next scrape.
                    }
                }
            }
        }

        let mut families = out.into_vec();
        let mut duration = MetricFamily::gauge(
            "mysql_exporter_collector_duration_seconds",
            "Collector time duration.",
        );
        for (label, secs) in durations {
            duration.push([("collector", label)], secs);
        }
        families.push(duration);
        let mut scrape_errors = MetricFamily::counter(
            "mysql_exporter_scrape_errors_total",
            "Total number of times an error occurred scraping a MySQL.",
        );
        for (collector, count) in &state.scrape_errors {
            scrape_errors.push([("collector", collector.clone())], *count);
        }
        families.push(scrape_errors);
        families.push(
            MetricFamily::gauge(
                "mysql_exporter_last_scrape_error",
                "Whether the last scrape of metrics from MySQL resulted in an error (1 for error, 0 for success).",
            )
            .value(if errors.is_empty() { 0.0 } else { 1.0 }),
        );
        families.push(
            MetricFamily::counter(
                "mysql_exporter_scrapes_total",
                "Total number of times MySQL was scraped for metrics.",
            )
            .value(state.scrapes_total),
        );
        families.push(
            MetricFamily::gauge("mysql_up", "Whether the MySQL server is up.").value(if up {
                1.0
            } else {
                0.0
            }),
        );
        finish(&mut families, self.target_label.as_deref());

        let error = if errors.is_empty() {
            state.last_logged = None;
            None
        } else {
            let message = format!(
                "mysql target {:?} ({}): {}",
                self.target.name,
                self.target.address(),
                errors.join("; ")
            );
            self.log_error(&mut state, &message);
            Some(CollectError::failed(message))
        };
        Ok(Collected { families, error })
    }
}

/// Adds the `target` label when several targets share a scrape, and sorts
/// label names as client_golang writes them.
pub(crate) fn finish(families: &mut [MetricFamily], target: Option<&str>) {
    for family in families.iter_mut() {
        for sample in family.samples.iter_mut() {
            if let Some(t) = target {
                sample.labels.push((Cow::Borrowed("target"), t.to_string()));
            }
            sample.labels.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let t = MysqlScrapeTarget {
            name: String::new(),
            host: String::new(),
            port: 0,
            user: String::new(),
            connect_timeout_secs: 0.0,
            ..MysqlScrapeTarget::default()
        };
        let errors = t.validate();
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors[0].starts_with("name:"));
        let ok = MysqlScrapeTarget {
            name: "db".into(),
            ..MysqlScrapeTarget::default()
        };
        assert!(ok.validate().is_empty());
    }

    #[tokio::test]
    async fn refused_connection_reports_up_zero_quickly() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = MysqlScrapeTarget {
            name: "down".into(),
            port,
            password: Some("s3cret-value".into()),
            ..MysqlScrapeTarget::default()
        };
        let c = &collectors(&[target])[0];
        let started = Instant::now();
        let got = c
            .collect(CollectContext::with_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        let text = crate::exposition::encode(&got.families);
        assert!(text.contains("mysql_up 0"), "{text}");
        assert!(text.contains("mysql_exporter_scrape_errors_total{collector=\"connection\"} 1"));
        let err = got.error.unwrap().to_string();
        assert!(err.contains("\"down\""), "{err}");
        assert!(!err.contains("s3cret-value"));
    }
}
