//! Drills of `mysql` jobs whose dumps recorded a binlog position (binlog
//! shipping on): the dump is rolled forward with the binlogs shipped when
//! the drill started, and the RPO is measured as what a disaster at that
//! moment would have lost: the live server's last commit before its
//! position at drill start (`SHOW MASTER STATUS`, then the newest event
//! before it, read over the replication protocol) minus the time of the
//! last replayed event. Both times are the server's event timestamps, so
//! clock skew between hosts does not enter. Without a configured server
//! (a drill from the bucket alone) the RPO is bounded from above by the
//! drill's start minus the last replayed event.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::binlog::archive;
use crate::binlog::replay::{self, Until};
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::manifest::{BinlogPosition, Manifest, ObjectRole};
use crate::restore::identity::Identities;
use crate::restore::mysql::MysqlConnection;
use crate::restore::stream::Progress;
use crate::restore::{self, Check, Located};
use crate::source::mysql;

use super::report::{format_duration, BinlogDrill};

/// How long reading the live server's newest events may take.
const LIVE_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the live server writes: `SHOW MASTER STATUS`.
pub(super) async fn live_position(job_name: &str, job: &JobConfig) -> Result<(String, u64)> {
    let out = mysql::query(
        job,
        "SHOW MASTER STATUS",
        &format!(
            "job {job_name}: reading the binlog position of MySQL at {}",
            mysql::where_(job)
        ),
    )
    .await?;
    let mut cols = out.lines().next().unwrap_or("").split('\t');
    let file = cols.next().unwrap_or("").trim().to_string();
    let pos = cols.next().and_then(|p| p.trim().parse().ok());
    match pos {
        Some(pos) if crate::binlog::is_valid_file_name(&file) => Ok((file, pos)),
        _ => Err(Error::Source(format!(
            "job {job_name}: MySQL at {} reports no binlog position (SHOW MASTER STATUS is empty: is log_bin on, and does the user have BINLOG MONITOR / REPLICATION CLIENT?)",
            mysql::where_(job)
        ))),
    }
}

/// The dump positions of a snapshot when every dump has one.
pub(super) fn dump_positions(m: &Manifest) -> Option<Vec<BinlogPosition>> {
    let dumps: Vec<_> = (m.objects.iter())
        .filter(|o| o.role == ObjectRole::MysqlDump)
        .collect();
    if dumps.is_empty() {
        return None;
    }
    dumps.iter().map(|o| o.binlog.clone()).collect()
}

/// What was shipped when the drill started: the end of the continuous
/// chain from the oldest dump position, and the time of its newest event.
struct Cut {
    file: String,
    position: u64,
    last_event_at: Option<i64>,
}

async fn shipped_cut(located: &Located, from: &BinlogPosition) -> Result<Cut> {
    let m = &located.manifest;
    let target = located.target.as_ref();
    let files = archive::list(target, &m.host, &m.job).await?;
    let chain = archive::chain_from(&files, from).map_err(|e| {
        Error::NotFound(format!(
            "cannot roll snapshot {} forward on target {}: {e}",
            m.snapshot_id,
            target.name()
        ))
    })?;
    let last = chain
        .last()
        .ok_or_else(|| Error::NotFound(format!("no binlog shipped after {}", from.file)))?;
    // The newest segment that carries an event time (an end-of-file
    // segment can be empty).
    let mut last_event_at = None;
    'find: for c in chain.iter().rev() {
        for seg in c.segments.iter().rev() {
            if seg.end == seg.start {
                continue;
            }
            last_event_at = archive::read_meta(target, seg)
                .await?
                .last_event_at
                .map(|t| t.timestamp());
            if last_event_at.is_some() {
                break 'find;
            }
        }
    }
    Ok(Cut {
        file: last.file.clone(),
        position: last.end,
        last_event_at,
    })
}

/// What the roll-forward needs from the drill.
pub(super) struct RollForward<'a> {
    pub job_name: &'a str,
    /// The job's own server (the live one), when configured.
    pub source: Option<&'a JobConfig>,
    /// Where the scratch databases are.
    pub conn: &'a MysqlConnection,
    pub identities: &'a Identities,
    pub progress: Arc<dyn Progress>,
    pub scratch_dir: &'a Path,
}

/// Restores every database of the snapshot (already done by the caller
/// into `items`) forward to what was shipped at drill start, and measures
/// the RPO. `live` is the live server's position, read at drill start.
pub(super) async fn roll_forward(
    into: &RollForward<'_>,
    located: &Located,
    live: Option<(String, u64)>,
    drill_start: f64,
    items: &mut [restore::RestoredItem],
) -> Result<BinlogDrill> {
    let m = &located.manifest;
    let positions = dump_positions(m).unwrap_or_default();
    let oldest = positions
        .iter()
        .min_by(|a, b| {
            crate::binlog::file_order(&a.file, &b.file).then(a.position.cmp(&b.position))
        })
        .cloned()
        .ok_or_else(|| {
            Error::Internal(format!("snapshot {} has no binlog position", m.snapshot_id))
        })?;
    let cut = shipped_cut(located, &oldest).await?;
    let until = Until::Position {
        file: cut.file.clone(),
        position: cut.position,
    };
    for item in items.iter_mut() {
        let check = replay::replay(
            located,
            into.identities,
            Arc::clone(&into.progress),
            into.conn,
            &item.source,
            &item.name,
            &until,
        )
        .await?;
        item.checks.push(check);
    }
    // The dump itself holds everything up to its position.
    let dumped_at = positions.iter().map(|p| p.seen_at.timestamp()).min();
    let last_replayed_at = match (cut.last_event_at, dumped_at) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let mut out = BinlogDrill {
        live_file: live.as_ref().map(|l| l.0.clone()),
        live_position: live.as_ref().map(|l| l.1),
        live_last_commit_at: None,
        replayed_file: cut.file.clone(),
        replayed_position: cut.position,
        last_replayed_at,
        rpo_seconds: 0.0,
        measured: false,
    };
    let (Some((live_file, live_pos)), Some(source)) = (live, into.source) else {
        out.rpo_seconds = last_replayed_at
            .map(|t| (drill_start - t as f64).max(0.0))
            .unwrap_or(drill_start);
        return Ok(out);
    };
    out.measured = true;
    let reached = match crate::binlog::file_order(&cut.file, &live_file) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => cut.position >= live_pos,
        std::cmp::Ordering::Less => false,
    };
    if reached {
        out.live_last_commit_at = last_replayed_at;
        return Ok(out);
    }
    let from = if cut.file == live_file {
        cut.position
    } else {
        4
    };
    let newest = newest_live_event(
        into.job_name,
        source,
        into.scratch_dir,
        &live_file,
        from,
        live_pos,
    )
    .await?;
    out.live_last_commit_at = newest.or(last_replayed_at);
    out.rpo_seconds = match (newest, last_replayed_at) {
        (Some(live), Some(replayed)) => (live - replayed).max(0) as f64,
        (Some(live), None) => (drill_start - live as f64).max(0.0),
        (None, _) => 0.0,
    };
    Ok(out)
}

/// The time of the newest event of `file` on the live server that ends at
/// or before `limit`, reading from `from` (an event boundary): the server
/// sends the file with `mariadb-binlog --read-from-remote-server --raw`
/// into a private scratch directory, whose event headers are scanned.
async fn newest_live_event(
    job_name: &str,
    job: &JobConfig,
    scratch: &Path,
    file: &str,
    from: u64,
    limit: u64,
) -> Result<Option<i64>> {
    let dir = scratch.join(format!("binlog-live-{job_name}-{}", std::process::id()));
    crate::private_fs::create_dir_all(&dir).map_err(|e| Error::Local {
        doing: format!("job {job_name}: creating a scratch directory for the live binlog"),
        path: dir.clone(),
        source: e,
        hint: "; choose another --scratch-dir".into(),
    })?;
    let result = read_live(job_name, job, &dir, file, from, limit).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn read_live(
    job_name: &str,
    job: &JobConfig,
    dir: &Path,
    file: &str,
    from: u64,
    limit: u64,
) -> Result<Option<i64>> {
    let (_, mut child) = mysql::spawn_remote_binlog(
        job_name,
        job,
        &[format!("--start-position={}", from.max(4))],
        dir,
        file,
    )?;
    let mut stderr = child.stderr.take();
    let waited = tokio::time::timeout(LIVE_READ_TIMEOUT, async {
        let mut said = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut said).await;
        }
        (child.wait().await, said)
    })
    .await;
    let (status, said) = waited.map_err(|_| {
        Error::Source(format!(
            "job {job_name}: reading binlog {file} from MySQL at {} took longer than {}s",
            mysql::where_(job),
            LIVE_READ_TIMEOUT.as_secs()
        ))
    })?;
    let ok = matches!(&status, Ok(s) if s.success());
    if !ok {
        return Err(Error::Source(format!(
            "job {job_name}: reading binlog {file} from MySQL at {} to measure the RPO failed: {}",
            mysql::where_(job),
            String::from_utf8_lossy(&said).trim()
        )));
    }
    let path = dir.join(file);
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path)?;
        newest_event_before(std::io::BufReader::with_capacity(256 * 1024, f), limit)
    })
    .await
    .map_err(|e| Error::Internal(format!("binlog scan task: {e}")))?
    .map_err(|e| {
        Error::Source(format!(
            "job {job_name}: reading the live binlog {file} to measure the RPO: {e}"
        ))
    })
}

/// Scans a raw binlog stream (magic, then events) and returns the time of
/// the newest event whose end position (the header's next-position field)
/// is at most `limit`; events the server sends on its own at the start of
/// a dump (a rotate, the format description) carry end position 0 and are
/// left out, as are events without a time.
fn newest_event_before(mut reader: impl std::io::Read, limit: u64) -> std::io::Result<Option<i64>> {
    let mut magic = [0u8; 4];
    if !read_full(&mut reader, &mut magic)? {
        return Ok(None);
    }
    if &magic != crate::binlog::MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a binlog file (bad magic number)",
        ));
    }
    let mut newest = None;
    let mut skip = vec![0u8; 64 * 1024];
    loop {
        let mut h = [0u8; crate::binlog::EVENT_HEADER_BYTES];
        if !read_full(&mut reader, &mut h)? {
            return Ok(newest);
        }
        let time = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let size = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as u64;
        let end = u32::from_le_bytes([h[13], h[14], h[15], h[16]]) as u64;
        if size < crate::binlog::EVENT_HEADER_BYTES as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("an event claims {size} bytes, less than its header"),
            ));
        }
        let mut left = size - crate::binlog::EVENT_HEADER_BYTES as u64;
        while left > 0 {
            let n = left.min(skip.len() as u64) as usize;
            if !read_full(&mut reader, &mut skip[..n])? {
                return Ok(newest);
            }
            left -= n as u64;
        }
        if time != 0 && end != 0 && end <= limit {
            newest = Some(newest.unwrap_or(0).max(i64::from(time)));
        }
    }
}

fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The report line for the measurement.
pub(super) fn check(b: &BinlogDrill) -> Check {
    let when = |t: Option<i64>| {
        t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let detail = if b.measured {
        format!(
            "replayed to {}:{} (last event {}); the live server was at {}:{} (last commit {}): {} of data would have been lost",
            b.replayed_file,
            b.replayed_position,
            when(b.last_replayed_at),
            b.live_file.as_deref().unwrap_or("-"),
            b.live_position.unwrap_or(0),
            when(b.live_last_commit_at),
            format_duration(b.rpo_seconds),
        )
    } else {
        format!(
            "replayed to {}:{} (last event {}); no live server configured, so the RPO {} is the drill's start minus that event",
            b.replayed_file,
            b.replayed_position,
            when(b.last_replayed_at),
            format_duration(b.rpo_seconds),
        )
    };
    Check::ok("binlog rpo", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time: u32, body: usize, end: u32) -> Vec<u8> {
        let size = (crate::binlog::EVENT_HEADER_BYTES + body) as u32;
        let mut e = Vec::new();
        e.extend_from_slice(&time.to_le_bytes());
        e.push(2);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&end.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend(std::iter::repeat_n(7u8, body));
        e
    }

    #[test]
    fn newest_event_stops_at_the_limit_and_skips_artificial_events() {
        let mut f = crate::binlog::MAGIC.to_vec();
        // Artificial format description (end 0) with a later time.
        f.extend(event(900, 40, 0));
        f.extend(event(100, 10, 200));
        f.extend(event(150, 10, 300));
        f.extend(event(0, 10, 350));
        f.extend(event(400, 10, 500));
        assert_eq!(newest_event_before(&f[..], 300).unwrap(), Some(150));
        assert_eq!(newest_event_before(&f[..], 499).unwrap(), Some(150));
        assert_eq!(newest_event_before(&f[..], 500).unwrap(), Some(400));
        assert_eq!(newest_event_before(&f[..], 100).unwrap(), None);
        // A partial trailing event is ignored.
        let cut = f.len() - 5;
        assert_eq!(newest_event_before(&f[..cut], 1000).unwrap(), Some(150));
        assert!(newest_event_before(&b"junkjunk"[..], 10).is_err());
    }
}
