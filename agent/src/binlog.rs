//! Binlog shipping in the daemon: one task per `mysql` job with
//! `binlog = true` (the work is steward_backup::binlog::ship), stopped
//! with the configuration generation, and the `steward_binlog_*` metrics
//! read from each task's live figures at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use steward_backup::binlog::ship::{self, ShipStats, ShipperOptions};
use steward_backup::pipeline::PipelineSettings;
use steward_backup::target;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;

/// Starts a shipper per job with `binlog = true`; none, no task.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let backup = Arc::new(config.backup.clone());
    let jobs: Vec<String> = backup
        .jobs
        .iter()
        .filter(|(_, j)| j.binlog)
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
        let stats = Arc::new(ShipStats::default());
        all.push((name.clone(), Arc::clone(&stats)));
        let settings = PipelineSettings {
            zstd_level: job.zstd_level,
            // Binlog pieces are at most max_binlog_size and ship in the
            // background: one zstd thread spends less CPU per MB than a
            // worker pool (no job hand-offs, no overlap reloads) and
            // keeps up with far more binlog than a server writes.
            // zstd_workers still sets the job's dumps.
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
                // Targets open (S3 clients) inside the task, retried: a
                // store that is down at start must not stop shipping later.
                let targets = loop {
                    let e = match target::open_every(&backup, &job.target_names()).await {
                        Ok(opened) => break opened,
                        Err(e) => e,
                    };
                    tracing::error!(job = %name, "binlog shipping cannot open its targets: {e}; retrying in 30s");
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut g) = stats.last_error.lock() {
                        *g = Some(e);
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                };
                let options = ShipperOptions {
                    job_name: name.clone(),
                    job,
                    host,
                    state_dir,
                    targets,
                    settings,
                };
                ship::run(options, stats).await;
            };
            tokio::select! {
                _ = work => {}
                _ = cancel.cancelled() => {}
            }
        }));
    }
    Ok(Subsystem {
        collectors: vec![Arc::new(BinlogCollector { jobs: all }) as Arc<dyn Collector>],
        tasks,
    })
}

struct BinlogCollector {
    jobs: Vec<(String, Arc<ShipStats>)>,
}

#[async_trait]
impl Collector for BinlogCollector {
    fn name(&self) -> &str {
        "binlog"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        Ok(families(&self.jobs, chrono_now()).into())
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn families(jobs: &[(String, Arc<ShipStats>)], now: i64) -> Vec<MetricFamily> {
    let counter = |name: &str, help: &str| MetricFamily::counter(name, help);
    let gauge = |name: &str, help: &str| MetricFamily::gauge(name, help);
    let mut segments = counter(
        "steward_binlog_shipped_segments_total",
        "Binlog segments stored on every target of the job.",
    );
    let mut files = counter(
        "steward_binlog_shipped_files_total",
        "Binlog files shipped to their end (the server moved on to the next file).",
    );
    let mut bytes = counter(
        "steward_binlog_shipped_bytes_total",
        "Binlog bytes shipped (before compression and encryption).",
    );
    let mut stored = counter(
        "steward_binlog_stored_bytes_total",
        "Bytes stored per target for shipped binlogs (compressed and encrypted).",
    );
    let mut failures = counter(
        "steward_binlog_ship_failures_total",
        "Times shipping stopped on an error (server unreachable, missing privilege, target down); it is retried.",
    );
    let mut gaps = counter(
        "steward_binlog_gaps_total",
        "Binlogs purged on the server before they were shipped: point-in-time recovery cannot cross them until a new dump is taken.",
    );
    let mut following = gauge(
        "steward_binlog_following",
        "1 while the binlog follower is connected to the server.",
    );
    let mut last_shipped = gauge(
        "steward_binlog_last_shipped_timestamp_seconds",
        "When the last binlog segment was stored on every target (Unix time).",
    );
    let mut last_event = gauge(
        "steward_binlog_last_event_timestamp_seconds",
        "Server time of the newest shipped binlog event (Unix time).",
    );
    let mut unshipped = gauge(
        "steward_binlog_unshipped_bytes",
        "Bytes received from the server and not shipped yet.",
    );
    let mut lag = gauge(
        "steward_binlog_lag_seconds",
        "Seconds since everything received from the server was shipped (0 while up to date).",
    );
    let mut position = gauge(
        "steward_binlog_shipped_position_bytes",
        "Next byte to ship of the binlog file named in the label (everything before it is shipped).",
    );
    for (job, s) in jobs {
        let l = [("job", job.clone())];
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        segments.push(l.clone(), get(&s.segments));
        files.push(l.clone(), get(&s.files));
        bytes.push(l.clone(), get(&s.bytes));
        stored.push(l.clone(), get(&s.stored_bytes));
        failures.push(l.clone(), get(&s.failures));
        gaps.push(l.clone(), get(&s.gaps));
        unshipped.push(l.clone(), get(&s.unshipped_bytes));
        following.push(
            l.clone(),
            f64::from(u8::from(s.following.load(Ordering::Relaxed))),
        );
        let shipped_at = s.last_shipped_at.load(Ordering::Relaxed);
        if shipped_at > 0 {
            last_shipped.push(l.clone(), shipped_at as f64);
        }
        let event_at = s.last_event_at.load(Ordering::Relaxed);
        if event_at > 0 {
            last_event.push(l.clone(), event_at as f64);
        }
        let caught_up = s.caught_up_at.load(Ordering::Relaxed);
        if caught_up > 0 {
            lag.push(l.clone(), (now - caught_up).max(0) as f64);
        }
        if let Ok(Some((file, offset))) = s.position.lock().map(|g| g.clone()) {
            position.push([("job", job.clone()), ("file", file)], offset as f64);
        }
    }
    vec![
        segments,
        files,
        bytes,
        stored,
        failures,
        gaps,
        following,
        last_shipped,
        last_event,
        unshipped,
        lag,
        position,
    ]
}
