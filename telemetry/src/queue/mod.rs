//! The durable queue between producers (tailers, the receiver, own spans)
//! and the exporter: append-only segment files of length-prefixed,
//! CRC-checked records, a ledger of what the upstream acknowledged, fsync
//! on a cadence, and a size bound past which the oldest data is dropped and
//! counted. A record is either acknowledged or still on disk.
//!
//! On disk: `<dir>/<16 hex digits>.seg` files, each a sequence of
//! `[u32 len][u32 crc32(body)][body]` (little endian), where body is
//! `[u64 id][u8 signal][u32 items][u16 n][n × (u64 file, u64 offset)][payload]`;
//! and `<dir>/ledger`, the id and position of the first unacknowledged
//! record, replaced atomically.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

mod open;
mod record;

pub use record::MAX_RECORD_BYTES;
use record::{
    decode, encode_head, read_record, resync, write_record, HEADER, MAX_ID, MAX_RECORD, META,
};

/// Why the queue cannot be opened or written. The cause is part of the
/// message (not a `source`), so a log line with `{e}` says it all.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot create the telemetry queue directory {}: {error}; check agent.state_dir or telemetry.queue.dir", dir.display())]
    CreateDir { dir: PathBuf, error: std::io::Error },
    #[error("cannot list the queue directory {}: {error}", dir.display())]
    ListDir { dir: PathBuf, error: std::io::Error },
    /// A segment cannot be opened, read or repaired at startup.
    #[error("cannot open queue segment {}: {error}", path.display())]
    OpenSegment {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot create queue segment {}: {error}; check free space", path.display())]
    CreateSegment {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The pipeline is stopping.
    #[error("the telemetry queue is closed")]
    Closed,
    #[error("cannot write to the telemetry queue in {}: {error}; check free space", dir.display())]
    Write { dir: PathBuf, error: std::io::Error },
    /// A record larger than the queue takes: refused whole, so the reader
    /// never meets a record it would have to call corrupt.
    #[error("a telemetry record of {bytes} bytes is larger than the queue's {max} byte limit")]
    TooLarge { bytes: usize, max: usize },
    /// Flushing records or saving the ledger failed.
    #[error("cannot sync the telemetry queue in {}: {error}; check free space", dir.display())]
    Sync { dir: PathBuf, error: std::io::Error },
}

/// What a queue record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Logs,
    Traces,
}

impl Signal {
    fn to_byte(self) -> u8 {
        match self {
            Signal::Logs => 1,
            Signal::Traces => 2,
        }
    }
    fn from_byte(b: u8) -> Option<Signal> {
        match b {
            1 => Some(Signal::Logs),
            2 => Some(Signal::Traces),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }
}

/// How far a record got into a tailed file: acknowledging the record lets
/// the file's checkpoint advance to `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePosition {
    pub file_id: u64,
    pub offset: u64,
}

/// One queue record: an encoded `Export{Logs,Trace}ServiceRequest`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub signal: Signal,
    /// Log records or spans inside, for counting.
    pub items: u32,
    pub positions: Vec<FilePosition>,
    pub payload: Vec<u8>,
}

/// A record handed to the exporter; acknowledge it by `id`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub entry: Entry,
}

/// Counters the queue keeps for the self metrics.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Items dropped because the queue was full (oldest first).
    pub dropped_full_items: AtomicU64,
    /// Records found corrupt on disk (checksum, bad length or torn write),
    /// each counted once and skipped alone.
    pub dropped_corrupt_records: AtomicU64,
}

/// Tuning of a queue.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub fsync_interval: Duration,
}

#[derive(Debug)]
struct Segment {
    number: u64,
    bytes: u64,
    first_id: u64,
    /// One past the last id written into it.
    end_id: u64,
    /// Items per record id, to count what a dropped segment held.
    items: Vec<u32>,
}

impl Segment {
    fn path(&self, dir: &Path) -> PathBuf {
        segment_path(dir, self.number)
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.seg"))
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    writer: File,
    next_id: u64,
    /// Next record to hand out: segment number and offset.
    read_seg: u64,
    read_off: u64,
    /// First id not yet acknowledged; everything below is done.
    acked_id: u64,
    /// Where `acked_id` lives, persisted in the ledger.
    acked_seg: u64,
    acked_off: u64,
    /// Handed out, not yet acknowledged, by id: the lowest one is where
    /// the ledger stands while any is out.
    in_flight: BTreeMap<u64, InFlight>,
    /// One past the last id the reader handed out or skipped: every id
    /// below it that is not in flight is done (acknowledged, given up,
    /// or never written: ids may have gaps after a corrupt record).
    read_next_id: u64,
    /// Corrupt stretches found at open, by (segment, offset): where the
    /// next good record starts, so the reader skips them without
    /// counting them again.
    skips: HashMap<(u64, u64), u64>,
    /// Acknowledged out of order, waiting for the ones before them.
    acked_ahead: BTreeMap<u64, Vec<FilePosition>>,
    total_bytes: u64,
    unacked_items: u64,
    unacked_records: u64,
    dirty: bool,
    ledger_dirty: bool,
    closed: bool,
    /// The segment the reader has open.
    reader: Option<(u64, File)>,
}

/// A record handed out: its checkpoint positions and where it starts.
#[derive(Debug)]
struct InFlight {
    positions: Vec<FilePosition>,
    segment: u64,
    offset: u64,
}

/// The queue; share it with `Arc`.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    opts: QueueOptions,
    state: Mutex<State>,
    notify: Notify,
    pub stats: QueueStats,
}

/// What `open` found left over from the previous run.
#[derive(Debug, Default)]
pub struct Recovered {
    /// For each tailed file, the furthest offset held by an unacknowledged
    /// record: reading resumes there, the queue re-sends the rest.
    pub positions: HashMap<u64, u64>,
    pub records: u64,
    pub items: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Ledger {
    acked_id: u64,
    acked_segment: u64,
    acked_offset: u64,
}

/// Creates `dir` and its missing parents 0o700: the queue holds log lines
/// in plain text (query strings, user names), for the agent's user alone.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Options that create (or truncate) a file for writing, 0o600 when
/// created, for the same reason.
pub(crate) fn private_file() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true).mode(0o600);
    o
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Appends a record. It is on disk (page cache) when this returns, so a
    /// killed process loses nothing; `sync` makes it survive power loss.
    pub fn append(&self, entry: &Entry) -> Result<(), QueueError> {
        self.append_with(entry, write_record)
    }

    /// `append` with the write itself passed in: the seam through which
    /// tests make the disk fail mid-record.
    fn append_with(
        &self,
        entry: &Entry,
        write: impl FnOnce(&mut File, &[u8], &[u8]) -> std::io::Result<()>,
    ) -> Result<(), QueueError> {
        let body = META + entry.positions.len().min(u16::MAX as usize) * 16 + entry.payload.len();
        if body > MAX_RECORD {
            return Err(QueueError::TooLarge {
                bytes: body,
                max: MAX_RECORD,
            });
        }
        let mut st = self.lock();
        if st.closed {
            return Err(QueueError::Closed);
        }
        let id = st.next_id;
        let head = encode_head(id, entry);
        let len = (head.len() + entry.payload.len()) as u64;
        // Keep the bound: drop whole oldest segments, counting what they held.
        while st.total_bytes + len > self.opts.max_bytes && st.segments.len() > 1 {
            self.drop_oldest(&mut st);
        }
        let tail_bytes = st.segments.back().map(|s| s.bytes).unwrap_or(0);
        if tail_bytes > 0 && tail_bytes + len > self.opts.segment_bytes {
            self.roll(&mut st)?;
            while st.total_bytes + len > self.opts.max_bytes && st.segments.len() > 1 {
                self.drop_oldest(&mut st);
            }
        }
        if let Err(error) = write(&mut st.writer, &head, &entry.payload) {
            self.cut_partial_write(&mut st);
            return Err(QueueError::Write {
                dir: self.dir.clone(),
                error,
            });
        }
        let seg = st.segments.back_mut().expect("a tail segment");
        if seg.items.is_empty() {
            seg.first_id = id;
        }
        seg.items.push(entry.items);
        seg.end_id = id + 1;
        seg.bytes += len;
        st.total_bytes += len;
        st.next_id = id + 1;
        st.unacked_items += entry.items as u64;
        st.unacked_records += 1;
        st.dirty = true;
        drop(st);
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(())
    }

    /// After a failed write (a full disk writes part of a record), cuts the
    /// tail segment back to its last whole record, so the next append does
    /// not land behind a torn one. If even that fails, appends continue in
    /// a new segment: the torn bytes sit past what the reader is told the
    /// old one holds.
    fn cut_partial_write(&self, st: &mut State) {
        let good = st.segments.back().map(|s| s.bytes).unwrap_or(0);
        let Err(e) = st.writer.set_len(good) else {
            return;
        };
        tracing::error!(
            "cannot cut a partly written telemetry queue record: {e}; continuing in a new segment"
        );
        if let Err(e) = self.roll(st) {
            tracing::error!("{e}");
        }
    }

    fn roll(&self, st: &mut State) -> Result<(), QueueError> {
        st.writer.sync_data().ok();
        let number = st.segments.back().map(|s| s.number + 1).unwrap_or(1);
        let path = segment_path(&self.dir, number);
        st.writer = private_file()
            .truncate(false)
            .append(true)
            .open(&path)
            .map_err(|error| QueueError::CreateSegment {
                path: path.clone(),
                error,
            })?;
        let next_id = st.next_id;
        st.segments.push_back(Segment {
            number,
            bytes: 0,
            first_id: next_id,
            end_id: next_id,
            items: Vec::new(),
        });
        Ok(())
    }

    fn drop_oldest(&self, st: &mut State) {
        let Some(seg) = st.segments.pop_front() else {
            return;
        };
        let mut dropped_items = 0u64;
        let mut dropped_records = 0u64;
        for (i, items) in seg.items.iter().enumerate() {
            let id = seg.first_id + i as u64;
            if id >= st.acked_id && !st.acked_ahead.contains_key(&id) {
                dropped_items += *items as u64;
                dropped_records += 1;
            }
        }
        for id in seg.first_id..seg.end_id {
            st.in_flight.remove(&id);
            st.acked_ahead.remove(&id);
        }
        let _ = std::fs::remove_file(seg.path(&self.dir));
        st.skips.retain(|(number, _), _| *number != seg.number);
        st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
        st.unacked_items = st.unacked_items.saturating_sub(dropped_items);
        st.unacked_records = st.unacked_records.saturating_sub(dropped_records);
        self.stats
            .dropped_full_items
            .fetch_add(dropped_items, Ordering::Relaxed);
        if dropped_items > 0 {
            tracing::warn!(
                records = dropped_items,
                "telemetry queue full: dropped the oldest data; raise telemetry.queue.max_bytes or fix the upstream"
            );
        }
        let next = st
            .segments
            .front()
            .map(|s| s.number)
            .unwrap_or(seg.number + 1);
        let next_first = st
            .segments
            .front()
            .map(|s| s.first_id)
            .unwrap_or(st.next_id);
        if st.read_seg <= seg.number {
            st.read_seg = next;
            st.read_off = 0;
            st.read_next_id = st.read_next_id.max(next_first);
        }
        // Positions of dropped records are not applied: the data is given
        // up and counted; later acknowledgements move on.
        let _ = self.advance_acked(st);
    }

    /// The next record not yet handed out, waiting for one; `None` once
    /// the queue is closed.
    pub async fn next(&self) -> Option<Delivery> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_next() {
                Ok(Some(d)) => return Some(d),
                Ok(None) => {}
                Err(()) => return None,
            }
            notified.await;
        }
    }

    /// Reads the next record from disk; `Err` when closed.
    fn try_next(&self) -> Result<Option<Delivery>, ()> {
        let mut st = self.lock();
        if st.closed {
            return Err(());
        }
        loop {
            let Some(idx) = st.segments.iter().position(|s| s.number >= st.read_seg) else {
                return Ok(None);
            };
            let seg_number = st.segments[idx].number;
            let seg_bytes = st.segments[idx].bytes;
            if seg_number != st.read_seg {
                st.read_seg = seg_number;
                st.read_off = 0;
            }
            if st.read_off >= seg_bytes {
                if idx + 1 < st.segments.len() {
                    st.read_seg = st.segments[idx + 1].number;
                    st.read_off = 0;
                    continue;
                }
                return Ok(None);
            }
            if st.reader.as_ref().map(|(n, _)| *n) != Some(seg_number) {
                let path = segment_path(&self.dir, seg_number);
                match File::open(&path) {
                    Ok(f) => st.reader = Some((seg_number, f)),
                    Err(e) => {
                        tracing::error!(segment = %path.display(), "cannot read telemetry queue segment: {e}");
                        return Ok(None);
                    }
                }
            }
            let read_off = st.read_off;
            if let Some(&next) = st.skips.get(&(seg_number, read_off)) {
                st.read_off = next;
                continue;
            }
            let result = match &st.reader {
                Some((_, file)) => read_record(file, read_off, seg_bytes),
                None => return Ok(None),
            };
            match result {
                Ok(Some((body, end))) => {
                    st.read_off = end;
                    let Some((id, entry)) = decode(body) else {
                        continue;
                    };
                    if id < st.acked_id {
                        continue;
                    }
                    st.read_next_id = st.read_next_id.max(id + 1);
                    st.in_flight.insert(
                        id,
                        InFlight {
                            positions: entry.positions.clone(),
                            segment: seg_number,
                            offset: read_off,
                        },
                    );
                    return Ok(Some(Delivery { id, entry }));
                }
                Ok(None) => return Ok(None),
                Err(()) => {
                    // Damaged since open (open found and noted the rest):
                    // skip this one record, or the rest of the segment if
                    // nothing after it reads back.
                    self.stats
                        .dropped_corrupt_records
                        .fetch_add(1, Ordering::Relaxed);
                    let next = match &st.reader {
                        Some((_, file)) => resync(file, read_off, seg_bytes),
                        None => None,
                    };
                    tracing::warn!(
                        segment = seg_number,
                        offset = read_off,
                        "telemetry queue: skipped a corrupt record"
                    );
                    st.read_off = next.unwrap_or(seg_bytes);
                }
            }
        }
    }

    /// Marks a record done (acknowledged by the upstream, or given up for a
    /// non-retryable reason). The ledger moves over every contiguous done
    /// record; segments behind it are deleted. Returns the file positions
    /// of the records the ledger moved over, in order: only those may
    /// advance file checkpoints (a later record acknowledged before an
    /// earlier one must not move a checkpoint past the earlier one).
    pub fn ack(&self, id: u64, items: u32) -> Vec<FilePosition> {
        let mut st = self.lock();
        // Only records handed out count; one whose segment was dropped
        // meanwhile was already counted as dropped.
        let Some(done) = st.in_flight.remove(&id) else {
            return Vec::new();
        };
        st.acked_ahead.insert(id, done.positions);
        st.unacked_items = st.unacked_items.saturating_sub(items as u64);
        st.unacked_records = st.unacked_records.saturating_sub(1);
        self.advance_acked(&mut st)
    }

    /// Moves the ledger to the first record not done: the lowest one in
    /// flight, else the reader's position (everything it passed was handed
    /// out and is done, or was corrupt, or never existed: an id gap never
    /// holds the ledger back). Segments wholly behind it are deleted, and
    /// only those: unread data stays.
    fn advance_acked(&self, st: &mut State) -> Vec<FilePosition> {
        let (frontier, segment, offset) = match st.in_flight.first_key_value() {
            Some((&id, f)) => (id, f.segment, f.offset),
            None => (st.read_next_id, st.read_seg, st.read_off),
        };
        let mut positions = Vec::new();
        while let Some(entry) = st.acked_ahead.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            positions.extend(entry.remove());
        }
        if frontier <= st.acked_id {
            return positions;
        }
        st.acked_id = frontier;
        st.acked_seg = segment;
        st.acked_off = offset;
        st.ledger_dirty = true;
        while st.segments.len() > 1 && st.segments[0].number < st.acked_seg {
            if let Some(seg) = st.segments.pop_front() {
                st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                st.skips.retain(|(number, _), _| *number != seg.number);
                let _ = std::fs::remove_file(seg.path(&self.dir));
            }
        }
        positions
    }

    /// Flushes written records to stable storage and persists the ledger
    /// (called on the fsync cadence and at stop).
    pub fn sync(&self) -> Result<(), QueueError> {
        let mut st = self.lock();
        let result = (|| -> std::io::Result<()> {
            if st.dirty {
                st.writer.sync_data()?;
                st.dirty = false;
            }
            if st.ledger_dirty {
                let ledger = Ledger {
                    acked_id: st.acked_id,
                    acked_segment: st.acked_seg,
                    acked_offset: st.acked_off,
                };
                let tmp = self.dir.join("ledger.tmp");
                let bytes = serde_json::to_vec(&ledger).map_err(std::io::Error::other)?;
                {
                    let mut f = private_file().open(&tmp)?;
                    f.write_all(&bytes)?;
                    f.sync_data()?;
                }
                std::fs::rename(&tmp, self.dir.join("ledger"))?;
                st.ledger_dirty = false;
            }
            Ok(())
        })();
        result.map_err(|error| QueueError::Sync {
            dir: self.dir.clone(),
            error,
        })
    }

    /// Stops handing out records, wakes waiters, and syncs.
    pub fn close(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
        }
        self.notify.notify_waiters();
        if let Err(e) = self.sync() {
            tracing::error!("cannot sync the telemetry queue at stop: {e}");
        }
    }

    /// False once a handed-out record was dropped (its segment went to keep
    /// the size bound): the exporter stops retrying it.
    pub fn is_in_flight(&self, id: u64) -> bool {
        self.lock().in_flight.contains_key(&id)
    }

    /// Records and items not yet acknowledged, and bytes on disk.
    pub fn depth(&self) -> (u64, u64, u64) {
        let st = self.lock();
        (st.unacked_records, st.unacked_items, st.total_bytes)
    }

    /// The fsync cadence configured.
    pub fn fsync_interval(&self) -> Duration {
        self.opts.fsync_interval
    }
}

#[cfg(test)]
mod tests {
    use super::record::HEADER;
    use super::*;

    fn opts(dir: &Path, max: u64, seg: u64) -> QueueOptions {
        QueueOptions {
            dir: dir.to_path_buf(),
            max_bytes: max,
            segment_bytes: seg,
            fsync_interval: Duration::from_millis(10),
        }
    }

    fn entry(text: &str, file: u64, off: u64) -> Entry {
        Entry {
            signal: Signal::Logs,
            items: 1,
            positions: vec![FilePosition {
                file_id: file,
                offset: off,
            }],
            payload: text.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn survives_reopen_and_resends_unacked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
            assert_eq!(rec.records, 0);
            for i in 0..10 {
                q.append(&entry(&format!("r{i}"), 7, i * 10)).unwrap();
            }
            for _ in 0..4 {
                let d = q.next().await.unwrap();
                q.ack(d.id, 1);
            }
            // Handed out but not acknowledged: must come back.
            let _ = q.next().await.unwrap();
            q.sync().unwrap();
            // Dropped without close: as a kill would.
        }
        let (q, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
        assert_eq!(rec.records, 6);
        assert_eq!(rec.positions.get(&7), Some(&90));
        let d = q.next().await.unwrap();
        assert_eq!(d.entry.payload, b"r4");
        q.append(&entry("new", 7, 100)).unwrap();
        let mut seen = vec![String::from_utf8(d.entry.payload).unwrap()];
        q.ack(d.id, 1);
        for _ in 0..6 {
            let d = q.next().await.unwrap();
            seen.push(String::from_utf8(d.entry.payload.clone()).unwrap());
            q.ack(d.id, 1);
        }
        assert_eq!(seen, ["r4", "r5", "r6", "r7", "r8", "r9", "new"]);
        assert_eq!(q.depth().0, 0);
    }

    #[tokio::test]
    async fn checkpoint_positions_follow_ack_order() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
        q.append(&entry("a", 1, 10)).unwrap();
        q.append(&entry("b", 1, 20)).unwrap();
        let a = q.next().await.unwrap();
        let b = q.next().await.unwrap();
        assert!(q.ack(b.id, 1).is_empty(), "b may not pass a");
        let moved: Vec<u64> = q.ack(a.id, 1).iter().map(|p| p.offset).collect();
        assert_eq!(moved, [10, 20]);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_and_corruption_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
            q.append(&entry("good", 1, 1)).unwrap();
            q.append(&entry("torn", 1, 2)).unwrap();
            q.sync().unwrap();
        }
        let seg = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 2).unwrap();
        let (q, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(q.stats.dropped_corrupt_records.load(Ordering::Relaxed), 1);
        q.append(&entry("after", 1, 3)).unwrap();
        let a = q.next().await.unwrap();
        let b = q.next().await.unwrap();
        assert_eq!(a.entry.payload, b"good");
        assert_eq!(b.entry.payload, b"after");
    }

    #[tokio::test]
    async fn bound_drops_oldest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::open(opts(dir.path(), 3000, 1000)).unwrap();
        let payload = "x".repeat(200);
        for i in 0..40 {
            q.append(&entry(&format!("{i:03}{payload}"), 1, i)).unwrap();
        }
        let (_, items, bytes) = q.depth();
        assert!(bytes <= 3000, "{bytes}");
        let dropped = q.stats.dropped_full_items.load(Ordering::Relaxed);
        assert_eq!(dropped + items, 40);
        assert!(dropped > 0);
        // What is left is the newest, in order.
        let first = q.next().await.unwrap();
        let n: u64 = std::str::from_utf8(&first.entry.payload[..3])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(n, dropped);
    }

    /// The next delivery, or `None` when none comes within a second (a
    /// reader that skipped good records waits forever).
    async fn next_soon(q: &Queue) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_secs(1), q.next())
            .await
            .ok()
            .flatten()
    }

    fn text(d: &Delivery) -> String {
        String::from_utf8_lossy(&d.entry.payload).into_owned()
    }

    /// Delivers and acknowledges until nothing comes; the payloads in order.
    async fn drain(q: &Queue) -> Vec<String> {
        let mut seen = Vec::new();
        while let Some(d) = next_soon(q).await {
            seen.push(text(&d));
            q.ack(d.id, d.entry.items);
        }
        seen
    }

    /// Bytes of one `entry(..)` record on disk.
    fn frame_len(payload: &str) -> u64 {
        (HEADER + META + 16 + payload.len()) as u64
    }

    #[tokio::test]
    async fn oversized_record_is_refused_and_later_records_flow() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Queue::open(opts(dir.path(), 1 << 30, 1 << 30)).unwrap();
        q.append(&entry("before", 1, 1)).unwrap();
        let mut big = entry("", 1, 2);
        big.payload = vec![b'x'; MAX_RECORD_BYTES];
        let refused = q.append(&big);
        assert!(
            matches!(refused, Err(QueueError::TooLarge { .. })),
            "{refused:?}"
        );
        q.append(&entry("after", 1, 3)).unwrap();
        assert_eq!(drain(&q).await, ["before", "after"]);
        assert_eq!(q.stats.dropped_corrupt_records.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_corrupt_record_mid_last_segment_loses_only_itself() {
        // Damage the third record's payload (length intact), then its
        // length field (found again by scanning).
        for damage_length in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (q, _) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
                for i in 0..5 {
                    q.append(&entry(&format!("r{i}"), 1, i + 1)).unwrap();
                }
                q.sync().unwrap();
            }
            let seg = segment_path(dir.path(), 1);
            let mut bytes = std::fs::read(&seg).unwrap();
            let third = 2 * frame_len("r0") as usize;
            let at = if damage_length {
                third + 2
            } else {
                third + frame_len("r2") as usize - 1
            };
            bytes[at] ^= 0x5a;
            std::fs::write(&seg, &bytes).unwrap();

            let (q, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
            assert_eq!(rec.records, 4, "damage_length={damage_length}");
            assert_eq!(q.stats.dropped_corrupt_records.load(Ordering::Relaxed), 1);
            q.append(&entry("new", 1, 9)).unwrap();
            assert_eq!(drain(&q).await, ["r0", "r1", "r3", "r4", "new"]);
            // Counted once, not again when the reader passes it.
            assert_eq!(q.stats.dropped_corrupt_records.load(Ordering::Relaxed), 1);
            assert_eq!(q.depth().0, 0);
            q.sync().unwrap();
            drop(q);
            let (_, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
            assert_eq!(rec.records, 0, "everything was acknowledged");
        }
    }

    /// Writes segment `number` holding records with these ids.
    fn craft_segment(dir: &Path, number: u64, ids: &[u64]) {
        let mut bytes = Vec::new();
        for &id in ids {
            let e = entry(&format!("id{id}"), 1, id + 1);
            bytes.extend(encode_head(id, &e));
            bytes.extend(&e.payload);
        }
        std::fs::write(segment_path(dir, number), bytes).unwrap();
    }

    #[tokio::test]
    async fn an_id_gap_neither_deletes_unread_segments_nor_stalls_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        craft_segment(dir.path(), 1, &[0, 1, 2]);
        craft_segment(dir.path(), 2, &[5, 6]);
        craft_segment(dir.path(), 3, &[7]);
        let (q, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
        assert_eq!(rec.records, 6);
        for expected in ["id0", "id1", "id2"] {
            let d = next_soon(&q).await.expect("a record");
            assert_eq!(text(&d), expected);
            q.ack(d.id, 1);
        }
        assert!(
            segment_path(dir.path(), 2).exists(),
            "unread segment deleted"
        );
        let d = next_soon(&q).await.expect("the record after the gap");
        assert_eq!(text(&d), "id5");
        let moved: Vec<u64> = q.ack(d.id, 1).iter().map(|p| p.offset).collect();
        assert_eq!(moved, [6], "the ledger waits for ids that do not exist");
        assert_eq!(drain(&q).await, ["id6", "id7"]);
        assert_eq!(q.depth().0, 0);
        q.sync().unwrap();
        drop(q);
        let (_, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
        assert_eq!(rec.records, 0);
    }

    #[tokio::test]
    async fn a_short_write_is_cut_back_and_later_records_flow() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
            q.append(&entry("a", 1, 1)).unwrap();
            // A full disk: the head and part of the payload reach the file.
            let failed = q.append_with(&entry("torn-payload", 1, 2), |file, head, payload| {
                file.write_all(head)?;
                file.write_all(&payload[..4])?;
                Err(std::io::Error::from_raw_os_error(28))
            });
            assert!(
                matches!(failed, Err(QueueError::Write { .. })),
                "{failed:?}"
            );
            q.append(&entry("b", 1, 3)).unwrap();
            assert_eq!(drain(&q).await, ["a", "b"]);
            assert_eq!(q.stats.dropped_corrupt_records.load(Ordering::Relaxed), 0);
        }
        let seg = segment_path(dir.path(), 1);
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            frame_len("a") + frame_len("b")
        );
        let (q, rec) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
        assert_eq!(q.stats.dropped_corrupt_records.load(Ordering::Relaxed), 0);
        assert_eq!(rec.records, 2, "not synced, so both are sent again");
    }

    #[tokio::test]
    async fn forged_ids_neither_overflow_nor_pad_without_bound() {
        // Found by the queue_segment fuzz target: a record (or ledger) id of
        // u64::MAX overflowed `id + 1` at open, and a record 2^40 ids past
        // the one before it padded a gap of 2^40 items (a hang, then OOM).
        for (ledger_id, ids) in [
            (0, vec![u64::MAX]),
            (0, vec![0, 1 << 40, 1]),
            (u64::MAX, vec![0]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = Vec::new();
            for &id in &ids {
                let e = entry(&format!("id{}", id % 1000), 1, 1);
                bytes.extend(encode_head(id, &e));
                bytes.extend(&e.payload);
            }
            std::fs::write(segment_path(dir.path(), 1), bytes).unwrap();
            let ledger =
                format!(r#"{{"acked_id":{ledger_id},"acked_segment":1,"acked_offset":0}}"#);
            std::fs::write(dir.path().join("ledger"), ledger).unwrap();
            let (q, _) = Queue::open(opts(dir.path(), 1 << 20, 1 << 16)).unwrap();
            let plausible: Vec<String> = ids
                .iter()
                .filter(|&&id| id < 1 << 40)
                .map(|id| format!("id{id}"))
                .collect();
            assert_eq!(drain(&q).await, plausible, "{ids:?}");
            q.append(&entry("after", 1, 1)).unwrap();
            assert_eq!(drain(&q).await, ["after"]);
        }
    }
}
