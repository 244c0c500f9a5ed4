//! postgres_exporter 0.11's metric mapping as data: which columns of which
//! statistics views become counters, gauges or labels, how unknown columns
//! become untyped metrics, and how `pg_settings` rows become
//! `pg_settings_<name>[_seconds|_bytes]` gauges.

use std::borrow::Cow;

use crate::metrics::{Labels, MetricType};
use crate::mysql::families::{FamilySet, TextRows};

/// How a column is used (postgres_exporter's ColumnUsage).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Usage {
    Label,
    Discard,
    Counter,
    Gauge,
}

use Usage::*;

/// One namespace: its metric prefix and its known columns.
pub struct Namespace {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Usage, &'static str)],
}

pub const PG_STAT_DATABASE: Namespace = Namespace {
    name: "pg_stat_database",
    columns: &[
        ("datid", Label, "OID of a database"),
        ("datname", Label, "Name of this database"),
        ("numbackends", Gauge, "Number of backends currently connected to this database. This is the only column in this view that returns a value reflecting current state; all other columns return the accumulated values since the last reset."),
        ("xact_commit", Counter, "Number of transactions in this database that have been committed"),
        ("xact_rollback", Counter, "Number of transactions in this database that have been rolled back"),
        ("blks_read", Counter, "Number of disk blocks read in this database"),
        ("blks_hit", Counter, "Number of times disk blocks were found already in the buffer cache, so that a read was not necessary (this only includes hits in the PostgreSQL buffer cache, not the operating system's file system cache)"),
        ("tup_returned", Counter, "Number of rows returned by queries in this database"),
        ("tup_fetched", Counter, "Number of rows fetched by queries in this database"),
        ("tup_inserted", Counter, "Number of rows inserted by queries in this database"),
        ("tup_updated", Counter, "Number of rows updated by queries in this database"),
        ("tup_deleted", Counter, "Number of rows deleted by queries in this database"),
        ("conflicts", Counter, "Number of queries canceled due to conflicts with recovery in this database. (Conflicts occur only on standby servers; see pg_stat_database_conflicts for details.)"),
        ("temp_files", Counter, "Number of temporary files created by queries in this database. All temporary files are counted, regardless of why the temporary file was created (e.g., sorting or hashing), and regardless of the log_temp_files setting."),
        ("temp_bytes", Counter, "Total amount of data written to temporary files by queries in this database. All temporary files are counted, regardless of why the temporary file was created, and regardless of the log_temp_files setting."),
        ("deadlocks", Counter, "Number of deadlocks detected in this database"),
        ("blk_read_time", Counter, "Time spent reading data file blocks by backends in this database, in milliseconds"),
        ("blk_write_time", Counter, "Time spent writing data file blocks by backends in this database, in milliseconds"),
        ("stats_reset", Counter, "Time at which these statistics were last reset"),
    ],
};

pub const PG_STAT_DATABASE_CONFLICTS: Namespace = Namespace {
    name: "pg_stat_database_conflicts",
    columns: &[
        ("datid", Label, "OID of a database"),
        ("datname", Label, "Name of this database"),
        (
            "confl_tablespace",
            Counter,
            "Number of queries in this database that have been canceled due to dropped tablespaces",
        ),
        (
            "confl_lock",
            Counter,
            "Number of queries in this database that have been canceled due to lock timeouts",
        ),
        (
            "confl_snapshot",
            Counter,
            "Number of queries in this database that have been canceled due to old snapshots",
        ),
        (
            "confl_bufferpin",
            Counter,
            "Number of queries in this database that have been canceled due to pinned buffers",
        ),
        (
            "confl_deadlock",
            Counter,
            "Number of queries in this database that have been canceled due to deadlocks",
        ),
    ],
};

pub const PG_LOCKS: Namespace = Namespace {
    name: "pg_locks",
    columns: &[
        ("datname", Label, "Name of this database"),
        ("mode", Label, "Type of Lock"),
        ("count", Gauge, "Number of locks"),
    ],
};

pub const PG_STAT_REPLICATION: Namespace = Namespace {
    name: "pg_stat_replication",
    columns: &[
        ("pid", Discard, ""),
        ("usesysid", Discard, ""),
        ("usename", Discard, ""),
        ("application_name", Label, "Name of the application that is connected to this WAL sender"),
        ("client_addr", Label, "IP address of the client connected to this WAL sender. If this field is null, it indicates that the client is connected via a Unix socket on the server machine."),
        ("client_hostname", Discard, ""),
        ("client_port", Discard, ""),
        ("backend_start", Discard, ""),
        ("backend_xmin", Discard, ""),
        ("state", Label, "Current WAL sender state"),
        ("sent_lsn", Discard, ""),
        ("write_lsn", Discard, ""),
        ("flush_lsn", Discard, ""),
        ("replay_lsn", Discard, ""),
        ("sync_priority", Discard, ""),
        ("sync_state", Discard, ""),
        ("slot_name", Label, "A unique, cluster-wide identifier for the replication slot"),
        ("plugin", Discard, ""),
        ("slot_type", Discard, ""),
        ("datoid", Discard, ""),
        ("database", Discard, ""),
        ("active", Discard, ""),
        ("active_pid", Discard, ""),
        ("xmin", Discard, ""),
        ("catalog_xmin", Discard, ""),
        ("restart_lsn", Discard, ""),
        ("pg_current_xlog_location", Discard, ""),
        ("pg_current_wal_lsn", Discard, ""),
        ("pg_current_wal_lsn_bytes", Gauge, "WAL position in bytes"),
        ("pg_wal_lsn_diff", Gauge, "Lag in bytes between master and slave"),
        ("confirmed_flush_lsn", Discard, ""),
        ("write_lag", Discard, ""),
        ("flush_lag", Discard, ""),
        ("replay_lag", Discard, ""),
    ],
};

pub const PG_REPLICATION_SLOTS: Namespace = Namespace {
    name: "pg_replication_slots",
    columns: &[
        ("slot_name", Label, "Name of the replication slot"),
        ("database", Label, "Name of the database"),
        ("active", Gauge, "Flag indicating if the slot is active"),
        ("pg_wal_lsn_diff", Gauge, "Replication lag in bytes"),
    ],
};

pub const PG_STAT_ARCHIVER: Namespace = Namespace {
    name: "pg_stat_archiver",
    columns: &[
        (
            "archived_count",
            Counter,
            "Number of WAL files that have been successfully archived",
        ),
        ("last_archived_wal", Discard, ""),
        ("last_archived_time", Discard, ""),
        (
            "failed_count",
            Counter,
            "Number of failed attempts for archiving WAL files",
        ),
        ("last_failed_wal", Discard, ""),
        ("last_failed_time", Discard, ""),
        ("stats_reset", Discard, ""),
        (
            "last_archive_age",
            Gauge,
            "Time in seconds since last WAL segment was successfully archived",
        ),
    ],
};

pub const PG_STAT_ACTIVITY: Namespace = Namespace {
    name: "pg_stat_activity",
    columns: &[
        ("datname", Label, "Name of this database"),
        ("state", Label, "connection state"),
        ("count", Gauge, "number of connections in this state"),
        (
            "max_tx_duration",
            Gauge,
            "max duration in seconds any active transaction has been running",
        ),
    ],
};

/// Go's `strconv.ParseFloat` for the text PostgreSQL prints.
pub fn parse_float(raw: &str) -> Option<f64> {
    if raw.is_empty() || raw.trim() != raw {
        return None;
    }
    raw.parse::<f64>().ok()
}

/// Applies a namespace mapping to its rows: known columns with their type,
/// unknown numeric columns as untyped "Unknown metric from ...", NULL as
/// NaN, unparsable values skipped. Every sample gets `server`.
pub fn map_namespace(ns: &Namespace, rows: &TextRows, server: &str, out: &mut FamilySet) {
    let label_columns: Vec<&'static str> = ns
        .columns
        .iter()
        .filter(|c| c.1 == Label)
        .map(|c| c.0)
        .collect();
    for row in &rows.rows {
        let mut labels: Labels = label_columns
            .iter()
            .map(|name| {
                // A label column the view lacks reads column 0, as the anchor's
                // index lookup does (pg_stat_replication's slot_name gets the pid).
                let idx = rows.column(name).unwrap_or(0);
                let value = row.get(idx).cloned().flatten().unwrap_or_default();
                (Cow::Borrowed(*name), value)
            })
            .collect();
        labels.push((Cow::Borrowed("server"), server.to_string()));
        for (idx, column) in rows.columns.iter().enumerate() {
            let raw = row.get(idx).cloned().flatten();
            let known = ns.columns.iter().find(|c| c.0 == column);
            let (kind, help) = match known {
                Some((_, Label | Discard, _)) => continue,
                Some((_, Counter, help)) => (MetricType::Counter, Cow::Borrowed(*help)),
                Some((_, Gauge, help)) => (MetricType::Gauge, Cow::Borrowed(*help)),
                None => (
                    MetricType::Untyped,
                    Cow::Owned(format!("Unknown metric from {}", ns.name)),
                ),
            };
            let value = match raw.as_deref() {
                None => f64::NAN,
                Some(text) => match parse_float(text) {
                    Some(v) => v,
                    None => continue,
                },
            };
            out.add(
                &format!("{}_{}", ns.name, column),
                &help,
                kind,
                labels.clone(),
                value,
            );
        }
    }
}

/// One `pg_settings` row (name, setting, unit, short_desc, vartype) as a
/// gauge; `None` for units the anchor does not know.
pub fn setting(
    name: &str,
    setting: &str,
    unit: &str,
    short_desc: &str,
    vartype: &str,
) -> Option<(String, String, f64)> {
    let name = name.replace('.', "_");
    match vartype {
        "bool" => Some((
            format!("pg_settings_{name}"),
            short_desc.to_string(),
            if setting == "on" { 1.0 } else { 0.0 },
        )),
        "integer" | "real" => {
            let mut value = parse_float(setting)?;
            let suffix = match unit {
                "" => "",
                "ms" | "s" | "min" | "h" | "d" => "seconds",
                "B" | "kB" | "MB" | "GB" | "TB" | "8kB" | "16kB" | "32kB" | "16MB" | "32MB"
                | "64MB" => "bytes",
                _ => return None,
            };
            if value != -1.0 {
                value *= match unit {
                    "ms" => 1.0 / 1000.0,
                    "min" => 60.0,
                    "h" => 3600.0,
                    "d" => 86_400.0,
                    "kB" => 1024.0,
                    "MB" => 1024.0 * 1024.0,
                    "GB" => 1024.0 * 1024.0 * 1024.0,
                    "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                    "8kB" => 8192.0,
                    "16kB" => 16_384.0,
                    "32kB" => 32_768.0,
                    "16MB" => 16.0 * 1024.0 * 1024.0,
                    "32MB" => 32.0 * 1024.0 * 1024.0,
                    "64MB" => 64.0 * 1024.0 * 1024.0,
                    _ => 1.0,
                };
            }
            if suffix.is_empty() {
                Some((format!("pg_settings_{name}"), short_desc.to_string(), value))
            } else {
                Some((
                    format!("pg_settings_{name}_{suffix}"),
                    format!("{short_desc} [Units converted to {suffix}.]"),
                    value,
                ))
            }
        }
        _ => None,
    }
}

/// postgres_exporter's short version: the first `N[.N[.N]]` after the
/// product name, padded to three parts ("PostgreSQL 15.4 (Debian...)" ->
/// "15.4.0").
pub fn short_version(version: &str) -> Option<String> {
    let rest = version.split_once(' ')?.1;
    let numeric: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<u64> = numeric
        .split('.')
        .filter(|p| !p.is_empty())
        .take(3)
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<_>>>()?;
    if parts.is_empty() {
        return None;
    }
    let get = |i: usize| parts.get(i).copied().unwrap_or(0);
    Some(format!("{}.{}.{}", get(0), get(1), get(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_convert_units_like_the_anchor() {
        let (n, h, v) = setting("shared_buffers", "16384", "8kB", "Buffers.", "integer").unwrap();
        assert_eq!(n, "pg_settings_shared_buffers_bytes");
        assert_eq!(h, "Buffers. [Units converted to bytes.]");
        assert_eq!(v, 134_217_728.0);
        let (n, _, v) = setting("statement_timeout", "1500", "ms", "", "integer").unwrap();
        assert_eq!(
            (n.as_str(), v),
            ("pg_settings_statement_timeout_seconds", 1.5)
        );
        let (_, _, v) = setting("max_slot_wal_keep_size", "-1", "MB", "", "integer").unwrap();
        assert_eq!(v, -1.0);
        let (n, _, v) = setting("fsync", "on", "", "", "bool").unwrap();
        assert_eq!((n.as_str(), v), ("pg_settings_fsync", 1.0));
        assert!(setting("x", "1", "weird", "", "integer").is_none());
        assert!(setting("x", "a", "", "", "string").is_none());
    }

    #[test]
    fn short_versions() {
        assert_eq!(
            short_version("PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64").as_deref(),
            Some("15.18.0")
        );
        assert_eq!(
            short_version("PostgreSQL 17beta1 on x").as_deref(),
            Some("17.0.0")
        );
        assert_eq!(short_version("garbage"), None);
    }

    #[test]
    fn namespace_mapping_types_labels_and_nulls() {
        let rows = TextRows {
            columns: vec![
                "datid".into(),
                "datname".into(),
                "numbackends".into(),
                "xact_commit".into(),
                "session_time".into(),
                "stats_reset".into(),
            ],
            rows: vec![vec![
                Some("5".into()),
                Some("postgres".into()),
                Some("2".into()),
                Some("10".into()),
                Some("1.5".into()),
                None,
            ]],
        };
        let mut set = FamilySet::default();
        map_namespace(&PG_STAT_DATABASE, &rows, "127.0.0.1:5432", &mut set);
        let fams = set.into_vec();
        let get = |n: &str| fams.iter().find(|f| f.name == n).unwrap();
        assert_eq!(get("pg_stat_database_numbackends").kind, MetricType::Gauge);
        assert_eq!(
            get("pg_stat_database_xact_commit").kind,
            MetricType::Counter
        );
        let unknown = get("pg_stat_database_session_time");
        assert_eq!(unknown.kind, MetricType::Untyped);
        assert_eq!(unknown.help, "Unknown metric from pg_stat_database");
        assert!(get("pg_stat_database_stats_reset").samples[0]
            .value
            .is_nan());
        let names: Vec<_> = get("pg_stat_database_xact_commit").samples[0]
            .labels
            .iter()
            .map(|l| l.0.to_string())
            .collect();
        assert_eq!(names, ["datid", "datname", "server"]);
        assert!(!fams.iter().any(|f| f.name == "pg_stat_database_datid"));
    }
}
