//! The shipped binlogs of a job on one target: segment names, their
//! metadata objects, listing them as a chain per binlog file, checking the
//! chain for gaps from a dump's position to the newest shipped byte, and
//! reading segments back through the checked restore stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{BinlogPosition, JobKind, Manifest, ObjectEntry, FORMAT_VERSION};
use crate::restore::identity::Identities;
use crate::restore::stream::{open_object, ObjectFault, ObjectReader, Progress};
use crate::restore::Check;
use crate::target::StorageTarget;

/// The path segment under `<host>/<job>/` that holds binlogs; no snapshot
/// id can take it (ids start with a date).
pub const DIR: &str = crate::layout::BINLOG_DIR;

/// Metadata objects are small; refuse anything absurd.
const META_LIMIT_BYTES: u64 = 1024 * 1024;

/// `<host>/<job>/binlog/`.
pub fn prefix(host: &str, job: &str) -> String {
    format!("{host}/{job}/{DIR}/")
}

/// The segment's object name under the binlog directory.
pub fn object_name(file: &str, start: u64, end: u64) -> String {
    format!("{file}/{start:020}-{end:020}.zst.age")
}

/// The key of a segment's metadata; `last` segments end their file.
pub fn meta_key(host: &str, job: &str, file: &str, start: u64, end: u64, last: bool) -> String {
    let last = if last { ".last" } else { "" };
    format!(
        "{}{file}/{start:020}-{end:020}{last}.json",
        prefix(host, job)
    )
}

/// What is known of a shipped segment from its metadata key alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentKey {
    pub file: String,
    pub start: u64,
    pub end: u64,
    /// This segment holds the last byte of its file (the server moved on).
    pub last: bool,
    /// The key of its metadata object.
    pub meta_key: String,
}

/// Parses `<host>/<job>/binlog/<file>/<start>-<end>[.last].json`.
pub fn parse_meta_key(host: &str, job: &str, key: &str) -> Option<SegmentKey> {
    let rest = key.strip_prefix(&prefix(host, job))?;
    let (file, name) = rest.split_once('/')?;
    if !super::is_valid_file_name(file) {
        return None;
    }
    let name = name.strip_suffix(".json")?;
    let (range, last) = match name.strip_suffix(".last") {
        Some(r) => (r, true),
        None => (name, false),
    };
    let (a, b) = range.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    let (start, end) = (a.parse().ok()?, b.parse().ok()?);
    if end < start {
        return None;
    }
    Some(SegmentKey {
        file: file.to_string(),
        start,
        end,
        last,
        meta_key: key.to_string(),
    })
}

/// The metadata object of one segment, written after the segment itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub file: String,
    pub start: u64,
    pub end: u64,
    pub last: bool,
    /// Sizes and hashes, as in a manifest (`name` is [`object_name`]).
    pub object: ObjectEntry,
    /// Time of the newest event in the segment (the server's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<DateTime<Utc>>,
    /// When the server created the binlog file (the time of its first
    /// event): tells this file from another one of the same name after
    /// the server's logs were reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_created: Option<i64>,
    pub shipped_at: DateTime<Utc>,
    pub host: String,
    pub job: String,
}

/// Every segment of a job on `target`, by file (in server order), each
/// file's segments by start.
pub async fn list(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
) -> Result<Vec<(String, Vec<SegmentKey>)>> {
    let mut files: BTreeMap<(String, u64, String), Vec<SegmentKey>> = BTreeMap::new();
    for o in target.list(&prefix(host, job)).await? {
        if let Some(s) = parse_meta_key(host, job, &o.key) {
            let (base, n) = super::file_number(&s.file).unwrap_or(("", 0));
            files
                .entry((base.to_string(), n, s.file.clone()))
                .or_default()
                .push(s);
        }
    }
    Ok(files
        .into_iter()
        .map(|((_, _, f), mut segs)| {
            segs.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
            (f, segs)
        })
        .collect())
}

/// The segments that cover one file from byte 0, in order, and how far.
#[derive(Debug, Clone)]
pub struct FileChain {
    pub file: String,
    pub segments: Vec<SegmentKey>,
    /// Bytes covered from the start of the file.
    pub end: u64,
    /// The file's last segment is among them.
    pub complete: bool,
}

/// Picks, for one file, the contiguous run of segments from byte 0 (the
/// longest segment at each offset, should a retry have left two). Bytes
/// after a hole are reported in the error.
pub fn chain_file(file: &str, segments: &[SegmentKey]) -> std::result::Result<FileChain, String> {
    let mut chain = FileChain {
        file: file.to_string(),
        segments: Vec::new(),
        end: 0,
        complete: false,
    };
    let mut i = 0;
    while i < segments.len() {
        let s = &segments[i];
        i += 1;
        if s.start < chain.end {
            continue;
        }
        if s.start > chain.end {
            return Err(format!(
                "binlog {file}: bytes {}..{} were never shipped (the next segment starts at {})",
                chain.end, s.start, s.start
            ));
        }
        if s.end == s.start && !s.last {
            continue;
        }
        chain.end = s.end;
        chain.complete = s.last;
        chain.segments.push(s.clone());
        if s.last {
            break;
        }
    }
    if chain.segments.is_empty() {
        return Err(format!("binlog {file}: no segment starts at byte 0"));
    }
    Ok(chain)
}

/// The chain of files needed to replay from `from` to the newest shipped
/// byte: every file from `from.file` on, each complete except the newest,
/// with consecutive numbers. An error names the first gap.
pub fn chain_from(
    files: &[(String, Vec<SegmentKey>)],
    from: &BinlogPosition,
) -> std::result::Result<Vec<FileChain>, String> {
    let Some(first) = files.iter().position(|(f, _)| *f == from.file) else {
        return Err(format!(
            "binlog {} (where the dump starts) was never shipped{}",
            from.file,
            match files.first() {
                Some((f, _)) => format!("; the oldest shipped binlog is {f}"),
                None => "; no binlog is shipped at all (is binlog shipping running?)".into(),
            }
        ));
    };
    let mut out: Vec<FileChain> = Vec::new();
    for (file, segments) in &files[first..] {
        if let Some(prev) = out.last() {
            if !prev.complete {
                return Err(format!(
                    "binlog {}: shipped only up to byte {} but {file} follows; its end was never shipped (purged on the server first?)",
                    prev.file, prev.end
                ));
            }
            if super::next_file(&prev.file).as_deref() != Some(file.as_str()) {
                return Err(format!(
                    "binlogs between {} and {file} are missing: the server purged them before they were shipped",
                    prev.file
                ));
            }
        }
        out.push(chain_file(file, segments)?);
    }
    if let Some(first) = out.first() {
        if first.end < from.position {
            return Err(format!(
                "binlog {} is shipped only up to byte {}, before the dump's position {}",
                first.file, first.end, from.position
            ));
        }
    }
    Ok(out)
}

/// Reads one segment's metadata.
pub async fn read_meta(target: &dyn StorageTarget, key: &SegmentKey) -> Result<SegmentMeta> {
    let bytes = target.get_bytes(&key.meta_key, META_LIMIT_BYTES).await?;
    let meta: SegmentMeta = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Integrity(format!(
            "binlog segment metadata {} on target {} is malformed: {e}",
            key.meta_key,
            target.name()
        ))
    })?;
    if meta.file != key.file
        || meta.start != key.start
        || meta.end != key.end
        || meta.last != key.last
        || meta.object.name != object_name(&key.file, key.start, key.end)
        || meta.object.plaintext_bytes != key.end - key.start
    {
        return Err(Error::Integrity(format!(
            "binlog segment metadata {} on target {} does not describe the segment its name says: it was moved or tampered with",
            key.meta_key,
            target.name()
        )));
    }
    Ok(meta)
}

/// The stand-in manifest through which segments are read: their keys are
/// `<host>/<job>/binlog/<object name>`, and faults name them as objects
/// of "snapshot" `binlog`.
pub fn pseudo_manifest(host: &str, job: &str) -> Manifest {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Manifest {
        format_version: FORMAT_VERSION,
        snapshot_id: DIR.to_string(),
        job: job.to_string(),
        kind: JobKind::Mysql,
        host: host.to_string(),
        reason: "binlog".into(),
        started_at: epoch,
        finished_at: epoch,
        objects: Vec::new(),
        recipients: Vec::new(),
        tools: BTreeMap::new(),
        databases: Vec::new(),
        files: None,
        content_digest: None,
        zstd_level: 0,
        postgres_base: None,
        redis: None,
    }
}

/// Opens a segment for checked reading (size and sha256 of the stored
/// bytes and of the plaintext, as for any snapshot object).
pub async fn open_segment(
    target: Arc<dyn StorageTarget>,
    meta: &SegmentMeta,
    identities: &Identities,
    progress: Arc<dyn Progress>,
) -> std::result::Result<ObjectReader, ObjectFault> {
    let manifest = pseudo_manifest(&meta.host, &meta.job);
    open_object(target, &manifest, &meta.object, identities, progress).await
}

/// Retention: removes the shipped binlog files older than the file the
/// oldest of `kept` snapshots starts from (segments, then metadata, so an
/// interrupted prune leaves no metadata without its segment). Nothing is
/// removed when no kept snapshot has a position. Returns one line per
/// file removed.
pub async fn prune(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    kept: &[&Manifest],
) -> Result<Vec<String>> {
    let oldest = kept
        .iter()
        .flat_map(|m| m.objects.iter().filter_map(|o| o.binlog.as_ref()))
        .min_by(|a, b| super::file_order(&a.file, &b.file));
    let Some(oldest) = oldest else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    let objects = target.list(&prefix(host, job)).await?;
    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in objects {
        let Some(rest) = o.key.strip_prefix(&prefix(host, job)) else {
            continue;
        };
        let Some((file, _)) = rest.split_once('/') else {
            continue;
        };
        if super::is_valid_file_name(file) && super::file_order(file, &oldest.file).is_lt() {
            by_file.entry(file.to_string()).or_default().push(o.key);
        }
    }
    for (file, mut keys) in by_file {
        // Segments first, metadata last.
        keys.sort_by_key(|k| k.ends_with(".json"));
        for k in &keys {
            target.delete(k).await?;
        }
        removed.push(format!(
            "binlog {file} ({} objects): older than {}, where the oldest kept dump starts",
            keys.len(),
            oldest.file
        ));
    }
    Ok(removed)
}

/// For a snapshot whose dumps recorded binlog positions: whether the
/// shipped binlogs on `target` run without a gap from each position to
/// the newest shipped byte, every segment's metadata readable and
/// matching its name. `None` for snapshots without positions.
pub async fn continuity(target: &dyn StorageTarget, manifest: &Manifest) -> Option<Check> {
    let positions: Vec<&BinlogPosition> = manifest
        .objects
        .iter()
        .filter_map(|o| o.binlog.as_ref())
        .collect();
    let from = positions
        .iter()
        .min_by(|a, b| super::file_order(&a.file, &b.file).then(a.position.cmp(&b.position)))?;
    let files = match list(target, &manifest.host, &manifest.job).await {
        Ok(f) => f,
        Err(e) => return Some(Check::failed("binlog continuity", e.to_string())),
    };
    let chain = match chain_from(&files, from) {
        Ok(c) => c,
        Err(e) => return Some(Check::failed("binlog continuity", e)),
    };
    let mut segments = 0;
    let mut bytes = 0u64;
    for c in &chain {
        for s in &c.segments {
            match read_meta(target, s).await {
                Ok(m) => bytes += m.object.plaintext_bytes,
                Err(e) => return Some(Check::failed("binlog continuity", e.to_string())),
            }
            segments += 1;
        }
    }
    let last = chain.last()?;
    Some(Check::ok(
        "binlog continuity",
        format!(
            "{} file(s), {segments} segment(s), {bytes} bytes from {}:{} to {}:{}{}",
            chain.len(),
            from.file,
            from.position,
            last.file,
            last.end,
            if last.complete { " (file closed)" } else { "" }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(file: &str, start: u64, end: u64, last: bool) -> SegmentKey {
        SegmentKey {
            file: file.into(),
            start,
            end,
            last,
            meta_key: meta_key("h", "j", file, start, end, last),
        }
    }

    #[test]
    fn meta_keys_round_trip_and_refuse_strangers() {
        let k = meta_key("h", "j", "mysql-bin.000003", 4, 900, true);
        assert_eq!(
            parse_meta_key("h", "j", &k).unwrap(),
            seg("mysql-bin.000003", 4, 900, true)
        );
        assert!(parse_meta_key("h", "j", "h/j/binlog/../x.json").is_none());
        assert!(parse_meta_key("h", "j", "h/j/binlog/b.000001/1-2.json").is_none());
    }

    fn pos(file: &str, position: u64) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            position,
            gtid: None,
            seen_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn retention_keeps_the_files_the_oldest_kept_dump_needs() {
        use crate::target::local::LocalTarget;
        let dir = tempfile::tempdir().unwrap();
        let target = LocalTarget::at("local", dir.path());
        for n in 1..=4 {
            let file = format!("b.00000{n}");
            for key in [
                format!("h/j/binlog/{}", object_name(&file, 0, 100)),
                meta_key("h", "j", &file, 0, 100, n < 4),
            ] {
                let path = dir.path().join(&key);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, b"x").unwrap();
            }
        }
        let mut kept = crate::manifest::tests::sample();
        kept.objects[0].binlog = Some(pos("b.000003", 50));
        let newer = {
            let mut m = kept.clone();
            m.objects[0].binlog = Some(pos("b.000004", 10));
            m
        };
        // No kept dump with a position: nothing goes.
        let plain = crate::manifest::tests::sample();
        assert!(prune(&target, "h", "j", &[&plain])
            .await
            .unwrap()
            .is_empty());
        let removed = prune(&target, "h", "j", &[&newer, &kept]).await.unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let files: Vec<String> = list(&target, "h", "j")
            .await
            .unwrap()
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(files, ["b.000003", "b.000004"]);
    }

    #[test]
    fn chains_find_holes_missing_files_and_open_ends() {
        let files = vec![
            (
                "b.000001".to_string(),
                vec![
                    seg("b.000001", 0, 100, false),
                    seg("b.000001", 100, 150, true),
                ],
            ),
            ("b.000002".to_string(), vec![seg("b.000002", 0, 70, false)]),
        ];
        let chain = chain_from(&files, &pos("b.000001", 50)).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].end, 70);
        assert!(chain_from(&files, &pos("b.000009", 4))
            .unwrap_err()
            .contains("never shipped"));

        let holed = vec![(
            "b.000001".to_string(),
            vec![
                seg("b.000001", 0, 100, false),
                seg("b.000001", 120, 150, true),
            ],
        )];
        let e = chain_from(&holed, &pos("b.000001", 4)).unwrap_err();
        assert!(e.contains("bytes 100..120"), "{e}");

        let skipped = vec![
            ("b.000001".to_string(), vec![seg("b.000001", 0, 100, true)]),
            ("b.000003".to_string(), vec![seg("b.000003", 0, 100, false)]),
        ];
        let e = chain_from(&skipped, &pos("b.000001", 4)).unwrap_err();
        assert!(e.contains("between b.000001 and b.000003"), "{e}");

        let open_end = vec![
            ("b.000001".to_string(), vec![seg("b.000001", 0, 100, false)]),
            ("b.000002".to_string(), vec![seg("b.000002", 0, 100, false)]),
        ];
        let e = chain_from(&open_end, &pos("b.000001", 4)).unwrap_err();
        assert!(e.contains("its end was never shipped"), "{e}");
    }
}
