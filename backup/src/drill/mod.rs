//! Disaster-recovery drills: restore the latest snapshot of each job into a
//! scratch place (a temporary database, a temporary directory, a scratch
//! redis-server), check it
//! against the manifest, measure the time it took (RTO) and the age of the
//! data (RPO) against the objectives, clean up, and report. `mysql` jobs
//! with binlog shipping are rolled forward and their RPO measured against
//! the live server ([`binlog`]).

pub mod binlog;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{BackupConfig, JobConfig};
use crate::error::{Error, Result};
use crate::manifest::JobKind;
use crate::restore::files::FilesRestoreOptions;
use crate::restore::mysql::MysqlConnection;
use crate::restore::postgres::PgConnection;
use crate::restore::{self, ConnectionOverrides, Identities, Located, Progress, RestoreRequest};
use crate::target::{self, StorageTarget};

pub use crate::config::{DrillConfig, Objective};
pub use report::{format_duration, BinlogDrill, Check, DrillReport, JobDrill};

/// One job to drill: its name, kind, where to restore databases, and
/// its objectives.
#[derive(Debug, Clone)]
pub struct DrillJob {
    pub name: String,
    /// Expected kind (from the configuration), or `None` when drilling from
    /// a bucket without configuration (the manifest says).
    pub kind: Option<JobKind>,
    pub pg: PgConnection,
    pub mysql: MysqlConnection,
    pub objective: Objective,
    /// The job's configuration (its live server), `None` when drilling
    /// from a bucket without configuration.
    pub source: Option<JobConfig>,
}

impl DrillJob {
    /// A job to drill as this host knows it: kind and database server from
    /// its `[backup.jobs.NAME]` (`job`, `None` when drilling from a bucket
    /// without configuration) under `overrides`, objectives from
    /// `[backup.drill.objectives]`.
    pub fn configured(
        name: &str,
        job: Option<&JobConfig>,
        drill: &DrillConfig,
        overrides: &ConnectionOverrides,
    ) -> Self {
        DrillJob {
            name: name.to_string(),
            kind: job.map(|j| j.kind),
            pg: overrides.postgres(job),
            mysql: overrides.mysql(job),
            objective: drill.objectives.get(name).cloned().unwrap_or_default(),
            source: job.cloned(),
        }
    }
}

/// Shared settings of one drill run.
pub struct DrillSettings {
    pub host: String,
    pub targets: Vec<Arc<dyn StorageTarget>>,
    pub identities: Identities,
    pub scratch_dir: PathBuf,
    pub progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for DrillSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillSettings")
            .field("host", &self.host)
            .field("scratch_dir", &self.scratch_dir)
            .finish()
    }
}

/// Runs the drill over `jobs` in order and returns the report (never an
/// error: every failure is a failed job in the report).
pub async fn run(settings: &DrillSettings, jobs: &[DrillJob]) -> DrillReport {
    let mut report = DrillReport::new(&settings.host, restore::now_secs());
    for job in jobs {
        let result = drill_job(settings, job).await;
        report.push(result);
    }
    report.finish(restore::now_secs());
    report
}

/// Where drill reports (and by default the scratch space) live under the
/// agent's state directory.
pub fn reports_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("drill")
}

/// A drill as the daemon runs it on `backup.drill.schedule`: the jobs of
/// `backup.drill.jobs` (every job when empty) from every target that
/// opens, quietly, with the report written for the metrics. `Err` when it
/// cannot start (no usable key, no scratch space) or its report cannot be
/// written.
pub async fn run_scheduled(
    config: &BackupConfig,
    host: &str,
    state_dir: &Path,
) -> Result<DrillReport> {
    let dc = &config.drill;
    let identities = Identities::from_file_or_env(dc.identity_file.as_deref())?;
    let names: Vec<String> = if dc.jobs.is_empty() {
        // Drills of postgres_pitr jobs are not built: by default they are
        // left out rather than failing every drill; named, they fail.
        (config.jobs.iter())
            .filter(|(_, j)| j.kind != JobKind::PostgresPitr)
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        dc.jobs.clone()
    };
    let mut targets = Vec::new();
    for (name, opened) in target::open_all(config, &config.target_names()).await {
        match opened {
            Ok(t) => targets.push(t),
            // The others may still hold the snapshots.
            Err(e) => tracing::warn!("drill: target {name} unavailable: {e}"),
        }
    }
    let jobs: Vec<DrillJob> = names
        .iter()
        .map(|n| DrillJob::configured(n, config.jobs.get(n), dc, &ConnectionOverrides::default()))
        .collect();
    let reports = reports_dir(state_dir);
    let scratch_dir = dc
        .scratch_dir
        .clone()
        .unwrap_or_else(|| reports.join("scratch"));
    std::fs::create_dir_all(&scratch_dir).map_err(|e| {
        Error::local(
            "cannot create the drill scratch directory",
            &scratch_dir,
            e,
            Some("set backup.drill.scratch_dir"),
        )
    })?;
    let settings = DrillSettings {
        host: host.to_string(),
        targets,
        identities,
        scratch_dir,
        progress: Arc::new(restore::Silent) as Arc<dyn Progress>,
    };
    let report = run(&settings, &jobs).await;
    write_report(&reports, &report, dc.reports_keep)
        .map_err(|e| Error::local("cannot write the drill report into", &reports, e, None))?;
    Ok(report)
}

/// A scratch database name: recognisable, unique per run, within
/// PostgreSQL's 63-byte identifier limit.
fn scratch_db_name(job: &str, db: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let clean = |s: &str, n: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(n)
            .collect()
    };
    format!(
        "steward_drill_{}_{}_{stamp}_{}",
        clean(job, 12),
        clean(db, 12),
        std::process::id()
    )
}

async fn drill_job(settings: &DrillSettings, job: &DrillJob) -> JobDrill {
    let started = Instant::now();
    let drill_start = restore::now_secs();
    let mut out = JobDrill::new(&job.name, job.kind.map(|k| k.as_str()).unwrap_or("unknown"));
    out.rto_secs = job.objective.rto_secs;
    out.rpo_secs = job.objective.rpo_secs;
    let located =
        match restore::locate(&settings.targets, &settings.host, &job.name, "latest").await {
            Ok(l) => l,
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        };
    let m = &located.manifest;
    out.kind = m.kind.as_str().to_string();
    out.snapshot = Some(m.snapshot_id.clone());
    out.target = Some(located.target.name().to_string());
    out.data_age_seconds = Some((drill_start - m.started_at.timestamp() as f64).max(0.0));
    if let Some(k) = job.kind {
        if k != m.kind {
            out.error = Some(format!(
                "the configuration says job {} is {k} but its latest snapshot {} is {}",
                job.name, m.snapshot_id, m.kind
            ));
            return out;
        }
    }
    // Binlog drills: where the live server is, before anything is
    // restored (the restore itself writes binlogs on that server).
    let binlog_drill = m.kind == JobKind::Mysql && binlog::dump_positions(m).is_some();
    let live = match (&job.source, binlog_drill) {
        (Some(source), true) => match binlog::live_position(&job.name, source).await {
            Ok(p) => Some(p),
            Err(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        },
        _ => None,
    };
    let mut cleanup: Vec<Cleanup> = Vec::new();
    let mut result = restore_scratch(settings, job, &located, &mut cleanup).await;
    if let (Ok(items), true) = (&mut result, binlog_drill) {
        let roll = binlog::RollForward {
            job_name: &job.name,
            source: job.source.as_ref(),
            conn: &job.mysql,
            identities: &settings.identities,
            progress: Arc::clone(&settings.progress),
            scratch_dir: &settings.scratch_dir,
        };
        match binlog::roll_forward(&roll, &located, live, drill_start, items).await {
            Ok(b) => {
                out.data_age_seconds = Some(b.rpo_seconds);
                let c = binlog::check(&b);
                out.check(c.name, c.ok, c.detail);
                out.binlog = Some(b);
            }
            Err(e) => result = Err(e),
        }
    }
    // RTO: everything up to verified data, cleanup excluded.
    out.restore_seconds = Some(started.elapsed().as_secs_f64());
    match result {
        Ok(items) => {
            for item in items {
                out.restored_bytes += item.bytes;
                let name = item.name_for_report();
                for c in item.checks {
                    out.check(format!("{name}: {}", c.name), c.ok, c.detail);
                }
            }
        }
        Err(e) => out.error = Some(e.to_string()),
    }
    for c in cleanup {
        if let Err(e) = c.run().await {
            out.check("cleanup", false, e);
        }
    }
    out
}

trait ReportName {
    fn name_for_report(&self) -> String;
}

impl ReportName for restore::RestoredItem {
    fn name_for_report(&self) -> String {
        if self.source.is_empty() || self.source.contains('/') {
            "files".to_string()
        } else {
            self.source.clone()
        }
    }
}

/// Something to undo after a drill.
enum Cleanup {
    PgDrop(PgConnection, String),
    MysqlDrop(MysqlConnection, String),
    Dir(PathBuf),
}

impl Cleanup {
    async fn run(self) -> std::result::Result<(), String> {
        tokio::task::spawn_blocking(move || match self {
            Cleanup::PgDrop(c, db) => crate::restore::postgres::drop_db(&c, &db)
                .map_err(|e| format!("dropping scratch database {db}: {e}")),
            Cleanup::MysqlDrop(c, db) => c
                .sql(&format!(
                    "DROP DATABASE IF EXISTS {};\n",
                    crate::restore::mysql::quote_ident(&db)
                ))
                .map(|_| ())
                .map_err(|e| format!("dropping scratch database {db}: {e}")),
            Cleanup::Dir(d) => remove_tree(&d),
        })
        .await
        .map_err(|e| format!("internal: {e}"))?
    }
}

/// Removes a scratch tree, making read-only directories writable first.
fn remove_tree(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fn open_up(p: &Path) {
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    open_up(dir);
    std::fs::remove_dir_all(dir)
        .map_err(|e| format!("removing scratch directory {}: {e}", dir.display()))
}

/// Restores the snapshot into scratch places: each database under a
/// scratch name, an archive into a scratch directory. Each scratch place
/// is registered in `cleanup` before anything is written to it, so a
/// failed restore is cleaned up too.
async fn restore_scratch(
    settings: &DrillSettings,
    job: &DrillJob,
    located: &Located,
    cleanup: &mut Vec<Cleanup>,
) -> Result<Vec<restore::RestoredItem>> {
    let m = &located.manifest;
    let base = RestoreRequest {
        spool_dir: Some(settings.scratch_dir.clone()),
        pg: job.pg.clone(),
        mysql: job.mysql.clone(),
        ..Default::default()
    };
    let restore_into = |request: RestoreRequest| {
        let progress = Arc::clone(&settings.progress);
        async move { restore::restore_snapshot(located, &settings.identities, progress, &request).await }
    };
    match m.kind {
        JobKind::Postgres | JobKind::Mysql => {
            let mut items = Vec::new();
            for db in m.databases.iter().map(|d| d.name.clone()) {
                let scratch = scratch_db_name(&job.name, &db);
                cleanup.push(match m.kind {
                    JobKind::Postgres => Cleanup::PgDrop(job.pg.clone(), scratch.clone()),
                    _ => Cleanup::MysqlDrop(job.mysql.clone(), scratch.clone()),
                });
                let request = RestoreRequest {
                    databases: vec![db],
                    into: Some(scratch),
                    ..base.clone()
                };
                items.extend(restore_into(request).await?);
            }
            if items.is_empty() {
                return Err(Error::NotFound(format!(
                    "snapshot {} lists no database",
                    m.snapshot_id
                )));
            }
            Ok(items)
        }
        JobKind::PostgresPitr => Err(Error::Config(format!(
            "job {}: drills of postgres_pitr jobs are not built yet; restore with `steward restore {} --to DIR --start-port PORT` to check a base backup and its WAL",
            job.name, job.name
        ))),
        JobKind::Files | JobKind::Config => {
            let dir = settings.scratch_dir.join(format!(
                "{}-{}-{}",
                job.name,
                m.snapshot_id,
                std::process::id()
            ));
            cleanup.push(Cleanup::Dir(dir.clone()));
            let request = RestoreRequest {
                files: FilesRestoreOptions {
                    to: Some(dir),
                    in_place: false,
                    paths: Vec::new(),
                    keep_setuid: false,
                    exact: false,
                    reread: false,
                },
                ..base
            };
            restore_into(request).await
        }
        JobKind::Redis => {
            // The RDB file into a scratch directory, then a scratch
            // redis-server loads it and its key counts are compared.
            let dir = settings.scratch_dir.join(format!(
                "{}-{}-{}",
                job.name,
                m.snapshot_id,
                std::process::id()
            ));
            cleanup.push(Cleanup::Dir(dir.clone()));
            let mut request = base;
            request.files.to = Some(dir.clone());
            let mut items = restore_into(request).await?;
            let expected = m.redis.as_ref().map(|r| r.keyspace.clone()).ok_or_else(|| {
                Error::Integrity(format!(
                    "snapshot {} records no Redis key counts to compare with",
                    m.snapshot_id
                ))
            })?;
            let check = restore::redis::load_and_count(&dir, &expected).await?;
            if let Some(item) = items.first_mut() {
                item.checks.push(check);
            }
            Ok(items)
        }
    }
}

/// Writes the report as `<dir>/drill-<finished>.json`, updates
/// `<dir>/jobs/<job>.json` (the last drill of each job, read by the
/// daemon's metrics) and keeps the newest `keep` reports.
pub fn write_report(dir: &Path, report: &DrillReport, keep: usize) -> std::io::Result<PathBuf> {
    crate::private_fs::create_dir_all(&dir.join("jobs"))?;
    let stamp = chrono::DateTime::from_timestamp(report.finished_at as i64, 0)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|| format!("{}", report.finished_at as i64));
    let path = dir.join(format!("drill-{stamp}-{}.json", std::process::id()));
    write_atomic(&path, &to_json(report))?;
    for job in &report.jobs {
        let last = LastDrill {
            finished_at: report.finished_at,
            job: job.clone(),
        };
        write_atomic(
            &dir.join("jobs").join(format!("{}.json", job.job)),
            &serde_json::to_vec_pretty(&last).unwrap_or_default(),
        )?;
    }
    let mut old: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("drill-") && n.ends_with(".json"))
        })
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(keep.max(1));
    for p in old.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
    Ok(path)
}

/// The report as pretty JSON.
pub fn to_json(report: &DrillReport) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(report).unwrap_or_default();
    v.push(b'\n');
    v
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    crate::private_fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The last drill of one job, as kept for metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastDrill {
    pub finished_at: f64,
    pub job: JobDrill,
}

/// Reads the last drill of every job from `<dir>/jobs/`.
pub fn read_last(dir: &Path) -> Vec<LastDrill> {
    let Ok(rd) = std::fs::read_dir(dir.join("jobs")) else {
        return Vec::new();
    };
    let mut out: Vec<LastDrill> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a, b| a.job.job.cmp(&b.job.job));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_fit_postgres() {
        let n = scratch_db_name(
            "a-very-long-job-name-indeed",
            "Some Database Name That Is Long",
        );
        assert!(n.len() <= 63, "{n}");
        assert!(
            n.starts_with("steward_drill_a_very_long__some_databas_"),
            "{n}"
        );
    }

    #[test]
    fn reports_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = DrillReport::new("h", 1000.0);
        let mut j = JobDrill::new("db", "postgres");
        j.snapshot = Some("s".into());
        j.restore_seconds = Some(2.0);
        r.push(j);
        r.finish(1002.0);
        for _ in 0..3 {
            write_report(dir.path(), &r, 2).unwrap();
        }
        let last = read_last(dir.path());
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].job.restore_seconds, Some(2.0));
    }
}
