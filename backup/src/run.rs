//! One run of a job, start to end: lock, clean leftovers of failed runs,
//! plan the sources, stream every object to every target, write the
//! manifest last, apply retention, write the report. The CLI
//! (`steward backup run`) and the daemon's scheduler both call [`run_job`].
//!
//! Failure rules: any source failure (tool exit status, missing trailer,
//! database unreachable, timeout) fails the run on every target and no
//! manifest is written; a target failing fails that target only. Retention
//! runs only on targets where this run committed a snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::catalog;
use crate::config::{BackupConfig, JobConfig};
use crate::error::{Error, Result};
use crate::layout;
use crate::lock::JobLock;
use crate::manifest::{FilesInfo, JobKind, Manifest, ObjectEntry, ObjectRole, FORMAT_VERSION};
use crate::pipeline::{store_object, ByteCounters, PipelineSettings, StoredHash};
use crate::report::{self, RunReport, RunStatus, TargetReport};
use crate::retention::{self, Candidate, Decision};
use crate::source::files::{content_digest, Selection, TarSource};
use crate::source::{mysql, postgres, PlannedObject};
use crate::target::{self, StorageTarget};

/// How a run is started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Host segment of the snapshot keys (`agent.effective_hostname()`).
    pub host: String,
    /// `agent.state_dir`: locks and reports live below it.
    pub state_dir: PathBuf,
    /// Recorded in the manifest and report (`schedule`, `manual`,
    /// `pre-deploy`, `config-change`, `catch-up`, ...).
    pub reason: String,
    /// Steward's version, recorded in the manifest.
    pub steward_version: String,
    /// Live byte counters (the CLI's progress line, the report).
    pub counters: Arc<ByteCounters>,
}

impl RunOptions {
    pub fn new(
        host: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        reason: impl Into<String>,
    ) -> Self {
        RunOptions {
            host: host.into(),
            state_dir: state_dir.into(),
            reason: reason.into(),
            steward_version: String::new(),
            counters: Arc::new(ByteCounters::default()),
        }
    }
}

/// Runs `job_name` once. `Err` only when the run could not start (unknown
/// job, lock held by another run); every failure after that is a report
/// with status `failed`, also written to the state directory.
pub async fn run_job(
    config: &BackupConfig,
    job_name: &str,
    options: &RunOptions,
) -> Result<RunReport> {
    let job = config.jobs.get(job_name).ok_or_else(|| {
        Error::Config(format!(
            "no backup job named {job_name:?}; configured jobs: {}",
            names(config.jobs.keys())
        ))
    })?;
    let _lock = JobLock::try_acquire(&options.state_dir, job_name)?;
    let report = run_locked(config, job_name, job, options).await;
    if let Err(e) = report::write(&options.state_dir, &report, config.reports_keep) {
        tracing::warn!(
            job = job_name,
            "cannot write the run report under {}: {e}",
            options.state_dir.display()
        );
    }
    Ok(report)
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

struct TargetState {
    target: Option<Arc<dyn StorageTarget>>,
    report: TargetReport,
}

impl TargetState {
    fn live(&self) -> bool {
        self.target.is_some() && self.report.error.is_none()
    }
    fn fail(&mut self, error: String) {
        if self.report.error.is_none() {
            self.report.error = Some(error);
        }
    }
}

async fn run_locked(
    config: &BackupConfig,
    job_name: &str,
    job: &JobConfig,
    options: &RunOptions,
) -> RunReport {
    let started = Utc::now();
    let clock = Instant::now();
    let snapshot_id = layout::new_snapshot_id(started);
    let mut report = RunReport {
        job: job_name.to_string(),
        kind: job.kind,
        host: options.host.clone(),
        snapshot_id: snapshot_id.clone(),
        reason: options.reason.clone(),
        status: RunStatus::Failed,
        error: None,
        started_at: started,
        finished_at: started,
        duration_seconds: 0.0,
        source_bytes: 0,
        stored_bytes: 0,
        targets: Vec::new(),
    };
    let mut states = Vec::new();
    for (name, opened) in target::open_all(config, &job.target_names()).await {
        let (target, location, error) = match opened {
            Ok(t) => {
                let location = t.location();
                (Some(t), location, None)
            }
            Err(e) => (None, String::new(), Some(e.to_string())),
        };
        states.push(TargetState {
            target,
            report: TargetReport {
                target: name,
                location,
                committed: false,
                error,
                stored_bytes: 0,
                cleaned: Vec::new(),
                retention: Vec::new(),
                retention_error: None,
                retention_refused: None,
            },
        });
    }

    let outcome = tokio::time::timeout(
        Duration::from_secs(job.timeout_secs),
        stream_job(
            config,
            job_name,
            job,
            options,
            &snapshot_id,
            started,
            &mut states,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Error::TimedOut {
            job: job_name.to_string(),
            timeout_secs: job.timeout_secs,
        })
    });

    match outcome {
        Err(e) => {
            report.error = Some(e.to_string());
            for s in &mut states {
                s.fail(format!("not stored: {e}"));
            }
        }
        Ok(Stream::Unchanged) => {
            report.status = RunStatus::Unchanged;
        }
        Ok(Stream::Done) => {}
    }

    // Objects of this snapshot on failed targets are useless without a
    // manifest; remove them now (best effort: the next run's cleanup
    // catches what this cannot reach).
    for s in states.iter().filter(|s| !s.report.committed) {
        if let Some(t) = &s.target {
            let prefix = layout::snapshot_prefix(&options.host, job_name, &snapshot_id);
            let t = Arc::clone(t);
            let _ = tokio::time::timeout(Duration::from_secs(30), async move {
                if let Ok(objects) = t.list(&prefix).await {
                    for o in objects {
                        let _ = t.delete(&o.key).await;
                    }
                }
            })
            .await;
        }
    }

    // Retention, only where this run committed a snapshot.
    for s in states.iter_mut().filter(|s| s.report.committed) {
        let Some(t) = &s.target else { continue };
        let policy = config.retention(job_name, &s.report.target);
        match apply_retention(
            t.as_ref(),
            &options.host,
            job_name,
            &policy,
            Some(&snapshot_id),
            false,
        )
        .await
        {
            Ok(applied) => {
                s.report.retention_error = retention_failures(&applied.decisions);
                s.report.retention = applied.decisions;
                s.report.retention_refused = applied.refused;
            }
            Err(e) => s.report.retention_error = Some(e.to_string()),
        }
        if job.kind == JobKind::PostgresPitr && s.report.retention_refused.is_none() {
            match crate::wal::retention::prune(t.as_ref(), &options.host, job_name).await {
                Ok(removed) if !removed.is_empty() => tracing::info!(
                    job = job_name,
                    target = t.name(),
                    "removed {} archived WAL file(s) no kept base backup needs",
                    removed.len()
                ),
                Ok(_) => {}
                Err(e) => s.report.retention_error = Some(format!("pruning the WAL archive: {e}")),
            }
        }
    }

    report.source_bytes = options.counters.source();
    report.targets = states.into_iter().map(|s| s.report).collect();
    let committed = report.targets.iter().filter(|t| t.committed).count();
    if report.status != RunStatus::Unchanged {
        report.status = if committed == report.targets.len() && committed > 0 {
            RunStatus::Success
        } else if committed > 0 {
            RunStatus::Partial
        } else {
            RunStatus::Failed
        };
    }
    report.stored_bytes = report
        .targets
        .iter()
        .map(|t| t.stored_bytes)
        .max()
        .unwrap_or(0);
    if report.error.is_none() && !report.status.is_good() {
        let failures: Vec<String> = report
            .targets
            .iter()
            .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.target)))
            .collect();
        report.error = Some(format!("job {job_name}: {}", failures.join("; ")));
    }
    report.finished_at = Utc::now();
    report.duration_seconds = clock.elapsed().as_secs_f64();
    report
}

enum Stream {
    Done,
    Unchanged,
}

async fn stream_job(
    config: &BackupConfig,
    job_name: &str,
    job: &JobConfig,
    options: &RunOptions,
    snapshot_id: &str,
    started: chrono::DateTime<Utc>,
    states: &mut [TargetState],
) -> Result<Stream> {
    let recipients = config
        .recipients()
        .map_err(|e| Error::Config(format!("job {job_name}: {e}")))?;

    // Leftovers of earlier failed runs go first; an unreachable target
    // shows up here. Only those old enough that no run can still be
    // writing them: another machine may share this prefix.
    let older_than = started - catalog::incomplete_grace(job.timeout_secs);
    for s in states.iter_mut().filter(|s| s.live()) {
        let Some(t) = s.target.clone() else { continue };
        match catalog::cleanup(t.as_ref(), &options.host, job_name, None, older_than).await {
            Ok(cleaned) => {
                for c in &cleaned {
                    tracing::info!(
                        job = job_name,
                        target = t.name(),
                        "removed leftover of a failed run: {c}"
                    );
                }
                s.report.cleaned = cleaned;
            }
            Err(e) => s.fail(e.to_string()),
        }
    }

    let mut content_digest_value = None;
    let mut files_info: Option<Arc<Mutex<FilesInfo>>> = None;
    let mut databases = Vec::new();
    let mut base_info = None;
    let mut redis_info = None;
    let mut tools = BTreeMap::new();
    tools.insert("steward".to_string(), options.steward_version.clone());
    tools.insert(
        "zstd".to_string(),
        format!("libzstd {}", zstd::zstd_safe::version_string()),
    );
    tools.insert(
        "age".to_string(),
        "age crate 0.11 (age-encryption.org/v1)".to_string(),
    );

    let objects: Vec<PlannedObject> = match job.kind {
        JobKind::Postgres => {
            let plan = postgres::plan(job_name, job).await?;
            databases = plan.databases;
            tools.extend(plan.tools);
            plan.objects
        }
        JobKind::PostgresPitr => {
            let plan = crate::wal::base::plan(job_name, job, snapshot_id).await?;
            base_info = Some(plan.info);
            tools.extend(plan.tools);
            vec![plan.object]
        }
        JobKind::Mysql => {
            let plan = mysql::plan(job_name, job).await?;
            databases = plan.databases;
            tools.extend(plan.tools);
            plan.objects
        }
        JobKind::Redis => {
            let plan = crate::source::redis::plan(job_name, job);
            redis_info = Some(plan.info);
            vec![plan.object]
        }
        JobKind::Files | JobKind::Config => {
            let selection = Selection::new(&job.paths, &job.include, &job.exclude)
                .map_err(|e| Error::Config(format!("job {job_name}: {e}")))?;
            if job.kind == JobKind::Config {
                let sel = selection.clone();
                let digest = tokio::task::spawn_blocking(move || content_digest(&sel))
                    .await
                    .map_err(|e| {
                        Error::Internal(format!("job {job_name}: digest task failed: {e}"))
                    })?
                    .map_err(|e| {
                        Error::Source(format!("job {job_name}: reading the config paths: {e}"))
                    })?;
                if unchanged_everywhere(states, &options.host, job_name, &digest).await {
                    return Ok(Stream::Unchanged);
                }
                content_digest_value = Some(digest);
            }
            let source = TarSource::new(
                format!("job {job_name}: archive of {}", display_paths(&job.paths)),
                selection,
            );
            files_info = Some(Arc::clone(&source.info));
            let name = if job.kind == JobKind::Config {
                "config.tar.zst.age"
            } else {
                "files.tar.zst.age"
            };
            vec![PlannedObject {
                name: name.to_string(),
                role: ObjectRole::Tar,
                database: None,
                source: Box::new(source),
            }]
        }
    };

    let settings = PipelineSettings {
        zstd_level: job.zstd_level,
        zstd_workers: job.zstd_workers(),
        recipients: recipients.clone(),
    };
    let mut entries = Vec::new();
    for mut object in objects {
        let live: Vec<usize> = (0..states.len()).filter(|&i| states[i].live()).collect();
        if live.is_empty() {
            break;
        }
        let targets: Vec<Arc<dyn StorageTarget>> = live
            .iter()
            .filter_map(|&i| states[i].target.clone())
            .collect();
        let key = layout::object_key(&options.host, job_name, snapshot_id, &object.name);
        let outcome = store_object(
            object.source.as_mut(),
            &settings,
            &targets,
            &key,
            Arc::clone(&options.counters),
            StoredHash::Record,
        )
        .await;
        let stats = outcome.stream?;
        let stored_sha256 = stats.recorded_stored_sha256()?;
        for (&i, (_, result)) in live.iter().zip(outcome.targets) {
            match result {
                Ok(n) => states[i].report.stored_bytes += n,
                Err(e) => states[i].fail(e.to_string()),
            }
        }
        entries.push(ObjectEntry {
            name: object.name,
            role: object.role,
            database: object.database,
            plaintext_bytes: stats.plaintext_bytes,
            plaintext_hash: stats.plaintext_hash,
            stored_bytes: stats.stored_bytes,
            stored_sha256,
            compression: "zstd".into(),
            encryption: "age".into(),
            binlog: object.source.binlog_position(),
        });
    }
    if !states.iter().any(TargetState::live) {
        return Ok(Stream::Done);
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        snapshot_id: snapshot_id.to_string(),
        job: job_name.to_string(),
        kind: job.kind,
        host: options.host.clone(),
        reason: options.reason.clone(),
        started_at: started,
        finished_at: Utc::now(),
        objects: entries,
        recipients: recipients.info.clone(),
        tools,
        databases,
        files: files_info.and_then(|i| i.lock().ok().map(|i| i.clone())),
        content_digest: content_digest_value,
        zstd_level: job.zstd_level,
        postgres_base: base_info.and_then(|i: Arc<Mutex<Option<_>>>| i.lock().ok()?.clone()),
        redis: redis_info.and_then(|i: Arc<Mutex<Option<_>>>| i.lock().ok()?.clone()),
    };
    let json = manifest.to_json();
    for s in states.iter_mut().filter(|s| s.live()) {
        let Some(t) = s.target.clone() else { continue };
        // A manifest makes the snapshot exist; never for objects that are
        // not all there (removed by another writer sharing the prefix).
        match catalog::missing_objects(t.as_ref(), &manifest).await {
            Ok(missing) if missing.is_empty() => {}
            Ok(missing) => {
                s.fail(format!(
                    "not committed: {}; another machine writing under host name {:?} may have removed them",
                    missing.join("; "),
                    options.host
                ));
                continue;
            }
            Err(e) => {
                s.fail(format!("checking the objects before the manifest: {e}"));
                continue;
            }
        }
        match t.put_bytes(&manifest.key(), json.clone()).await {
            Ok(n) => {
                s.report.stored_bytes += n;
                s.report.committed = true;
            }
            Err(e) => s.fail(format!("writing the manifest: {e}")),
        }
    }
    Ok(Stream::Done)
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when every live target's newest snapshot has this content digest.
async fn unchanged_everywhere(states: &[TargetState], host: &str, job: &str, digest: &str) -> bool {
    let mut any = false;
    for s in states.iter().filter(|s| s.live()) {
        let Some(t) = &s.target else { continue };
        match catalog::latest(t.as_ref(), host, job).await {
            Ok(Some(e)) if e.manifest.content_digest.as_deref() == Some(digest) => any = true,
            _ => return false,
        }
    }
    any
}

/// What retention did on one target.
#[derive(Debug)]
pub struct Applied {
    pub decisions: Vec<Decision>,
    /// Set when nothing was removed because the newest snapshot is dated
    /// in the future ([`retention::clock_refusal`]).
    pub refused: Option<String>,
}

/// Applies `policy` to the snapshots of `host`/`job` on `target`; removes
/// the snapshots it does not keep unless `dry_run`. `just_written` is the
/// snapshot the calling run committed (never removed). Returns every
/// decision, and the refusal when the clock cannot be trusted.
pub async fn apply_retention(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    policy: &retention::RetentionPolicy,
    just_written: Option<&str>,
    dry_run: bool,
) -> Result<Applied> {
    let filter = catalog::Filter {
        host: Some(host.to_string()),
        job: Some(job.to_string()),
    };
    let snapshots = catalog::list(target, &filter).await?;
    let candidates: Vec<Candidate> = snapshots
        .iter()
        .map(|s| Candidate {
            id: s.manifest.snapshot_id.clone(),
            time: s.manifest.started_at,
        })
        .collect();
    let now = Utc::now();
    let refused = if policy.keeps_everything() {
        None
    } else {
        retention::clock_refusal(&candidates, now)
    };
    if let Some(why) = &refused {
        tracing::error!(job, target = target.name(), "{why}");
    }
    let mut decisions = retention::decide(&candidates, policy, now, just_written);
    // Each snapshot on its own: a locked or undeletable one is reported and
    // the others are still pruned. The Object Lock check is also done on a
    // dry run, so it shows what a real prune would leave.
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        let Some(s) = snapshots.iter().find(|s| s.manifest.snapshot_id == d.id) else {
            continue;
        };
        match catalog::lock(target, &s.manifest).await {
            Ok(Some(lock)) => {
                d.locked = Some(lock);
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                d.error = Some(e.to_string());
                continue;
            }
        }
        if !dry_run {
            if let Err(e) = catalog::delete(target, &s.manifest).await {
                d.error = Some(e.to_string());
            }
        }
    }
    // Shipped binlogs are kept as long as the oldest remaining dump needs
    // them (nothing happens for jobs without binlog positions).
    if !dry_run {
        let kept: Vec<&Manifest> = snapshots
            .iter()
            .filter(|s| {
                decisions.iter().any(|d| {
                    d.id == s.manifest.snapshot_id
                        && (d.keep || d.locked.is_some() || d.error.is_some())
                })
            })
            .map(|s| &s.manifest)
            .collect();
        match crate::binlog::archive::prune(target, host, job, &kept).await {
            Ok(removed) => {
                for r in removed {
                    tracing::info!(job, target = target.name(), "retention removed {r}");
                }
            }
            Err(e) => {
                tracing::warn!(job, target = target.name(), "binlog retention: {e}");
            }
        }
    }
    Ok(Applied { decisions, refused })
}

/// One line about the snapshots retention could not delete, if any.
pub fn retention_failures(decisions: &[Decision]) -> Option<String> {
    let failed: Vec<String> = decisions
        .iter()
        .filter_map(|d| d.error.as_ref().map(|e| format!("{}: {e}", d.id)))
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "could not remove {} snapshot(s): {}",
            failed.len(),
            failed.join("; ")
        )
    })
}

/// The result of pruning one job on one target.
#[derive(Debug, serde::Serialize)]
pub struct PruneResult {
    pub job: String,
    pub target: String,
    pub decisions: Vec<Decision>,
    /// Nothing removed: the newest snapshot is dated in the future.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Applies retention to `jobs` (all configured jobs when empty) on each of
/// their targets. Takes each job's lock unless `dry_run`.
pub async fn prune(
    config: &BackupConfig,
    host: &str,
    state_dir: &std::path::Path,
    jobs: &[String],
    dry_run: bool,
) -> Result<Vec<PruneResult>> {
    let selected: Vec<String> = if jobs.is_empty() {
        config.jobs.keys().cloned().collect()
    } else {
        for j in jobs {
            if !config.jobs.contains_key(j) {
                return Err(Error::Config(format!(
                    "no backup job named {j:?}; configured jobs: {}",
                    names(config.jobs.keys())
                )));
            }
        }
        jobs.to_vec()
    };
    let mut out = Vec::new();
    for job_name in selected {
        let Some(job) = config.jobs.get(&job_name) else {
            continue;
        };
        let _lock = if dry_run {
            None
        } else {
            Some(JobLock::try_acquire(state_dir, &job_name)?)
        };
        for (target_name, opened) in target::open_all(config, &job.target_names()).await {
            let policy = config.retention(&job_name, &target_name);
            let result = match opened {
                Ok(t) => apply_retention(t.as_ref(), host, &job_name, &policy, None, dry_run).await,
                Err(e) => Err(e),
            };
            let (decisions, refused, error) = match result {
                Ok(a) => (a.decisions, a.refused, None),
                Err(e) => (Vec::new(), None, Some(e.to_string())),
            };
            out.push(PruneResult {
                job: job_name.clone(),
                target: target_name,
                decisions,
                refused,
                error,
            });
        }
    }
    Ok(out)
}

/// Opens every target of `config` (or just `only`), for listing and
/// restores. A target that cannot be opened is returned as an error entry.
pub async fn open_targets(
    config: &BackupConfig,
    only: Option<&str>,
) -> Vec<(String, Result<Arc<dyn StorageTarget>>)> {
    let names = match only {
        Some(o) => vec![o.to_string()],
        None => config.target_names(),
    };
    target::open_all(config, &names).await
}
