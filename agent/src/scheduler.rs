//! Runs scheduled work inside the daemon: backup jobs on their cron, config
//! jobs on change (polled, debounced), and missed-run reporting; exposes
//! `steward_backup_*` metrics.
//!
//! Scheduling uses the `croner` crate for the cron arithmetic and one tokio
//! task per job sleeping until the next due time, rather than
//! tokio-cron-scheduler: missed-run detection needs the occurrence
//! arithmetic directly (runs due between the last one handled and now), a
//! job must never overlap itself (a task that runs then computes its next
//! time cannot), and each configuration generation must stop with its
//! cancellation token; a scheduler with its own job store and runtime
//! would duplicate all of that.
//!
//! Metrics come from the run reports in the state directory, so runs made
//! by `steward backup run` (pre-deploy) count as well as scheduled ones.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use steward_backup::chrono::{DateTime, Utc};
use steward_backup::config::{BackupConfig, JobConfig};
use steward_backup::manifest::JobKind;
use steward_backup::report::{self, RunReport, RunStatus};
use steward_backup::run::{run_job, RunOptions};
use steward_backup::schedule::{wait_step, Schedule, Wait};
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;
use crate::grafana::{AnnotationKind, Annotator};
use crate::notify::{random_uuid, Event, Notifications};

/// Cap on missed runs counted after downtime (a year of hourly runs).
const MISSED_CAP: usize = 10_000;

/// Starts the scheduler for one configuration generation; stops when
/// `cancel` fires.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let backup = Arc::new(config.backup.clone());
    let state_dir = config.agent.state_dir.clone();
    let host = config.agent.effective_hostname();
    let annotator = Annotator::new(&config.grafana, host.clone());
    let notifications = Notifications::start(&config.notify);
    let metrics = Arc::new(BackupMetrics::new(
        &state_dir,
        backup.jobs.keys().cloned().collect(),
    ));
    let mut tasks = Vec::new();
    for (name, job) in &backup.jobs {
        let ctx = JobContext {
            name: name.clone(),
            backup: Arc::clone(&backup),
            state_dir: state_dir.clone(),
            host: host.clone(),
            metrics: Arc::clone(&metrics),
            cancel: cancel.clone(),
            annotator: annotator.clone(),
            notifications: notifications.clone(),
        };
        if let Some(expr) = &job.schedule {
            let schedule = Schedule::parse(expr, &job.timezone)
                .map_err(|e| anyhow::anyhow!("backup.jobs.{name}.schedule: {e}"))?;
            tasks.push(tokio::spawn(schedule_loop(
                ctx.clone(),
                schedule,
                job.catch_up,
            )));
        }
        if job.kind == JobKind::Mysql && job.binlog {
            tasks.push(tokio::spawn(gap_loop(ctx.clone())));
        }
        if job.kind == JobKind::Config && job.watch {
            tasks.push(tokio::spawn(watch_loop(ctx, job.clone())));
        }
    }
    let drills = crate::scheduled_drills::start(config, notifications, cancel.clone())?;
    tasks.extend(drills.tasks);
    let mut collectors = vec![Arc::new(BackupCollector { metrics }) as Arc<dyn Collector>];
    collectors.extend(drills.collectors);
    Ok(Subsystem { collectors, tasks })
}

#[derive(Clone)]
struct JobContext {
    name: String,
    backup: Arc<BackupConfig>,
    state_dir: PathBuf,
    host: String,
    metrics: Arc<BackupMetrics>,
    cancel: CancellationToken,
    /// Posts a Grafana annotation when a run fails (no-op without
    /// `[grafana]`), so the failure shows on every dashboard.
    annotator: Annotator,
    /// `[[notify]]`: start, success and failure of each run, queued
    /// without waiting.
    notifications: Notifications,
}

impl JobContext {
    /// Runs the job once (the job lock keeps it from overlapping a CLI run
    /// or itself).
    async fn run(&self, reason: &str) -> Option<RunReport> {
        let mut options = RunOptions::new(self.host.clone(), self.state_dir.clone(), reason);
        options.steward_version = env!("CARGO_PKG_VERSION").to_string();
        self.metrics.set_running(&self.name, true);
        let run_id = random_uuid();
        self.notifications
            .notify(Event::backup_start(&self.host, &self.name, reason, &run_id));
        let span = crate::spans::backup_span(&self.name, reason);
        let result = tokio::select! {
            r = tracing::Instrument::instrument(run_job(&self.backup, &self.name, &options), span.clone()) => Some(r),
            _ = self.cancel.cancelled() => None,
        };
        crate::spans::record_backup(&span, result.as_ref());
        drop(span);
        self.metrics.set_running(&self.name, false);
        match result {
            None => {
                tracing::warn!(job = %self.name, "backup run interrupted by shutdown or reload; nothing was committed");
                self.notifications.notify(Event::backup_not_run(
                    &self.host,
                    &self.name,
                    reason,
                    &run_id,
                    "interrupted by the agent stopping or reloading; nothing was committed",
                ));
                None
            }
            Some(Err(e)) => {
                tracing::warn!(job = %self.name, reason, "backup run skipped: {e}");
                self.metrics.count_skipped(&self.name);
                self.notifications.notify(Event::backup_not_run(
                    &self.host,
                    &self.name,
                    reason,
                    &run_id,
                    &e.to_string(),
                ));
                None
            }
            Some(Ok(report)) => {
                self.notifications
                    .notify(Event::backup_finished(&run_id, &report));
                match report.status {
                    RunStatus::Success => tracing::info!(
                        job = %self.name, reason, snapshot = %report.snapshot_id,
                        source_bytes = report.source_bytes, stored_bytes = report.stored_bytes,
                        seconds = report.duration_seconds, "backup succeeded"
                    ),
                    RunStatus::Unchanged => {
                        tracing::info!(job = %self.name, reason, "backup skipped: content unchanged")
                    }
                    RunStatus::Partial | RunStatus::Failed => {
                        let cause = report.error.as_deref().unwrap_or("unknown cause");
                        tracing::error!(
                            job = %self.name, reason, status = report.status.as_str(),
                            "backup failed: {cause}"
                        );
                        self.annotator.annotate_in_background(
                            AnnotationKind::BackupFailure,
                            format!("backup {} on {} failed: {cause}", self.name, self.host),
                            vec![format!("job:{}", self.name)],
                        );
                    }
                }
                Some(report)
            }
        }
    }
}

/// Where the last handled due time of a job is kept, for missed-run
/// detection across restarts.
fn schedule_state_path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir
        .join("backup")
        .join("schedule")
        .join(format!("{job}.json"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ScheduleState {
    /// The schedule expression the time refers to.
    schedule: String,
    /// The latest due time that was run, reported or deliberately passed.
    handled_until: DateTime<Utc>,
}

fn read_schedule_state(path: &Path) -> Option<ScheduleState> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn write_schedule_state(path: &Path, state: &ScheduleState) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension("json.tmp");
    let ok = serde_json::to_vec(state)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|_| std::fs::rename(&tmp, path).ok());
    if ok.is_none() {
        tracing::warn!("cannot record the schedule state in {}", path.display());
    }
}

async fn schedule_loop(ctx: JobContext, schedule: Schedule, catch_up: bool) {
    let state_path = schedule_state_path(&ctx.state_dir, &ctx.name);
    let now = Utc::now();
    if let Some(prev) = read_schedule_state(&state_path) {
        if prev.schedule == schedule.expression() {
            let (missed, latest) = schedule.due_between(prev.handled_until, now, MISSED_CAP);
            if missed > 0 {
                tracing::warn!(
                    job = %ctx.name,
                    missed,
                    latest_due = %latest.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    since = %prev.handled_until.to_rfc3339(),
                    "scheduled backup runs were missed while steward was not running{}",
                    if catch_up { "; running once now" } else { " (catch_up = false: waiting for the next due time)" }
                );
                ctx.metrics.count_missed(&ctx.name, missed as u64);
                write_schedule_state(
                    &state_path,
                    &ScheduleState {
                        schedule: schedule.expression().to_string(),
                        handled_until: now,
                    },
                );
                if catch_up {
                    ctx.run("catch-up").await;
                }
            }
        }
    }
    let mut handled = Utc::now().max(now);
    write_schedule_state(
        &state_path,
        &ScheduleState {
            schedule: schedule.expression().to_string(),
            handled_until: handled,
        },
    );
    loop {
        let Some(next) = schedule.next_after(handled) else {
            tracing::warn!(job = %ctx.name, "schedule {:?} has no future run", schedule.expression());
            return;
        };
        ctx.metrics
            .set_next_run(&ctx.name, next, schedule.next_after(next));
        // Sleep in bounded slices and re-read the wall clock each time
        // (the monotonic sleep alone would miss a clock being corrected).
        let went_back = loop {
            match wait_step(handled, next, Utc::now()) {
                Wait::Due => break false,
                Wait::ClockWentBack => break true,
                Wait::Sleep(d) => {
                    tokio::select! {
                        _ = ctx.cancel.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        };
        if went_back {
            let now = Utc::now();
            tracing::warn!(
                job = %ctx.name,
                was = %handled.to_rfc3339(),
                now = %now.to_rfc3339(),
                "the wall clock went back; the next run is computed again from the corrected time"
            );
            handled = now;
            write_schedule_state(
                &state_path,
                &ScheduleState {
                    schedule: schedule.expression().to_string(),
                    handled_until: handled,
                },
            );
            continue;
        }
        write_schedule_state(
            &state_path,
            &ScheduleState {
                schedule: schedule.expression().to_string(),
                handled_until: next,
            },
        );
        ctx.run("schedule").await;
        // Runs that fell due while this one was going are reported, not
        // silently dropped, and the next one is the first in the future.
        let finished = Utc::now();
        let (overrun, _) = schedule.due_between(next, finished, MISSED_CAP);
        if overrun > 0 {
            tracing::warn!(
                job = %ctx.name,
                missed = overrun,
                "scheduled backup runs were skipped because the previous run was still going; consider a longer interval"
            );
            ctx.metrics.count_missed(&ctx.name, overrun as u64);
        }
        handled = finished.max(next);
        write_schedule_state(
            &state_path,
            &ScheduleState {
                schedule: schedule.expression().to_string(),
                handled_until: handled,
            },
        );
    }
}

/// Binlog shipping found a gap (binlogs purged before they were
/// shipped): point-in-time recovery cannot cross it from any older dump,
/// so a full dump is taken at once (reason `binlog-gap`), retried every
/// minute until one succeeds. The request is a file the shipper writes,
/// so it survives a restart of the agent.
async fn gap_loop(ctx: JobContext) {
    use steward_backup::binlog::ship;
    loop {
        let pause = match ship::pending_gap(&ctx.state_dir, &ctx.name) {
            None => GAP_POLL,
            Some(gap) => {
                tracing::warn!(job = %ctx.name, "{gap}: taking a full dump so point-in-time recovery resumes");
                let done = ctx.run(ship::GAP_REASON).await;
                if done.is_some_and(|r| r.status == RunStatus::Success) {
                    ship::clear_gap(&ctx.state_dir, &ctx.name, &gap);
                    GAP_POLL
                } else {
                    GAP_RETRY
                }
            }
        };
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How often the gap request is looked for, and how long after a failed
/// dump it is tried again.
const GAP_POLL: Duration = Duration::from_secs(2);
const GAP_RETRY: Duration = Duration::from_secs(60);

/// Takes a `baseline` snapshot, then polls the config paths and runs the
/// job once they have been quiet for `debounce_secs` after a change. Polling (metadata only, content hashed
/// by the run itself) is cheap for config trees and works on every
/// filesystem; an unchanged digest makes no new snapshot anyway.
async fn watch_loop(ctx: JobContext, job: JobConfig) {
    let interval = Duration::from_secs(job.watch_interval_secs.max(1));
    let debounce = Duration::from_secs(job.debounce_secs);
    let paths = job.paths.clone();
    let fingerprint = move || {
        let p = paths.clone();
        async move {
            tokio::task::spawn_blocking(move || metadata_fingerprint(&p))
                .await
                .unwrap_or_default()
        }
    };
    let mut last = fingerprint().await;
    // The state before the first change must exist to roll back to: at
    // start and after every reload, snapshot the live tree unless the
    // newest snapshot already holds this content (the run then records
    // `unchanged` and stores nothing).
    ctx.run("baseline").await;
    let mut changed_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now_fp = fingerprint().await;
        if now_fp != last {
            last = now_fp;
            changed_at = Some(tokio::time::Instant::now());
            tracing::debug!(job = %ctx.name, "config change seen; waiting {debounce:?} for more");
            continue;
        }
        if let Some(at) = changed_at {
            if at.elapsed() >= debounce {
                changed_at = None;
                ctx.run("config-change").await;
            }
        }
    }
}

/// Paths, sizes, mtimes, modes and inodes of everything under `roots`.
fn metadata_fingerprint(roots: &[PathBuf]) -> Vec<(PathBuf, u64, i64, i64, u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            out.push((p, 0, 0, 0, 0, 0));
            continue;
        };
        out.push((
            p.clone(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.mode(),
            m.ino(),
        ));
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

/// What the collector exposes: derived from the run reports on disk, plus
/// in-process counters.
struct BackupMetrics {
    state_dir: PathBuf,
    jobs: Vec<String>,
    inner: Mutex<MetricsState>,
}

#[derive(Default)]
struct MetricsState {
    /// Report files already counted in `runs`.
    seen: HashSet<PathBuf>,
    /// Parsed reports by path (they never change once written).
    cache: HashMap<PathBuf, Arc<RunReport>>,
    runs: BTreeMap<(String, String), u64>,
    missed: BTreeMap<String, u64>,
    next_run: BTreeMap<String, f64>,
    interval: BTreeMap<String, f64>,
    running: BTreeMap<String, bool>,
}

impl BackupMetrics {
    fn new(state_dir: &Path, jobs: Vec<String>) -> Self {
        let mut state = MetricsState::default();
        // Reports from before this start are the history, not new runs.
        for job in &jobs {
            for path in report_paths(state_dir, job) {
                state.seen.insert(path);
            }
            for result in ["success", "partial", "failed", "unchanged", "skipped"] {
                state.runs.insert((job.clone(), result.to_string()), 0);
            }
            state.missed.insert(job.clone(), 0);
        }
        BackupMetrics {
            state_dir: state_dir.to_path_buf(),
            jobs,
            inner: Mutex::new(state),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MetricsState) -> R) -> R {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn set_running(&self, job: &str, running: bool) {
        self.with(|s| {
            s.running.insert(job.to_string(), running);
        });
    }

    fn set_next_run(&self, job: &str, at: DateTime<Utc>, following: Option<DateTime<Utc>>) {
        self.with(|s| {
            s.next_run.insert(job.to_string(), at.timestamp() as f64);
            if let Some(f) = following {
                s.interval
                    .insert(job.to_string(), (f - at).num_seconds() as f64);
            }
        });
    }

    fn count_missed(&self, job: &str, n: u64) {
        self.with(|s| *s.missed.entry(job.to_string()).or_default() += n);
    }

    fn count_skipped(&self, job: &str) {
        self.with(|s| {
            *s.runs
                .entry((job.to_string(), "skipped".into()))
                .or_default() += 1
        });
    }

    /// Picks up new report files and returns each job's reports, oldest first.
    fn refresh(&self) -> BTreeMap<String, Vec<Arc<RunReport>>> {
        let mut out = BTreeMap::new();
        for job in &self.jobs {
            let paths = report_paths(&self.state_dir, job);
            let reports = self.with(|s| {
                let mut reports = Vec::new();
                s.cache.retain(|p, _| paths.contains(p));
                for p in &paths {
                    let report = match s.cache.get(p) {
                        Some(r) => Arc::clone(r),
                        None => {
                            let Some(r) = std::fs::read(p)
                                .ok()
                                .and_then(|b| serde_json::from_slice::<RunReport>(&b).ok())
                            else {
                                continue;
                            };
                            let r = Arc::new(r);
                            s.cache.insert(p.clone(), Arc::clone(&r));
                            r
                        }
                    };
                    if s.seen.insert(p.clone()) {
                        *s.runs
                            .entry((job.clone(), report.status.as_str().to_string()))
                            .or_default() += 1;
                    }
                    reports.push(report);
                }
                reports
            });
            out.insert(job.clone(), reports);
        }
        out
    }
}

fn report_paths(state_dir: &Path, job: &str) -> Vec<PathBuf> {
    let dir = report::reports_dir(state_dir, job);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

/// `steward_backup_*`.
struct BackupCollector {
    metrics: Arc<BackupMetrics>,
}

#[async_trait]
impl Collector for BackupCollector {
    fn name(&self) -> &str {
        "backup"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let metrics = Arc::clone(&self.metrics);
        let families = tokio::task::spawn_blocking(move || families(&metrics))
            .await
            .map_err(|e| CollectError::failed(format!("backup metrics task failed: {e}")))?;
        Ok(families.into())
    }
}

fn families(metrics: &BackupMetrics) -> Vec<MetricFamily> {
    let reports = metrics.refresh();
    let mut last_success = MetricFamily::gauge(
        "steward_backup_last_success_timestamp_seconds",
        "When the newest snapshot of the job was committed on the target (Unix time).",
    );
    let mut last_ok = MetricFamily::gauge(
        "steward_backup_last_run_success",
        "1 if the job's last run committed a snapshot on every target (or found the content unchanged), else 0.",
    );
    let mut duration = MetricFamily::gauge(
        "steward_backup_duration_seconds",
        "Duration of the job's last run.",
    );
    let mut size = MetricFamily::gauge(
        "steward_backup_size_bytes",
        "Bytes of the job's last run: stage=source is plaintext read, stage=stored is compressed and encrypted.",
    );
    let mut runs = MetricFamily::counter(
        "steward_backup_runs_total",
        "Runs of the job since the agent started, by result (success, partial, failed, unchanged, skipped).",
    );
    let mut missed = MetricFamily::counter(
        "steward_backup_missed_runs_total",
        "Scheduled runs that did not happen (agent down, or previous run still going).",
    );
    let mut next = MetricFamily::gauge(
        "steward_backup_next_run_timestamp_seconds",
        "When the job is next due (Unix time).",
    );
    let mut running = MetricFamily::gauge(
        "steward_backup_running",
        "1 while a scheduled run of the job is going.",
    );
    let mut interval = MetricFamily::gauge(
        "steward_backup_schedule_interval_seconds",
        "Time between the job's next two scheduled runs (alerts compare backup age with it).",
    );

    let mut refused = MetricFamily::gauge(
        "steward_backup_retention_refused",
        "1 if the job's last retention on the target removed nothing because the newest snapshot is dated in the future (a wrong clock), else 0.",
    );

    metrics.with(|s| {
        for ((job, result), n) in &s.runs {
            runs.push(
                [("job", job.clone()), ("result", result.clone())],
                *n as f64,
            );
        }
        for (job, n) in &s.missed {
            missed.push([("job", job.clone())], *n as f64);
        }
        for (job, t) in &s.next_run {
            next.push([("job", job.clone())], *t);
        }
        for (job, t) in &s.interval {
            interval.push([("job", job.clone())], *t);
        }
        for job in &metrics.jobs {
            let r = s.running.get(job).copied().unwrap_or(false);
            running.push([("job", job.clone())], if r { 1.0 } else { 0.0 });
        }
    });

    for (job, list) in &reports {
        // Unchanged runs confirm the content but carry no sizes.
        if let Some(last) = list.last() {
            last_ok.push(
                [("job", job.clone())],
                if last.status.is_good() { 1.0 } else { 0.0 },
            );
            duration.push([("job", job.clone())], last.duration_seconds);
        }
        if let Some(last) = list.iter().rev().find(|r| r.status != RunStatus::Unchanged) {
            size.push(
                [("job", job.clone()), ("stage", "source".to_string())],
                last.source_bytes as f64,
            );
            size.push(
                [("job", job.clone()), ("stage", "stored".to_string())],
                last.stored_bytes as f64,
            );
        }
        let mut per_target: BTreeMap<String, f64> = BTreeMap::new();
        // Retention runs only where a run committed; the latest such run
        // per target says whether pruning is currently refused.
        let mut refused_on: BTreeMap<String, bool> = BTreeMap::new();
        for r in list {
            for t in &r.targets {
                if t.committed {
                    refused_on.insert(t.target.clone(), t.retention_refused.is_some());
                }
                let ts = if t.committed {
                    Some(r.finished_at.timestamp() as f64)
                } else if r.status == RunStatus::Unchanged && t.error.is_none() {
                    // Unchanged content: the latest snapshot is still current.
                    Some(r.finished_at.timestamp() as f64)
                } else {
                    None
                };
                if let Some(ts) = ts {
                    let e = per_target.entry(t.target.clone()).or_insert(0.0);
                    *e = e.max(ts);
                }
            }
        }
        for (target, ts) in per_target {
            last_success.push([("job", job.clone()), ("target", target)], ts);
        }
        for (target, is_refused) in refused_on {
            refused.push(
                [("job", job.clone()), ("target", target)],
                if is_refused { 1.0 } else { 0.0 },
            );
        }
    }
    vec![
        last_success,
        last_ok,
        duration,
        size,
        runs,
        missed,
        next,
        interval,
        running,
        refused,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sees_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let roots = vec![dir.path().to_path_buf()];
        let a = metadata_fingerprint(&roots);
        std::fs::write(dir.path().join("x"), "1").unwrap();
        assert_ne!(a, metadata_fingerprint(&roots));
    }
}
