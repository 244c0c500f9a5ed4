//! The streamed tail of a `postgres_pitr` job's WAL: while a segment is
//! still being written, the streamer ([`crate::wal::receive`]) stores each
//! new stretch of it as a small delta object, so the bucket is seconds
//! behind the server instead of a whole segment. Once the segment is
//! complete it is archived like any `wal push` (content-addressed) and its
//! deltas are removed.
//!
//! Keys: `<host>/<job>/wal/stream/<segment>.<start>-<end>.<size>.<hash>.zst.age`
//! (start, end and the segment size in 8 upper-case hex digits, the hash
//! of the delta's plaintext written as in WAL keys: `b3-<blake3>`, or a
//! bare sha256 for deltas stored before BLAKE3). They live under `wal/` so the catalog and
//! retention of snapshots leave them alone, and no archived WAL name can
//! be read from them.
//!
//! A fetch (`restore_command`) of a segment the archive does not hold
//! reassembles it from the deltas that run without a gap from byte 0 and
//! fills the rest with zeros, as the server's own `.partial` file is:
//! recovery replays up to the last complete record and ends there.

use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::layout;
use crate::manifest::{PgBaseInfo, PlaintextHash};
use crate::restore::Identities;
use crate::target::StorageTarget;
use crate::wal::archive::{self, Fetched};
use crate::wal::keys;
use crate::wal::names::{WalKind, WalName};

/// Key directory of the deltas, inside the job's WAL prefix.
const STREAM_DIR: &str = "stream/";
const OBJECT_SUFFIX: &str = ".zst.age";

/// One stored stretch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub segment: WalName,
    pub start: u64,
    pub end: u64,
    pub segment_bytes: u64,
    /// Hash of the plaintext bytes `start..end`.
    pub hash: PlaintextHash,
    pub key: String,
}

/// `<host>/<job>/wal/stream/`.
pub fn stream_prefix(host: &str, job: &str) -> String {
    format!("{}{STREAM_DIR}", layout::wal_prefix(host, job))
}

/// The key of bytes `start..end` of `segment`.
pub fn delta_key(
    host: &str,
    job: &str,
    segment: &str,
    start: u64,
    end: u64,
    segment_bytes: u64,
    hash: &PlaintextHash,
) -> String {
    format!(
        "{}{segment}.{start:08X}-{end:08X}.{segment_bytes:08X}.{}{OBJECT_SUFFIX}",
        stream_prefix(host, job),
        keys::key_hash_text(hash)
    )
}

fn hex8(s: &str) -> Option<u64> {
    (s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// Reads a delta key back; `None` for anything else (left alone).
pub fn parse_delta_key(prefix: &str, key: &str) -> Option<Delta> {
    let rest = key.strip_prefix(prefix)?.strip_suffix(OBJECT_SUFFIX)?;
    let mut parts = rest.split('.');
    let (segment, range, size, hash) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let segment = WalName::parse(segment).ok()?;
    if segment.kind != WalKind::Segment {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (start, end, segment_bytes) = (hex8(start)?, hex8(end)?, hex8(size)?);
    let hash = keys::parse_key_hash(hash)?;
    if start >= end || end > segment_bytes || !segment_bytes.is_power_of_two() {
        return None;
    }
    Some(Delta {
        segment,
        start,
        end,
        segment_bytes,
        hash,
        key: key.to_string(),
    })
}

/// The deltas on `target`, of one segment or of all, sorted by key.
pub async fn list(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    segment: Option<&str>,
) -> Result<Vec<Delta>> {
    let prefix = stream_prefix(host, job);
    let listed = match segment {
        Some(s) => target.list(&format!("{prefix}{s}.")).await?,
        None => target.list(&prefix).await?,
    };
    Ok(listed
        .into_iter()
        .filter_map(|o| parse_delta_key(&prefix, &o.key))
        .filter(|d| segment.is_none_or(|s| d.segment.as_str() == s))
        .collect())
}

/// The deltas to read, in order, for the longest stretch from byte 0
/// without a gap (overlaps are fine: WAL at a position never changes),
/// and where that stretch ends.
pub fn contiguous(deltas: &[Delta]) -> (Vec<Delta>, u64) {
    let Some(size) = deltas.first().map(|d| d.segment_bytes) else {
        return (Vec::new(), 0);
    };
    let mut sorted: Vec<&Delta> = deltas.iter().filter(|d| d.segment_bytes == size).collect();
    sorted.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut chain = Vec::new();
    let mut pos = 0;
    for d in sorted {
        if d.start > pos {
            break;
        }
        if d.end <= pos {
            continue;
        }
        pos = d.end;
        chain.push(d.clone());
    }
    (chain, pos)
}

/// Where the deltas already stored for `segment` on `target` end (the
/// streamer goes on from there when its own state is gone).
pub async fn covered(target: &dyn StorageTarget, host: &str, job: &str, segment: &str) -> u64 {
    match list(target, host, job, Some(segment)).await {
        Ok(d) => contiguous(&d).1,
        Err(_) => 0,
    }
}

/// Removes the deltas of `segment` (it is archived whole now).
pub async fn delete_segment(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    segment: &str,
) -> Result<usize> {
    let deltas = list(target, host, job, Some(segment)).await?;
    for d in &deltas {
        target.delete(&d.key).await?;
    }
    Ok(deltas.len())
}

/// Retention: removes the deltas of segments no kept base backup needs
/// (before the oldest one's start) and of segments archived whole. Nothing
/// is removed when no base backup is kept. Returns the keys removed.
pub async fn prune(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    kept: &[PgBaseInfo],
) -> Result<Vec<String>> {
    let Some(oldest) = kept
        .iter()
        .filter_map(|b| {
            let w = WalName::parse(&b.start_wal).ok()?;
            Some(w.position(b.wal_segment_bytes))
        })
        .min()
    else {
        return Ok(Vec::new());
    };
    let archived: std::collections::BTreeSet<String> = archive::list(target, host, job)
        .await?
        .into_iter()
        .filter(|w| w.name.kind == WalKind::Segment)
        .map(|w| w.name.to_string())
        .collect();
    let mut removed = Vec::new();
    for d in list(target, host, job, None).await? {
        if d.segment.position(d.segment_bytes) < oldest || archived.contains(d.segment.as_str()) {
            target.delete(&d.key).await?;
            removed.push(d.key);
        }
    }
    Ok(removed)
}

/// `wal fetch`: the archived segment as [`crate::wal::prefetch::fetch`]
/// finds it, or, when the archive does not hold it, the segment rebuilt
/// from its streamed deltas (the newest WAL, still being written when the
/// server stopped).
pub async fn fetch(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    name: &WalName,
    dest: &Path,
    identities: &Identities,
    ahead: u32,
) -> Result<Fetched> {
    let found =
        crate::wal::prefetch::fetch(targets, host, job, name, dest, identities, ahead).await?;
    if found != Fetched::Absent || name.kind != WalKind::Segment {
        return Ok(found);
    }
    fetch_partial(targets, host, job, name, dest, identities).await
}

/// Rebuilds `name` from its deltas into `dest` (through a synced temporary
/// file, renamed only once every delta decrypted and matched its hash).
/// The target whose deltas reach furthest is read; `Absent` when none has
/// a delta starting at byte 0.
pub async fn fetch_partial(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    name: &WalName,
    dest: &Path,
    identities: &Identities,
) -> Result<Fetched> {
    let mut candidates = Vec::new();
    let mut errors = Vec::new();
    for target in targets {
        match list(target.as_ref(), host, job, Some(name.as_str())).await {
            Ok(d) => {
                let (chain, end) = contiguous(&d);
                if end > 0 {
                    candidates.push((end, Arc::clone(target), chain));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    for (_, target, chain) in candidates {
        match rebuild(Arc::clone(&target), chain, dest, identities).await {
            Ok(bytes) => {
                return Ok(Fetched::Restored {
                    bytes,
                    target: target.name().to_string(),
                })
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        return Ok(Fetched::Absent);
    }
    Err(Error::Integrity(format!(
        "the streamed tail of WAL segment {name} of job {job} cannot be restored: {}",
        errors.join("; ")
    )))
}

/// Writes the deltas of `chain` at their offsets and zero-fills to the
/// segment size; returns the bytes taken from the deltas.
async fn rebuild(
    target: Arc<dyn StorageTarget>,
    chain: Vec<Delta>,
    dest: &Path,
    identities: &Identities,
) -> Result<u64> {
    let Some(first) = chain.first() else {
        return Err(Error::Internal("no delta to rebuild from".into()));
    };
    let segment = first.segment.to_string();
    let size = first.segment_bytes;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tmp = dir.join(format!(".{segment}.steward-stream"));
    let dest = dest.to_path_buf();
    let ids = identities.clone();
    let handle = tokio::runtime::Handle::current();
    let at = format!("target {} ({})", target.name(), target.location());
    tokio::task::spawn_blocking(move || -> Result<u64> {
        // Our own name: a leftover is replaced, and create_new never
        // follows a symlink planted in its place.
        let _ = std::fs::remove_file(&tmp);
        let result = (|| -> std::result::Result<u64, String> {
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::private_fs::FILE_MODE)
                .open(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            let mut end = 0;
            for d in &chain {
                let raw = handle
                    .block_on(target.get(&d.key))
                    .map_err(|e| format!("key {}: {e}", d.key))?;
                let bridge = tokio_util::io::SyncIoBridge::new_with_handle(raw, handle.clone());
                out.seek(SeekFrom::Start(d.start))
                    .map_err(|e| format!("seeking in {}: {e}", tmp.display()))?;
                let n = archive::decode(bridge, &ids, &d.hash, &[], &mut out)
                    .map_err(|e| format!("key {}: {e}", d.key))?;
                if n != d.end - d.start {
                    return Err(format!(
                        "key {}: corrupt: {n} bytes, the key says {}",
                        d.key,
                        d.end - d.start
                    ));
                }
                end = d.end;
            }
            out.set_len(size)
                .map_err(|e| format!("sizing {}: {e}", tmp.display()))?;
            out.sync_all()
                .map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &dest)
                .map_err(|e| format!("renaming to {}: {e}", dest.display()))?;
            Ok(end)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| Error::Integrity(format!("{at}: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("rebuild task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(start: u64, end: u64) -> Delta {
        let hash = PlaintextHash::Blake3("cd".repeat(32));
        let key = delta_key(
            "h",
            "db",
            "000000010000000000000004",
            start,
            end,
            1 << 24,
            &hash,
        );
        parse_delta_key(&stream_prefix("h", "db"), &key).unwrap()
    }

    #[test]
    fn keys_round_trip_and_others_are_ignored() {
        let d = delta(0x10, 0x2000);
        assert_eq!(
            d.key,
            format!(
                "h/db/wal/stream/000000010000000000000004.00000010-00002000.01000000.b3-{}.zst.age",
                "cd".repeat(32)
            )
        );
        assert_eq!((d.start, d.end, d.segment_bytes), (0x10, 0x2000, 1 << 24));
        assert_eq!(d.hash, PlaintextHash::Blake3("cd".repeat(32)));
        let prefix = stream_prefix("h", "db");
        let sha = "cd".repeat(32);
        // A delta stored before BLAKE3 keys: a bare sha256.
        let old =
            format!("{prefix}000000010000000000000004.00000000-00000010.01000000.{sha}.zst.age");
        assert_eq!(
            parse_delta_key(&prefix, &old).map(|d| d.hash),
            Some(PlaintextHash::Sha256(sha.clone()))
        );
        for bad in [
            format!("{prefix}000000010000000000000004.00002000-00000010.01000000.{sha}.zst.age"),
            format!("{prefix}000000010000000000000004.00000000-02000000.01000000.{sha}.zst.age"),
            format!("{prefix}000000010000000000000004.00000000-00000010.01000001.{sha}.zst.age"),
            format!("{prefix}00000002.history.00000000-00000010.01000000.{sha}.zst.age"),
            format!("{prefix}../x.00000000-00000010.01000000.{sha}.zst.age"),
            format!("{prefix}000000010000000000000004.00000000-00000010.01000000.XY.zst.age"),
        ] {
            assert!(parse_delta_key(&prefix, &bad).is_none(), "{bad}");
        }
        // Archived WAL keys never read a delta as a WAL file.
        let wal_prefix = layout::wal_prefix("h", "db");
        assert!(keys::parse_wal_key(&wal_prefix, &d.key).is_none());
    }

    #[test]
    fn the_stretch_from_zero_stops_at_the_first_gap() {
        let (chain, end) = contiguous(&[delta(0, 100), delta(100, 250), delta(300, 400)]);
        assert_eq!(end, 250);
        assert_eq!(chain.len(), 2);
        // Overlaps (a restarted streamer re-sent a stretch) are skipped or
        // bridged, never a reason to stop.
        let (chain, end) = contiguous(&[
            delta(0, 100),
            delta(50, 100),
            delta(0, 80),
            delta(90, 300),
            delta(300, 310),
        ]);
        assert_eq!(end, 310);
        let starts: Vec<u64> = chain.iter().map(|d| d.start).collect();
        assert_eq!(starts, [0, 90, 300]);
        assert_eq!(contiguous(&[delta(10, 20)]).1, 0);
        assert_eq!(contiguous(&[]).1, 0);
    }
}
