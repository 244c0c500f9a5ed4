//! WAL streaming in the daemon: one task per `postgres_pitr` job with
//! `streaming = true` (the work is steward_backup::wal::receive), stopped
//! with the configuration generation, and the `steward_wal_stream_*`
//! metrics read from each task's live figures at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use steward_backup::manifest::JobKind;
use steward_backup::pipeline::PipelineSettings;
use steward_backup::target;
use steward_backup::wal::receive::{self, StreamOptions, StreamStats};
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;

/// Starts a streamer per `postgres_pitr` job with `streaming = true`;
/// none, no task.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let backup = Arc::new(config.backup.clone());
    let jobs: Vec<String> = backup
        .jobs
        .iter()
        .filter(|(_, j)| j.kind == JobKind::PostgresPitr && j.streaming)
        .map(|(n, _)| n.clone())
        .collect();
    if jobs.is_empty() {
        return Ok(Subsystem::default());
    }
    let recipients = backup.recipients()?;
    let host = config.agent.effective_hostname();
    let state_dir = config.agent.state_dir.clone();
    let mut all = Vec::new();
    let mut tasks = Vec::new();
    for name in jobs {
        let Some(job) = backup.jobs.get(&name).cloned() else {
            continue;
        };
        let stats = Arc::new(StreamStats::default());
        all.push((name.clone(), job.slot.clone(), Arc::clone(&stats)));
        let settings = PipelineSettings {
            zstd_level: job.zstd_level,
            // Deltas are small: a worker pool costs more than it saves.
            zstd_workers: 1,
            recipients: recipients.clone(),
        };
        let (backup, host, state_dir, cancel) = (
            Arc::clone(&backup),
            host.clone(),
            state_dir.clone(),
            cancel.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let work = async {
                // Targets open inside the task, retried: a store that is
                // down at start must not stop streaming later.
                let targets = loop {
                    let e = match target::open_every(&backup, &job.target_names()).await {
                        Ok(opened) => break opened,
                        Err(e) => e,
                    };
                    tracing::error!(job = %name, "WAL streaming cannot open its targets: {e}; retrying in 30s");
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                };
                let options = StreamOptions {
                    job_name: name.clone(),
                    job,
                    host,
                    state_dir,
                    targets,
                    settings,
                };
                receive::run(options, stats).await;
            };
            tokio::select! {
                _ = work => {}
                _ = cancel.cancelled() => {}
            }
        }));
    }
    Ok(Subsystem {
        collectors: vec![Arc::new(WalStreamCollector { jobs: all }) as Arc<dyn Collector>],
        tasks,
    })
}

struct WalStreamCollector {
    /// (job, slot, figures)
    jobs: Vec<(String, String, Arc<StreamStats>)>,
}

#[async_trait]
impl Collector for WalStreamCollector {
    fn name(&self) -> &str {
        "wal_stream"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(families(&self.jobs, now).into())
    }
}

fn families(jobs: &[(String, String, Arc<StreamStats>)], now: i64) -> Vec<MetricFamily> {
    let counter = |name: &str, help: &str| MetricFamily::counter(name, help);
    let gauge = |name: &str, help: &str| MetricFamily::gauge(name, help);
    let mut up = gauge(
        "steward_wal_stream_up",
        "1 while pg_receivewal runs and holds the job's replication slot.",
    );
    let mut retained = gauge(
        "steward_wal_stream_slot_retained_bytes",
        "WAL bytes the replication slot keeps on the server (pg_current_wal_lsn() - restart_lsn); absent while the server or slot cannot be read.",
    );
    let mut received_lsn = gauge(
        "steward_wal_stream_received_lsn_bytes",
        "Newest WAL position the receiver flushed to its spool (LSN as a byte position).",
    );
    let mut received_at = gauge(
        "steward_wal_stream_last_received_timestamp_seconds",
        "When the received WAL position last moved (Unix time).",
    );
    let mut shipped_lsn = gauge(
        "steward_wal_stream_shipped_lsn_bytes",
        "WAL before this position is on every target of the job (LSN as a byte position).",
    );
    let mut shipped_at = gauge(
        "steward_wal_stream_last_shipped_timestamp_seconds",
        "When streamed WAL (a delta or a complete segment) was last stored on every target (Unix time).",
    );
    let mut lag = gauge(
        "steward_wal_stream_lag_seconds",
        "Seconds since everything received was on every target (0 while up to date): what a restore now would lose beyond the receiver.",
    );
    let mut unshipped = gauge(
        "steward_wal_stream_unshipped_bytes",
        "WAL received and not on every target yet.",
    );
    let mut deltas = counter(
        "steward_wal_stream_deltas_total",
        "Deltas (new bytes of the segment being written) stored on every target.",
    );
    let mut delta_bytes = counter(
        "steward_wal_stream_delta_bytes_total",
        "WAL bytes shipped as deltas (before compression and encryption).",
    );
    let mut segments = counter(
        "steward_wal_stream_segments_total",
        "Complete segments the streamer archived on every target.",
    );
    let mut stored = counter(
        "steward_wal_stream_stored_bytes_total",
        "Bytes stored by the streamer over all targets (compressed and encrypted).",
    );
    let mut failures = counter(
        "steward_wal_stream_failures_total",
        "Times streaming or shipping failed (server unreachable, receiver stopped, target down); retried with backoff.",
    );
    for (job, slot, s) in jobs {
        let l = [("job", job.clone())];
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        up.push(l.clone(), f64::from(u8::from(s.up.load(Ordering::Relaxed))));
        let kept = s.slot_retained_bytes.load(Ordering::Relaxed);
        if kept >= 0 {
            retained.push([("job", job.clone()), ("slot", slot.clone())], kept as f64);
        }
        let received = s.received_lsn.load(Ordering::Relaxed);
        let shipped = s.shipped_lsn.load(Ordering::Relaxed);
        if received > 0 {
            received_lsn.push(l.clone(), received as f64);
            unshipped.push(l.clone(), received.saturating_sub(shipped) as f64);
        }
        if shipped > 0 {
            shipped_lsn.push(l.clone(), shipped as f64);
        }
        let at = s.received_at.load(Ordering::Relaxed);
        if at > 0 {
            received_at.push(l.clone(), at as f64);
        }
        let at = s.last_shipped_at.load(Ordering::Relaxed);
        if at > 0 {
            shipped_at.push(l.clone(), at as f64);
        }
        let caught_up = s.caught_up_at.load(Ordering::Relaxed);
        if caught_up > 0 {
            lag.push(l.clone(), (now - caught_up).max(0) as f64);
        }
        deltas.push(l.clone(), get(&s.deltas));
        delta_bytes.push(l.clone(), get(&s.delta_bytes));
        segments.push(l.clone(), get(&s.segments));
        stored.push(l.clone(), get(&s.stored_bytes));
        failures.push(l.clone(), get(&s.failures));
    }
    vec![
        up,
        retained,
        received_lsn,
        received_at,
        shipped_lsn,
        shipped_at,
        lag,
        unshipped,
        deltas,
        delta_bytes,
        segments,
        stored,
        failures,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_lag_is_labelled_with_the_slot_and_absent_while_unknown() {
        let known = Arc::new(StreamStats::default());
        known.slot_retained_bytes.store(3 << 20, Ordering::Relaxed); // 3 MiB
        known.received_lsn.store(5000, Ordering::Relaxed);
        known.shipped_lsn.store(4000, Ordering::Relaxed);
        let unknown = Arc::new(StreamStats::default());
        let jobs = vec![
            ("db".to_string(), "steward".to_string(), known),
            ("other".to_string(), "s2".to_string(), unknown),
        ];
        let text = steward_exporters::exposition::encode(&families(&jobs, 100));
        assert!(
            text.contains(
                "steward_wal_stream_slot_retained_bytes{job=\"db\",slot=\"steward\"} 3.145728e+06"
            ),
            "{text}"
        );
        assert!(!text.contains("slot=\"s2\""), "{text}");
        assert!(
            text.contains("steward_wal_stream_unshipped_bytes{job=\"db\"} 1000"),
            "{text}"
        );
        assert!(
            text.contains("steward_wal_stream_up{job=\"other\"} 0"),
            "{text}"
        );
    }
}
