//! Binlog shipping's state: the options and live figures of one job's
//! shipper, where shipping stands (`<state_dir>/binlog/<job>/state.json`:
//! the next byte every target still needs and each target's own
//! position), and the request for a full dump a gap leaves
//! (`gap-pending`, taken by the agent's scheduler).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::pipeline::PipelineSettings;
use crate::target::StorageTarget;

/// What one job's shipper needs.
pub struct ShipperOptions {
    pub job_name: String,
    pub job: JobConfig,
    /// Host segment of the keys.
    pub host: String,
    pub state_dir: PathBuf,
    /// The job's targets, opened.
    pub targets: Vec<Arc<dyn StorageTarget>>,
    pub settings: PipelineSettings,
}

/// Live figures for metrics; the agent reads them at scrape time.
#[derive(Debug, Default)]
pub struct ShipStats {
    pub segments: AtomicU64,
    /// Binlog files shipped to their end.
    pub files: AtomicU64,
    /// Binlog bytes shipped (before compression).
    pub bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub failures: AtomicU64,
    pub gaps: AtomicU64,
    /// The follower is connected and running.
    pub following: AtomicBool,
    /// Unix time of the last shipped segment (0: none yet).
    pub last_shipped_at: AtomicI64,
    /// Unix time (server clock) of the newest shipped event.
    pub last_event_at: AtomicI64,
    /// Unix time at which everything the follower had received was
    /// shipped; `now - this` is the shipping lag.
    pub caught_up_at: AtomicI64,
    /// Bytes received from the server and not shipped yet.
    pub unshipped_bytes: AtomicU64,
    /// Next file and byte to ship.
    pub position: Mutex<Option<(String, u64)>>,
    pub last_error: Mutex<Option<String>>,
}

impl ShipStats {
    pub(super) fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
    pub(super) fn set_position(&self, state: &State) {
        if let Ok(mut g) = self.position.lock() {
            *g = Some((state.file.clone(), state.offset));
        }
    }
}

/// Where shipping stands: the next byte every target still needs (the
/// follower starts there and the spool keeps everything from there on),
/// and where each target is: a target that is down falls behind while
/// the others go on, and catches up from its own position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub file: String,
    pub offset: u64,
    /// Per target; a target not named is at `file`/`offset`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, Pos>,
}

/// A position in the binlogs: the next byte to ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub file: String,
    pub offset: u64,
}

pub(super) fn pos_order(a: &Pos, b: &Pos) -> std::cmp::Ordering {
    super::file_order(&a.file, &b.file).then(a.offset.cmp(&b.offset))
}

impl State {
    pub fn at(file: impl Into<String>, offset: u64) -> State {
        State {
            file: file.into(),
            offset,
            targets: BTreeMap::new(),
        }
    }

    /// Where `target` is.
    pub fn of(&self, target: &str) -> Pos {
        self.targets.get(target).cloned().unwrap_or(Pos {
            file: self.file.clone(),
            offset: self.offset,
        })
    }

    /// `moved` reached `to`; the common position becomes the least
    /// advanced of `all` (the job's targets; others are forgotten).
    pub(super) fn advance(&mut self, moved: &[String], to: &Pos, all: &[String]) {
        let mut next: BTreeMap<String, Pos> = all.iter().map(|t| (t.clone(), self.of(t))).collect();
        for t in moved {
            next.insert(t.clone(), to.clone());
        }
        if let Some(min) = next.values().min_by(|a, b| pos_order(a, b)).cloned() {
            self.file = min.file;
            self.offset = min.offset;
        }
        next.retain(|_, p| p.file != self.file || p.offset != self.offset);
        self.targets = next;
    }
}

pub(super) fn job_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("binlog").join(job)
}

/// The state file of `job`, if one was written.
pub fn load_state(state_dir: &Path, job: &str) -> Option<State> {
    let text = std::fs::read(job_dir(state_dir, job).join("state.json")).ok()?;
    let s: State = serde_json::from_slice(&text).ok()?;
    super::is_valid_file_name(&s.file).then_some(s)
}

pub(super) fn save_state(state_dir: &Path, job: &str, state: &State) -> Result<()> {
    let dir = job_dir(state_dir, job);
    let tmp = dir.join("state.json.tmp");
    let json = serde_json::to_vec(state).unwrap_or_default();
    crate::private_fs::write(&tmp, &json)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dir.join("state.json")))
        .map_err(|e| Error::Local {
            doing: format!("job {job}: writing the binlog shipping state"),
            path: dir.join("state.json"),
            source: e,
            hint: "; check that the state directory is writable".into(),
        })
}

/// The reason of the full dump a gap asks for.
pub const GAP_REASON: &str = "binlog-gap";

fn gap_path(state_dir: &Path, job: &str) -> PathBuf {
    job_dir(state_dir, job).join("gap-pending")
}

/// Records that `job` needs a fresh full dump because of a gap; the
/// agent's scheduler takes it ([`pending_gap`], [`clear_gap`]). A file,
/// so the request outlives a restart of the agent.
pub(super) fn mark_gap(state_dir: &Path, job: &str, what: &str) -> Result<()> {
    let path = gap_path(state_dir, job);
    crate::private_fs::write(&path, what.as_bytes()).map_err(|e| Error::Local {
        doing: format!("job {job}: recording a binlog gap"),
        path,
        source: e,
        hint: "; check that the state directory is writable".into(),
    })
}

/// The gap `job` still needs a full dump for, if any.
pub fn pending_gap(state_dir: &Path, job: &str) -> Option<String> {
    std::fs::read_to_string(gap_path(state_dir, job)).ok()
}

/// Clears the request once a dump was taken after it, unless another gap
/// replaced it meanwhile (`seen` is what [`pending_gap`] said before the
/// dump started).
pub fn clear_gap(state_dir: &Path, job: &str, seen: &str) {
    if pending_gap(state_dir, job).as_deref() == Some(seen) {
        let _ = std::fs::remove_file(gap_path(state_dir, job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(file: &str, offset: u64) -> Pos {
        Pos {
            file: file.into(),
            offset,
        }
    }

    #[test]
    fn the_common_position_is_the_least_advanced_target() {
        let all = ["local".to_string(), "s3".to_string()];
        let mut s = State::at("b.000001", 100);
        // Local goes on while S3 is down: the common position stays.
        s.advance(&all[..1], &p("b.000002", 50), &all);
        assert_eq!((s.file.as_str(), s.offset), ("b.000001", 100));
        assert_eq!(s.of("local"), p("b.000002", 50));
        assert_eq!(s.of("s3"), p("b.000001", 100));
        // S3 catches up past local: local is now the least advanced.
        s.advance(&all[1..], &p("b.000002", 80), &all);
        assert_eq!((s.file.as_str(), s.offset), ("b.000002", 50));
        assert_eq!(s.of("s3"), p("b.000002", 80));
        // Both at one place: no per-target entries are kept.
        s.advance(&all[..1], &p("b.000002", 80), &all);
        assert!(s.targets.is_empty(), "{s:?}");
        assert_eq!(s.of("local"), p("b.000002", 80));
        // A target no longer configured is forgotten.
        s.advance(&all[..1], &p("b.000003", 0), &all[..1]);
        assert!(s.targets.is_empty() && s.file == "b.000003", "{s:?}");
        // The state file round-trips, old ones (no targets) included.
        let old: State = serde_json::from_str(r#"{"file":"b.000009","offset":4}"#).unwrap();
        assert_eq!(old, State::at("b.000009", 4));
    }
}
