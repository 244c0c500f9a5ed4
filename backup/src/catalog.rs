//! The catalog: what snapshots a target holds. A snapshot exists when its
//! manifest does (manifests are written last), so listing = finding
//! `<host>/<job>/<id>/manifest.json` keys and reading them. Objects under a
//! snapshot prefix without a manifest are leftovers of a failed run, or a
//! run still in progress on another machine.
//!
//! The job lock is local, so two writers can share one prefix: a cloned VM
//! keeps the host name. Cleanup therefore only removes a manifest-less
//! snapshot whose newest object is older than a grace period longer than
//! any run can last (the job's timeout, with a 24 h floor). Age was chosen
//! over a per-run marker object because it also covers writers that
//! predate any marker, needs no extra object per run, and judges by the
//! store's own timestamps; its cost is that leftovers stay a day.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::layout::{self, parse_key};
use crate::manifest::Manifest;
use crate::target::StorageTarget;

/// Manifests are small; refuse anything absurd.
pub const MANIFEST_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub host: Option<String>,
    pub job: Option<String>,
}

/// A snapshot found on a target.
#[derive(Debug, Clone)]
pub struct SnapshotEntry {
    pub target: String,
    pub manifest: Manifest,
}

fn list_prefix(filter: &Filter) -> String {
    match (&filter.host, &filter.job) {
        (Some(h), Some(j)) => layout::job_prefix(h, j),
        (Some(h), None) => layout::host_prefix(h),
        _ => String::new(),
    }
}

/// Every complete snapshot on `target` matching `filter`, oldest first.
/// A manifest that cannot be read is an error (it names the key), not a
/// silently missing snapshot.
pub async fn list(target: &dyn StorageTarget, filter: &Filter) -> Result<Vec<SnapshotEntry>> {
    let objects = target.list(&list_prefix(filter)).await?;
    let mut out = Vec::new();
    for o in objects {
        let Some(parts) = parse_key(&o.key) else {
            continue;
        };
        if !parts.is_manifest() {
            continue;
        }
        if filter.job.as_ref().is_some_and(|j| *j != parts.job) {
            continue;
        }
        let manifest = read_manifest(target, &o.key).await?;
        out.push(SnapshotEntry {
            target: target.name().to_string(),
            manifest,
        });
    }
    out.sort_by(|a, b| {
        a.manifest
            .started_at
            .cmp(&b.manifest.started_at)
            .then_with(|| a.manifest.snapshot_id.cmp(&b.manifest.snapshot_id))
    });
    Ok(out)
}

/// Reads and parses one manifest.
pub async fn read_manifest(target: &dyn StorageTarget, key: &str) -> Result<Manifest> {
    let bytes = target.get_bytes(key, MANIFEST_LIMIT_BYTES).await?;
    Manifest::from_json(&bytes, &format!("{}:{key}", target.name()))
}

/// The snapshot `id` on `target` (any host/job matching `filter`).
pub async fn find(
    target: &dyn StorageTarget,
    filter: &Filter,
    id: &str,
) -> Result<Option<SnapshotEntry>> {
    let objects = target.list(&list_prefix(filter)).await?;
    for o in objects {
        let Some(parts) = parse_key(&o.key) else {
            continue;
        };
        if parts.is_manifest() && parts.snapshot_id == id {
            let manifest = read_manifest(target, &o.key).await?;
            return Ok(Some(SnapshotEntry {
                target: target.name().to_string(),
                manifest,
            }));
        }
    }
    Ok(None)
}

/// The newest complete snapshot of `host`/`job` on `target`.
pub async fn latest(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
) -> Result<Option<SnapshotEntry>> {
    let filter = Filter {
        host: Some(host.to_string()),
        job: Some(job.to_string()),
    };
    Ok(list(target, &filter).await?.pop())
}

/// Deletes a snapshot: the manifest first, so it stops existing at once,
/// then its objects (every key under its prefix).
pub async fn delete(target: &dyn StorageTarget, manifest: &Manifest) -> Result<()> {
    target.delete(&manifest.key()).await?;
    let prefix = layout::snapshot_prefix(&manifest.host, &manifest.job, &manifest.snapshot_id);
    for o in target.list(&prefix).await? {
        target.delete(&o.key).await?;
    }
    Ok(())
}

/// Why a snapshot cannot be deleted yet: the latest Object Lock
/// retain-until date among its objects, as one line; `None` when nothing
/// stops the delete. Checked before deleting, so a locked snapshot stays
/// whole and listed instead of being hidden behind delete markers.
pub async fn lock(target: &dyn StorageTarget, manifest: &Manifest) -> Result<Option<String>> {
    let prefix = layout::snapshot_prefix(&manifest.host, &manifest.job, &manifest.snapshot_id);
    let mut latest: Option<(String, chrono::DateTime<chrono::Utc>)> = None;
    for o in target.list(&prefix).await? {
        if let Some((mode, until)) = target.locked_until(&o.key).await? {
            if latest.as_ref().is_none_or(|(_, t)| until > *t) {
                latest = Some((mode, until));
            }
        }
    }
    Ok(latest.map(|(mode, until)| {
        format!(
            "under Object Lock ({mode}) until {}; the store refuses to delete it before then",
            until.format("%Y-%m-%d %H:%M UTC")
        )
    }))
}

/// The shortest time a manifest-less snapshot is left alone, whatever the
/// job's timeout.
pub const INCOMPLETE_GRACE_FLOOR_SECS: u64 = 24 * 3600;

/// How old the newest object of a manifest-less snapshot must be before
/// cleanup removes it: no run of a job with this timeout can still be
/// writing it.
pub fn incomplete_grace(job_timeout_secs: u64) -> chrono::Duration {
    let secs = job_timeout_secs.max(INCOMPLETE_GRACE_FLOOR_SECS);
    chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

/// Snapshot ids under `<host>/<job>/` that have objects but no manifest
/// (failed or killed runs), with their keys; `except` is left alone (the
/// run in progress), and so is every snapshot with an object modified
/// after `older_than` (or of unknown age): it may be another writer's run
/// in progress.
pub async fn incomplete(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    except: Option<&str>,
    older_than: DateTime<Utc>,
) -> Result<BTreeMap<String, Vec<String>>> {
    let objects = target.list(&layout::job_prefix(host, job)).await?;
    let mut with_manifest = BTreeSet::new();
    let mut recent = BTreeSet::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects {
        let Some(parts) = parse_key(&o.key) else {
            continue;
        };
        // The binlog and WAL archives are not snapshots and have no
        // manifest: each is pruned by its own rule.
        if Some(parts.snapshot_id.as_str()) == except
            || parts.snapshot_id == layout::BINLOG_DIR
            || parts.snapshot_id == layout::WAL_DIR
        {
            continue;
        }
        if parts.is_manifest() {
            with_manifest.insert(parts.snapshot_id.clone());
        }
        if o.modified.is_none_or(|m| m > older_than) {
            recent.insert(parts.snapshot_id.clone());
        }
        keys.entry(parts.snapshot_id).or_default().push(o.key);
    }
    keys.retain(|id, _| !with_manifest.contains(id) && !recent.contains(id));
    Ok(keys)
}

/// Objects `manifest` lists that are not on `target` with the size
/// recorded, one line each; empty when the snapshot is whole. Checked
/// just before the manifest is written, so a snapshot whose objects
/// another writer removed is never committed.
pub async fn missing_objects(
    target: &dyn StorageTarget,
    manifest: &Manifest,
) -> Result<Vec<String>> {
    let prefix = layout::snapshot_prefix(&manifest.host, &manifest.job, &manifest.snapshot_id);
    let stored: BTreeMap<String, u64> = target
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut missing = Vec::new();
    for entry in &manifest.objects {
        let key = layout::object_key(
            &manifest.host,
            &manifest.job,
            &manifest.snapshot_id,
            &entry.name,
        );
        match stored.get(&key) {
            None => missing.push(format!("{key} is missing")),
            Some(&size) if size != entry.stored_bytes => missing.push(format!(
                "{key} has {size} bytes, {} were written",
                entry.stored_bytes
            )),
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// Removes what failed runs of `host`/`job` left on `target`: unfinished
/// uploads/partial files and objects of snapshots without a manifest
/// whose newest object is older than `older_than` (see [`incomplete`]).
/// Returns a description per item removed. The caller holds the job lock.
pub async fn cleanup(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    except: Option<&str>,
    older_than: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut removed = target
        .cleanup_incomplete(&layout::job_prefix(host, job), older_than)
        .await?;
    for (id, keys) in incomplete(target, host, job, except, older_than).await? {
        for key in &keys {
            target.delete(key).await?;
        }
        removed.push(format!(
            "{} object(s) of incomplete snapshot {id}",
            keys.len()
        ));
    }
    Ok(removed)
}

/// Finds a snapshot by id on any of `targets`, in order.
pub async fn find_anywhere(
    targets: &[std::sync::Arc<dyn StorageTarget>],
    filter: &Filter,
    id: &str,
) -> Result<SnapshotEntry> {
    let mut errors = Vec::new();
    for t in targets {
        match find(t.as_ref(), filter, id).await {
            Ok(Some(e)) => return Ok(e),
            Ok(None) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut msg = format!("no snapshot {id:?} on target(s) {}", names(targets));
    if !errors.is_empty() {
        msg.push_str(&format!(
            " (some could not be searched: {})",
            errors.join("; ")
        ));
    }
    msg.push_str("; `steward backup list` shows the snapshots");
    Err(Error::NotFound(msg))
}

fn names(targets: &[std::sync::Arc<dyn StorageTarget>]) -> String {
    targets
        .iter()
        .map(|t| t.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use crate::target::local::LocalTarget;

    fn put(dir: &std::path::Path, key: &str, bytes: &[u8]) {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Another writer (a clone with the same host name) is uploading
    /// snapshot B right now; A was abandoned long ago. Cleanup at the
    /// grace boundary takes A and leaves B, and B goes once it is old.
    #[tokio::test]
    async fn cleanup_leaves_young_incomplete_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let target = LocalTarget::at("local", dir.path());
        put(dir.path(), "web1/db/B/postgres/app.pgdump.zst.age", b"live");
        put(
            dir.path(),
            "web1/db/B/postgres/other.pgdump.zst.age.partial",
            b"li",
        );
        let now = Utc::now();
        let grace = incomplete_grace(3600);
        assert_eq!(grace, chrono::Duration::hours(24));

        let removed = cleanup(&target, "web1", "db", None, now - grace)
            .await
            .unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(dir
            .path()
            .join("web1/db/B/postgres/app.pgdump.zst.age")
            .exists());
        assert!(dir
            .path()
            .join("web1/db/B/postgres/other.pgdump.zst.age.partial")
            .exists());

        // Seen from a day later, the same objects are leftovers.
        let later = now + grace + chrono::Duration::minutes(1);
        let removed = cleanup(&target, "web1", "db", None, later - grace)
            .await
            .unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!dir
            .path()
            .join("web1/db/B")
            .join("postgres/app.pgdump.zst.age")
            .exists());
    }

    /// Shipped binlogs sit beside the snapshots and have no manifest:
    /// cleanup must never take them for a failed run's leftovers.
    #[tokio::test]
    async fn cleanup_leaves_shipped_binlogs_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = LocalTarget::at("local", dir.path());
        let segment =
            "web1/db/binlog/mysql-bin.000001/00000000000000000000-00000000000000000900.zst.age";
        put(dir.path(), segment, b"binlog");
        let later = Utc::now() + chrono::Duration::days(30);
        let removed = cleanup(&target, "web1", "db", None, later).await.unwrap();
        assert!(removed.is_empty(), "{removed:?}");
        assert!(dir.path().join(segment).exists());
    }

    #[test]
    fn grace_covers_long_timeouts() {
        assert_eq!(incomplete_grace(3 * 86400), chrono::Duration::days(3));
        assert!(incomplete_grace(u64::MAX) > chrono::Duration::days(3650));
    }

    #[tokio::test]
    async fn missing_objects_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let target = LocalTarget::at("local", dir.path());
        let manifest = sample();
        let key = layout::object_key(
            &manifest.host,
            &manifest.job,
            &manifest.snapshot_id,
            &manifest.objects[0].name,
        );
        let missing = missing_objects(&target, &manifest).await.unwrap();
        assert_eq!(missing, vec![format!("{key} is missing")]);

        put(dir.path(), &key, b"abc");
        let missing = missing_objects(&target, &manifest).await.unwrap();
        assert_eq!(missing, vec![format!("{key} has 3 bytes, 5 were written")]);

        put(dir.path(), &key, b"abcde");
        assert!(missing_objects(&target, &manifest)
            .await
            .unwrap()
            .is_empty());
    }
}
