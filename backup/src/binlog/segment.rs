//! Shipping what the follower spooled: every closed binlog to its end and
//! the open one's complete events, as segments through the backup pipeline
//! (zstd -> age -> targets) each followed by its metadata. Targets at the
//! same position ship together; a target that refuses stays behind at its
//! own position and the others go on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::state::{save_state, Pos, ShipStats, ShipperOptions, State};
use crate::binlog::archive::{self, SegmentMeta};
use crate::error::{Error, Result};
use crate::manifest::{ObjectEntry, ObjectRole};
use crate::pipeline::{store_object, ByteCounters, StoredHash};
use crate::source::Source;
use crate::target::{ByteReader, StorageTarget};

/// Spool files after `file` (the follower moved on from it).
pub(super) fn later_files(spool: &Path, file: &str) -> Vec<String> {
    spool_files(spool, |n| super::file_order(n, file).is_gt())
}

/// Binlog files in the spool that `keep` selects, in server order.
fn spool_files(spool: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(spool)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| super::is_valid_file_name(n) && keep(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| super::file_order(a, b));
    out
}

/// Ships every closed file to its end and the open file's complete
/// events to every target, targets at the same position together (one
/// compression and encryption for all of them). A target that fails stays
/// where it is, is counted as a failure and left alone for `retry`, and
/// the others go on; only a failure to read the spool is an error.
pub(super) async fn ship_available(
    opts: &ShipperOptions,
    stats: &ShipStats,
    spool: &Path,
    state: &mut State,
    down: &mut HashMap<String, Instant>,
) -> Result<()> {
    let all: Vec<String> = opts.targets.iter().map(|t| t.name().to_string()).collect();
    let retry = Duration::from_secs(opts.job.binlog_flush_interval_secs.clamp(5, 60));
    let mut groups: Vec<(Pos, Vec<Arc<dyn StorageTarget>>)> = Vec::new();
    for t in &opts.targets {
        if down.get(t.name()).is_some_and(|at| at.elapsed() < retry) {
            continue;
        }
        let p = state.of(t.name());
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, g)) => g.push(Arc::clone(t)),
            None => groups.push((p, vec![Arc::clone(t)])),
        }
    }
    for (pos, targets) in groups {
        for (t, e) in ship_group(opts, stats, spool, state, &all, pos, targets).await? {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(job = %opts.job_name, "binlog shipping to target {t}: {e}; the other targets go on, this one is tried again in {}s", retry.as_secs());
            stats.set_error(Some(format!("target {t}: {e}")));
            down.insert(t, Instant::now());
        }
    }
    // Files every target has to their end leave the spool.
    for f in spool_files(spool, |n| super::file_order(n, &state.file).is_lt()) {
        stats.files.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(spool.join(f));
    }
    Ok(())
}

/// Ships from `pos` on to `targets` (all at `pos`), segment by segment,
/// saving the state after each; returns the targets that failed.
async fn ship_group(
    opts: &ShipperOptions,
    stats: &ShipStats,
    spool: &Path,
    state: &mut State,
    all: &[String],
    mut pos: Pos,
    mut targets: Vec<Arc<dyn StorageTarget>>,
) -> Result<Vec<(String, String)>> {
    let mut failed = Vec::new();
    while !targets.is_empty() {
        let path = spool.join(&pos.file);
        if !path.exists() {
            break;
        }
        let later = later_files(spool, &pos.file);
        let from = pos.offset;
        let scan_path = path.clone();
        let scan = tokio::task::spawn_blocking(move || -> std::io::Result<super::EventScan> {
            super::complete_events_in_file(&std::fs::File::open(&scan_path)?, from)
        })
        .await
        .map_err(|e| Error::Internal(format!("binlog scan task: {e}")))?
        .map_err(|e| {
            Error::Source(format!(
                "job {}: reading the spooled binlog {}: {e}",
                opts.job_name,
                path.display()
            ))
        })?;
        let closed = !later.is_empty();
        if scan.end == from && !closed {
            break;
        }
        let segment = Segment {
            path: &path,
            file: &pos.file,
            start: from,
            end: scan.end,
            last: closed,
            last_event_time: scan.last_event_time,
        };
        let refused = ship_segment(opts, stats, &targets, &segment).await?;
        targets.retain(|t| !refused.iter().any(|(n, _)| n == t.name()));
        failed.extend(refused);
        if targets.is_empty() {
            break;
        }
        pos = if closed {
            Pos {
                file: later[0].clone(),
                offset: 0,
            }
        } else {
            Pos {
                file: pos.file.clone(),
                offset: scan.end,
            }
        };
        let moved: Vec<String> = targets.iter().map(|t| t.name().to_string()).collect();
        state.advance(&moved, &pos, all);
        save_state(&opts.state_dir, &opts.job_name, state)?;
        stats.set_position(state);
        if state.targets.is_empty() {
            // On every target now.
            stats
                .last_shipped_at
                .store(Utc::now().timestamp(), Ordering::Relaxed);
            if let Some(t) = scan.last_event_time {
                stats.last_event_at.fetch_max(t, Ordering::Relaxed);
            }
        }
        if !closed {
            break;
        }
    }
    Ok(failed)
}

/// One segment to ship: bytes `start..end` of a spooled file.
struct Segment<'a> {
    path: &'a Path,
    file: &'a str,
    start: u64,
    end: u64,
    /// The file's last segment (the server moved on).
    last: bool,
    last_event_time: Option<i64>,
}

/// Stores one segment and then its metadata on `targets`; returns the
/// targets that refused either (an `Err` only when the segment could not
/// be read or the archive holds another file of that name).
async fn ship_segment(
    opts: &ShipperOptions,
    stats: &ShipStats,
    targets: &[Arc<dyn StorageTarget>],
    seg: &Segment<'_>,
) -> Result<Vec<(String, String)>> {
    let job = &opts.job_name;
    let Segment {
        path,
        file,
        start,
        end,
        last,
        last_event_time,
    } = *seg;
    let created = file_created(path);
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut live: Vec<Arc<dyn StorageTarget>> = Vec::new();
    for t in targets {
        match start {
            0 => match refuse_another_incarnation(opts, t.as_ref(), file, created).await? {
                Ok(()) => live.push(Arc::clone(t)),
                Err(e) => refused.push((t.name().to_string(), e)),
            },
            _ => live.push(Arc::clone(t)),
        }
    }
    if live.is_empty() {
        return Ok(refused);
    }
    let name = archive::object_name(file, start, end);
    let key = format!("{}{name}", archive::prefix(&opts.host, job));
    let mut source = RangeSource {
        path: path.to_path_buf(),
        start,
        len: end - start,
        read: Arc::new(AtomicU64::new(0)),
    };
    let counters = Arc::new(ByteCounters::default());
    let outcome = store_object(
        &mut source,
        &opts.settings,
        &live,
        &key,
        counters,
        StoredHash::Record,
    )
    .await;
    let stream = outcome.stream.map_err(|e| {
        Error::Source(format!(
            "job {job}: shipping binlog {file} bytes {start}..{end}: {e}"
        ))
    })?;
    for (t, r) in &outcome.targets {
        if let Err(e) = r {
            refused.push((
                t.clone(),
                format!("binlog {file} bytes {start}..{end}: {e}"),
            ));
        }
    }
    live.retain(|t| !refused.iter().any(|(n, _)| n == t.name()));
    let stored_sha256 = stream.recorded_stored_sha256()?;
    let meta = SegmentMeta {
        file: file.to_string(),
        start,
        end,
        last,
        object: ObjectEntry {
            name,
            role: ObjectRole::Binlog,
            database: None,
            plaintext_bytes: stream.plaintext_bytes,
            plaintext_hash: stream.plaintext_hash,
            stored_bytes: stream.stored_bytes,
            stored_sha256,
            compression: "zstd".into(),
            encryption: "age".into(),
            binlog: None,
        },
        last_event_at: last_event_time.and_then(|t| DateTime::from_timestamp(t, 0)),
        file_created: created,
        shipped_at: Utc::now(),
        host: opts.host.clone(),
        job: job.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    let meta_key = archive::meta_key(&opts.host, job, file, start, end, last);
    let mut stored = 0;
    for t in &live {
        match t.put_bytes(&meta_key, json.clone()).await {
            Ok(_) => stored += 1,
            Err(e) => refused.push((
                t.name().to_string(),
                format!("writing the metadata of binlog {file} bytes {start}..{end}: {e}"),
            )),
        }
    }
    if stored > 0 {
        stats.segments.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(end - start, Ordering::Relaxed);
        stats
            .stored_bytes
            .fetch_add(stream.stored_bytes * stored, Ordering::Relaxed);
        tracing::debug!(job = %job, "binlog {file} bytes {start}..{end} shipped to {stored} target(s){}", if last { " (end of file)" } else { "" });
    }
    Ok(refused)
}

/// The time of a binlog file's first event (bytes 4..8), when readable.
fn file_created(path: &Path) -> Option<i64> {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    (&head[..4] == super::MAGIC)
        .then(|| i64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]])))
}

/// Before the first bytes of `file` are shipped: if the archive already
/// holds a file of that name created at another time, the server's logs
/// were reset (RESET MASTER, or a new server restored from the backups)
/// and shipping it would mix two different files under one name, which
/// replays would read as one. Refused, saying what to do.
/// `Ok(Err(..))`: the target could not be asked (it is down).
async fn refuse_another_incarnation(
    opts: &ShipperOptions,
    target: &dyn StorageTarget,
    file: &str,
    created: Option<i64>,
) -> Result<std::result::Result<(), String>> {
    let Some(created) = created else {
        return Ok(Ok(()));
    };
    let files = match archive::list(target, &opts.host, &opts.job_name).await {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let Some((_, segments)) = files.iter().find(|(f, _)| f == file) else {
        return Ok(Ok(()));
    };
    let Some(first) = segments.first() else {
        return Ok(Ok(()));
    };
    let meta = match archive::read_meta(target, first).await {
        Ok(m) => m,
        Err(e) => return Ok(Err(e.to_string())),
    };
    match meta.file_created {
        Some(old) if old != created => Err(Error::Source(format!(
            "job {}: binlog {file} is already in the archive on target {} from another server or before its logs were reset (that file was created at {}, this one at {}); shipping stops so the two are not mixed: move {} aside (dumps taken before the reset keep needing it) or give the job a new name",
            opts.job_name,
            target.name(),
            DateTime::from_timestamp(old, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
            DateTime::from_timestamp(created, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
            archive::prefix(&opts.host, &opts.job_name),
        ))),
        _ => Ok(Ok(())),
    }
}

/// Bytes `start..start+len` of a spooled binlog, checked to be all there.
struct RangeSource {
    path: PathBuf,
    start: u64,
    len: u64,
    read: Arc<AtomicU64>,
}

#[async_trait]
impl Source for RangeSource {
    fn describe(&self) -> String {
        format!("spooled binlog {}", self.path.display())
    }

    async fn open(&mut self) -> Result<ByteReader> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        let file = options.open(&self.path).map_err(|e| {
            Error::Source(format!(
                "cannot open the spooled binlog {}: {e}",
                self.path.display()
            ))
        })?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(self.start))
            .await
            .map_err(|e| Error::Source(format!("seeking in {}: {e}", self.path.display())))?;
        let counter = Arc::clone(&self.read);
        let reader = tokio_util::io::InspectReader::new(file.take(self.len), move |b: &[u8]| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        Ok(Box::pin(reader))
    }

    async fn finish(&mut self) -> Result<()> {
        let read = self.read.load(Ordering::Relaxed);
        if read != self.len {
            return Err(Error::Source(format!(
                "the spooled binlog {} gave {read} of {} bytes",
                self.path.display(),
                self.len
            )));
        }
        Ok(())
    }
}
