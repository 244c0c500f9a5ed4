//! Run reports: one JSON document per run of a job, kept in
//! `<state_dir>/backup/reports/<job>/` (the newest `reports_keep`), so the
//! outcome of every run, failed ones included, can be read after the fact
//! and the daemon's metrics survive restarts.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::JobKind;
use crate::retention::Decision;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A snapshot was committed on every target.
    Success,
    /// Committed on some targets, failed on others.
    Partial,
    /// No snapshot committed anywhere.
    Failed,
    /// Config job whose content did not change: no new snapshot needed.
    Unchanged,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Success => "success",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Unchanged => "unchanged",
        }
    }

    /// Whether the run left the job with a fresh good snapshot everywhere.
    pub fn is_good(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Unchanged)
    }
}

/// What happened on one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetReport {
    pub target: String,
    pub location: String,
    /// Whether the snapshot (manifest included) was committed there.
    pub committed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub stored_bytes: u64,
    /// Leftovers of earlier failed runs removed before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleaned: Vec<String>,
    /// Retention applied after the run (successful targets only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
    /// Retention removed nothing because the newest snapshot is dated in
    /// the future ([`crate::retention::clock_refusal`]); exported as a
    /// metric so a wrong clock pages someone instead of growing the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_refused: Option<String>,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub job: String,
    pub kind: JobKind,
    pub host: String,
    pub snapshot_id: String,
    pub reason: String,
    pub status: RunStatus,
    /// The one-line cause when the run did not fully succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// Plaintext bytes read from the sources.
    pub source_bytes: u64,
    /// Bytes stored per target (same on each).
    pub stored_bytes: u64,
    pub targets: Vec<TargetReport>,
}

/// The directory of `job`'s reports.
pub fn reports_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("backup").join("reports").join(job)
}

/// Writes `report` and keeps only the newest `keep` reports of its job.
/// Returns the report's path.
pub fn write(state_dir: &Path, report: &RunReport, keep: usize) -> std::io::Result<PathBuf> {
    let dir = reports_dir(state_dir, &report.job);
    crate::private_fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", report.snapshot_id));
    let tmp = dir.join(format!(".{}.json.tmp", report.snapshot_id));
    let mut json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::private_fs::write(&tmp, &json)?;
    std::fs::rename(&tmp, &path)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    if names.len() > keep.max(1) {
        for old in &names[..names.len() - keep.max(1)] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(path)
}

/// The reports of `job`, oldest first; unreadable files are skipped.
pub fn read_all(state_dir: &Path, job: &str) -> Vec<RunReport> {
    let dir = reports_dir(state_dir, job);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}
