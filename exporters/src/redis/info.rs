//! `INFO ALL` text to metric families with redis_exporter 1.45's names,
//! types, labels and units: one table maps each INFO field to its family.

use std::collections::BTreeMap;

use crate::metrics::{Labels, MetricFamily, MetricType};

/// How an INFO value becomes a sample value.
#[derive(Clone, Copy)]
enum Unit {
    /// The number as written.
    Plain,
    /// Microseconds to seconds.
    Micros,
    /// `ok` is 1, anything else 0 (`rdb_last_bgsave_status`).
    Ok,
    /// `up` is 1, anything else 0 (`master_link_status`).
    Up,
}

use MetricType::{Counter as C, Gauge as G};
use Unit::{Micros, Ok as OkStatus, Plain, Up};

/// INFO field -> family name (without `redis_`), type, unit. The exporter's
/// help text is `<name> metric` for all of these.
const FIELDS: &[(&str, &str, MetricType, Unit)] = &[
    // Server, clients
    ("uptime_in_seconds", "uptime_in_seconds", G, Plain),
    ("io_threads_active", "io_threads_active", G, Plain),
    ("connected_clients", "connected_clients", G, Plain),
    ("blocked_clients", "blocked_clients", G, Plain),
    ("tracking_clients", "tracking_clients", G, Plain),
    (
        "clients_in_timeout_table",
        "clients_in_timeout_table",
        G,
        Plain,
    ),
    ("cluster_connections", "cluster_connections", G, Plain),
    (
        "client_recent_max_input_buffer",
        "client_recent_max_input_buffer_bytes",
        G,
        Plain,
    ),
    (
        "client_recent_max_output_buffer",
        "client_recent_max_output_buffer_bytes",
        G,
        Plain,
    ),
    // Memory
    ("used_memory", "memory_used_bytes", G, Plain),
    ("used_memory_rss", "memory_used_rss_bytes", G, Plain),
    ("used_memory_peak", "memory_used_peak_bytes", G, Plain),
    ("used_memory_lua", "memory_used_lua_bytes", G, Plain),
    (
        "used_memory_overhead",
        "memory_used_overhead_bytes",
        G,
        Plain,
    ),
    ("used_memory_startup", "memory_used_startup_bytes", G, Plain),
    ("used_memory_dataset", "memory_used_dataset_bytes", G, Plain),
    ("used_memory_scripts", "memory_used_scripts_bytes", G, Plain),
    ("maxmemory", "memory_max_bytes", G, Plain),
    (
        "number_of_cached_scripts",
        "number_of_cached_scripts",
        G,
        Plain,
    ),
    ("allocator_active", "allocator_active_bytes", G, Plain),
    ("allocator_allocated", "allocator_allocated_bytes", G, Plain),
    ("allocator_resident", "allocator_resident_bytes", G, Plain),
    ("allocator_frag_ratio", "allocator_frag_ratio", G, Plain),
    ("allocator_frag_bytes", "allocator_frag_bytes", G, Plain),
    ("allocator_rss_ratio", "allocator_rss_ratio", G, Plain),
    ("allocator_rss_bytes", "allocator_rss_bytes", G, Plain),
    (
        "mem_fragmentation_ratio",
        "mem_fragmentation_ratio",
        G,
        Plain,
    ),
    (
        "mem_fragmentation_bytes",
        "mem_fragmentation_bytes",
        G,
        Plain,
    ),
    (
        "mem_not_counted_for_evict",
        "mem_not_counted_for_eviction_bytes",
        G,
        Plain,
    ),
    ("mem_clients_slaves", "mem_clients_slaves", G, Plain),
    ("mem_clients_normal", "mem_clients_normal", G, Plain),
    ("active_defrag_running", "active_defrag_running", G, Plain),
    (
        "lazyfree_pending_objects",
        "lazyfree_pending_objects",
        G,
        Plain,
    ),
    // Persistence
    ("loading", "loading_dump_file", G, Plain),
    (
        "rdb_changes_since_last_save",
        "rdb_changes_since_last_save",
        G,
        Plain,
    ),
    ("rdb_bgsave_in_progress", "rdb_bgsave_in_progress", G, Plain),
    (
        "rdb_last_save_time",
        "rdb_last_save_timestamp_seconds",
        G,
        Plain,
    ),
    (
        "rdb_last_bgsave_status",
        "rdb_last_bgsave_status",
        G,
        OkStatus,
    ),
    (
        "rdb_last_bgsave_time_sec",
        "rdb_last_bgsave_duration_sec",
        G,
        Plain,
    ),
    (
        "rdb_current_bgsave_time_sec",
        "rdb_current_bgsave_duration_sec",
        G,
        Plain,
    ),
    ("rdb_last_cow_size", "rdb_last_cow_size_bytes", G, Plain),
    ("aof_enabled", "aof_enabled", G, Plain),
    (
        "aof_rewrite_in_progress",
        "aof_rewrite_in_progress",
        G,
        Plain,
    ),
    ("aof_rewrite_scheduled", "aof_rewrite_scheduled", G, Plain),
    (
        "aof_last_rewrite_time_sec",
        "aof_last_rewrite_duration_sec",
        G,
        Plain,
    ),
    (
        "aof_current_rewrite_time_sec",
        "aof_current_rewrite_duration_sec",
        G,
        Plain,
    ),
    (
        "aof_last_bgrewrite_status",
        "aof_last_bgrewrite_status",
        G,
        OkStatus,
    ),
    (
        "aof_last_write_status",
        "aof_last_write_status",
        G,
        OkStatus,
    ),
    ("aof_last_cow_size", "aof_last_cow_size_bytes", G, Plain),
    (
        "module_fork_in_progress",
        "module_fork_in_progress",
        G,
        Plain,
    ),
    (
        "module_fork_last_cow_size",
        "module_fork_last_cow_size",
        G,
        Plain,
    ),
    // Stats
    (
        "total_connections_received",
        "connections_received_total",
        C,
        Plain,
    ),
    (
        "total_commands_processed",
        "commands_processed_total",
        C,
        Plain,
    ),
    ("total_net_input_bytes", "net_input_bytes_total", C, Plain),
    ("total_net_output_bytes", "net_output_bytes_total", C, Plain),
    (
        "rejected_connections",
        "rejected_connections_total",
        C,
        Plain,
    ),
    ("expired_keys", "expired_keys_total", C, Plain),
    ("evicted_keys", "evicted_keys_total", C, Plain),
    ("keyspace_hits", "keyspace_hits_total", C, Plain),
    ("keyspace_misses", "keyspace_misses_total", C, Plain),
    ("expired_stale_perc", "expired_stale_percentage", G, Plain),
    (
        "expired_time_cap_reached_count",
        "expired_time_cap_reached_total",
        G,
        Plain,
    ),
    ("pubsub_channels", "pubsub_channels", G, Plain),
    ("pubsub_patterns", "pubsub_patterns", G, Plain),
    ("latest_fork_usec", "latest_fork_seconds", G, Micros),
    (
        "migrate_cached_sockets",
        "migrate_cached_sockets_total",
        G,
        Plain,
    ),
    (
        "slave_expires_tracked_keys",
        "slave_expires_tracked_keys",
        G,
        Plain,
    ),
    ("active_defrag_hits", "defrag_hits", G, Plain),
    ("active_defrag_misses", "defrag_misses", G, Plain),
    ("active_defrag_key_hits", "defrag_key_hits", G, Plain),
    ("active_defrag_key_misses", "defrag_key_misses", G, Plain),
    ("tracking_total_keys", "tracking_total_keys", G, Plain),
    ("tracking_total_items", "tracking_total_items", G, Plain),
    (
        "tracking_total_prefixes",
        "tracking_total_prefixes",
        G,
        Plain,
    ),
    (
        "unexpected_error_replies",
        "unexpected_error_replies",
        C,
        Plain,
    ),
    ("total_error_replies", "total_error_replies", C, Plain),
    (
        "dump_payload_sanitizations",
        "dump_payload_sanitizations",
        C,
        Plain,
    ),
    ("total_reads_processed", "total_reads_processed", C, Plain),
    ("total_writes_processed", "total_writes_processed", C, Plain),
    (
        "io_threaded_reads_processed",
        "io_threaded_reads_processed",
        C,
        Plain,
    ),
    (
        "io_threaded_writes_processed",
        "io_threaded_writes_processed",
        C,
        Plain,
    ),
    // Replication
    ("connected_slaves", "connected_slaves", G, Plain),
    ("master_repl_offset", "master_repl_offset", G, Plain),
    ("second_repl_offset", "second_repl_offset", G, Plain),
    ("repl_backlog_active", "repl_backlog_is_active", G, Plain),
    ("repl_backlog_size", "replication_backlog_bytes", G, Plain),
    (
        "repl_backlog_first_byte_offset",
        "repl_backlog_first_byte_offset",
        G,
        Plain,
    ),
    (
        "repl_backlog_histlen",
        "repl_backlog_history_bytes",
        G,
        Plain,
    ),
    ("sync_full", "replica_resyncs_full", G, Plain),
    (
        "sync_partial_ok",
        "replica_partial_resync_accepted",
        G,
        Plain,
    ),
    (
        "sync_partial_err",
        "replica_partial_resync_denied",
        G,
        Plain,
    ),
    ("master_link_status", "master_link_up", G, Up),
    (
        "master_last_io_seconds_ago",
        "master_last_io_seconds_ago",
        G,
        Plain,
    ),
    (
        "master_sync_in_progress",
        "master_sync_in_progress",
        G,
        Plain,
    ),
    ("slave_repl_offset", "slave_repl_offset", G, Plain),
    // CPU
    ("used_cpu_sys", "cpu_sys_seconds_total", C, Plain),
    ("used_cpu_user", "cpu_user_seconds_total", C, Plain),
    (
        "used_cpu_sys_children",
        "cpu_sys_children_seconds_total",
        C,
        Plain,
    ),
    (
        "used_cpu_user_children",
        "cpu_user_children_seconds_total",
        C,
        Plain,
    ),
    (
        "used_cpu_sys_main_thread",
        "cpu_sys_main_thread_seconds_total",
        C,
        Plain,
    ),
    (
        "used_cpu_user_main_thread",
        "cpu_user_main_thread_seconds_total",
        C,
        Plain,
    ),
    // Cluster
    ("cluster_enabled", "cluster_enabled", G, Plain),
];

/// The fields of one `INFO` answer, in the order written.
pub fn parse(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .collect()
}

/// `k=v,k=v` (keyspace and cmdstat values).
fn pairs(value: &str) -> BTreeMap<&str, f64> {
    value
        .split(',')
        .filter_map(|p| p.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect()
}

/// Families from INFO; `databases` (CONFIG GET databases) lists every db so
/// empty ones export 0 as the exporter does.
pub fn families(
    fields: &[(&str, &str)],
    databases: Option<u32>,
    labels: &Labels,
) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let mut by_field: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in fields {
        by_field.insert(k, v);
    }
    for (field, name, kind, unit) in FIELDS {
        let Some(raw) = by_field.get(field) else {
            continue;
        };
        let value = match unit {
            OkStatus => f64::from(u8::from(*raw == "ok")),
            Up => f64::from(u8::from(*raw == "up")),
            Plain | Micros => match raw.parse::<f64>() {
                Ok(v) if matches!(unit, Micros) => v / 1e6,
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let mut family =
            MetricFamily::new(format!("redis_{name}"), format!("{name} metric"), *kind);
        family.push_owned(labels.clone(), value);
        out.push(family);
    }

    if let (Some(uptime), Some(now)) = (
        by_field
            .get("uptime_in_seconds")
            .and_then(|v| v.parse::<f64>().ok()),
        by_field
            .get("server_time_usec")
            .and_then(|v| v.parse::<f64>().ok()),
    ) {
        let mut f = MetricFamily::gauge(
            "redis_start_time_seconds",
            "Start time of the Redis instance since unix epoch in seconds.",
        );
        f.push_owned(labels.clone(), (now / 1e6).floor() - uptime);
        out.push(f);
    }

    out.extend(keyspace(fields, databases, labels));
    out.extend(commands(fields, labels));
    out
}

fn labelled(labels: &Labels, name: &'static str, value: String) -> Labels {
    let mut l = labels.clone();
    l.push((name.into(), value));
    l
}

/// `db0:keys=1,expires=0,avg_ttl=0` -> redis_db_keys, _keys_expiring,
/// avg_ttl_seconds.
fn keyspace(fields: &[(&str, &str)], databases: Option<u32>, labels: &Labels) -> Vec<MetricFamily> {
    let mut keys = MetricFamily::gauge("redis_db_keys", "Total number of keys by DB");
    let mut expiring = MetricFamily::gauge(
        "redis_db_keys_expiring",
        "Total number of expiring keys by DB",
    );
    let mut ttl = MetricFamily::gauge("redis_db_avg_ttl_seconds", "Avg TTL in seconds");
    let mut present: BTreeMap<u32, BTreeMap<&str, f64>> = BTreeMap::new();
    for (k, v) in fields {
        if let Some(n) = k.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) {
            present.insert(n, pairs(v));
        }
    }
    let mut dbs: Vec<u32> = present.keys().copied().collect();
    if let Some(n) = databases {
        dbs.extend((0..n.min(1024)).filter(|d| !present.contains_key(d)));
    }
    dbs.sort_unstable();
    for db in dbs {
        let l = labelled(labels, "db", format!("db{db}"));
        match present.get(&db) {
            Some(p) => {
                keys.push_owned(l.clone(), p.get("keys").copied().unwrap_or(0.0));
                expiring.push_owned(l.clone(), p.get("expires").copied().unwrap_or(0.0));
                ttl.push_owned(l, p.get("avg_ttl").copied().unwrap_or(0.0) / 1000.0);
            }
            None => {
                keys.push_owned(l.clone(), 0.0);
                expiring.push_owned(l, 0.0);
            }
        }
    }
    vec![keys, expiring, ttl]
}

/// `cmdstat_get:calls=1,usec=9,...` -> redis_commands_*{cmd}.
fn commands(fields: &[(&str, &str)], labels: &Labels) -> Vec<MetricFamily> {
    let mut calls =
        MetricFamily::counter("redis_commands_total", "Total number of calls per command");
    let mut usec = MetricFamily::counter(
        "redis_commands_duration_seconds_total",
        "Total amount of time in seconds spent per command",
    );
    // The two help texts are the exporter's, swapped as it writes them,
    // so a side-by-side diff shows no difference.
    let mut rejected = MetricFamily::counter(
        "redis_commands_rejected_calls_total",
        "Total number of errors within command execution per command",
    );
    let mut failed = MetricFamily::counter(
        "redis_commands_failed_calls_total",
        "Total number of errors prior command execution per command",
    );
    for (k, v) in fields {
        let Some(cmd) = k.strip_prefix("cmdstat_") else {
            continue;
        };
        let p = pairs(v);
        let l = labelled(labels, "cmd", cmd.to_string());
        calls.push_owned(l.clone(), p.get("calls").copied().unwrap_or(0.0));
        usec.push_owned(l.clone(), p.get("usec").copied().unwrap_or(0.0) / 1e6);
        if let Some(r) = p.get("rejected_calls") {
            rejected.push_owned(l.clone(), *r);
        }
        if let Some(f) = p.get("failed_calls") {
            failed.push_owned(l, *f);
        }
    }
    vec![calls, usec, rejected, failed]
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nuptime_in_seconds:10\r\nserver_time_usec:1000000000\r\n\
        # Memory\r\nused_memory:1024\r\nmaxmemory:0\r\n# Persistence\r\nrdb_last_bgsave_status:ok\r\n\
        # Stats\r\nkeyspace_hits:5\r\nlatest_fork_usec:250\r\n\
        # Commandstats\r\ncmdstat_set:calls=3,usec=9,usec_per_call=3.00,rejected_calls=0,failed_calls=1\r\n\
        # Keyspace\r\ndb2:keys=4,expires=1,avg_ttl=1500\r\n";

    #[test]
    fn maps_fields_units_keyspace_and_commands() {
        let fields = parse(INFO);
        let text = crate::exposition::encode(&families(&fields, Some(3), &Vec::new()));
        for line in [
            "# TYPE redis_memory_used_bytes gauge\nredis_memory_used_bytes 1024\n",
            "# TYPE redis_keyspace_hits_total counter\nredis_keyspace_hits_total 5\n",
            "redis_latest_fork_seconds 0.00025\n",
            "redis_rdb_last_bgsave_status 1\n",
            "redis_start_time_seconds 990\n",
            "redis_db_keys{db=\"db0\"} 0\n",
            "redis_db_keys{db=\"db2\"} 4\n",
            "redis_db_keys_expiring{db=\"db2\"} 1\n",
            "redis_db_avg_ttl_seconds{db=\"db2\"} 1.5\n",
            "redis_commands_total{cmd=\"set\"} 3\n",
            "redis_commands_duration_seconds_total{cmd=\"set\"} 9e-06\n",
            "redis_commands_failed_calls_total{cmd=\"set\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("db=\"db3\""));
    }

    #[test]
    fn garbage_info_gives_only_empty_families() {
        let fields = parse("no colon here\r\n:\r\nused_memory:lots\r\ndbx:keys=1\r\n");
        let fams = families(&fields, None, &Vec::new());
        assert!(fams.iter().all(|f| f.samples.is_empty()), "{fams:?}");
    }
}
