//! PostgreSQL metrics with postgres_exporter 0.11's names, types and labels
//! (pg_up, pg_static, pg_settings_*, pg_stat_database*, pg_stat_activity,
//! pg_locks, pg_stat_replication, pg_replication_slots, pg_stat_archiver,
//! pg_database_size_bytes, pg_stat_bgwriter_* and on PostgreSQL 17 the
//! checkpointer view), plus postmaster start time and replication lag, over
//! one long-lived connection per target that is re-opened when lost.

pub mod families;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::{Labels, MetricFamily, MetricType};
use crate::mysql::families::{FamilySet, TextRows};
use families::Namespace;

/// One `[[postgres]]` entry: a PostgreSQL server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// Name of this target, used in `/health`, logs and (with several
    /// targets) as the `target` label.
    #[serde(default)]
    pub name: String,
    /// Secret: a full libpq URL or key=value string
    /// (`postgres://user:pw@host:5432/db`). When set, the host, port, user,
    /// password and database keys must not be.
    #[serde(default)]
    pub dsn: Option<String>,
    /// Host name, IP address, or the directory of the unix socket
    /// (e.g. `/var/run/postgresql`).
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    /// Secret: prefer `password_file` or `${ENV}`. Not needed with peer
    /// authentication over the unix socket.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// `statement_timeout` of Steward's session, so no statistics query
    /// keeps running on the server after a scrape gave up.
    #[serde(default = "default_statement_timeout_secs")]
    pub statement_timeout_secs: f64,
    /// Export `pg_settings_*` (postgres_exporter's
    /// `--disable-settings-metrics` turns it off).
    #[serde(default = "default_true")]
    pub settings: bool,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "exporter".into()
}
fn default_database() -> String {
    "postgres".into()
}
fn default_connect_timeout_secs() -> f64 {
    5.0
}
fn default_statement_timeout_secs() -> f64 {
    10.0
}
fn default_true() -> bool {
    true
}

impl Default for PostgresTarget {
    fn default() -> Self {
        PostgresTarget {
            name: String::new(),
            dsn: None,
            host: default_host(),
            port: default_port(),
            user: default_user(),
            password: None,
            database: default_database(),
            connect_timeout_secs: default_connect_timeout_secs(),
            statement_timeout_secs: default_statement_timeout_secs(),
            settings: true,
        }
    }
}

impl PostgresTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must be set (used in /health, logs and labels)".into());
        }
        if let Some(dsn) = &self.dsn {
            // Never echo the DSN: it holds the password.
            match tokio_postgres::Config::from_str(dsn) {
                Err(_) => errors.push(
                    "dsn: not a valid PostgreSQL URL or key=value string (value not shown: it is a secret)".into(),
                ),
                Ok(cfg) => {
                    if cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                        errors.push("dsn: sslmode=require is not supported; connect over loopback or the unix socket with sslmode=disable".into());
                    }
                }
            }
            let defaults = PostgresTarget::default();
            if self.host != defaults.host
                || self.port != defaults.port
                || self.user != defaults.user
                || self.password.is_some()
                || self.database != defaults.database
            {
                errors.push(
                    "dsn: set either dsn or host/port/user/password/database, not both".into(),
                );
            }
        } else {
            if self.host.trim().is_empty() {
                errors.push("host: must be set".into());
            }
            if self.port == 0 {
                errors.push("port: must be 1-65535".into());
            }
            if self.user.is_empty() {
                errors.push("user: must be set".into());
            }
            if self.database.is_empty() {
                errors.push("database: must be set".into());
            }
        }
        if !(self.connect_timeout_secs.is_finite() && self.connect_timeout_secs > 0.0) {
            errors.push("connect_timeout_secs: must be a positive number of seconds".into());
        }
        if !(self.statement_timeout_secs.is_finite() && self.statement_timeout_secs > 0.0) {
            errors.push("statement_timeout_secs: must be a positive number of seconds".into());
        }
        errors
    }

    /// The driver configuration (may hold the password: never print it).
    fn config(&self) -> Result<tokio_postgres::Config, String> {
        let mut cfg = match &self.dsn {
            Some(dsn) => tokio_postgres::Config::from_str(dsn)
                .map_err(|_| "dsn is not a valid PostgreSQL URL".to_string())?,
            None => {
                let mut cfg = tokio_postgres::Config::new();
                if self.host.starts_with('/') {
                    cfg.host_path(PathBuf::from(&self.host));
                } else {
                    cfg.host(&self.host);
                }
                cfg.port(self.port).user(&self.user).dbname(&self.database);
                if let Some(pw) = &self.password {
                    cfg.password(pw.as_bytes());
                }
                cfg
            }
        };
        cfg.application_name("steward")
            .connect_timeout(Duration::from_secs_f64(
                self.connect_timeout_secs.max(0.001),
            ))
            .options(format!(
                "-c statement_timeout={}",
                (self.statement_timeout_secs * 1000.0).max(1.0) as u64
            ));
        Ok(cfg)
    }

    /// postgres_exporter's `server` label: `host:port` of the connection.
    fn fingerprint(&self) -> String {
        let Ok(cfg) = self.config() else {
            return "localhost:5432".into();
        };
        let host = match cfg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }
}

/// Builds one collector per configured target. With several targets every
/// series carries `target="<name>"` so they stay distinct in one scrape.
pub fn collectors(targets: &[PostgresTarget]) -> Vec<Arc<dyn Collector>> {
    let several = targets.len() > 1;
    targets
        .iter()
        .map(|t| {
            Arc::new(PostgresCollector {
                server: t.fingerprint(),
                target: t.clone(),
                target_label: several.then(|| t.name.clone()),
                state: tokio::sync::Mutex::new(State::default()),
            }) as Arc<dyn Collector>
        })
        .collect()
}

/// What is learnt once per connection.
struct Session {
    client: Client,
    version: String,
    version_num: u64,
    /// SELECT lists for the views read with `SELECT *` by the anchor, with
    /// timestamps as unix seconds and booleans as 0/1.
    select_lists: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    session: Option<Session>,
    scrapes_total: f64,
    scrape_errors: BTreeMap<String, f64>,
    last_logged: Option<String>,
}

/// Collects one PostgreSQL target.
pub struct PostgresCollector {
    target: PostgresTarget,
    server: String,
    target_label: Option<String>,
    state: tokio::sync::Mutex<State>,
}

/// A failed query; `closed` means the connection is gone.
struct Failure {
    message: String,
    closed: bool,
}

async fn text_query(client: &Client, sql: &str, deadline: Instant) -> Result<TextRows, Failure> {
    match tokio::time::timeout_at(deadline.into(), client.simple_query(sql)).await {
        Err(_) => Err(Failure {
            message: "query did not finish before the scrape deadline".into(),
            closed: true,
        }),
        Ok(Err(e)) => Err(Failure {
            message: db_error_text(&e),
            closed: e.is_closed(),
        }),
        Ok(Ok(messages)) => {
            let mut out = TextRows::default();
            for m in messages {
                match m {
                    SimpleQueryMessage::RowDescription(cols) if out.columns.is_empty() => {
                        out.columns = cols.iter().map(|c| c.name().to_string()).collect();
                    }
                    SimpleQueryMessage::Row(row) => {
                        if out.columns.is_empty() {
                            out.columns =
                                row.columns().iter().map(|c| c.name().to_string()).collect();
                        }
                        out.rows.push(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_string))
                                .collect(),
                        );
                    }
                    _ => {}
                }
            }
            Ok(out)
        }
    }
}

/// The server's message when there is one (e.g. `password authentication
/// failed for user "x"`), otherwise the driver's.
fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                source = s.source();
            }
            msg
        }
    }
}

/// Views the anchor reads with `SELECT *`; their column lists come from the
/// catalog so new PostgreSQL versions add (untyped) metrics, as with it.
const STAR_VIEWS: [&str; 4] = [
    "pg_stat_database",
    "pg_stat_database_conflicts",
    "pg_stat_replication",
    "pg_stat_archiver",
];

impl PostgresCollector {
    async fn connect(&self, deadline: Instant) -> Result<Session, String> {
        let cfg = self.target.config()?;
        let window = Duration::from_secs_f64(self.target.connect_timeout_secs.max(0.001));
        let connect_deadline = deadline.min(Instant::now() + window);
        let (client, connection) =
            match tokio::time::timeout_at(connect_deadline.into(), cfg.connect(NoTls)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(format!("cannot connect: {}", db_error_text(&e))),
                Err(_) => {
                    return Err(format!(
                        "cannot connect: no answer within {:.1}s",
                        window.as_secs_f64()
                    ))
                }
            };
        // The connection task ends when the server closes the socket;
        // the client then reports is_closed() and we reconnect.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let fail = |f: Failure| format!("after connecting: {}", f.message);
        let version = text_query(
            &client,
            "SELECT version(), current_setting('server_version_num')",
            deadline,
        )
        .await
        .map_err(fail)?;
        let row = version.rows.first().cloned().unwrap_or_default();
        let version_text = row.first().cloned().flatten().unwrap_or_default();
        let version_num = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let list = STAR_VIEWS
            .iter()
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(",");
        let columns = text_query(
            &client,
            &format!(
                "SELECT c.relname, a.attname, t.typname FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                 WHERE n.nspname = 'pg_catalog' AND c.relname IN ({list}) \
                 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
            ),
            deadline,
        )
        .await
        .map_err(fail)?;
        let mut select_lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in &columns.rows {
            let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let (view, column, typ) = (get(0), get(1), get(2));
            let quoted = format!("\"{}\"", column.replace('"', "\"\""));
            let expr = match typ.as_str() {
                // lib/pq hands the anchor time.Time, which it writes as
                // whole unix seconds.
                "timestamptz" | "timestamp" => {
                    format!("floor(extract(epoch from {quoted}))::float8 AS {quoted}")
                }
                "bool" => format!("{quoted}::int AS {quoted}"),
                _ => quoted,
            };
            select_lists.entry(view).or_default().push(expr);
        }
        Ok(Session {
            client,
            version: version_text,
            version_num,
            select_lists: select_lists
                .into_iter()
                .map(|(k, v)| (k, v.join(", ")))
                .collect(),
        })
    }

    /// A usable session: the kept one if its connection still answers.
    async fn ensure_session(&self, state: &mut State, deadline: Instant) -> Result<(), String> {
        if let Some(session) = &state.session {
            if !session.client.is_closed()
                && text_query(&session.client, "SELECT 1", deadline)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            state.session = None;
        }
        state.session = Some(self.connect(deadline).await?);
        Ok(())
    }

    fn labels(&self) -> Labels {
        vec![("server".into(), self.server.clone())]
    }

    /// The anchor's builtin namespaces, each with its query.
    fn namespace_queries(&self, session: &Session) -> Vec<(&'static Namespace, String)> {
        let star = |view: &str| {
            session
                .select_lists
                .get(view)
                .cloned()
                .unwrap_or_else(|| "*".into())
        };
        vec![
            (&families::PG_STAT_DATABASE, format!("SELECT {} FROM pg_stat_database", star("pg_stat_database"))),
            (
                &families::PG_STAT_DATABASE_CONFLICTS,
                format!("SELECT {} FROM pg_stat_database_conflicts", star("pg_stat_database_conflicts")),
            ),
            (
                &families::PG_LOCKS,
                "SELECT pg_database.datname, tmp.mode, COALESCE(count, 0) AS count \
                 FROM (VALUES ('accesssharelock'), ('rowsharelock'), ('rowexclusivelock'), \
                 ('shareupdateexclusivelock'), ('sharelock'), ('sharerowexclusivelock'), \
                 ('exclusivelock'), ('accessexclusivelock'), ('sireadlock')) AS tmp(mode) \
                 CROSS JOIN pg_database \
                 LEFT JOIN (SELECT database, lower(mode) AS mode, count(*) AS count \
                 FROM pg_locks WHERE database IS NOT NULL GROUP BY database, lower(mode)) AS tmp2 \
                 ON tmp.mode = tmp2.mode AND pg_database.oid = tmp2.database ORDER BY 1"
                    .into(),
            ),
            (
                &families::PG_STAT_REPLICATION,
                format!(
                    "SELECT {}, \
                     (CASE pg_is_in_recovery() WHEN 't' THEN NULL ELSE pg_current_wal_lsn() END) AS pg_current_wal_lsn, \
                     (CASE pg_is_in_recovery() WHEN 't' THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), pg_lsn('0/0'))::float END) AS pg_current_wal_lsn_bytes, \
                     (CASE pg_is_in_recovery() WHEN 't' THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float END) AS pg_wal_lsn_diff \
                     FROM pg_stat_replication",
                    star("pg_stat_replication")
                ),
            ),
            (
                &families::PG_REPLICATION_SLOTS,
                // On a replica pg_current_wal_lsn() fails; NULL (NaN) instead.
                "SELECT slot_name, database, active::int AS active, \
                 (CASE pg_is_in_recovery() WHEN 't' THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) END) AS pg_wal_lsn_diff \
                 FROM pg_replication_slots"
                    .into(),
            ),
            (
                &families::PG_STAT_ARCHIVER,
                format!(
                    "SELECT {}, extract(epoch from now() - last_archived_time) AS last_archive_age FROM pg_stat_archiver",
                    star("pg_stat_archiver")
                ),
            ),
            (
                &families::PG_STAT_ACTIVITY,
                "SELECT pg_database.datname, tmp.state, COALESCE(count, 0) AS count, \
                 COALESCE(max_tx_duration, 0) AS max_tx_duration \
                 FROM (VALUES ('active'), ('idle'), ('idle in transaction'), \
                 ('idle in transaction (aborted)'), ('fastpath function call'), ('disabled')) AS tmp(state) \
                 CROSS JOIN pg_database \
                 LEFT JOIN (SELECT datname, state, count(*) AS count, \
                 MAX(EXTRACT(EPOCH FROM now() - xact_start))::float AS max_tx_duration \
                 FROM pg_stat_activity GROUP BY datname, state) AS tmp2 \
                 ON tmp.state = tmp2.state AND pg_database.datname = tmp2.datname"
                    .into(),
            ),
        ]
    }

    /// pg_settings_* gauges.
    async fn settings(
        &self,
        client: &Client,
        deadline: Instant,
        out: &mut FamilySet,
    ) -> Result<(), Failure> {
        let rows = text_query(
            client,
            "SELECT name, setting, COALESCE(unit, ''), short_desc, vartype FROM pg_settings \
             WHERE vartype IN ('bool', 'integer', 'real') AND name != 'sync_commit_cancel_wait'",
            deadline,
        )
        .await?;
        for row in &rows.rows {
            let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            if let Some((name, help, value)) =
                families::setting(&get(0), &get(1), &get(2), &get(3), &get(4))
            {
                out.add(&name, &help, MetricType::Gauge, self.labels(), value);
            }
        }
        Ok(())
    }

    /// The anchor's `database` collector.
    async fn database_sizes(
        &self,
        client: &Client,
        deadline: Instant,
        out: &mut FamilySet,
    ) -> Result<(), Failure> {
        let rows = text_query(
            client,
            "SELECT pg_database.datname, pg_database_size(pg_database.datname) FROM pg_database",
            deadline,
        )
        .await?;
        for row in &rows.rows {
            let name = row.first().cloned().flatten().unwrap_or_default();
            let size = row
                .get(1)
                .cloned()
                .flatten()
                .and_then(|v| families::parse_float(&v))
                .unwrap_or(f64::NAN);
            let mut labels = self.labels();
            labels.push(("datname".into(), name));
            out.add(
                "pg_database_size_bytes",
                "Disk space used by the database",
                MetricType::Gauge,
                labels,
                size,
            );
        }
        Ok(())
    }

    /// The anchor's `bgwriter` collector; PostgreSQL 17 moved the
    /// checkpoint columns to pg_stat_checkpointer.
    async fn bgwriter(
        &self,
        session: &Session,
        deadline: Instant,
        out: &mut FamilySet,
    ) -> Result<(), Failure> {
        let pg17 = session.version_num >= 170_000;
        let bg_cols: &[(&str, &str, &str)] = &[
            ("checkpoints_timed", "checkpoints_timed_total", "Number of scheduled checkpoints that have been performed"),
            ("checkpoints_req", "checkpoints_req_total", "Number of requested checkpoints that have been performed"),
            ("checkpoint_write_time", "checkpoint_write_time_total", "Total amount of time that has been spent in the portion of checkpoint processing where files are written to disk, in milliseconds"),
            ("checkpoint_sync_time", "checkpoint_sync_time_total", "Total amount of time that has been spent in the portion of checkpoint processing where files are synchronized to disk, in milliseconds"),
            ("buffers_checkpoint", "buffers_checkpoint_total", "Number of buffers written during checkpoints"),
            ("buffers_clean", "buffers_clean_total", "Number of buffers written by the background writer"),
            ("maxwritten_clean", "maxwritten_clean_total", "Number of times the background writer stopped a cleaning scan because it had written too many buffers"),
            ("buffers_backend", "buffers_backend_total", "Number of buffers written directly by a backend"),
            ("buffers_backend_fsync", "buffers_backend_fsync_total", "Number of times a backend had to execute its own fsync call (normally the background writer handles those even when the backend does its own write)"),
            ("buffers_alloc", "buffers_alloc_total", "Number of buffers allocated"),
            ("stats_reset", "stats_reset_total", "Time at which these statistics were last reset"),
        ];
        let pg17_bg = [
            "buffers_clean",
            "maxwritten_clean",
            "buffers_alloc",
            "stats_reset",
        ];
        let selected: Vec<&(&str, &str, &str)> = bg_cols
            .iter()
            .filter(|c| !pg17 || pg17_bg.contains(&c.0))
            .collect();
        self.single_row(
            &session.client,
            "pg_stat_bgwriter",
            "pg_stat_bgwriter",
            &selected,
            deadline,
            out,
        )
        .await?;
        if pg17 {
            let cp_cols: &[(&str, &str, &str)] = &[
                ("num_timed", "num_timed_total", "Number of scheduled checkpoints due to timeout"),
                ("num_requested", "num_requested_total", "Number of requested checkpoints that have been performed"),
                ("restartpoints_timed", "restartpoints_timed_total", "Number of scheduled restartpoints due to timeout or after a failed attempt to perform it"),
                ("restartpoints_req", "restartpoints_req_total", "Number of requested restartpoints"),
                ("restartpoints_done", "restartpoints_done_total", "Number of restartpoints that have been performed"),
                ("write_time", "write_time_total", "Total amount of time that has been spent in the portion of processing checkpoints and restartpoints where files are written to disk, in milliseconds"),
                ("sync_time", "sync_time_total", "Total amount of time that has been spent in the portion of processing checkpoints and restartpoints where files are synchronized to disk, in milliseconds"),
                ("buffers_written", "buffers_written_total", "Number of buffers written during checkpoints and restartpoints"),
                ("stats_reset", "stats_reset_total", "Time at which these statistics were last reset"),
            ];
            let selected: Vec<&(&str, &str, &str)> = cp_cols.iter().collect();
            self.single_row(
                &session.client,
                "pg_stat_checkpointer",
                "pg_stat_checkpointer",
                &selected,
                deadline,
                out,
            )
            .await?;
        }
        Ok(())
    }

    /// Reads one row of `view` and writes each column as a counter
    /// `<prefix>_<suffix>`; `stats_reset` as unix seconds.
    async fn single_row(
        &self,
        client: &Client,
        view: &str,
        prefix: &str,
        columns: &[&(&str, &str, &str)],
        deadline: Instant,
        out: &mut FamilySet,
    ) -> Result<(), Failure> {
        let list = columns
            .iter()
            .map(|(c, _, _)| {
                if *c == "stats_reset" {
                    "floor(extract(epoch from stats_reset))::float8".to_string()
                } else {
                    (*c).to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rows = text_query(client, &format!("SELECT {list} FROM {view}"), deadline).await?;
        let Some(row) = rows.rows.first() else {
            return Ok(());
        };
        for (i, (_, suffix, help)) in columns.iter().enumerate() {
            let value = row
                .get(i)
                .cloned()
                .flatten()
                .and_then(|v| families::parse_float(&v))
                .unwrap_or(f64::NAN);
            out.add(
                &format!("{prefix}_{suffix}"),
                help,
                MetricType::Counter,
                self.labels(),
                value,
            );
        }
        Ok(())
    }

    /// Postmaster start time and replication state (postgres_exporter's
    /// later `postmaster` and `replication` collectors, with the `server`
    /// label of 0.11).
    async fn server_state(
        &self,
        client: &Client,
        deadline: Instant,
        out: &mut FamilySet,
    ) -> Result<(), Failure> {
        let rows = text_query(
            client,
            "SELECT extract(epoch from pg_postmaster_start_time())::float8, \
             CASE WHEN NOT pg_is_in_recovery() THEN 0 \
             WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
             ELSE GREATEST(0, extract(epoch from (now() - pg_last_xact_replay_timestamp()))) END::float8, \
             CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END, \
             GREATEST(0, extract(epoch from (now() - pg_last_xact_replay_timestamp())))::float8",
            deadline,
        )
        .await?;
        let row = rows.rows.first().cloned().unwrap_or_default();
        let value = |i: usize| {
            row.get(i)
                .cloned()
                .flatten()
                .and_then(|v| families::parse_float(&v))
                .unwrap_or(f64::NAN)
        };
        let gauges = [
            (
                0,
                "pg_postmaster_start_time_seconds",
                "Time at which postmaster started",
            ),
            (
                1,
                "pg_replication_lag_seconds",
                "Replication lag behind master in seconds",
            ),
            (
                2,
                "pg_replication_is_replica",
                "Indicates if the server is a replica",
            ),
            (
                3,
                "pg_replication_last_replay_seconds",
                "Age of last replay in seconds",
            ),
        ];
        for (i, name, help) in gauges {
            out.add(name, help, MetricType::Gauge, self.labels(), value(i));
        }
        Ok(())
    }

    fn log_error(&self, state: &mut State, message: &str) {
        if state.last_logged.as_deref() != Some(message) {
            tracing::warn!(target_name = %self.target.name, server = %self.server, error = %message, "postgres target failed");
            state.last_logged = Some(message.to_string());
        }
    }
}

#[async_trait]
impl Collector for PostgresCollector {
    fn name(&self) -> &str {
        "postgres"
    }

    fn instance(&self) -> Option<&str> {
        Some(&self.target.name)
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let remaining = ctx.remaining();
        // Finish before the scraper's own timeout so `pg_up 0` is reported.
        let deadline = Instant::now()
            + remaining.saturating_sub((remaining / 10).min(Duration::from_millis(500)));
        let started = Instant::now();
        let Ok(mut state) = tokio::time::timeout_at(deadline.into(), self.state.lock()).await
        else {
            let mut families = vec![pg_up(0.0)];
            crate::mysql::finish(&mut families, self.target_label.as_deref());
            return Ok(Collected {
                families,
                error: Some(CollectError::failed(format!(
                    "postgres target {:?}: a previous scrape still holds the connection",
                    self.target.name
                ))),
            });
        };
        state.scrapes_total += 1.0;
        let mut out = FamilySet::default();
        let mut errors: Vec<String> = Vec::new();
        let mut collector_status: Vec<(&'static str, f64, bool)> = Vec::new();

        let up = match self.ensure_session(&mut state, deadline).await {
            Ok(()) => true,
            Err(e) => {
                *state.scrape_errors.entry("connection".into()).or_default() += 1.0;
                errors.push(e);
                false
            }
        };

        if let (true, Some(session)) = (up, state.session.take()) {
            let mut lost = false;
            let mut note = |part: &str,
                            result: Result<(), Failure>,
                            errors: &mut Vec<String>,
                            scrape_errors: &mut BTreeMap<String, f64>|
             -> bool {
                match result {
                    Ok(()) => true,
                    Err(f) => {
                        lost |= f.closed;
                        *scrape_errors.entry(part.to_string()).or_default() += 1.0;
                        errors.push(format!("{part}: {}", f.message));
                        false
                    }
                }
            };
            let mut scrape_errors = std::mem::take(&mut state.scrape_errors);

            let mut static_labels = self.labels();
            static_labels.push((
                "short_version".into(),
                families::short_version(&session.version).unwrap_or_default(),
            ));
            static_labels.push(("version".into(), session.version.clone()));
            out.add(
                "pg_static",
                "Version string as reported by postgres",
                MetricType::Untyped,
                static_labels,
                1.0,
            );

            if self.target.settings {
                let r = self.settings(&session.client, deadline, &mut out).await;
                note("settings", r, &mut errors, &mut scrape_errors);
            }
            for (ns, sql) in self.namespace_queries(&session) {
                let r = match text_query(&session.client, &sql, deadline).await {
                    Ok(rows) => {
                        families::map_namespace(ns, &rows, &self.server, &mut out);
                        Ok(())
                    }
                    Err(f) => Err(f),
                };
                note(ns.name, r, &mut errors, &mut scrape_errors);
            }
            let t0 = Instant::now();
            let r = self.bgwriter(&session, deadline, &mut out).await;
            let ok = note("bgwriter", r, &mut errors, &mut scrape_errors);
            collector_status.push(("bgwriter", t0.elapsed().as_secs_f64(), ok));
            let t0 = Instant::now();
            let r = self
                .database_sizes(&session.client, deadline, &mut out)
                .await;
            let ok = note("database", r, &mut errors, &mut scrape_errors);
            collector_status.push(("database", t0.elapsed().as_secs_f64(), ok));
            let r = self.server_state(&session.client, deadline, &mut out).await;
            note("replication", r, &mut errors, &mut scrape_errors);

            state.scrape_errors = scrape_errors;
            if !lost && !session.client.is_closed() {
                state.session = Some(session);
            }
        }

        let mut families = out.into_vec();
        if !collector_status.is_empty() {
            let mut duration = MetricFamily::gauge(
                "pg_scrape_collector_duration_seconds",
                "postgres_exporter: Duration of a collector scrape.",
            );
            let mut success = MetricFamily::gauge(
                "pg_scrape_collector_success",
                "postgres_exporter: Whether a collector succeeded.",
            );
            for (name, secs, ok) in collector_status {
                duration.push([("collector", name)], secs);
                success.push([("collector", name)], if ok { 1.0 } else { 0.0 });
            }
            families.push(duration);
            families.push(success);
        }
        let mut scrape_errors = MetricFamily::counter(
            "pg_exporter_scrape_errors_total",
            "Total number of times an error occurred scraping PostgreSQL, by part (Steward addition).",
        );
        for (part, count) in &state.scrape_errors {
            scrape_errors.push([("collector", part.clone())], *count);
        }
        families.push(scrape_errors);
        families.push(
            MetricFamily::gauge(
                "pg_exporter_last_scrape_duration_seconds",
                "Duration of the last scrape of metrics from PostgreSQL.",
            )
            .value(started.elapsed().as_secs_f64()),
        );
        families.push(
            MetricFamily::gauge(
                "pg_exporter_last_scrape_error",
                "Whether the last scrape of metrics from PostgreSQL resulted in an error (1 for error, 0 for success).",
            )
            .value(if errors.is_empty() { 0.0 } else { 1.0 }),
        );
        families.push(
            MetricFamily::counter(
                "pg_exporter_scrapes_total",
                "Total number of times PostgreSQL was scraped for metrics.",
            )
            .value(state.scrapes_total),
        );
        families.push(pg_up(if up { 1.0 } else { 0.0 }));
        crate::mysql::finish(&mut families, self.target_label.as_deref());

        let error = if errors.is_empty() {
            state.last_logged = None;
            None
        } else {
            let message = format!(
                "postgres target {:?} ({}): {}",
                self.target.name,
                self.server,
                errors.join("; ")
            );
            self.log_error(&mut state, &message);
            Some(CollectError::failed(message))
        };
        Ok(Collected { families, error })
    }
}

fn pg_up(value: f64) -> MetricFamily {
    MetricFamily::gauge(
        "pg_up",
        "Whether the last scrape of metrics from PostgreSQL was able to connect to the server (1 for yes, 0 for no).",
    )
    .value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let t = PostgresTarget {
            dsn: Some("postgres://u:hunter2@h:5432/db".into()),
            password: Some("x".into()),
            statement_timeout_secs: -1.0,
            ..PostgresTarget::default()
        };
        let errors = t.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("hunter2")));
        let bad_dsn = PostgresTarget {
            name: "x".into(),
            dsn: Some("postgres://u:hunter2@[bad".into()),
            ..PostgresTarget::default()
        };
        let errors = bad_dsn.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(!errors[0].contains("hunter2"));
        let ok = PostgresTarget {
            name: "db".into(),
            ..PostgresTarget::default()
        };
        assert!(ok.validate().is_empty());
    }

    #[test]
    fn server_label_is_host_and_port() {
        let t = PostgresTarget {
            dsn: Some("postgres://u:p@db.example:6543/x".into()),
            ..PostgresTarget::default()
        };
        assert_eq!(t.fingerprint(), "db.example:6543");
        let t = PostgresTarget {
            host: "/var/run/postgresql".into(),
            ..PostgresTarget::default()
        };
        assert_eq!(t.fingerprint(), "/var/run/postgresql:5432");
    }

    #[tokio::test]
    async fn refused_connection_reports_up_zero_quickly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = PostgresTarget {
            name: "down".into(),
            port,
            password: Some("s3cret-value".into()),
            ..PostgresTarget::default()
        };
        let c = &collectors(&[target])[0];
        let got = c
            .collect(CollectContext::with_timeout(Duration::from_secs(2)))
            .await
            .unwrap();
        let text = crate::exposition::encode(&got.families);
        assert!(text.contains("pg_up 0"), "{text}");
        let err = got.error.unwrap().to_string();
        assert!(err.contains("\"down\""), "{err}");
        assert!(!err.contains("s3cret-value"));
    }
}
