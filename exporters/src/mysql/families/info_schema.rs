//! The information_schema tables mysqld_exporter reads (innodb_cmp,
//! innodb_cmpmem, QUERY_RESPONSE_TIME, the processlist) as its families.

use std::collections::BTreeMap;

use super::{labels, FamilySet, TextRows};
use crate::metrics::{MetricFamily, MetricType};

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
    use crate::mysql::families::test_support::{find, rows};

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
