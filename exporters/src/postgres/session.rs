//! The long-lived connection to one PostgreSQL server: opening it (with the
//! catalog lookups done once per connection), checking it still answers
//! before each scrape, and running text queries under the scrape deadline.
//! One connection is kept because opening one per scrape costs the server a
//! backend process each time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::PostgresCollector;
use crate::mysql::families::TextRows;

/// What is learnt once per connection.
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) version: String,
    pub(super) version_num: u64,
    /// SELECT lists for the views read with `SELECT *` by the anchor, with
    /// timestamps as unix seconds and booleans as 0/1.
    pub(super) select_lists: BTreeMap<String, String>,
}

/// What a collector keeps between scrapes: the session (if it still
/// answers) and the self-metrics' counters.
#[derive(Default)]
pub(super) struct State {
    pub(super) session: Option<Session>,
    pub(super) scrapes_total: f64,
    pub(super) scrape_errors: BTreeMap<String, f64>,
    pub(super) last_logged: Option<String>,
}

/// A failed query; `closed` means the connection is gone.
pub(super) struct Failure {
    pub(super) message: String,
    pub(super) closed: bool,
}

pub(super) async fn text_query(
    client: &Client,
    sql: &str,
    deadline: Instant,
) -> Result<TextRows, Failure> {
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
    pub(super) async fn ensure_session(
        &self,
        state: &mut State,
        deadline: Instant,
    ) -> Result<(), String> {
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

    pub(super) fn log_error(&self, state: &mut State, message: &str) {
        if state.last_logged.as_deref() != Some(message) {
            tracing::warn!(target_name = %self.target.name, server = %self.server, error = %message, "postgres target failed");
            state.last_logged = Some(message.to_string());
        }
    }
}
