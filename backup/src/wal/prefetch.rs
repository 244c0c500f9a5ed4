//! Prefetch for `restore_command`: PostgreSQL asks for one segment at a
//! time and waits for each, so replay from a remote archive would be bound
//! by one download's latency per segment. When a segment is not already
//! here, the segments that follow it are downloaded in parallel with it
//! into `pg_wal/.steward-prefetch/` (each checked and renamed into place
//! like any fetch), and the next requests are served from there by a
//! rename: one round trip per `ahead + 1` segments.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::restore::Identities;
use crate::target::StorageTarget;
use crate::wal::archive::{self, Fetched};
use crate::wal::names::{segment_name, WalKind, WalName, DEFAULT_SEGMENT_BYTES};

/// The spool directory, beside `%p` (in `pg_wal`, which base backups
/// never copy).
pub const SPOOL_DIR: &str = ".steward-prefetch";

/// The most segments fetched ahead (disk: this x the segment size).
pub const MAX_AHEAD: u32 = 64;

/// Fetches `name` into `dest`, from the spool when an earlier fetch
/// prefetched it; otherwise from the archive together with the `ahead`
/// segments that follow it. Only the requested segment's result counts: a
/// prefetch that fails leaves nothing, and that segment's own fetch later
/// reports why.
pub async fn fetch(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    name: &WalName,
    dest: &Path,
    identities: &Identities,
    ahead: u32,
) -> Result<Fetched> {
    if name.kind != WalKind::Segment || ahead == 0 {
        return archive::fetch(targets, host, job, name, dest, identities).await;
    }
    let spool = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(SPOOL_DIR);
    let spooled = spool.join(name.as_str());
    if let Ok(meta) = std::fs::symlink_metadata(&spooled) {
        if meta.is_file() && std::fs::rename(&spooled, dest).is_ok() {
            forget_older(&spool, name, meta.len());
            return Ok(Fetched::Restored {
                bytes: meta.len(),
                target: "prefetch".into(),
            });
        }
    }
    // The segment size is that of the WAL files themselves; until one is
    // here, PostgreSQL's default.
    let segment_bytes = std::fs::read_dir(&spool)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .filter(|&n| n.is_power_of_two() && n >= 1024 * 1024)
        .unwrap_or(DEFAULT_SEGMENT_BYTES);
    let _ = std::fs::DirBuilder::new()
        .mode(crate::private_fs::DIR_MODE)
        .create(&spool);
    let position = name.position(segment_bytes);
    let next: Vec<(WalName, PathBuf)> = (1..=u64::from(ahead.min(MAX_AHEAD)))
        .filter_map(|i| {
            let n =
                WalName::parse(&segment_name(name.timeline, position + i, segment_bytes)).ok()?;
            let path = spool.join(n.as_str());
            (!path.exists()).then_some((n, path))
        })
        .collect();
    let wanted = archive::fetch(targets, host, job, name, dest, identities);
    let prefetches = futures::future::join_all(
        next.iter()
            .map(|(n, path)| archive::fetch(targets, host, job, n, path, identities)),
    );
    let (result, _) = tokio::join!(wanted, prefetches);
    result
}

/// Removes spooled segments before `name`: recovery has passed them.
fn forget_older(spool: &Path, name: &WalName, segment_bytes: u64) {
    let Ok(entries) = std::fs::read_dir(spool) else {
        return;
    };
    for e in entries.flatten() {
        let Some(file) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Ok(w) = WalName::parse(&file) {
            if w.kind == WalKind::Segment
                && w.position(segment_bytes) < name.position(segment_bytes)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
