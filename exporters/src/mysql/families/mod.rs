//! Turns the text rows of `SHOW GLOBAL STATUS`, `SHOW GLOBAL VARIABLES`,
//! `SHOW [ALL] SLAVE STATUS` and the information_schema tables into the
//! metric families mysqld_exporter 0.14 writes: same names, types, label
//! names and value parsing, so its dashboards and alerts keep working.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::metrics::{Labels, MetricFamily, MetricType};

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

/// mysqld_exporter's value parser: Yes/ON/Primary are 1, No/OFF/Disabled/
/// Connecting/non-Primary/Disconnected are 0, two date formats become unix
/// seconds, anything else must be a float. `None` means "skip silently".
pub fn parse_status(raw: &str) -> Option<f64> {
    match raw.to_ascii_lowercase().as_str() {
        "yes" | "on" | "primary" => return Some(1.0),
        "no" | "off" | "disabled" | "connecting" | "non-primary" | "disconnected" => {
            return Some(0.0)
        }
        _ => {}
    }
    if let Some(ts) = parse_ssl_date(raw).or_else(|| parse_sql_datetime(raw)) {
        return Some(ts);
    }
    parse_go_float(raw)
}

/// Go's `strconv.ParseFloat` accepts what Rust's parser accepts for the
/// values MySQL prints (decimal, exponent, inf/nan words); both refuse the
/// empty string and trailing garbage.
fn parse_go_float(raw: &str) -> Option<f64> {
    if raw.is_empty() || raw.trim() != raw {
        return None;
    }
    raw.parse::<f64>().ok()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Jan 02 15:04:05 2006 MST` (the `Ssl_server_not_after` format); the zone
/// abbreviation counts as UTC, as Go does for zones it does not know.
fn parse_ssl_date(raw: &str) -> Option<f64> {
    let parts: Vec<&str> = raw.split(' ').collect();
    if parts.len() != 5 {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == parts[0])? as u32 + 1;
    let day = two_digits(parts[1])?;
    let (h, mi, s) = hms(parts[2])?;
    if parts[3].len() != 4 {
        return None;
    }
    let year: i64 = parts[3].parse().ok()?;
    let zone = parts[4];
    if zone.len() < 3 || !zone.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    unix_seconds(year, month, day, h, mi, s)
}

/// `2006-01-02 15:04:05`, as UTC.
fn parse_sql_datetime(raw: &str) -> Option<f64> {
    let (date, time) = raw.split_once(' ')?;
    let mut d = date.split('-');
    let year = d.next()?;
    let month = two_digits(d.next()?)?;
    let day = two_digits(d.next()?)?;
    if d.next().is_some() || year.len() != 4 {
        return None;
    }
    let (h, mi, s) = hms(time)?;
    unix_seconds(year.parse().ok()?, month, day, h, mi, s)
}

fn two_digits(s: &str) -> Option<u32> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn hms(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split(':');
    let h = two_digits(it.next()?)?;
    let m = two_digits(it.next()?)?;
    let sec = two_digits(it.next()?)?;
    if it.next().is_some() || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some((h, m, sec))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn unix_seconds(year: i64, month: u32, day: u32, h: u32, mi: u32, s: u32) -> Option<f64> {
    if !(1..=12).contains(&month) || day == 0 || day > 31 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64) as f64)
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

fn num(row: &[Option<String>], i: usize) -> f64 {
    row.get(i)
        .and_then(|v| v.as_deref())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn text(row: &[Option<String>], i: usize) -> String {
    row.get(i).cloned().flatten().unwrap_or_default()
}

/// `information_schema.innodb_cmp` (page_size, compress_ops,
/// compress_ops_ok, compress_time, uncompress_ops, uncompress_time).
pub fn innodb_cmp(rows: &TextRows, out: &mut FamilySet) {
    let families = [
        (
            1,
            "mysql_info_schema_innodb_cmp_compress_ops_total",
            "Number of times a B-tree page of the size PAGE_SIZE has been compressed.",
        ),
        (
            2,
            "mysql_info_schema_innodb_cmp_compress_ops_ok_total",
            "Number of times a B-tree page of the size PAGE_SIZE has been successfully compressed.",
        ),
        (
            3,
            "mysql_info_schema_innodb_cmp_compress_time_seconds_total",
            "Total time in seconds spent in attempts to compress B-tree pages.",
        ),
        (
            4,
            "mysql_info_schema_innodb_cmp_uncompress_ops_total",
            "Number of times a B-tree page of the size PAGE_SIZE has been uncompressed.",
        ),
        (
            5,
            "mysql_info_schema_innodb_cmp_uncompress_time_seconds_total",
            "Total time in seconds spent in uncompressing B-tree pages.",
        ),
    ];
    for row in &rows.rows {
        let page_size = text(row, 0);
        for (i, name, help) in families {
            out.add(
                name,
                help,
                MetricType::Counter,
                labels(&[("page_size", &page_size)]),
                num(row, i),
            );
        }
    }
}

/// `information_schema.innodb_cmpmem` (page_size, buffer_pool_instance,
/// pages_used, pages_free, relocation_ops, relocation_time in ms).
pub fn innodb_cmpmem(rows: &TextRows, out: &mut FamilySet) {
    let families = [
        (
            2,
            "mysql_info_schema_innodb_cmpmem_pages_used_total",
            "Number of blocks of the size PAGE_SIZE that are currently in use.",
            1.0,
        ),
        (
            3,
            "mysql_info_schema_innodb_cmpmem_pages_free_total",
            "Number of blocks of the size PAGE_SIZE that are currently available for allocation.",
            1.0,
        ),
        (
            4,
            "mysql_info_schema_innodb_cmpmem_relocation_ops_total",
            "Number of times a block of the size PAGE_SIZE has been relocated.",
            1.0,
        ),
        (
            5,
            "mysql_info_schema_innodb_cmpmem_relocation_time_seconds_total",
            "Total time in seconds spent in relocating blocks.",
            1000.0,
        ),
    ];
    for row in &rows.rows {
        let page_size = text(row, 0);
        let buffer_pool = text(row, 1);
        for (i, name, help, divisor) in families {
            out.add(
                name,
                help,
                MetricType::Counter,
                labels(&[("buffer_pool", &buffer_pool), ("page_size", &page_size)]),
                num(row, i) / divisor,
            );
        }
    }
}

/// One `QUERY_RESPONSE_TIME[_READ|_WRITE]` table (TIME, COUNT, TOTAL) as a
/// cumulative histogram; the open-ended last row (TIME 0 after trimming
/// "TOO LONG") only adds to count and sum.
pub fn query_response_time(rows: &TextRows, name: &str, help: &str, out: &mut FamilySet) {
    let mut count: u64 = 0;
    let mut sum = 0.0;
    let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for row in &rows.rows {
        let bound = num(row, 0);
        count += num(row, 1) as u64;
        sum += num(row, 2);
        if bound == 0.0 {
            continue;
        }
        buckets.insert(bound.to_bits(), (bound, count));
    }
    let mut sorted: Vec<(f64, u64)> = buckets.into_values().collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut family = MetricFamily::new(name.to_string(), help.to_string(), MetricType::Histogram);
    family.push_histogram(Vec::new(), &sorted, sum, count);
    let idx = out.order.len();
    out.index.insert(name.to_string(), idx);
    out.order.push(family);
}

/// mysqld_exporter's `sanitizeState` for processlist commands and states.
pub fn sanitize_state(state: &str) -> String {
    let state = if state.is_empty() { "unknown" } else { state };
    state
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ';' | ',' | ':' | '.' | '(' | ')' => None,
            ' ' | '-' => Some('_'),
            c => Some(c),
        })
        .collect()
}

/// The processlist query's rows (user, host, command, state, processes,
/// seconds) as thread counts/seconds by command+state and by user/host.
pub fn processlist(rows: &TextRows, out: &mut FamilySet) {
    let mut by_state: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    let mut by_host: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_user: BTreeMap<String, f64> = BTreeMap::new();
    for row in &rows.rows {
        let user = text(row, 0);
        let mut host = text(row, 1);
        if host.is_empty() {
            host = "unknown".into();
        }
        let command = sanitize_state(&text(row, 2));
        let state = sanitize_state(&text(row, 3));
        let count = num(row, 4);
        let seconds = num(row, 5);
        let e = by_state.entry((command, state)).or_default();
        e.0 += count;
        e.1 += seconds;
        *by_host.entry(host).or_default() += count;
        *by_user.entry(user).or_default() += count;
    }
    for ((command, state), (count, seconds)) in &by_state {
        out.add(
            "mysql_info_schema_processlist_threads",
            "The number of threads split by current state.",
            MetricType::Gauge,
            labels(&[("command", command), ("state", state)]),
            *count,
        );
        out.add(
            "mysql_info_schema_processlist_seconds",
            "The number of seconds threads have used split by current state.",
            MetricType::Gauge,
            labels(&[("command", command), ("state", state)]),
            *seconds,
        );
    }
    for (host, count) in by_host {
        out.add(
            "mysql_info_schema_processlist_processes_by_host",
            "The number of processes by host.",
            MetricType::Gauge,
            labels(&[("client_host", &host)]),
            count,
        );
    }
    for (user, count) in by_user {
        out.add(
            "mysql_info_schema_processlist_processes_by_user",
            "The number of processes by user.",
            MetricType::Gauge,
            labels(&[("mysql_user", &user)]),
            count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: &[&str], data: &[&[Option<&str>]]) -> TextRows {
        TextRows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: data
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> TextRows {
        TextRows {
            columns: vec!["Variable_name".into(), "Value".into()],
            rows: pairs
                .iter()
                .map(|(k, v)| vec![Some(k.to_string()), Some(v.to_string())])
                .collect(),
        }
    }

    fn find<'a>(fams: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
        fams.iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    #[test]
    fn parses_values_like_the_anchor() {
        assert_eq!(parse_status("ON"), Some(1.0));
        assert_eq!(parse_status("Yes"), Some(1.0));
        assert_eq!(parse_status("Connecting"), Some(0.0));
        assert_eq!(parse_status("DISABLED"), Some(0.0));
        assert_eq!(parse_status("Primary"), Some(1.0));
        assert_eq!(parse_status("42"), Some(42.0));
        assert_eq!(parse_status("0.5"), Some(0.5));
        assert_eq!(parse_status("mysql-bin.000123"), None);
        assert_eq!(parse_status("10.11.6-MariaDB"), None);
        assert_eq!(parse_status(""), None);
        assert_eq!(parse_status("1970-01-02 00:00:01"), Some(86_401.0));
        assert_eq!(
            parse_status("Nov 23 18:57:44 2036 GMT"),
            Some(2_111_079_464.0)
        );
        assert_eq!(parse_status("2000-03-01 00:00:00"), Some(951_868_800.0));
    }

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

    #[test]
    fn query_response_time_is_cumulative() {
        let mut set = FamilySet::default();
        query_response_time(
            &rows(
                &["TIME", "COUNT", "TOTAL"],
                &[
                    &[Some("  0.000001"), Some("1"), Some("  0.000001")],
                    &[Some("  0.000010"), Some("2"), Some("  0.000011")],
                    &[Some("TOO LONG"), Some("3"), Some("TOO LONG")],
                ],
            ),
            "mysql_info_schema_query_response_time_seconds",
            "h",
            &mut set,
        );
        let f = &set.into_vec()[0];
        let count = f.samples.iter().find(|s| s.suffix == "_count").unwrap();
        assert_eq!(count.value, 6.0);
        assert_eq!(f.samples[1].value, 3.0);
    }

    #[test]
    fn processlist_sanitizes_states() {
        assert_eq!(
            sanitize_state("Waiting for table lock"),
            "waiting_for_table_lock"
        );
        assert_eq!(sanitize_state(""), "unknown");
        assert_eq!(sanitize_state("Sending data (x), y."), "sending_data_x_y");
        let mut set = FamilySet::default();
        processlist(
            &rows(
                &["user", "host", "command", "state", "processes", "seconds"],
                &[
                    &[
                        Some("app"),
                        Some("10.0.0.1"),
                        Some("Query"),
                        Some("Sending data"),
                        Some("2"),
                        Some("5"),
                    ],
                    &[
                        Some("app"),
                        Some(""),
                        Some("Sleep"),
                        Some(""),
                        Some("1"),
                        Some("9"),
                    ],
                ],
            ),
            &mut set,
        );
        let fams = set.into_vec();
        assert_eq!(
            find(&fams, "mysql_info_schema_processlist_threads")
                .samples
                .len(),
            2
        );
        assert_eq!(
            find(&fams, "mysql_info_schema_processlist_processes_by_user").samples[0].value,
            3.0
        );
        assert_eq!(
            find(&fams, "mysql_info_schema_processlist_processes_by_host").samples[1].labels[0].1,
            "unknown"
        );
    }
}
