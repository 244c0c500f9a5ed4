//! Verify: read snapshots back without restoring them. Every object is
//! downloaded, decrypted and decompressed, its stored and plaintext hashes
//! compared with the manifest, and its format checked by the format's own
//! means (`pg_restore --list`, the dump's completion trailer, a tar
//! listing compared with the manifest's counts). Nothing is written.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, ObjectEntry, ObjectRole};
use crate::restore::many::{fetch_objects, Fetched};
use crate::restore::ranged::Budget;
use crate::restore::stream::{FaultKind, ObjectFault, Progress};
use crate::restore::tool::{feed, find_tool, FeedError};
use crate::restore::{self, Check, Identities, Located};
use crate::target::StorageTarget;

/// Which snapshots of each job to verify.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// The newest snapshot.
    Latest,
    /// This snapshot id.
    Id(String),
    /// Every snapshot.
    All,
    /// A random share (percent, 0 < p <= 100) of the snapshots, at least one.
    Sample(f64),
}

impl Selection {
    /// Parses `--sample` text such as `10%` or `10`.
    pub fn sample(text: &str) -> Result<Self> {
        let n: f64 = text.trim().trim_end_matches('%').parse().map_err(|_| {
            Error::Config(format!(
                "--sample {text:?}: expected a percentage such as 10%"
            ))
        })?;
        if !(n > 0.0 && n <= 100.0) {
            return Err(Error::Config(format!(
                "--sample {text:?}: use a percentage in (0, 100]"
            )));
        }
        Ok(Selection::Sample(n))
    }
}

/// The verdict on one object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectVerdict {
    pub object: String,
    pub role: ObjectRole,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub stored_bytes: u64,
    pub ok: bool,
    /// Why the bytes are bad (missing, truncated, corrupt, wrong key...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<ObjectFault>,
    /// The format check, when the bytes were good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Check>,
}

impl ObjectVerdict {
    /// One line describing the problem, if any.
    pub fn problem(&self) -> Option<String> {
        if let Some(f) = &self.fault {
            return Some(f.to_string());
        }
        match &self.format {
            Some(c) if !c.ok => Some(format!("object {}: {}: {}", self.object, c.name, c.detail)),
            _ => None,
        }
    }
}

/// The verdict on one snapshot (on one target).
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotVerdict {
    pub target: String,
    pub host: String,
    pub job: String,
    pub snapshot: String,
    pub ok: bool,
    pub seconds: f64,
    pub objects: Vec<ObjectVerdict>,
}

/// Client tools used for format checks.
#[derive(Debug, Clone, Default)]
pub struct VerifyTools {
    /// Where `pg_restore` lives (PATH when unset).
    pub pg_bin_dir: Option<PathBuf>,
}

/// Verifies every object of a located snapshot.
pub async fn verify_snapshot(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    tools: &VerifyTools,
) -> SnapshotVerdict {
    let started = std::time::Instant::now();
    let m = &located.manifest;
    // Objects are read up to the target's restore concurrency at once,
    // their ranged downloads sharing one memory budget.
    let budget = Budget::new(located.target.ranged_reads().map_or(1, |p| p.concurrency));
    progress.start(
        &format!("verify {} ({} objects)", m.job, m.objects.len()),
        Some(m.stored_bytes()),
    );
    let pg_bin_dir = tools.pg_bin_dir.clone();
    let manifest = m.clone();
    let fetched = fetch_objects(
        located,
        &m.objects,
        identities,
        Arc::clone(&progress),
        &budget,
        move |entry, reader| {
            let pg_restore = find_tool(pg_bin_dir.as_deref(), &["pg_restore"]);
            check_format(reader, entry.role, pg_restore, &manifest)
        },
    )
    .await;
    progress.finish();
    let mut objects: Vec<ObjectVerdict> = (m.objects.iter().zip(fetched))
        .map(|(entry, f)| verdict(located, entry, f))
        .collect();
    // Dumps for point-in-time recovery: the shipped binlogs must run on
    // from their position without a gap.
    if let Some(check) = crate::binlog::archive::continuity(located.target.as_ref(), m).await {
        objects.push(ObjectVerdict {
            object: format!("{}/", crate::layout::BINLOG_DIR),
            role: ObjectRole::Binlog,
            database: None,
            stored_bytes: 0,
            ok: check.ok,
            fault: None,
            format: Some(check),
        });
    }
    if let Some(base) = &m.postgres_base {
        // A base backup is only as good as the WAL that follows it.
        let check =
            crate::wal::archive::chain_check(located.target.as_ref(), &m.host, &m.job, base).await;
        objects.push(ObjectVerdict {
            object: crate::layout::wal_prefix(&m.host, &m.job),
            role: ObjectRole::PostgresBaseTar,
            database: None,
            stored_bytes: 0,
            ok: check.ok,
            fault: None,
            format: Some(check),
        });
    }
    let ok = !objects.is_empty() && objects.iter().all(|o| o.ok);
    SnapshotVerdict {
        target: located.target.name().to_string(),
        host: m.host.clone(),
        job: m.job.clone(),
        snapshot: m.snapshot_id.clone(),
        ok,
        seconds: started.elapsed().as_secs_f64(),
        objects,
    }
}

/// The verdict on one object from what [`fetch_objects`] made of it.
fn verdict(located: &Located, entry: &ObjectEntry, fetched: Fetched<Check>) -> ObjectVerdict {
    let mut verdict = ObjectVerdict {
        object: entry.name.clone(),
        role: entry.role,
        database: entry.database.clone(),
        stored_bytes: entry.stored_bytes,
        ok: false,
        fault: None,
        format: None,
    };
    match fetched {
        Fetched::Done(check) => {
            verdict.ok = check.ok;
            verdict.format = Some(check);
        }
        Fetched::Fault(f) => verdict.fault = Some(f),
        Fetched::Failed(detail) => {
            verdict.fault = Some(ObjectFault {
                kind: FaultKind::Unreadable,
                snapshot: located.manifest.snapshot_id.clone(),
                object: entry.name.clone(),
                target: located.target.name().to_string(),
                detail,
            })
        }
    }
    verdict
}

/// Keeps the last bytes read, for trailer checks.
struct Tail<R> {
    inner: R,
    tail: Vec<u8>,
}

const TAIL_BYTES: usize = 4096;

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 2 * TAIL_BYTES {
            let cut = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..cut);
        }
        Ok(n)
    }
}

/// Reads the object to its verified end while checking its format. The
/// `Err` text is for errors that are not the object's fault (a missing
/// tool); a bad object shows up as the recorded fault or a failed check.
fn check_format(
    reader: impl Read,
    role: ObjectRole,
    pg_restore: Result<PathBuf>,
    manifest: &Manifest,
) -> std::result::Result<Check, String> {
    match role {
        ObjectRole::PostgresDump => {
            let path = pg_restore.map_err(|e| e.to_string())?;
            let mut cmd = std::process::Command::new(path);
            cmd.arg("--list");
            let slot = Arc::new(std::sync::Mutex::new(None));
            match feed(&mut cmd, reader, &slot) {
                Ok(out) => {
                    let entries = out
                        .stdout
                        .lines()
                        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
                        .count();
                    Ok(Check::ok(
                        "pg_restore --list",
                        format!("{entries} table-of-contents entries"),
                    ))
                }
                Err(FeedError::Object(f)) => Ok(Check::failed("read", f.to_string())),
                Err(FeedError::Tool(m)) => Ok(Check::failed("pg_restore --list", m)),
            }
        }
        ObjectRole::RedisRdb => crate::restore::redis::verify_rdb(reader, manifest),
        ObjectRole::Binlog => {
            // Event framing is checked by binlog::archive over whole files.
            std::io::copy(&mut { reader }, &mut std::io::sink()).map_err(|e| e.to_string())?;
            Ok(Check::ok("read", "binlog segment"))
        }
        ObjectRole::PostgresGlobals | ObjectRole::MysqlDump => {
            let mut tail = Tail {
                inner: reader,
                tail: Vec::new(),
            };
            std::io::copy(&mut tail, &mut std::io::sink()).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&tail.tail);
            let (name, marker) = if role == ObjectRole::MysqlDump {
                ("dump trailer", "-- Dump completed")
            } else {
                ("dump trailer", "dump complete")
            };
            Ok(if text.contains(marker) {
                Check::ok(name, format!("ends with {marker:?}"))
            } else {
                Check::failed(
                    name,
                    format!("the dump does not end with {marker:?}: it is incomplete"),
                )
            })
        }
        ObjectRole::Tar | ObjectRole::PostgresBaseTar => {
            let mut counted = Tail {
                inner: reader,
                tail: Vec::new(),
            };
            let (mut files, mut dirs, mut links, mut bytes) = (0u64, 0u64, 0u64, 0u64);
            {
                let mut archive = tar::Archive::new(&mut counted);
                let entries = archive.entries().map_err(|e| e.to_string())?;
                for e in entries {
                    let e = match e {
                        Ok(e) => e,
                        Err(err) => {
                            return Ok(Check::failed("tar listing", err.to_string()));
                        }
                    };
                    let kind = e.header().entry_type();
                    if kind.is_dir() {
                        dirs += 1;
                    } else if kind.is_symlink() {
                        links += 1;
                    } else if kind.is_file() {
                        files += 1;
                        bytes += e.header().size().unwrap_or(0);
                    }
                }
            }
            // The archive's end marker may leave padding: read to the
            // verified end.
            std::io::copy(&mut counted, &mut std::io::sink()).map_err(|e| e.to_string())?;
            let detail =
                format!("{files} files, {dirs} directories, {links} symlinks, {bytes} bytes");
            Ok(match &manifest.files {
                Some(i)
                    if i.files != files
                        || i.directories != dirs
                        || i.symlinks != links
                        || i.bytes != bytes =>
                {
                    Check::failed(
                        "tar listing",
                        format!(
                            "{detail}, but the manifest records {} files, {} directories, {} symlinks, {} bytes",
                            i.files, i.directories, i.symlinks, i.bytes
                        ),
                    )
                }
                _ => Check::ok("tar listing", detail),
            })
        }
    }
}

/// Picks snapshot ids of one job according to `selection`.
pub fn select(ids: &[String], selection: &Selection, seed: u64) -> Vec<String> {
    match selection {
        Selection::Latest => ids.last().cloned().into_iter().collect(),
        Selection::Id(id) => ids.iter().filter(|i| *i == id).cloned().collect(),
        Selection::All => ids.to_vec(),
        Selection::Sample(pct) => {
            if ids.is_empty() {
                return Vec::new();
            }
            let want = ((ids.len() as f64) * pct / 100.0).ceil().max(1.0) as usize;
            // A small deterministic shuffle from the seed (xorshift):
            // enough to spread checks over the history between runs.
            let mut order: Vec<usize> = (0..ids.len()).collect();
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut picked: Vec<String> = order[..want.min(ids.len())]
                .iter()
                .map(|&i| ids[i].clone())
                .collect();
            picked.sort();
            picked
        }
    }
}

/// Verifies the selected snapshots of `jobs` (every job of `host` when
/// empty) on every target. A job with nothing to verify is an error.
pub async fn verify(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    jobs: &[String],
    selection: &Selection,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    tools: &VerifyTools,
) -> Result<Vec<SnapshotVerdict>> {
    let jobs: Vec<String> = if jobs.is_empty() {
        let mut all = Vec::new();
        for t in targets {
            for e in restore::list(std::slice::from_ref(t), host, None).await? {
                all.push(e.manifest.job);
            }
        }
        all.sort();
        all.dedup();
        all
    } else {
        jobs.to_vec()
    };
    if jobs.is_empty() {
        return Err(Error::NotFound(format!(
            "no snapshot of host {host} to verify on {}",
            targets
                .iter()
                .map(|t| t.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut verdicts = Vec::new();
    for job in &jobs {
        let mut found = false;
        for t in targets {
            let ids = restore::snapshot_ids(t.as_ref(), host, job).await?;
            for id in select(&ids, selection, seed) {
                found = true;
                let located = restore::locate(std::slice::from_ref(t), host, job, &id).await?;
                verdicts.push(
                    verify_snapshot(&located, identities, Arc::clone(&progress), tools).await,
                );
            }
        }
        if !found {
            return Err(Error::NotFound(match selection {
                Selection::Id(id) => format!(
                    "no snapshot {id} of job {job} (host {host}); see `steward restore list`"
                ),
                _ => format!("job {job} of host {host} has no snapshot to verify"),
            }));
        }
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections() {
        let ids: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
        assert_eq!(select(&ids, &Selection::Latest, 1), vec!["s9"]);
        assert_eq!(select(&ids, &Selection::All, 1).len(), 10);
        assert_eq!(select(&ids, &Selection::Id("s3".into()), 1), vec!["s3"]);
        assert_eq!(select(&ids, &Selection::Sample(25.0), 7).len(), 3);
        assert_eq!(select(&ids, &Selection::Sample(1.0), 7).len(), 1);
        assert!(select(&[], &Selection::Sample(50.0), 7).is_empty());
        assert!(Selection::sample("0%").is_err());
        assert_eq!(Selection::sample("10%").unwrap(), Selection::Sample(10.0));
    }
}
