//! Restore: find a snapshot on a target (configured, or given as a bucket
//! URL or directory with no configuration at all), read its objects back
//! through the checked stream (sha256 -> age -> zstd -> sha256), apply them
//! with the database's own tools or as files, and check the result against
//! the manifest. A restore succeeds only when every byte and every check
//! matched.

pub mod apply;
pub mod connection;
pub mod diff;
pub mod exact;
pub mod files;
pub mod identity;
pub mod many;
pub mod mysql;
pub mod postgres;
pub mod ranged;
pub mod redis;
pub mod stream;
pub mod tables;
pub mod tool;
pub mod tree;
pub mod unpack;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::config::{S3TargetConfig, TargetConfig};
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::Manifest;
use crate::target::StorageTarget;

pub use apply::{restore_snapshot, RestoreRequest};
pub use connection::ConnectionOverrides;
pub use identity::Identities;
pub use stream::{FaultKind, ObjectFault, Progress, Silent};

/// A snapshot found on a target, with its manifest read.
#[derive(Clone)]
pub struct Located {
    pub target: Arc<dyn StorageTarget>,
    pub manifest: Manifest,
}

impl std::fmt::Debug for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Located")
            .field("target", &self.target.name())
            .field("snapshot", &self.manifest.snapshot_id)
            .finish()
    }
}

/// A named check of restored data against the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            ok: true,
            detail: detail.into(),
        }
    }
    pub fn failed(name: &str, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// One thing restored: a database or a directory tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredItem {
    /// Where it went: database name or directory.
    pub name: String,
    /// What it was: source database name or archive roots.
    pub source: String,
    /// Plaintext bytes read.
    pub bytes: u64,
    pub checks: Vec<Check>,
}

/// A snapshot as listed: where it is and its manifest.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotEntry {
    pub target: String,
    pub location: String,
    pub manifest: Manifest,
}

/// Options of S3 access given on the command line, for `--from s3://...`.
#[derive(Debug, Clone, Default)]
pub struct S3Access {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub profile: Option<String>,
    /// Overrides of `restore_concurrency` / `restore_part_size_bytes`.
    pub restore_concurrency: Option<usize>,
    pub restore_part_size_bytes: Option<u64>,
}

/// Turns `--from` into a target configuration: `s3://bucket[/prefix]` or a
/// directory (`/path`, `file:///path`). Credentials come from the standard
/// AWS chain (environment, shared credentials file/profile, instance
/// profile), never from the URL.
pub fn target_from_url(url: &str, access: &S3Access) -> Result<TargetConfig> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() || bucket.contains('@') || bucket.contains(':') {
            return Err(Error::Config(
                "--from: expected s3://BUCKET[/PREFIX] (credentials go in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile, never in the URL)"
                .into(),
            ));
        }
        let mut value = serde_json::json!({
            "bucket": bucket,
            "prefix": prefix,
            "path_style": access.path_style,
        });
        if let Some(e) = &access.endpoint {
            value["endpoint"] = e.clone().into();
        }
        if let Some(r) = &access.region {
            value["region"] = r.clone().into();
        }
        if let Some(p) = &access.profile {
            value["profile"] = p.clone().into();
        }
        if let Some(n) = access.restore_concurrency {
            value["restore_concurrency"] = n.into();
        }
        if let Some(n) = access.restore_part_size_bytes {
            value["restore_part_size_bytes"] = n.into();
        }
        // Restores only read: the most compatible checksum mode.
        value["checksum"] = "when_required".into();
        let config: S3TargetConfig = serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("--from {url:?}: {e}")))?;
        let problems = crate::config::s3_problems("--from", &config);
        if !problems.is_empty() {
            return Err(Error::Config(problems.join("; ")));
        }
        return Ok(TargetConfig::S3(config));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if !path.starts_with('/') {
        return Err(Error::Config(format!(
            "--from {url:?}: use s3://BUCKET/PREFIX or an absolute directory path"
        )));
    }
    let value = serde_json::json!({ "path": path });
    let config =
        serde_json::from_value(value).map_err(|e| Error::Config(format!("--from {url:?}: {e}")))?;
    Ok(TargetConfig::Local(config))
}

/// Hosts that have snapshots on `target` (a manifest somewhere below them).
pub async fn hosts(target: &dyn StorageTarget) -> Result<Vec<String>> {
    let mut out: Vec<String> = target
        .list("")
        .await?
        .iter()
        .filter_map(|o| layout::parse_key(&o.key))
        .filter(|p| p.is_manifest())
        .map(|p| p.host)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The host to restore from: the one asked for, or the only one on the
/// targets; several hosts without a choice is an error listing them.
pub async fn resolve_host(
    targets: &[Arc<dyn StorageTarget>],
    wanted: Option<&str>,
) -> Result<String> {
    if let Some(h) = wanted {
        return Ok(h.to_string());
    }
    let mut all = Vec::new();
    for t in targets {
        all.extend(hosts(t.as_ref()).await?);
    }
    all.sort();
    all.dedup();
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(Error::NotFound(format!(
            "no snapshot found on {}; check the bucket/prefix or directory",
            describe_targets(targets)
        ))),
        _ => Err(Error::Config(format!(
            "snapshots of several hosts are stored on {} ({}); choose one with --host",
            describe_targets(targets),
            all.join(", ")
        ))),
    }
}

fn describe_targets(targets: &[Arc<dyn StorageTarget>]) -> String {
    targets
        .iter()
        .map(|t| format!("target {} ({})", t.name(), t.location()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Snapshot ids of `job` on `target` that have a manifest (the others are
/// not snapshots: a run that crashed before committing), oldest first.
pub async fn snapshot_ids(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
) -> Result<Vec<String>> {
    let mut ids: Vec<String> = target
        .list(&layout::job_prefix(host, job))
        .await?
        .iter()
        .filter_map(|o| layout::parse_key(&o.key))
        .filter(|p| p.is_manifest() && p.host == host && p.job == job)
        .map(|p| p.snapshot_id)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Every snapshot on the targets (of `job` if given), oldest first, with
/// the target that holds it.
pub async fn list(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: Option<&str>,
) -> Result<Vec<SnapshotEntry>> {
    let filter = catalog::Filter {
        host: Some(host.to_string()),
        job: job.map(str::to_string),
    };
    let mut entries = Vec::new();
    for t in targets {
        for e in catalog::list(t.as_ref(), &filter).await? {
            entries.push(SnapshotEntry {
                target: t.name().to_string(),
                location: t.location(),
                manifest: e.manifest,
            });
        }
    }
    entries.sort_by(|a, b| {
        (a.manifest.started_at, &a.manifest.snapshot_id, &a.target).cmp(&(
            b.manifest.started_at,
            &b.manifest.snapshot_id,
            &b.target,
        ))
    });
    Ok(entries)
}

/// Finds `snapshot` (an id, or `latest`) of `job` on the first target that
/// has it; `latest` is the newest committed snapshot over all targets.
pub async fn locate(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    snapshot: &str,
) -> Result<Located> {
    let mut best: Option<(String, Arc<dyn StorageTarget>)> = None;
    let mut seen_any = false;
    for t in targets {
        let ids = snapshot_ids(t.as_ref(), host, job).await?;
        seen_any |= !ids.is_empty();
        let pick = if snapshot == "latest" {
            ids.last().cloned()
        } else {
            ids.into_iter().find(|i| i == snapshot)
        };
        if let Some(id) = pick {
            let better = match &best {
                None => true,
                Some((b, _)) => snapshot == "latest" && id > *b,
            };
            if better {
                best = Some((id, Arc::clone(t)));
            }
        }
    }
    let Some((id, target)) = best else {
        return Err(Error::NotFound(if seen_any || snapshot == "latest" {
            format!(
                "no snapshot {snapshot} of job {job} (host {host}) on {}; see `steward restore list`",
                describe_targets(targets)
            )
        } else {
            format!(
                "job {job} of host {host} has no snapshot on {}; check the job name and --host (see `steward restore list`)",
                describe_targets(targets)
            )
        }));
    };
    let manifest =
        catalog::read_manifest(target.as_ref(), &layout::manifest_key(host, job, &id)).await?;
    if manifest.job != job || manifest.host != host || manifest.snapshot_id != id {
        return Err(Error::Integrity(format!(
            "manifest of {host}/{job}/{id} on target {} describes {}/{}/{}: the snapshot was moved or tampered with",
            target.name(),
            manifest.host,
            manifest.job,
            manifest.snapshot_id
        )));
    }
    Ok(Located { target, manifest })
}

/// Finds a snapshot by id alone (any job), for `show`.
pub async fn locate_id(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    id: &str,
) -> Result<Located> {
    for t in targets {
        for parts in t
            .list(&layout::host_prefix(host))
            .await?
            .iter()
            .filter_map(|o| layout::parse_key(&o.key))
        {
            if parts.is_manifest() && parts.snapshot_id == id {
                return locate(std::slice::from_ref(t), host, &parts.job, id).await;
            }
        }
    }
    Err(Error::NotFound(format!(
        "no snapshot {id} of host {host} on {}; see `steward restore list`",
        describe_targets(targets)
    )))
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_urls() {
        let access = S3Access {
            endpoint: Some("http://127.0.0.1:9000".into()),
            path_style: true,
            ..Default::default()
        };
        match target_from_url("s3://bkp/steward/prod/", &access).unwrap() {
            TargetConfig::S3(c) => {
                assert_eq!(c.bucket, "bkp");
                assert_eq!(c.prefix, "steward/prod");
                assert!(c.path_style);
                assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
                assert!(c.access_key_id.is_none());
            }
            other => panic!("{other:?}"),
        }
        match target_from_url("file:///mnt/usb", &access).unwrap() {
            TargetConfig::Local(c) => assert_eq!(c.path, std::path::Path::new("/mnt/usb")),
            other => panic!("{other:?}"),
        }
        assert!(target_from_url("backups", &access).is_err());
        let e = target_from_url("s3://key:secret@bucket", &access).unwrap_err();
        assert!(!e.to_string().contains("secret@"), "{e}");
    }
}
