//! Counters shared by the telemetry tasks and the request metrics built
//! from access logs, exposed on `/metrics` by [`TelemetryCollector`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use steward_exporters::{
    CollectContext, CollectError, Collected, Collector, MetricFamily, MetricType,
};

use crate::parse::{AccessInfo, SlowQuery};
use crate::queue::Queue;

/// A counter map keyed by label values, behind a mutex (updated per batch,
/// not per line, so contention is negligible).
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<BTreeMap<Vec<String>, u64>>);

impl LabeledCounter {
    pub fn add(&self, labels: &[&str], n: u64) {
        let mut map = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let key: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        *map.entry(key).or_insert(0) += n;
    }

    pub(crate) fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        match self.0.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(p) => p
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }
}

/// The telemetry self metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// {source}
    pub lines_read: LabeledCounter,
    /// {source}
    pub records_truncated: LabeledCounter,
    /// {source}
    pub files_tracked: Mutex<HashMap<String, u64>>,
    /// {source, reason}: paths the globs matched that are not read
    /// (symlinks, FIFOs, devices, unopenable), once per path.
    pub files_skipped: LabeledCounter,
    /// {signal}: items acknowledged by the upstream.
    pub items_sent: LabeledCounter,
    /// {signal}: payload bytes acknowledged (before compression).
    pub bytes_sent: LabeledCounter,
    /// {signal}: items received by the loopback receiver.
    pub items_received: LabeledCounter,
    /// {reason}: items given up (non-retryable, partial success rejections).
    pub items_dropped: LabeledCounter,
    /// {reason}: failed export attempts.
    pub export_errors: LabeledCounter,
    pub export_retries: AtomicU64,
}

const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Slow queries: from what `long_query_time` / `log_min_duration_statement`
/// let through (often 0.1 to a few seconds) up to minutes.
const SLOW_QUERY_BUCKETS: [f64; 12] = [
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Rows a slow query examined, in decades.
const ROWS_BUCKETS: [f64; 9] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(&DURATION_BUCKETS)
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (i, le) in self.bounds.iter().enumerate() {
            if v <= *le {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

#[derive(Debug, Default)]
struct AccessState {
    /// (source, method, status) -> (requests, response bytes)
    requests: HashMap<(String, &'static str, u16), (u64, u64)>,
    /// source -> request duration
    durations: HashMap<String, Histogram>,
    /// source -> upstream response time
    upstream: HashMap<String, Histogram>,
    /// source -> slow query duration
    slow_durations: HashMap<String, Histogram>,
    /// source -> rows examined by slow queries
    slow_rows: HashMap<String, Histogram>,
}

/// Request metrics from access logs.
#[derive(Debug, Default)]
pub struct AccessMetrics(Mutex<AccessState>);

impl AccessMetrics {
    /// Adds a batch of parsed requests of one source.
    pub fn record(&self, source: &str, requests: &[AccessInfo]) {
        if requests.is_empty() {
            return;
        }
        // Aggregate the batch first, so the shared maps (keyed by owned
        // source names) are touched once per distinct key, not per line.
        let mut counts: HashMap<(&'static str, u16), (u64, u64)> = HashMap::new();
        let mut durations = Histogram::default();
        let mut upstream = Histogram::default();
        for r in requests {
            let e = counts.entry((r.method, r.status)).or_insert((0, 0));
            e.0 += 1;
            // A forged line can claim any size: saturate, never wrap.
            e.1 = e.1.saturating_add(r.bytes);
            if let Some(d) = r.duration {
                durations.observe(d);
            }
            if let Some(u) = r.upstream {
                upstream.observe(u);
            }
        }
        let mut st = match self.0.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        for ((method, status), (n, bytes)) in counts {
            let e = st
                .requests
                .entry((source.to_string(), method, status))
                .or_insert((0, 0));
            e.0 += n;
            e.1 = e.1.saturating_add(bytes);
        }
        if durations.count > 0 {
            st.durations
                .entry(source.to_string())
                .or_default()
                .merge(&durations);
        }
        if upstream.count > 0 {
            st.upstream
                .entry(source.to_string())
                .or_default()
                .merge(&upstream);
        }
    }

    /// Adds a batch of slow queries of one source (MySQL/MariaDB slow log,
    /// PostgreSQL duration lines).
    pub fn record_slow_queries(&self, source: &str, queries: &[SlowQuery]) {
        if queries.is_empty() {
            return;
        }
        let mut durations = Histogram::new(&SLOW_QUERY_BUCKETS);
        let mut rows = Histogram::new(&ROWS_BUCKETS);
        for q in queries {
            durations.observe(q.duration);
            if let Some(r) = q.rows_examined {
                rows.observe(r as f64);
            }
        }
        let mut st = match self.0.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        st.slow_durations
            .entry(source.to_string())
            .or_insert_with(|| Histogram::new(&SLOW_QUERY_BUCKETS))
            .merge(&durations);
        if rows.count > 0 {
            st.slow_rows
                .entry(source.to_string())
                .or_insert_with(|| Histogram::new(&ROWS_BUCKETS))
                .merge(&rows);
        }
    }

    fn families(&self) -> Vec<MetricFamily> {
        let st = match self.0.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let mut requests = MetricFamily::counter(
            "steward_http_requests_total",
            "Requests in the access log, by source, method and status code.",
        );
        let mut bytes = MetricFamily::counter(
            "steward_http_response_body_bytes_total",
            "Response body bytes in the access log ($body_bytes_sent), by source, method and status code.",
        );
        let mut keys: Vec<_> = st.requests.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for ((source, method, status), (n, b)) in keys {
            let labels = [
                ("source", source.clone()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ];
            requests.push(labels.clone(), *n as f64);
            bytes.push(labels, *b as f64);
        }
        let mut out = vec![requests, bytes];
        for (name, help, map) in [
            (
                "steward_http_request_duration_seconds",
                "Request time from the access log ($request_time).",
                &st.durations,
            ),
            (
                "steward_http_upstream_duration_seconds",
                "Upstream response time from the access log ($upstream_response_time, summed over upstream tries).",
                &st.upstream,
            ),
            (
                "steward_slow_query_duration_seconds",
                "Duration of the queries in a slow query log (MySQL/MariaDB Query_time, PostgreSQL duration lines).",
                &st.slow_durations,
            ),
            (
                "steward_slow_query_rows_examined",
                "Rows examined by the queries in a MySQL/MariaDB slow query log.",
                &st.slow_rows,
            ),
        ] {
            let mut family = MetricFamily::new(name, help, MetricType::Histogram);
            let mut sources: Vec<_> = map.iter().collect();
            sources.sort_by(|a, b| a.0.cmp(b.0));
            for (source, h) in sources {
                let buckets: Vec<(f64, u64)> = h.bounds.iter().copied().zip(h.buckets.iter().copied()).collect();
                family.push_histogram(vec![(Cow::Borrowed("source"), source.clone())], &buckets, h.sum, h.count);
            }
            out.push(family);
        }
        out
    }
}

/// Exposes [`Stats`], the queue depth and [`AccessMetrics`].
pub struct TelemetryCollector {
    pub stats: Arc<Stats>,
    pub access: Arc<AccessMetrics>,
    pub queue: Arc<Queue>,
}

fn counter_family(name: &str, help: &str, label: &'static str, c: &LabeledCounter) -> MetricFamily {
    let mut f = MetricFamily::counter(name, help);
    for (k, v) in c.snapshot() {
        f.push([(label, k.first().cloned().unwrap_or_default())], v as f64);
    }
    f
}

#[async_trait]
impl Collector for TelemetryCollector {
    fn name(&self) -> &str {
        "telemetry"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let s = &self.stats;
        let (records, items, bytes) = self.queue.depth();
        let mut families = vec![
            counter_family(
                "steward_telemetry_lines_read_total",
                "Lines read from tailed files.",
                "source",
                &s.lines_read,
            ),
            counter_family(
                "steward_telemetry_records_truncated_total",
                "Records longer than max_record_bytes, truncated.",
                "source",
                &s.records_truncated,
            ),
            counter_family(
                "steward_telemetry_items_sent_total",
                "Log records or spans acknowledged by the upstream.",
                "signal",
                &s.items_sent,
            ),
            counter_family(
                "steward_telemetry_bytes_sent_total",
                "Protobuf bytes acknowledged by the upstream (before compression).",
                "signal",
                &s.bytes_sent,
            ),
            counter_family(
                "steward_telemetry_items_received_total",
                "Log records or spans received by the loopback OTLP receiver.",
                "signal",
                &s.items_received,
            ),
            counter_family(
                "steward_telemetry_export_errors_total",
                "Failed export attempts by reason.",
                "reason",
                &s.export_errors,
            ),
            MetricFamily::counter(
                "steward_telemetry_export_retries_total",
                "Export attempts retried.",
            )
            .value(s.export_retries.load(Ordering::Relaxed) as f64),
            MetricFamily::gauge(
                "steward_telemetry_queue_records",
                "Queue records not yet acknowledged.",
            )
            .value(records as f64),
            MetricFamily::gauge(
                "steward_telemetry_queue_items",
                "Log records and spans in the queue not yet acknowledged.",
            )
            .value(items as f64),
            MetricFamily::gauge(
                "steward_telemetry_queue_bytes",
                "Bytes of the queue's segment files on disk.",
            )
            .value(bytes as f64),
        ];
        let mut dropped = MetricFamily::counter(
            "steward_telemetry_dropped_items_total",
            "Log records or spans lost, by reason (queue_full, corrupt_records, rejected, non_retryable).",
        );
        dropped.push(
            [("reason", "queue_full")],
            self.queue.stats.dropped_full_items.load(Ordering::Relaxed) as f64,
        );
        dropped.push(
            [("reason", "corrupt_records")],
            self.queue
                .stats
                .dropped_corrupt_records
                .load(Ordering::Relaxed) as f64,
        );
        for (k, v) in s.items_dropped.snapshot() {
            dropped.push(
                [("reason", k.first().cloned().unwrap_or_default())],
                v as f64,
            );
        }
        families.push(dropped);
        let mut files = MetricFamily::gauge(
            "steward_telemetry_files_tracked",
            "Files currently read, by source.",
        );
        let tracked: Vec<(String, u64)> = match s.files_tracked.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Err(_) => Vec::new(),
        };
        for (source, n) in tracked {
            files.push([("source", source)], n as f64);
        }
        families.push(files);
        let mut skipped = MetricFamily::counter(
            "steward_telemetry_files_skipped_total",
            "Paths a source's globs match that are not read, by source and reason (symlink, not_regular_file, unreadable); each path counted once while it stays skipped.",
        );
        for (k, v) in s.files_skipped.snapshot() {
            let label = |i: usize| k.get(i).cloned().unwrap_or_default();
            skipped.push([("source", label(0)), ("reason", label(1))], v as f64);
        }
        families.push(skipped);
        families.extend(self.access.families());
        Ok(families.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_bytes_saturate_instead_of_overflowing() {
        let m = AccessMetrics::default();
        let huge = AccessInfo {
            method: "GET",
            status: 200,
            bytes: u64::MAX,
            duration: None,
            upstream: None,
        };
        // Within one batch, and across batches.
        m.record("app", &[huge.clone(), huge.clone()]);
        m.record("app", &[huge]);
        let st = m.0.lock().unwrap();
        assert_eq!(st.requests[&("app".to_string(), "GET", 200)], (3, u64::MAX));
    }
}
