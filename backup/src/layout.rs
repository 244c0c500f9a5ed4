//! Where things live in a target: `<prefix>/<host>/<job>/<snapshot-id>/<object>`.
//!
//! A target applies its own configured `<prefix>`; every key handed to a
//! [`crate::target::StorageTarget`] is relative to it and built here, so the
//! layout is defined in one place. A snapshot exists only when its
//! `manifest.json` does: the manifest is written last.

use chrono::{DateTime, Utc};

/// The file name of a snapshot's manifest.
pub const MANIFEST_NAME: &str = "manifest.json";

/// `<host>/<job>/binlog/`: shipped MySQL/MariaDB binlogs (crate::binlog),
/// beside the job's snapshots. Snapshot ids start with a date, so no
/// snapshot is ever called this; the catalog leaves it alone.
pub const BINLOG_DIR: &str = "binlog";

/// Key prefix of everything a host stored: `<host>/`.
pub fn host_prefix(host: &str) -> String {
    format!("{host}/")
}

/// Key prefix of every snapshot of one job: `<host>/<job>/`.
pub fn job_prefix(host: &str, job: &str) -> String {
    format!("{host}/{job}/")
}

/// The directory of a `postgres_pitr` job's WAL archive, beside its
/// snapshots (never a snapshot id: those start with a date).
pub const WAL_DIR: &str = "wal";

/// Key prefix of a job's archived WAL: `<host>/<job>/wal/`.
pub fn wal_prefix(host: &str, job: &str) -> String {
    format!("{host}/{job}/{WAL_DIR}/")
}

/// Key prefix of one snapshot: `<host>/<job>/<snapshot-id>/`.
pub fn snapshot_prefix(host: &str, job: &str, snapshot_id: &str) -> String {
    format!("{host}/{job}/{snapshot_id}/")
}

/// Key of one object of a snapshot; `name` may contain `/`
/// (e.g. `postgres/app.pgdump.zst.age`).
pub fn object_key(host: &str, job: &str, snapshot_id: &str, name: &str) -> String {
    format!("{host}/{job}/{snapshot_id}/{name}")
}

/// Key of a snapshot's manifest.
pub fn manifest_key(host: &str, job: &str, snapshot_id: &str) -> String {
    object_key(host, job, snapshot_id, MANIFEST_NAME)
}

/// A key split into its layout parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    pub host: String,
    pub job: String,
    pub snapshot_id: String,
    /// The object name inside the snapshot (may contain `/`).
    pub name: String,
}

impl KeyParts {
    pub fn is_manifest(&self) -> bool {
        self.name == MANIFEST_NAME
    }
}

/// Splits a key made by [`object_key`]; `None` for keys outside the layout.
pub fn parse_key(key: &str) -> Option<KeyParts> {
    let mut parts = key.splitn(4, '/');
    let host = parts.next()?;
    let job = parts.next()?;
    let snapshot_id = parts.next()?;
    let name = parts.next()?;
    if host.is_empty() || job.is_empty() || snapshot_id.is_empty() || name.is_empty() {
        return None;
    }
    Some(KeyParts {
        host: host.to_string(),
        job: job.to_string(),
        snapshot_id: snapshot_id.to_string(),
        name: name.to_string(),
    })
}

/// A new snapshot id: the UTC start time (so ids sort by time) and four
/// hex digits that keep two runs started in the same second apart,
/// e.g. `20261123T185530Z-3fa1`.
pub fn new_snapshot_id(started: DateTime<Utc>) -> String {
    let nanos = started.timestamp_subsec_nanos() as u64;
    let mix = nanos ^ (u64::from(std::process::id()) << 16) ^ (nanos >> 20);
    format!("{}-{:04x}", started.format("%Y%m%dT%H%M%SZ"), mix & 0xffff)
}

/// Whether `name` can be used as a host or job path segment: no `/`, not
/// `.`/`..`, printable ASCII without spaces.
pub fn is_valid_segment(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = object_key(
            "web1",
            "db",
            "20260101T000000Z-0001",
            "postgres/app.pgdump.zst.age",
        );
        let parts = parse_key(&key).unwrap();
        assert_eq!(parts.host, "web1");
        assert_eq!(parts.job, "db");
        assert_eq!(parts.name, "postgres/app.pgdump.zst.age");
        assert!(parse_key(&manifest_key("h", "j", "s"))
            .unwrap()
            .is_manifest());
        assert!(parse_key("h/j/").is_none());
    }

    #[test]
    fn snapshot_ids_sort_by_time() {
        let a = new_snapshot_id("2026-01-01T00:00:00Z".parse().unwrap());
        let b = new_snapshot_id("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(a < b, "{a} {b}");
        assert!(is_valid_segment(&a));
    }
}
