//! What a notification is about: a backup or drill run starting or ending,
//! with the facts every service gets (the webhook's JSON, the Slack
//! message and the Healthchecks body are all made from one [`Event`]).

use serde::Serialize;
use steward_backup::chrono::{SecondsFormat, Utc};
use steward_backup::drill::DrillReport;
use steward_backup::report::RunReport;

use crate::config::notify::Outcome;

/// Whether the event is about a backup job or the drills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Backup { job: String },
    Drill,
}

/// One thing that happened, ready to be told to any notifier.
#[derive(Debug, Clone)]
pub struct Event {
    pub subject: Subject,
    pub outcome: Outcome,
    pub host: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// Shared by a run's start and end events (Healthchecks' `rid`).
    pub run_id: String,
    /// One line a human reads first.
    pub summary: String,
    pub backup: Option<BackupFacts>,
    pub drill: Option<DrillFacts>,
}

/// The outcome of a backup run, from its report.
#[derive(Debug, Clone, Serialize)]
pub struct BackupFacts {
    /// `success`, `unchanged`, `partial`, `failed`, or `not_run` when the
    /// run could not start or was interrupted.
    pub status: String,
    /// Why the run happened: `schedule`, `catch-up`, `config-change`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    pub source_bytes: u64,
    pub stored_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub targets: Vec<TargetFacts>,
}

/// One storage target of a backup run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetFacts {
    pub target: String,
    pub committed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of a drill, from its report.
#[derive(Debug, Clone, Serialize)]
pub struct DrillFacts {
    pub success: bool,
    /// Why the drill could not run at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub jobs: Vec<DrillJobFacts>,
}

/// One job of a drill.
#[derive(Debug, Clone, Serialize)]
pub struct DrillJobFacts {
    pub job: String,
    pub success: bool,
    /// `ok`, `FAILED`, `CHECK FAILED`, `RTO MISSED`, `RPO MISSED`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_age_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpo_secs: Option<f64>,
    pub problems: Vec<String>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A random RFC 4122 version 4 UUID (run and delivery ids). Falls back to
/// time and process id if the kernel's generator fails, which only costs
/// uniqueness, never a notification.
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Event {
    /// `backup.failure`, `drill.start`, ...: the webhook's `event` field.
    pub fn name(&self) -> String {
        let subject = match self.subject {
            Subject::Backup { .. } => "backup",
            Subject::Drill => "drill",
        };
        format!("{subject}.{}", self.outcome.as_str())
    }

    /// The backup job, `None` for drills.
    pub fn job(&self) -> Option<&str> {
        match &self.subject {
            Subject::Backup { job } => Some(job),
            Subject::Drill => None,
        }
    }

    pub fn backup_start(host: &str, job: &str, reason: &str, run_id: &str) -> Self {
        Event {
            subject: Subject::Backup { job: job.into() },
            outcome: Outcome::Start,
            host: host.into(),
            time: now(),
            run_id: run_id.into(),
            summary: format!("backup {job} on {host} started ({reason})"),
            backup: None,
            drill: None,
        }
    }

    /// The end of a run that produced a report.
    pub fn backup_finished(run_id: &str, report: &RunReport) -> Self {
        let (job, host) = (&report.job, &report.host);
        let good = report.status.is_good();
        let summary = match report.status {
            steward_backup::report::RunStatus::Unchanged => {
                format!("backup {job} on {host}: content unchanged, latest snapshot still current")
            }
            _ if good => format!(
                "backup {job} on {host} succeeded: snapshot {}",
                report.snapshot_id
            ),
            s => format!(
                "backup {job} on {host} {}: {}",
                if s.as_str() == "partial" {
                    "partially failed"
                } else {
                    "failed"
                },
                report.error.as_deref().unwrap_or("unknown cause")
            ),
        };
        Event {
            subject: Subject::Backup { job: job.clone() },
            outcome: if good {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            host: host.clone(),
            time: now(),
            run_id: run_id.into(),
            summary,
            backup: Some(BackupFacts {
                status: report.status.as_str().into(),
                reason: report.reason.clone(),
                snapshot: Some(report.snapshot_id.clone()),
                duration_seconds: Some(report.duration_seconds),
                source_bytes: report.source_bytes,
                stored_bytes: report.stored_bytes,
                error: report.error.clone(),
                targets: report
                    .targets
                    .iter()
                    .map(|t| TargetFacts {
                        target: t.target.clone(),
                        committed: t.committed,
                        error: t.error.clone(),
                    })
                    .collect(),
            }),
            drill: None,
        }
    }

    /// A run that never produced a report: it could not start (its lock is
    /// held) or was interrupted by a shutdown or reload.
    pub fn backup_not_run(host: &str, job: &str, reason: &str, run_id: &str, why: &str) -> Self {
        Event {
            subject: Subject::Backup { job: job.into() },
            outcome: Outcome::Failure,
            host: host.into(),
            time: now(),
            run_id: run_id.into(),
            summary: format!("backup {job} on {host} did not run: {why}"),
            backup: Some(BackupFacts {
                status: "not_run".into(),
                reason: reason.into(),
                snapshot: None,
                duration_seconds: None,
                source_bytes: 0,
                stored_bytes: 0,
                error: Some(why.into()),
                targets: Vec::new(),
            }),
            drill: None,
        }
    }

    pub fn drill_start(host: &str, run_id: &str) -> Self {
        Event {
            subject: Subject::Drill,
            outcome: Outcome::Start,
            host: host.into(),
            time: now(),
            run_id: run_id.into(),
            summary: format!("scheduled drill on {host} started"),
            backup: None,
            drill: None,
        }
    }

    pub fn drill_finished(run_id: &str, report: &DrillReport) -> Self {
        let host = &report.host;
        let jobs: Vec<DrillJobFacts> = report
            .jobs
            .iter()
            .map(|j| DrillJobFacts {
                job: j.job.clone(),
                success: j.success(),
                verdict: j.verdict().into(),
                snapshot: j.snapshot.clone(),
                restore_seconds: j.restore_seconds,
                data_age_seconds: j.data_age_seconds,
                rto_secs: j.rto_secs,
                rpo_secs: j.rpo_secs,
                problems: j.problems(),
            })
            .collect();
        let summary = if report.success {
            format!("drill on {host} passed ({} jobs)", jobs.len())
        } else {
            let failed: Vec<String> = jobs
                .iter()
                .filter(|j| !j.success)
                .map(|j| format!("{} {}", j.job, j.verdict))
                .collect();
            format!("drill on {host} failed: {}", failed.join(", "))
        };
        Event {
            subject: Subject::Drill,
            outcome: if report.success {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            host: host.clone(),
            time: now(),
            run_id: run_id.into(),
            summary,
            backup: None,
            drill: Some(DrillFacts {
                success: report.success,
                error: None,
                jobs,
            }),
        }
    }

    pub fn drill_not_run(host: &str, run_id: &str, why: &str) -> Self {
        Event {
            subject: Subject::Drill,
            outcome: Outcome::Failure,
            host: host.into(),
            time: now(),
            run_id: run_id.into(),
            summary: format!("drill on {host} could not run: {why}"),
            backup: None,
            drill: Some(DrillFacts {
                success: false,
                error: Some(why.into()),
                jobs: Vec::new(),
            }),
        }
    }

    /// The run's outcome as a few log-like lines (the Healthchecks body,
    /// the Slack message's details): summary first, then the facts.
    pub fn details(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(b) = &self.backup {
            let mut l = format!("status: {} (run reason: {})", b.status, b.reason);
            if let Some(d) = b.duration_seconds {
                l.push_str(&format!(", {d:.1}s"));
            }
            lines.push(l);
            if let Some(s) = &b.snapshot {
                lines.push(format!(
                    "snapshot: {s} ({} read, {} stored)",
                    bytes(b.source_bytes),
                    bytes(b.stored_bytes)
                ));
            }
            if let Some(e) = &b.error {
                lines.push(format!("error: {e}"));
            }
            for t in &b.targets {
                match (&t.error, t.committed) {
                    (Some(e), _) => lines.push(format!("target {}: failed: {e}", t.target)),
                    (None, true) => lines.push(format!("target {}: committed", t.target)),
                    (None, false) => lines.push(format!("target {}: not committed", t.target)),
                }
            }
        }
        if let Some(d) = &self.drill {
            if let Some(e) = &d.error {
                lines.push(format!("error: {e}"));
            }
            for j in &d.jobs {
                let mut l = format!("{}: {}", j.job, j.verdict);
                if let Some(s) = &j.snapshot {
                    l.push_str(&format!(", snapshot {s}"));
                }
                if let Some(r) = j.restore_seconds {
                    l.push_str(&format!(", restore {r:.1}s"));
                }
                lines.push(l);
                for p in &j.problems {
                    lines.push(format!("  {}: {p}", j.job));
                }
            }
        }
        lines
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }

    #[test]
    fn not_run_events_are_failures_with_the_cause() {
        let e = Event::backup_not_run("web1", "db", "schedule", "r", "job db is already running");
        assert_eq!(e.name(), "backup.failure");
        assert_eq!(e.job(), Some("db"));
        assert!(e.details().iter().any(|l| l.contains("already running")));
        assert_eq!(Event::drill_start("web1", "r").name(), "drill.start");
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn drills_pass_only_when_every_job_does() {
        use steward_backup::drill::JobDrill;
        let mut ok = JobDrill::new("db", "postgres");
        ok.snapshot = Some("s1".into());
        ok.restore_seconds = Some(2.0);
        let mut report = DrillReport::new("web1", 0.0);
        report.push(ok.clone());
        let e = Event::drill_finished("r", &report);
        assert_eq!(e.name(), "drill.success");
        assert_eq!(e.summary, "drill on web1 passed (1 jobs)");
        let mut slow = ok.clone();
        slow.job = "files".into();
        slow.rto_secs = Some(1.0);
        report.push(slow);
        let e = Event::drill_finished("r", &report);
        assert_eq!(e.name(), "drill.failure");
        assert_eq!(e.summary, "drill on web1 failed: files RTO MISSED");
        let details = e.details().join("\n");
        assert!(details.contains("db: ok"), "{details}");
        assert!(details.contains("files: restore took"), "{details}");
    }
}
