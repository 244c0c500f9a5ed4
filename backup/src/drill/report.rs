//! The drill report: one row per job with its RTO/RPO measurements and
//! checks, rendered as a fixed-width table for people and as JSON for tools.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Version of the JSON report layout; bumped on incompatible changes.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// The outcome of one drill run over one or more jobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillReport {
    pub format_version: u32,
    /// Host whose snapshots were drilled.
    pub host: String,
    /// Unix seconds.
    pub started_at: f64,
    pub finished_at: f64,
    /// True only when every job restored, verified and met its objectives.
    pub success: bool,
    pub jobs: Vec<JobDrill>,
}

impl DrillReport {
    pub fn new(host: impl Into<String>, started_at: f64) -> Self {
        DrillReport {
            format_version: REPORT_FORMAT_VERSION,
            host: host.into(),
            started_at,
            finished_at: started_at,
            success: true,
            jobs: Vec::new(),
        }
    }

    /// Adds a job's result and keeps `success` in step.
    pub fn push(&mut self, job: JobDrill) {
        self.success &= job.success();
        self.jobs.push(job);
    }

    pub fn finish(&mut self, finished_at: f64) {
        self.finished_at = finished_at;
        self.success = !self.jobs.is_empty() && self.jobs.iter().all(JobDrill::success);
    }

    /// A fixed-width table, one line per job, then one line per failure
    /// saying what went wrong.
    pub fn to_table(&self) -> String {
        let headers = [
            "JOB", "KIND", "SNAPSHOT", "RESTORE", "RTO", "DATA AGE", "RPO", "CHECKS", "RESULT",
        ];
        let rows: Vec<[String; 9]> = self
            .jobs
            .iter()
            .map(|j| {
                let passed = j.checks.iter().filter(|c| c.ok).count();
                [
                    j.job.clone(),
                    j.kind.clone(),
                    j.snapshot.clone().unwrap_or_else(|| "-".into()),
                    j.restore_seconds
                        .map(format_duration)
                        .unwrap_or_else(|| "-".into()),
                    j.rto_secs
                        .map(format_duration)
                        .unwrap_or_else(|| "-".into()),
                    j.data_age_seconds
                        .map(format_duration)
                        .unwrap_or_else(|| "-".into()),
                    j.rpo_secs
                        .map(format_duration)
                        .unwrap_or_else(|| "-".into()),
                    format!("{passed}/{}", j.checks.len()),
                    j.verdict().to_string(),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let _ = write!(text, "{cell:<w$}");
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut out, &headers);
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&mut out, &cells);
        }
        for j in &self.jobs {
            for problem in j.problems() {
                let _ = writeln!(out, "{}: {problem}", j.job);
            }
        }
        let _ = writeln!(
            out,
            "drill {} in {}",
            if self.success { "passed" } else { "FAILED" },
            format_duration(self.finished_at - self.started_at)
        );
        out
    }
}

/// One job's drill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobDrill {
    pub job: String,
    /// `postgres`, `mysql`, `files` or `config`.
    pub kind: String,
    /// Snapshot restored (`None` when none could be found).
    pub snapshot: Option<String>,
    /// Target (storage) the snapshot was read from.
    pub target: Option<String>,
    /// Wall time of download + decrypt + decompress + restore + checks.
    pub restore_seconds: Option<f64>,
    /// Age of the restored data at the start of the drill: now minus the
    /// snapshot's start time (what would be lost in a disaster now).
    pub data_age_seconds: Option<f64>,
    /// Objectives from the configuration, if any.
    pub rto_secs: Option<f64>,
    pub rpo_secs: Option<f64>,
    /// Bytes restored (plaintext).
    pub restored_bytes: u64,
    pub checks: Vec<Check>,
    /// Why the restore itself failed (download, key, tool...).
    pub error: Option<String>,
    /// `mysql` jobs with binlog shipping: the roll-forward and the RPO
    /// measured against the live server (`data_age_seconds` is that RPO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogDrill>,
}

impl JobDrill {
    pub fn new(job: impl Into<String>, kind: impl Into<String>) -> Self {
        JobDrill {
            job: job.into(),
            kind: kind.into(),
            snapshot: None,
            target: None,
            restore_seconds: None,
            data_age_seconds: None,
            rto_secs: None,
            rpo_secs: None,
            restored_bytes: 0,
            checks: Vec::new(),
            error: None,
            binlog: None,
        }
    }

    pub fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// Restore took no longer than the RTO (true when no RTO is set).
    pub fn rto_met(&self) -> bool {
        match (self.rto_secs, self.restore_seconds) {
            (Some(rto), Some(took)) => took <= rto,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Data is no older than the RPO (true when no RPO is set).
    pub fn rpo_met(&self) -> bool {
        match (self.rpo_secs, self.data_age_seconds) {
            (Some(rpo), Some(age)) => age <= rpo,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    pub fn success(&self) -> bool {
        self.error.is_none()
            && self.snapshot.is_some()
            && self.checks.iter().all(|c| c.ok)
            && self.rto_met()
            && self.rpo_met()
    }

    /// `ok`, or the first reason it is not, in a word.
    pub fn verdict(&self) -> &'static str {
        if self.error.is_some() || self.snapshot.is_none() {
            "FAILED"
        } else if !self.checks.iter().all(|c| c.ok) {
            "CHECK FAILED"
        } else if !self.rto_met() {
            "RTO MISSED"
        } else if !self.rpo_met() {
            "RPO MISSED"
        } else {
            "ok"
        }
    }

    /// Every reason this job did not pass, each a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(e.clone());
        } else if self.snapshot.is_none() {
            out.push("no snapshot found".into());
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            out.push(format!("check {} failed: {}", c.name, c.detail));
        }
        if !self.rto_met() {
            out.push(format!(
                "restore took {} but the RTO objective is {}",
                self.restore_seconds
                    .map(format_duration)
                    .unwrap_or_else(|| "unknown".into()),
                self.rto_secs.map(format_duration).unwrap_or_default()
            ));
        }
        if let (false, Some(b)) = (self.rpo_met(), &self.binlog) {
            out.push(format!(
                "the live server's last commit was {} after the last replayed binlog event but the RPO objective is {}",
                format_duration(b.rpo_seconds),
                self.rpo_secs.map(format_duration).unwrap_or_default()
            ));
        } else if !self.rpo_met() {
            out.push(format!(
                "newest snapshot is {} old but the RPO objective is {}",
                self.data_age_seconds
                    .map(format_duration)
                    .unwrap_or_else(|| "unknown".into()),
                self.rpo_secs.map(format_duration).unwrap_or_default()
            ));
        }
        out
    }
}

pub use crate::restore::Check;

/// The binlog part of a drill report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BinlogDrill {
    /// The live server's binlog position when the drill started
    /// (`None` without a configured server).
    pub live_file: Option<String>,
    pub live_position: Option<u64>,
    /// Server time of the live server's last event before that position.
    pub live_last_commit_at: Option<i64>,
    /// Where the replay stopped: the newest byte shipped at drill start.
    pub replayed_file: String,
    pub replayed_position: u64,
    /// Server time of the last replayed event (the dump's time when no
    /// event was shipped after it).
    pub last_replayed_at: Option<i64>,
    /// `live_last_commit_at - last_replayed_at` (0 when the replay
    /// reached the live position), or the upper bound described above.
    pub rpo_seconds: f64,
    /// False when no live server was asked (the RPO is an upper bound).
    pub measured: bool,
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`: short and unambiguous.
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    if secs < 1.0 {
        return format!("{}ms", (secs * 1000.0).round() as u64);
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing(job: &str) -> JobDrill {
        let mut j = JobDrill::new(job, "postgres");
        j.snapshot = Some("20260101T000000Z-abcd".into());
        j.restore_seconds = Some(12.0);
        j.data_age_seconds = Some(300.0);
        j.rto_secs = Some(3600.0);
        j.rpo_secs = Some(900.0);
        j.check("row counts", true, "3 tables match");
        j
    }

    #[test]
    fn verdicts_name_the_first_failure() {
        let ok = passing("db");
        assert!(ok.success());
        assert_eq!(ok.verdict(), "ok");

        let mut slow = passing("db");
        slow.rto_secs = Some(1.0);
        assert!(!slow.success());
        assert_eq!(slow.verdict(), "RTO MISSED");
        assert!(slow.problems()[0].contains("RTO objective is 1.0s"));

        let mut stale = passing("db");
        stale.rpo_secs = Some(60.0);
        assert_eq!(stale.verdict(), "RPO MISSED");

        let mut bad = passing("db");
        bad.check("tree hash", false, "differs");
        assert_eq!(bad.verdict(), "CHECK FAILED");

        let mut none = JobDrill::new("files", "files");
        none.rto_secs = Some(10.0);
        assert_eq!(none.verdict(), "FAILED");
        assert!(none.problems()[0].contains("no snapshot"));
    }

    #[test]
    fn report_fails_when_any_job_fails_or_none_ran() {
        let mut r = DrillReport::new("web1", 100.0);
        r.finish(101.0);
        assert!(!r.success, "an empty drill proves nothing");

        let mut r = DrillReport::new("web1", 100.0);
        r.push(passing("db"));
        let mut slow = passing("files");
        slow.rto_secs = Some(2.0);
        r.push(slow);
        r.finish(130.0);
        assert!(!r.success);
        let table = r.to_table();
        assert!(table.starts_with("JOB"), "{table}");
        assert!(table.contains("RTO MISSED"), "{table}");
        assert!(table.contains("files: restore took 12.0s"), "{table}");
        assert!(table.contains("drill FAILED in 30.0s"), "{table}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(format_duration(0.25), "250ms");
        assert_eq!(format_duration(5.0), "5.0s");
        assert_eq!(format_duration(245.0), "4m05s");
        assert_eq!(format_duration(3600.0 * 2.0 + 180.0), "2h03m");
        assert_eq!(format_duration(86_400.0 * 3.0 + 7200.0), "3d02h");
    }
}
