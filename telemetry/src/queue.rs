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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

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
    /// Records found corrupt on disk at startup (checksum or torn write).
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

const HEADER: usize = 8;
/// Largest record accepted (gRPC upstreams take 4 MiB; the receiver's HTTP
/// side takes 20 MiB bodies).
const MAX_RECORD: usize = 64 * 1024 * 1024;

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
    /// Handed out, not yet acknowledged: id -> (segment, end offset).
    in_flight: HashMap<u64, Vec<FilePosition>>,
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

/// Bytes of the body before the positions: id, signal, items, n.
const META: usize = 8 + 1 + 4 + 2;

/// A record's frame up to (not including) its payload; the checksum covers
/// the rest of the frame and the payload, which is written from the
/// caller's buffer as it is (not copied into the frame).
fn encode_head(id: u64, entry: &Entry) -> Vec<u8> {
    let n = entry.positions.len().min(u16::MAX as usize);
    let body_len = META + n * 16 + entry.payload.len();
    let mut buf = Vec::with_capacity(HEADER + META + n * 16);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(entry.signal.to_byte());
    buf.extend_from_slice(&entry.items.to_le_bytes());
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    for p in entry.positions.iter().take(n) {
        buf.extend_from_slice(&p.file_id.to_le_bytes());
        buf.extend_from_slice(&p.offset.to_le_bytes());
    }
    let mut sum = crc32fast::Hasher::new();
    sum.update(&buf[HEADER..]);
    sum.update(&entry.payload);
    let sum = sum.finalize();
    buf[4..8].copy_from_slice(&sum.to_le_bytes());
    buf
}

/// Writes `head` then `payload` (one record) with as few system calls as
/// the kernel allows.
fn write_record(file: &mut File, head: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let mut parts = [head, payload];
    while !parts[0].is_empty() || !parts[1].is_empty() {
        let n = file.write_vectored(&[
            std::io::IoSlice::new(parts[0]),
            std::io::IoSlice::new(parts[1]),
        ])?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let first = n.min(parts[0].len());
        parts[0] = &parts[0][first..];
        parts[1] = &parts[1][n - first..];
    }
    Ok(())
}

/// A record's body read back: the part before the payload, and the payload
/// in its own buffer (handed to the exporter without another copy).
struct RawRecord {
    head: Vec<u8>,
    payload: Vec<u8>,
}

fn decode(record: RawRecord) -> Option<(u64, Entry)> {
    let body = &record.head;
    let take = |range: std::ops::Range<usize>| body.get(range);
    let id = u64::from_le_bytes(take(0..8)?.try_into().ok()?);
    let signal = Signal::from_byte(*body.get(8)?)?;
    let items = u32::from_le_bytes(take(9..13)?.try_into().ok()?);
    let n = u16::from_le_bytes(take(13..15)?.try_into().ok()?) as usize;
    let mut at = META;
    let mut positions = Vec::with_capacity(n);
    for _ in 0..n {
        let file_id = u64::from_le_bytes(take(at..at + 8)?.try_into().ok()?);
        let offset = u64::from_le_bytes(take(at + 8..at + 16)?.try_into().ok()?);
        positions.push(FilePosition { file_id, offset });
        at += 16;
    }
    Some((
        id,
        Entry {
            signal,
            items,
            positions,
            payload: record.payload,
        },
    ))
}

/// Reads `len` bytes at `off` into a new buffer without zeroing it first.
fn read_exact_new(file: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut reader = file;
    reader.seek(SeekFrom::Start(off)).ok()?;
    let mut buf = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut buf).ok()?;
    (buf.len() == len).then_some(buf)
}

/// Reads the record at `off` of `file`: `Ok(None)` at a clean end,
/// `Err(())` for a torn or corrupt record.
fn read_record(file: &File, off: u64, file_len: u64) -> Result<Option<(RawRecord, u64)>, ()> {
    if off == file_len {
        return Ok(None);
    }
    if off + (HEADER + META) as u64 > file_len {
        return Err(());
    }
    let mut header = [0u8; HEADER + META];
    file.read_exact_at(&mut header, off).map_err(|_| ())?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let sum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let n = u16::from_le_bytes([header[HEADER + 13], header[HEADER + 14]]) as usize;
    let head_len = META + n * 16;
    if len > MAX_RECORD || len < head_len || off + (HEADER + len) as u64 > file_len {
        return Err(());
    }
    let head = if n == 0 {
        header[HEADER..].to_vec()
    } else {
        read_exact_new(file, off + HEADER as u64, head_len).ok_or(())?
    };
    let payload =
        read_exact_new(file, off + (HEADER + head_len) as u64, len - head_len).ok_or(())?;
    let mut check = crc32fast::Hasher::new();
    check.update(&head);
    check.update(&payload);
    if check.finalize() != sum {
        return Err(());
    }
    Ok(Some((
        RawRecord { head, payload },
        off + (HEADER + len) as u64,
    )))
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
    /// Opens (or creates) the queue in `opts.dir`, checking every record not
    /// yet acknowledged; a torn record at the end of the last segment (a
    /// crash mid-write) is cut off, corrupt ones are counted and skipped.
    pub fn open(opts: QueueOptions) -> Result<(Arc<Queue>, Recovered), QueueError> {
        let dir = opts.dir.clone();
        private_dir(&dir).map_err(|error| QueueError::CreateDir {
            dir: dir.clone(),
            error,
        })?;
        let ledger_path = dir.join("ledger");
        let ledger: Ledger = match std::fs::read(&ledger_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => Ledger::default(),
        };
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|error| QueueError::ListDir {
                dir: dir.clone(),
                error,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .collect();
        numbers.sort_unstable();

        let stats = QueueStats::default();
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        let mut next_id = ledger.acked_id;
        let (mut acked_seg, mut acked_off) = (ledger.acked_segment, ledger.acked_offset);
        let last = numbers.last().copied();
        for number in numbers {
            let path = segment_path(&dir, number);
            if number < ledger.acked_segment {
                // Fully acknowledged; the previous run died before deleting it.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let opened = File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f)));
            let (len, file) = opened.map_err(|error| QueueError::OpenSegment {
                path: path.clone(),
                error,
            })?;
            let mut off = if number == ledger.acked_segment {
                ledger.acked_offset.min(len)
            } else {
                0
            };
            let mut seg = Segment {
                number,
                bytes: len,
                first_id: u64::MAX,
                end_id: 0,
                items: Vec::new(),
            };
            loop {
                match read_record(&file, off, len) {
                    Ok(None) => break,
                    Ok(Some((body, end))) => {
                        if let Some((id, entry)) = decode(body) {
                            if id >= ledger.acked_id {
                                if seg.first_id == u64::MAX {
                                    seg.first_id = id;
                                }
                                // Ids are contiguous within a run; pad gaps.
                                while seg.first_id + (seg.items.len() as u64) < id {
                                    seg.items.push(0);
                                }
                                seg.items.push(entry.items);
                                seg.end_id = id + 1;
                                next_id = next_id.max(id + 1);
                                recovered.records += 1;
                                recovered.items += entry.items as u64;
                                for p in &entry.positions {
                                    let slot = recovered.positions.entry(p.file_id).or_insert(0);
                                    *slot = (*slot).max(p.offset);
                                }
                            }
                        }
                        off = end;
                    }
                    Err(()) => {
                        stats
                            .dropped_corrupt_records
                            .fetch_add(1, Ordering::Relaxed);
                        if Some(number) == last {
                            // A torn tail: cut it so appends continue cleanly.
                            let cut = OpenOptions::new().write(true).open(&path).and_then(|f| {
                                f.set_len(off)?;
                                f.sync_all()
                            });
                            cut.map_err(|error| QueueError::OpenSegment {
                                path: path.clone(),
                                error,
                            })?;
                            seg.bytes = off;
                            tracing::warn!(segment = %path.display(), offset = off, "telemetry queue: cut a torn record at the end");
                        } else {
                            tracing::warn!(segment = %path.display(), offset = off, "telemetry queue: corrupt record; skipping the rest of the segment");
                        }
                        break;
                    }
                }
            }
            if seg.first_id == u64::MAX {
                seg.first_id = next_id;
                seg.end_id = next_id;
            }
            segments.push_back(seg);
        }
        if segments.is_empty() {
            let number = ledger.acked_segment.max(1);
            let path = segment_path(&dir, number);
            private_file()
                .open(&path)
                .map_err(|error| QueueError::CreateSegment { path, error })?;
            segments.push_back(Segment {
                number,
                bytes: 0,
                first_id: next_id,
                end_id: next_id,
                items: Vec::new(),
            });
            acked_seg = number;
            acked_off = 0;
        }
        if acked_seg < segments[0].number {
            acked_seg = segments[0].number;
            acked_off = 0;
        }
        let tail = segments.back().expect("at least one segment");
        let tail_path = tail.path(&dir);
        let writer = OpenOptions::new()
            .append(true)
            .open(&tail_path)
            .map_err(|error| QueueError::OpenSegment {
                path: tail_path,
                error,
            })?;
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let state = State {
            segments,
            writer,
            next_id,
            read_seg: acked_seg,
            read_off: acked_off,
            acked_id: ledger.acked_id,
            acked_seg,
            acked_off,
            in_flight: HashMap::new(),
            acked_ahead: BTreeMap::new(),
            total_bytes,
            unacked_items: recovered.items,
            unacked_records: recovered.records,
            dirty: false,
            ledger_dirty: false,
            closed: false,
            reader: None,
        };
        let queue = Arc::new(Queue {
            dir,
            opts,
            state: Mutex::new(state),
            notify: Notify::new(),
            stats,
        });
        Ok((queue, recovered))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Appends a record. It is on disk (page cache) when this returns, so a
    /// killed process loses nothing; `sync` makes it survive power loss.
    pub fn append(&self, entry: &Entry) -> Result<(), QueueError> {
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
        write_record(&mut st.writer, &head, &entry.payload).map_err(|error| QueueError::Write {
            dir: self.dir.clone(),
            error,
        })?;
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
        }
        if st.acked_seg <= seg.number {
            st.acked_seg = next;
            st.acked_off = 0;
            st.acked_id = st.acked_id.max(next_first);
            // Positions of dropped records are not applied: the data is
            // given up and counted; later acknowledgements move on.
            let _ = self.advance_acked(st);
            st.ledger_dirty = true;
        }
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
                    st.in_flight.insert(id, entry.positions.clone());
                    return Ok(Some(Delivery { id, entry }));
                }
                Ok(None) => return Ok(None),
                Err(()) => {
                    // Checked at open; a record written since cannot be torn.
                    // Skip the segment rather than spin.
                    self.stats
                        .dropped_corrupt_records
                        .fetch_add(1, Ordering::Relaxed);
                    st.read_off = seg_bytes;
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
        let Some(positions) = st.in_flight.remove(&id) else {
            return Vec::new();
        };
        st.acked_ahead.insert(id, positions);
        st.unacked_items = st.unacked_items.saturating_sub(items as u64);
        st.unacked_records = st.unacked_records.saturating_sub(1);
        self.advance_acked(&mut st)
    }

    fn advance_acked(&self, st: &mut State) -> Vec<FilePosition> {
        let mut moved = false;
        let mut positions = Vec::new();
        while st.acked_ahead.first_key_value().map(|(k, _)| *k) == Some(st.acked_id) {
            if let Some((_, p)) = st.acked_ahead.pop_first() {
                positions.extend(p);
            }
            st.acked_id += 1;
            moved = true;
        }
        // Stale entries from dropped segments.
        while let Some((&first, _)) = st.acked_ahead.first_key_value() {
            if first < st.acked_id {
                st.acked_ahead.pop_first();
            } else {
                break;
            }
        }
        if !moved {
            return positions;
        }
        // Find where acked_id lives: the segment holding it, at the end of
        // the record before it (known for in-flight or read records).
        let acked_id = st.acked_id;
        let position = st
            .segments
            .iter()
            .find(|s| acked_id >= s.first_id && acked_id < s.end_id.max(s.first_id + 1))
            .map(|s| s.number);
        match position {
            Some(number) => {
                // The record's start: if it is the first of its segment, 0;
                // otherwise the end of the previous record, which the reader
                // passed (ack implies it was read).
                let first_id = st
                    .segments
                    .iter()
                    .find(|s| s.number == number)
                    .map(|s| s.first_id)
                    .unwrap_or(acked_id);
                if acked_id == first_id {
                    st.acked_seg = number;
                    st.acked_off = 0;
                } else {
                    st.acked_seg = number;
                    st.acked_off = self.offset_of(number, acked_id).unwrap_or(0);
                }
            }
            None => {
                // Everything written is acknowledged: the position is the
                // writer's end.
                let tail = st.segments.back().expect("a tail segment");
                st.acked_seg = tail.number;
                st.acked_off = tail.bytes;
            }
        }
        st.ledger_dirty = true;
        // Delete segments entirely before the acknowledged position.
        while st.segments.len() > 1 && st.segments[0].number < st.acked_seg {
            if let Some(seg) = st.segments.pop_front() {
                st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                let _ = std::fs::remove_file(seg.path(&self.dir));
            }
        }
        positions
    }

    /// Byte offset of record `id` inside segment `number`, by walking the
    /// record headers (segments are small; this runs once per ledger move).
    fn offset_of(&self, number: u64, id: u64) -> Option<u64> {
        let file = File::open(segment_path(&self.dir, number)).ok()?;
        let len = file.metadata().ok()?.len();
        let mut off = 0u64;
        loop {
            let mut header = [0u8; HEADER + 8];
            if off + (HEADER + 8) as u64 > len {
                return None;
            }
            file.read_exact_at(&mut header, off).ok()?;
            let rec_len = u32::from_le_bytes(header[0..4].try_into().ok()?) as u64;
            let rec_id = u64::from_le_bytes(header[8..16].try_into().ok()?);
            if rec_id >= id {
                return Some(off);
            }
            off += HEADER as u64 + rec_len;
        }
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
}
