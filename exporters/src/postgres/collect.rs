//! One scrape of a PostgreSQL server: the queries of postgres_exporter
//! 0.11's builtin namespaces, settings, database sizes, bgwriter (and
//! checkpointer) counters and server state, mapped to its families. A query
//! that fails leaves its families out and is counted in
//! `pg_exporter_scrape_errors_total{collector}`; the scrape still returns
//! what it has together with the error (a partial [`Collected`]), and when
//! the server cannot be reached at all `pg_up 0` is still exported.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_postgres::Client;

use super::families::{self, Namespace};
use super::session::{text_query, Failure, Session};
use super::PostgresCollector;
use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::{Labels, MetricFamily, MetricType};
use crate::mysql::families::FamilySet;

impl PostgresCollector {
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
    use crate::postgres::{collectors, PostgresScrapeTarget};

    #[tokio::test]
    async fn refused_connection_reports_up_zero_quickly() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = PostgresScrapeTarget {
            name: "down".into(),
            port,
            password: Some("s3cret-value".into()),
            ..PostgresScrapeTarget::default()
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
