//! `[backup.drill]`: when the daemon runs disaster-recovery drills and
//! the recovery objectives (RTO, RPO) each job's drill must meet. Schema
//! only; [`crate::drill`] runs the drills.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[backup.drill]`: when drills run from the daemon and what they must
/// achieve.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Cron expression for drills run by the daemon (e.g. `0 4 1 * *`:
    /// monthly). Unset: drills run only with `steward drill`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of `schedule`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Jobs drilled by the schedule (every job when empty).
    #[serde(default)]
    pub jobs: Vec<String>,
    /// The private key for scheduled drills. Keeping it on the host weakens
    /// "the host holds only public keys": prefer running `steward drill
    /// --from ...` on a separate recovery host.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// Scratch space for files drills and spooled dumps
    /// (default: `<state_dir>/drill/scratch`).
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// Reports kept in `<state_dir>/drill/`.
    #[serde(default = "default_reports_keep")]
    pub reports_keep: usize,
    /// Objectives per job name.
    #[serde(default)]
    pub objectives: BTreeMap<String, Objective>,
}

impl Default for DrillConfig {
    fn default() -> Self {
        DrillConfig {
            schedule: None,
            timezone: default_timezone(),
            jobs: Vec::new(),
            identity_file: None,
            scratch_dir: None,
            reports_keep: default_reports_keep(),
            objectives: BTreeMap::new(),
        }
    }
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_reports_keep() -> usize {
    24
}

/// Recovery objectives of one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// Recovery time objective: the restore (download, decrypt, apply,
    /// check) must finish within this many seconds.
    #[serde(default)]
    pub rto_secs: Option<f64>,
    /// Recovery point objective: the newest snapshot must be at most this
    /// many seconds old.
    #[serde(default)]
    pub rpo_secs: Option<f64>,
}

impl DrillConfig {
    /// Every problem, each starting with its key relative to `drill`;
    /// `jobs` are the configured job names.
    pub fn validate(&self, jobs: &[String]) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(s) = &self.schedule {
            if let Err(e) = crate::schedule::Schedule::parse(s, &self.timezone) {
                errors.push(format!("schedule: {e}"));
            }
        }
        for (i, j) in self.jobs.iter().enumerate() {
            if !jobs.contains(j) {
                errors.push(format!("jobs[{i}]: no backup job named {j:?}"));
            }
        }
        for (job, o) in &self.objectives {
            if !jobs.contains(job) {
                errors.push(format!("objectives.{job}: no backup job named {job:?}"));
            }
            for (key, v) in [("rto_secs", o.rto_secs), ("rpo_secs", o.rpo_secs)] {
                if let Some(v) = v {
                    if !(v.is_finite() && v > 0.0) {
                        errors.push(format!(
                            "objectives.{job}.{key}: must be a positive number of seconds"
                        ));
                    }
                }
            }
        }
        if self.schedule.is_some() && self.identity_file.is_none() {
            errors.push(
                "identity_file: a scheduled drill must decrypt, so it needs the private key file (or remove schedule and run `steward drill` where the key is)"
                    .into(),
            );
        }
        if self.reports_keep == 0 {
            errors.push("reports_keep: must be at least 1".into());
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_keys() {
        let mut c = DrillConfig {
            schedule: Some("0 4 1 * *".into()),
            jobs: vec!["nope".into()],
            ..Default::default()
        };
        c.objectives.insert(
            "db".into(),
            Objective {
                rto_secs: Some(-1.0),
                rpo_secs: Some(900.0),
            },
        );
        let errors = c.validate(&["db".to_string()]);
        let all = errors.join("\n");
        assert!(errors.iter().any(|e| e.starts_with("jobs[0]:")), "{all}");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("objectives.db.rto_secs:")),
            "{all}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("identity_file:")),
            "{all}"
        );
        assert!(DrillConfig::default().validate(&[]).is_empty());
    }
}
