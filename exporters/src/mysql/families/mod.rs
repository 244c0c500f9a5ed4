//! Turns the text rows of `SHOW GLOBAL STATUS`, `SHOW GLOBAL VARIABLES`,
//! `SHOW [ALL] SLAVE STATUS` and the information_schema tables into the
//! metric families mysqld_exporter 0.14 writes: same names, types, label
//! names and value parsing, so its dashboards and alerts keep working.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::metrics::{Labels, MetricFamily, MetricType};

mod info_schema;
mod values;

pub use info_schema::{
    innodb_cmp, innodb_cmpmem, processlist, query_response_time, sanitize_state,
};
use values::parse_go_float;
pub use values::parse_status;

/// One result set as text: column names and rows (`None` for SQL NULL).
#[derive(Debug, Default, Clone)]
pub struct TextRows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl TextRows {
    /// Index of a column by exact name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// mysqld_exporter's `validPrometheusName`: every character outside
/// `[a-zA-Z0-9_]` becomes `_`, then lower case.
pub fn valid_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Collects families by name while keeping first-seen order.
#[derive(Debug, Default)]
pub struct FamilySet {
    order: Vec<MetricFamily>,
    index: BTreeMap<String, usize>,
}

impl FamilySet {
    /// Adds one sample to family `name`, creating it with `help`/`kind`.
    pub fn add(&mut self, name: &str, help: &str, kind: MetricType, labels: Labels, value: f64) {
        let idx = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.order
                    .push(MetricFamily::new(name.to_string(), help.to_string(), kind));
                self.index.insert(name.to_string(), self.order.len() - 1);
                self.order.len() - 1
            }
        };
        self.order[idx].push_owned(labels, value);
    }

    pub fn into_vec(self) -> Vec<MetricFamily> {
        self.order
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), v.to_string()))
        .collect()
}

/// `SHOW GLOBAL STATUS` (columns Variable_name, Value).
pub fn global_status(rows: &TextRows, out: &mut FamilySet) {
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    for row in &rows.rows {
        let (Some(Some(raw_key)), Some(val)) = (row.first(), row.get(1)) else {
            continue;
        };
        let val = val.as_deref().unwrap_or("");
        let Some(value) = parse_status(val) else {
            // Text values the anchor turns into Galera info families.
            if matches!(
                raw_key.as_str(),
                "wsrep_local_state_uuid"
                    | "wsrep_cluster_state_uuid"
                    | "wsrep_provider_version"
                    | "wsrep_evs_repl_latency"
            ) {
                text.insert(raw_key.clone(), val.to_string());
            }
            continue;
        };
        let key = valid_name(raw_key);
        // Grouped families, in the order of the anchor's alternation.
        let groups: [(&str, &str, &str, &'static str, MetricType); 6] = [
            (
                "com_",
                "mysql_global_status_commands_total",
                "Total number of executed MySQL commands.",
                "command",
                MetricType::Counter,
            ),
            (
                "handler_",
                "mysql_global_status_handlers_total",
                "Total number of executed MySQL handlers.",
                "handler",
                MetricType::Counter,
            ),
            (
                "connection_errors_",
                "mysql_global_status_connection_errors_total",
                "Total number of MySQL connection errors.",
                "error",
                MetricType::Counter,
            ),
            ("innodb_buffer_pool_pages_", "", "", "", MetricType::Gauge),
            (
                "innodb_rows_",
                "mysql_global_status_innodb_row_ops_total",
                "Total number of MySQL InnoDB row operations.",
                "operation",
                MetricType::Counter,
            ),
            (
                "performance_schema_",
                "mysql_global_status_performance_schema_lost_total",
                "Total number of MySQL instrumentations that could not be loaded or created due to memory constraints.",
                "instrumentation",
                MetricType::Counter,
            ),
        ];
        let group = groups
            .iter()
            .find_map(|g| key.strip_prefix(g.0).map(|rest| (g, rest)));
        match group {
            None => out.add(
                &format!("mysql_global_status_{key}"),
                "Generic metric from SHOW GLOBAL STATUS.",
                MetricType::Untyped,
                Vec::new(),
                value,
            ),
            Some((g, rest)) if g.0 == "innodb_buffer_pool_pages_" => match rest {
                "data" | "free" | "misc" | "old" => out.add(
                    "mysql_global_status_buffer_pool_pages",
                    "Innodb buffer pool pages by state.",
                    MetricType::Gauge,
                    labels(&[("state", rest)]),
                    value,
                ),
                "dirty" => out.add(
                    "mysql_global_status_buffer_pool_dirty_pages",
                    "Innodb buffer pool dirty pages.",
                    MetricType::Gauge,
                    Vec::new(),
                    value,
                ),
                "total" => {}
                _ => out.add(
                    "mysql_global_status_buffer_pool_page_changes_total",
                    "Innodb buffer pool page state changes.",
                    MetricType::Counter,
                    labels(&[("operation", rest)]),
                    value,
                ),
            },
            Some((g, rest)) => out.add(g.1, g.2, g.4, labels(&[(g.3, rest)]), value),
        }
    }

    if let Some(uuid) = text.get("wsrep_local_state_uuid").filter(|s| !s.is_empty()) {
        let get = |k: &str| text.get(k).cloned().unwrap_or_default();
        out.add(
            "mysql_galera_status_info",
            "PXC/Galera status information.",
            MetricType::Gauge,
            labels(&[
                ("wsrep_cluster_state_uuid", &get("wsrep_cluster_state_uuid")),
                ("wsrep_local_state_uuid", uuid),
                ("wsrep_provider_version", &get("wsrep_provider_version")),
            ]),
            1.0,
        );
    }
    if let Some(latency) = text.get("wsrep_evs_repl_latency").filter(|s| !s.is_empty()) {
        let parts: Vec<Option<f64>> = latency.split('/').map(parse_go_float).collect();
        if parts.len() == 5 && parts.iter().all(Option::is_some) {
            let names = [
                (
                    "min_seconds",
                    "PXC/Galera group communication latency. Min value.",
                ),
                (
                    "avg_seconds",
                    "PXC/Galera group communication latency. Avg value.",
                ),
                (
                    "max_seconds",
                    "PXC/Galera group communication latency. Max value.",
                ),
                (
                    "stdev",
                    "PXC/Galera group communication latency. Standard Deviation.",
                ),
                (
                    "sample_size",
                    "PXC/Galera group communication latency. Sample Size.",
                ),
            ];
            for ((name, help), v) in names.iter().zip(parts) {
                out.add(
                    &format!("mysql_galera_evs_repl_latency_{name}"),
                    help,
                    MetricType::Gauge,
                    Vec::new(),
                    v.unwrap_or(0.0),
                );
            }
        }
    }
}

/// `SHOW GLOBAL VARIABLES`: numeric ones as gauges, plus the info families
/// built from text variables.
pub fn global_variables(rows: &TextRows, out: &mut FamilySet) {
    let mut text: BTreeMap<String, String> = BTreeMap::new();
    for row in &rows.rows {
        let (Some(Some(raw_key)), Some(val)) = (row.first(), row.get(1)) else {
            continue;
        };
        let val = val.as_deref().unwrap_or("");
        let key = valid_name(raw_key);
        if let Some(value) = parse_status(val) {
            out.add(
                &format!("mysql_global_variables_{key}"),
                "Generic gauge metric from SHOW GLOBAL VARIABLES.",
                MetricType::Gauge,
                Vec::new(),
                value,
            );
            continue;
        }
        if matches!(
            key.as_str(),
            "innodb_version"
                | "version"
                | "version_comment"
                | "wsrep_cluster_name"
                | "wsrep_provider_options"
                | "tx_isolation"
                | "transaction_isolation"
        ) {
            text.insert(key, val.to_string());
        }
    }
    let get = |k: &str| text.get(k).cloned().unwrap_or_default();
    out.add(
        "mysql_version_info",
        "MySQL version and distribution.",
        MetricType::Gauge,
        labels(&[
            ("innodb_version", &get("innodb_version")),
            ("version", &get("version")),
            ("version_comment", &get("version_comment")),
        ]),
        1.0,
    );
    let cluster = get("wsrep_cluster_name");
    if !cluster.is_empty() {
        out.add(
            "mysql_galera_variables_info",
            "PXC/Galera variables information.",
            MetricType::Gauge,
            labels(&[("wsrep_cluster_name", &cluster)]),
            1.0,
        );
    }
    let provider = get("wsrep_provider_options");
    if !provider.is_empty() {
        out.add(
            "mysql_galera_gcache_size_bytes",
            "PXC/Galera gcache size.",
            MetricType::Gauge,
            Vec::new(),
            gcache_size_bytes(&provider),
        );
    }
    let mut level = get("transaction_isolation");
    if level.is_empty() {
        level = get("tx_isolation");
    }
    if !level.is_empty() {
        out.add(
            "mysql_transaction_isolation",
            "MySQL transaction isolation.",
            MetricType::Gauge,
            labels(&[("level", &level)]),
            1.0,
        );
    }
}

/// `gcache.size = 128M;` inside wsrep_provider_options, in bytes (0 when
/// absent).
fn gcache_size_bytes(options: &str) -> f64 {
    let Some(start) = options.find("gcache.size = ") else {
        return 0.0;
    };
    let rest = &options[start + "gcache.size = ".len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return 0.0;
    }
    let after = &rest[digits.len()..];
    let (factor, after) = match after.chars().next() {
        Some('M') => (1024.0 * 1024.0, &after[1..]),
        Some('G') => (1024.0 * 1024.0 * 1024.0, &after[1..]),
        _ => (1.0, after),
    };
    if !after.starts_with(';') {
        return 0.0;
    }
    digits.parse::<f64>().unwrap_or(0.0) * factor
}

/// `SHOW ALL SLAVES STATUS` (MariaDB) / `SHOW SLAVE STATUS` (MySQL) /
/// `SHOW REPLICA STATUS` (MySQL 8.4): every parsable column of every
/// channel as an untyped `mysql_slave_status_<column>`.
pub fn slave_status(rows: &TextRows, out: &mut FamilySet) {
    let value_of = |row: &[Option<String>], names: &[&str]| -> String {
        names
            .iter()
            .find_map(|n| rows.column(n))
            .and_then(|i| row.get(i).cloned().flatten())
            .unwrap_or_default()
    };
    for row in &rows.rows {
        let master_uuid = value_of(row, &["Master_UUID", "Source_UUID"]);
        let master_host = value_of(row, &["Master_Host", "Source_Host"]);
        let channel_name = value_of(row, &["Channel_Name"]);
        let connection_name = value_of(row, &["Connection_name"]);
        for (i, col) in rows.columns.iter().enumerate() {
            let Some(Some(raw)) = row.get(i) else {
                continue;
            };
            let Some(value) = parse_status(raw) else {
                continue;
            };
            out.add(
                &format!("mysql_slave_status_{}", col.to_lowercase()),
                "Generic metric from SHOW SLAVE STATUS.",
                MetricType::Untyped,
                labels(&[
                    ("channel_name", &channel_name),
                    ("connection_name", &connection_name),
                    ("master_host", &master_host),
                    ("master_uuid", &master_uuid),
                ]),
                value,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::{find, kv, rows};

    #[test]
    fn global_status_groups_and_untyped() {
        let mut set = FamilySet::default();
        global_status(
            &kv(&[
                ("Com_select", "7"),
                ("Compression", "OFF"),
                ("Handler_read_first", "3"),
                ("Connection_errors_internal", "0"),
                ("Innodb_buffer_pool_pages_data", "100"),
                ("Innodb_buffer_pool_pages_dirty", "2"),
                ("Innodb_buffer_pool_pages_total", "200"),
                ("Innodb_buffer_pool_pages_flushed", "9"),
                ("Innodb_rows_read", "11"),
                ("Performance_schema_accounts_lost", "0"),
                ("Uptime", "60"),
                ("Rpl_status", "AUTH_MASTER"),
                ("wsrep_local_state_uuid", "abc"),
            ]),
            &mut set,
        );
        let fams = set.into_vec();
        let c = find(&fams, "mysql_global_status_commands_total");
        assert_eq!(c.kind, MetricType::Counter);
        assert_eq!(c.samples[0].labels[0].1, "select");
        assert_eq!(
            find(&fams, "mysql_global_status_compression").kind,
            MetricType::Untyped
        );
        assert_eq!(
            find(&fams, "mysql_global_status_uptime").samples[0].value,
            60.0
        );
        assert_eq!(
            find(&fams, "mysql_global_status_buffer_pool_pages").samples[0].labels[0].1,
            "data"
        );
        assert_eq!(
            find(&fams, "mysql_global_status_buffer_pool_dirty_pages").samples[0].value,
            2.0
        );
        assert_eq!(
            find(&fams, "mysql_global_status_buffer_pool_page_changes_total").samples[0].labels[0]
                .1,
            "flushed"
        );
        assert!(!fams.iter().any(|f| f
            .samples
            .iter()
            .any(|s| s.labels.iter().any(|l| l.1 == "total"))));
        find(&fams, "mysql_global_status_innodb_row_ops_total");
        find(&fams, "mysql_global_status_performance_schema_lost_total");
        find(&fams, "mysql_galera_status_info");
        assert!(!fams.iter().any(|f| f.name.contains("rpl_status")));
    }

    #[test]
    fn global_variables_and_info() {
        let mut set = FamilySet::default();
        global_variables(
            &kv(&[
                ("max_connections", "151"),
                ("version", "10.11.6-MariaDB"),
                ("version_comment", "Debian 12"),
                ("transaction_isolation", "REPEATABLE-READ"),
                (
                    "wsrep_provider_options",
                    "base_port = 4567; gcache.size = 128M; x",
                ),
                ("character_set_server", "utf8mb4"),
            ]),
            &mut set,
        );
        let fams = set.into_vec();
        assert_eq!(
            find(&fams, "mysql_global_variables_max_connections").samples[0].value,
            151.0
        );
        let v = find(&fams, "mysql_version_info");
        assert_eq!(
            v.samples[0]
                .labels
                .iter()
                .map(|l| l.0.as_ref())
                .collect::<Vec<_>>(),
            ["innodb_version", "version", "version_comment"]
        );
        assert_eq!(
            find(&fams, "mysql_galera_gcache_size_bytes").samples[0].value,
            128.0 * 1024.0 * 1024.0
        );
        assert_eq!(
            find(&fams, "mysql_transaction_isolation").samples[0].labels[0].1,
            "REPEATABLE-READ"
        );
    }

    #[test]
    fn slave_status_mariadb_and_mysql() {
        let mut set = FamilySet::default();
        slave_status(
            &rows(
                &[
                    "Connection_name",
                    "Master_Host",
                    "Slave_IO_Running",
                    "Slave_SQL_Running",
                    "Seconds_Behind_Master",
                    "Gtid_IO_Pos",
                ],
                &[&[
                    Some("a"),
                    Some("db1"),
                    Some("Yes"),
                    Some("No"),
                    None,
                    Some("0-1-5"),
                ]],
            ),
            &mut set,
        );
        let fams = set.into_vec();
        let io = find(&fams, "mysql_slave_status_slave_io_running");
        assert_eq!(io.kind, MetricType::Untyped);
        assert_eq!(io.samples[0].value, 1.0);
        let names: Vec<_> = io.samples[0].labels.iter().map(|l| l.0.as_ref()).collect();
        assert_eq!(
            names,
            [
                "channel_name",
                "connection_name",
                "master_host",
                "master_uuid"
            ]
        );
        assert_eq!(io.samples[0].labels[1].1, "a");
        assert!(!fams
            .iter()
            .any(|f| f.name == "mysql_slave_status_seconds_behind_master"));
        assert!(!fams
            .iter()
            .any(|f| f.name == "mysql_slave_status_gtid_io_pos"));
    }
}

/// Result sets and lookups the families' tests share.
#[cfg(test)]
mod test_support {
    use super::*;

    pub(super) fn rows(columns: &[&str], data: &[&[Option<&str>]]) -> TextRows {
        TextRows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: data
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
        }
    }

    pub(super) fn kv(pairs: &[(&str, &str)]) -> TextRows {
        TextRows {
            columns: vec!["Variable_name".into(), "Value".into()],
            rows: pairs
                .iter()
                .map(|(k, v)| vec![Some(k.to_string()), Some(v.to_string())])
                .collect(),
        }
    }

    pub(super) fn find<'a>(fams: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
        fams.iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }
}
