//! The catalog: what snapshots a target holds. A snapshot exists when its
//! manifest does (manifests are written last), so listing = finding
//! `<host>/<job>/<id>/manifest.json` keys and reading them. Objects under a
//! snapshot prefix without a manifest are leftovers of a failed run.

use std::collections::{BTreeMap, BTreeSet};

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

/// Snapshot ids under `<host>/<job>/` that have objects but no manifest
/// (failed or killed runs), with their keys; `except` is left alone (the
/// run in progress).
pub async fn incomplete(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    except: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>> {
    let objects = target.list(&layout::job_prefix(host, job)).await?;
    let mut with_manifest = BTreeSet::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects {
        let Some(parts) = parse_key(&o.key) else {
            continue;
        };
        if Some(parts.snapshot_id.as_str()) == except {
            continue;
        }
        if parts.is_manifest() {
            with_manifest.insert(parts.snapshot_id.clone());
        }
        keys.entry(parts.snapshot_id).or_default().push(o.key);
    }
    keys.retain(|id, _| !with_manifest.contains(id));
    Ok(keys)
}

/// Removes what failed runs of `host`/`job` left on `target`: unfinished
/// uploads/partial files and objects of snapshots without a manifest.
/// Returns a description per item removed. The caller holds the job lock.
pub async fn cleanup(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    except: Option<&str>,
) -> Result<Vec<String>> {
    let mut removed = target
        .cleanup_incomplete(&layout::job_prefix(host, job))
        .await?;
    for (id, keys) in incomplete(target, host, job, except).await? {
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
