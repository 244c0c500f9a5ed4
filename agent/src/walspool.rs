//! Async WAL archiving in the daemon: one task per `postgres_pitr` job
//! with `archive_async = true` empties the job's spool (the work is
//! steward_backup::wal::spool::drain_once), stopped with the
//! configuration generation; `steward_wal_*` metrics are read from each
//! task's live figures at scrape time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use steward_backup::manifest::JobKind;
use steward_backup::pipeline::PipelineSettings;
use steward_backup::target;
use steward_backup::wal::spool::{self, Drain, SpoolStats};
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;

/// How often an idle spool is looked at: a push waits in the spool at
/// most about this long before its upload starts.
const POLL: Duration = Duration::from_millis(500);
/// Longest wait between attempts while a file cannot be archived.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Starts a drain task per job with `archive_async`; none, no task.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let backup = Arc::new(config.backup.clone());
    let jobs: Vec<(String, steward_backup::config::JobConfig)> = backup
        .jobs
        .iter()
        .filter(|(_, j)| j.kind == JobKind::PostgresPitr && j.archive_async)
        .map(|(n, j)| (n.clone(), j.clone()))
        .collect();
    if jobs.is_empty() {
        return Ok(Subsystem::default());
    }
    let recipients = backup.recipients()?;
    let host = config.agent.effective_hostname();
    let mut all = Vec::new();
    let mut tasks = Vec::new();
    for (name, job) in jobs {
        let Some(dir) = job.spool_dir.clone() else {
            continue;
        };
        let stats = Arc::new(SpoolStats::default());
        all.push((name.clone(), Arc::clone(&stats), job.spool_max_bytes));
        let settings = PipelineSettings {
            zstd_level: job.zstd_level,
            // One segment at a time, as `wal push` does.
            zstd_workers: 1,
            recipients: recipients.clone(),
        };
        let (backup, host, cancel) = (Arc::clone(&backup), host.clone(), cancel.clone());
        tasks.push(tokio::spawn(async move {
            let work = async {
                // Opened once (S3 clients) and kept; a target that cannot
                // be opened is retried, the spool meanwhile keeps the WAL.
                let targets = loop {
                    let opened = target::open_all(&backup, &job.target_names()).await;
                    let errors: Vec<String> = opened
                        .iter()
                        .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("target {t}: {e}")))
                        .collect();
                    if errors.is_empty() {
                        break opened;
                    }
                    let e = errors.join("; ");
                    tracing::error!(job = %name, "async WAL archiving cannot open its targets: {e}; retrying in 30s");
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    set_error(&stats, Some(e));
                    tokio::time::sleep(MAX_BACKOFF).await;
                };
                let drain = Drain {
                    job: name.clone(),
                    host,
                    dir,
                    targets,
                    settings,
                };
                run(&drain, &stats).await;
            };
            tokio::select! {
                _ = work => {}
                _ = cancel.cancelled() => {}
            }
        }));
    }
    Ok(Subsystem {
        collectors: vec![Arc::new(SpoolCollector { jobs: all }) as Arc<dyn Collector>],
        tasks,
    })
}

fn set_error(stats: &SpoolStats, e: Option<String>) {
    if let Ok(mut g) = stats.last_error.lock() {
        *g = e;
    }
}

/// Drains forever: polls while it keeps up, backs off (1 s doubling to
/// 30 s) while a file cannot be archived, logging each new error once.
async fn run(drain: &Drain, stats: &SpoolStats) {
    let mut backoff = Duration::from_secs(1);
    let mut last_logged: Option<String> = None;
    loop {
        match spool::drain_once(drain, stats).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(job = %drain.job, files = n, "spooled WAL archived");
                }
                if last_logged.take().is_some() {
                    tracing::info!(job = %drain.job, "async WAL archiving works again; the spool is empty");
                }
                set_error(stats, None);
                backoff = Duration::from_secs(1);
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                let e = e.to_string();
                stats.failures.fetch_add(1, Ordering::Relaxed);
                if last_logged.as_deref() != Some(e.as_str()) {
                    tracing::error!(job = %drain.job, "async WAL archiving: {e}; the file stays in the spool and is retried");
                    last_logged = Some(e.clone());
                }
                set_error(stats, Some(e));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

struct SpoolCollector {
    /// Job name, live figures, spool_max_bytes.
    jobs: Vec<(String, Arc<SpoolStats>, u64)>,
}

#[async_trait]
impl Collector for SpoolCollector {
    fn name(&self) -> &str {
        "wal_spool"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        Ok(families(&self.jobs, steward_backup::chrono::Utc::now().timestamp()).into())
    }
}

fn families(jobs: &[(String, Arc<SpoolStats>, u64)], now: i64) -> Vec<MetricFamily> {
    let counter = |name: &str, help: &str| MetricFamily::counter(name, help);
    let gauge = |name: &str, help: &str| MetricFamily::gauge(name, help);
    let mut bytes = gauge(
        "steward_wal_spool_bytes",
        "Bytes waiting in the async WAL spool of the job (archive_async).",
    );
    let mut files = gauge(
        "steward_wal_spool_files",
        "Files waiting in the async WAL spool of the job (archive_async).",
    );
    let mut max = gauge(
        "steward_wal_spool_max_bytes",
        "The spool's limit (spool_max_bytes): a push that would go over it fails and PostgreSQL keeps the WAL.",
    );
    let mut archived = counter(
        "steward_wal_archived_files_total",
        "WAL files the agent took from the spool and stored on every target of the job.",
    );
    let mut archived_bytes = counter(
        "steward_wal_archived_bytes_total",
        "Bytes of those WAL files (before compression and encryption).",
    );
    let mut failures = counter(
        "steward_wal_archive_failures_total",
        "Upload rounds of the spool that stopped on an error (target down, content conflict); retried.",
    );
    let mut last = gauge(
        "steward_wal_last_archived_timestamp_seconds",
        "When the agent last stored a spooled WAL file on every target (Unix time).",
    );
    let mut lag = gauge(
        "steward_wal_archive_lag_seconds",
        "Age of the oldest WAL file still in the spool (0 when empty): how far the archive is behind what PostgreSQL handed over.",
    );
    for (job, s, limit) in jobs {
        let l = [("job", job.clone())];
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        bytes.push(l.clone(), get(&s.spool_bytes));
        files.push(l.clone(), get(&s.spool_files));
        max.push(l.clone(), *limit as f64);
        archived.push(l.clone(), get(&s.archived_files));
        archived_bytes.push(l.clone(), get(&s.archived_bytes));
        failures.push(l.clone(), get(&s.failures));
        let at = s.last_archived_at.load(Ordering::Relaxed);
        if at > 0 {
            last.push(l.clone(), at as f64);
        }
        let oldest = s.oldest_pending_at.load(Ordering::Relaxed);
        lag.push(
            l,
            if oldest > 0 {
                (now - oldest).max(0) as f64
            } else {
                0.0
            },
        );
    }
    vec![
        bytes,
        files,
        max,
        archived,
        archived_bytes,
        failures,
        last,
        lag,
    ]
}
