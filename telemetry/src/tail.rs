//! File tailing: finds files by glob, follows them through rotation
//! (rename+create: the old file is drained to its end; copytruncate:
//! detected and restarted at 0; compressed rotations are never read;
//! deleted files are drained), splits lines, joins multiline records,
//! truncates over-long ones, parses, batches into OTLP log requests and
//! appends them to the durable queue with the file positions they cover.
//!
//! A file's identity is its device+inode *and* a hash of its first bytes,
//! so a reused inode or a truncated file is recognized, and two files with
//! identical first lines are still two files.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use regex::Regex;

use crate::checkpoint::{Checkpoints, FileCheckpoint};
use crate::config::{SourceConfig, StartAt};
use crate::parse::{self, string_value, AccessInfo};
use crate::queue::{Entry, FilePosition, Queue, Signal};
use crate::stats::{AccessMetrics, Stats};
use crate::wire::{self, AttributeSink, Body, EncodedAttributes, RecordParts, ScopePart};

/// Bytes hashed to fingerprint a file.
const FINGERPRINT_BYTES: u64 = 1024;
/// A multiline record with no new line for this long is complete.
const MULTILINE_FLUSH: Duration = Duration::from_millis(1000);
/// A rotated or deleted file is closed after this long without growth.
const ROTATED_GRACE: Duration = Duration::from_secs(3);
/// Read at most this much of one file before looking at the others.
const READ_BUDGET: usize = 8 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// Suffixes of compressed rotations: never read (their content was read
/// before compression, or is gone for good).
const COMPRESSED_SUFFIXES: &[&str] = &[
    ".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z", ".br", ".lzma",
];

/// Everything the tailer needs from the pipeline.
pub struct TailContext {
    pub queue: Arc<Queue>,
    pub checkpoints: Arc<Checkpoints>,
    pub stats: Arc<Stats>,
    pub access: Arc<AccessMetrics>,
    /// Resource attributes common to all sources.
    pub resource: Vec<KeyValue>,
    /// Service name when a source does not set its own.
    pub service_name: String,
    /// Per file id: the furthest offset held in the queue (not acknowledged).
    pub queued: HashMap<u64, u64>,
    /// True when no checkpoint file existed (Steward's first start).
    pub first_start: bool,
    pub poll_interval: Duration,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub batch_timeout: Duration,
}

struct Source {
    config: SourceConfig,
    multiline: Option<Regex>,
    /// The encoded `Resource` of every request of this source.
    resource: Vec<u8>,
    batch: Batch,
    access_batch: Vec<AccessInfo>,
    /// The encoded request, reused from batch to batch.
    payload: Vec<u8>,
}

/// Records of one file in the batch, encoded as they are read.
struct BatchFile {
    id: u64,
    /// The encoded `InstrumentationScope` naming the file.
    scope: Vec<u8>,
    /// `ScopeLogs.log_records` entries (see `wire::put_log_record`).
    records: Vec<u8>,
}

#[derive(Default)]
struct Batch {
    /// Kept (with their buffers) across batches; emptied files are
    /// dropped at the next flush.
    files: Vec<BatchFile>,
    positions: HashMap<u64, u64>,
    records: usize,
    bytes: usize,
    started: Option<Instant>,
}

struct PendingRecord {
    text: Vec<u8>,
    end: u64,
    truncated: bool,
    updated: Instant,
}

struct Tracked {
    id: u64,
    source: usize,
    path: PathBuf,
    /// `path` as text, shared by the records of a batch.
    label: Arc<str>,
    file: File,
    dev: u64,
    ino: u64,
    fp_len: u64,
    fp_hash: u64,
    /// Bytes consumed from the file.
    read_off: u64,
    /// Bytes of the current, unterminated line.
    partial: Vec<u8>,
    /// The current line passed max_record_bytes: the rest is skipped.
    partial_truncated: bool,
    pending: Option<PendingRecord>,
    /// No longer at a path the globs match (renamed away or deleted).
    rotated: bool,
    last_growth: Instant,
    /// Seen at a glob path during the current discovery pass.
    seen: bool,
}

/// The tailer of all sources; runs on its own thread.
pub struct Tailer {
    ctx: TailContext,
    sources: Vec<Source>,
    files: Vec<Tracked>,
    /// Files recognised as compressed: (dev, ino).
    ignored: HashSet<(u64, u64)>,
    /// Checkpoint entries not yet matched to a file at startup.
    startup: bool,
    hasher: std::collections::hash_map::RandomState,
    id_counter: AtomicU64,
    stop: Arc<AtomicBool>,
    /// Read buffer, reused.
    buf: Vec<u8>,
    /// Attributes of the record being encoded, reused.
    attributes: EncodedAttributes,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn fingerprint(file: &File, len: u64) -> std::io::Result<(u64, u64)> {
    let n = len.min(FINGERPRINT_BYTES) as usize;
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, 0)?;
    // A fixed hash (FNV-1a) so it is stable across runs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in &buf {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok((n as u64, h))
}

fn is_compressed_name(path: &Path) -> bool {
    let name = path.to_string_lossy();
    COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn is_compressed_content(file: &File) -> bool {
    let mut magic = [0u8; 6];
    let n = file.read_at(&mut magic, 0).unwrap_or(0);
    let m = &magic[..n];
    m.starts_with(&[0x1f, 0x8b])
        || m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || m.starts_with(b"BZh")
        || m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || m.starts_with(&[0x04, 0x22, 0x4d, 0x18])
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

impl Tailer {
    pub fn new(ctx: TailContext, sources: &[SourceConfig]) -> Tailer {
        let sources = sources
            .iter()
            .map(|config| {
                let multiline = config
                    .effective_multiline_start()
                    .and_then(|re| Regex::new(&re).ok());
                let mut attributes = ctx.resource.clone();
                let service = config
                    .service_name
                    .clone()
                    .unwrap_or_else(|| ctx.service_name.clone());
                attributes.retain(|k| k.key != "service.name");
                attributes.insert(0, kv("service.name", &service));
                for (k, v) in &config.resource {
                    attributes.retain(|a| &a.key != k);
                    attributes.push(kv(k, v));
                }
                attributes.push(kv("log.source", &config.name));
                Source {
                    config: config.clone(),
                    multiline,
                    resource: prost::Message::encode_to_vec(&Resource {
                        attributes,
                        ..Default::default()
                    }),
                    batch: Batch::default(),
                    access_batch: Vec::new(),
                    payload: Vec::new(),
                }
            })
            .collect();
        Tailer {
            ctx,
            sources,
            files: Vec::new(),
            ignored: HashSet::new(),
            startup: true,
            hasher: std::collections::hash_map::RandomState::new(),
            id_counter: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            buf: Vec::new(),
            attributes: EncodedAttributes::default(),
        }
    }

    fn new_id(&self, dev: u64, ino: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(dev);
        h.write_u64(ino);
        h.write_u64(now_nanos());
        h.write_u64(self.id_counter.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }

    /// Runs until `stop` is set; flushes batches and saves checkpoints.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        self.stop = Arc::clone(&stop);
        let mut last_save = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.discover();
            let busy = self.read_all();
            self.flush_due(false);
            if last_save.elapsed() >= Duration::from_secs(1) {
                self.save();
                last_save = Instant::now();
            }
            if !busy {
                let mut slept = Duration::ZERO;
                while slept < self.ctx.poll_interval && !stop.load(Ordering::Relaxed) {
                    let step = Duration::from_millis(20).min(self.ctx.poll_interval - slept);
                    std::thread::sleep(step);
                    slept += step;
                }
            }
        }
        // Complete records go to the queue; partial lines and unfinished
        // multiline records are re-read next time (their offsets are not
        // covered by any queued record).
        self.flush_due(true);
        self.save();
    }

    fn save(&self) {
        if let Err(e) = self.ctx.checkpoints.save() {
            tracing::error!("{e}");
        }
    }

    /// Matches the globs; starts tracking new files, notices rotations.
    fn discover(&mut self) {
        for f in &mut self.files {
            f.seen = false;
        }
        let mut found: Vec<(usize, PathBuf)> = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let excludes: Vec<glob::Pattern> = s
                .config
                .exclude
                .iter()
                .filter_map(|p| glob::Pattern::new(p).ok())
                .collect();
            for pattern in &s.config.paths {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    if is_compressed_name(&path) || excludes.iter().any(|e| e.matches_path(&path)) {
                        continue;
                    }
                    found.push((i, path));
                }
            }
        }
        let mut by_inode: HashMap<(u64, u64), usize> = HashMap::new();
        for (idx, f) in self.files.iter().enumerate() {
            by_inode.insert((f.dev, f.ino), idx);
        }
        for (source, path) in found {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let key = (meta.dev(), meta.ino());
            if self.ignored.contains(&key) {
                continue;
            }
            if let Some(&idx) = by_inode.get(&key) {
                let f = &mut self.files[idx];
                f.seen = true;
                f.rotated = false;
                if f.path != path {
                    f.label = Arc::from(path.to_string_lossy().as_ref());
                    f.path = path;
                }
                continue;
            }
            if let Some(idx) = self.open(source, &path, meta.len()) {
                let f = &self.files[idx];
                by_inode.insert((f.dev, f.ino), idx);
            }
        }
        let now = Instant::now();
        for f in &mut self.files {
            if !f.seen && !f.rotated {
                f.rotated = true;
                f.last_growth = now;
                tracing::debug!(path = %f.path.display(), "file rotated away or deleted; draining it");
            }
        }
        if self.startup {
            self.startup = false;
            self.resume_rotated_while_stopped();
        }
        self.update_tracked_gauge();
    }

    fn update_tracked_gauge(&self) {
        if let Ok(mut m) = self.ctx.stats.files_tracked.lock() {
            m.clear();
            for s in &self.sources {
                m.insert(s.config.name.clone(), 0);
            }
            for f in &self.files {
                *m.entry(self.sources[f.source].config.name.clone())
                    .or_insert(0) += 1;
            }
        }
    }

    /// Opens a newly seen file; resumes from its checkpoint when its
    /// identity matches one.
    fn open(&mut self, source: usize, path: &Path, len: u64) -> Option<usize> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot open log file: {e}");
                return None;
            }
        };
        let meta = file.metadata().ok()?;
        let (dev, ino) = (meta.dev(), meta.ino());
        if is_compressed_content(&file) {
            self.ignored.insert((dev, ino));
            return None;
        }
        let source_name = self.sources[source].config.name.clone();
        let (resume, id) = self.match_checkpoint(&file, dev, ino, len, &source_name);
        let (fp_len, fp_hash) = fingerprint(&file, len).unwrap_or((0, 0));
        let previous_ack = id
            .and_then(|id| self.ctx.checkpoints.get(id))
            .map(|cp| cp.acked);
        let (id, start) = match (id, resume) {
            (Some(id), Some(off)) => (id, off),
            _ => {
                let start = if self.startup
                    && self.ctx.first_start
                    && self.sources[source].config.start_at == StartAt::End
                {
                    self.end_of_last_line(&file, len)
                } else {
                    0
                };
                (self.new_id(dev, ino), start)
            }
        };
        self.ctx.checkpoints.upsert(
            id,
            FileCheckpoint {
                source: source_name,
                path: path.to_path_buf(),
                dev,
                ino,
                fp_len,
                fp_hash,
                // A resumed file keeps its acknowledged offset: what lies
                // between it and `start` is in the queue, not yet delivered.
                acked: previous_ack.unwrap_or(start),
                final_offset: None,
            },
        );
        tracing::debug!(path = %path.display(), offset = start, "tailing file");
        self.files.push(Tracked {
            id,
            source,
            label: Arc::from(path.to_string_lossy().as_ref()),
            path: path.to_path_buf(),
            file,
            dev,
            ino,
            fp_len,
            fp_hash,
            read_off: start,
            partial: Vec::new(),
            partial_truncated: false,
            pending: None,
            rotated: false,
            last_growth: Instant::now(),
            seen: true,
        });
        Some(self.files.len() - 1)
    }

    /// `start_at = end`: after the last complete line.
    fn end_of_last_line(&self, file: &File, len: u64) -> u64 {
        let from = len.saturating_sub(64 * 1024);
        let mut buf = vec![0u8; (len - from) as usize];
        if file.read_exact_at(&mut buf, from).is_err() {
            return len;
        }
        match buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => from + i as u64 + 1,
            None => from,
        }
    }

    /// Finds the checkpoint of this file: same device and inode, same
    /// first bytes, long enough, and a line end right before the offset.
    /// Returns the resume offset (acknowledged or already queued).
    fn match_checkpoint(
        &self,
        file: &File,
        dev: u64,
        ino: u64,
        len: u64,
        source: &str,
    ) -> (Option<u64>, Option<u64>) {
        let tracked: HashSet<u64> = self.files.iter().map(|f| f.id).collect();
        for (id, cp) in self.ctx.checkpoints.all() {
            if cp.dev != dev || cp.ino != ino || cp.source != source || tracked.contains(&id) {
                continue;
            }
            let same_start = cp.fp_len <= len
                && fingerprint(file, cp.fp_len)
                    .map(|(_, h)| h == cp.fp_hash)
                    .unwrap_or(false);
            let resume = cp.acked.max(self.ctx.queued.get(&id).copied().unwrap_or(0));
            let at_line_end = resume == 0 || {
                let mut b = [0u8; 1];
                resume <= len && file.read_exact_at(&mut b, resume - 1).is_ok() && b[0] == b'\n'
            };
            if same_start && resume <= len && at_line_end {
                return (Some(resume), Some(id));
            }
            // Same inode, other content: a new file (or a truncated one).
            self.ctx.checkpoints.remove(id);
        }
        (None, None)
    }

    /// At startup: files whose checkpoint names a path that now holds
    /// another file were rotated while Steward was stopped; find them by
    /// inode next to their old path (e.g. `access.log.1`) and drain them.
    fn resume_rotated_while_stopped(&mut self) {
        let tracked: HashSet<u64> = self.files.iter().map(|f| f.id).collect();
        for (id, cp) in self.ctx.checkpoints.all() {
            if tracked.contains(&id) {
                continue;
            }
            let Some(source) = self.sources.iter().position(|s| s.config.name == cp.source) else {
                self.ctx.checkpoints.remove(id);
                continue;
            };
            let dir = cp.path.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut found = None;
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if let Ok(m) = e.metadata() {
                        if m.dev() == cp.dev && m.ino() == cp.ino && m.is_file() {
                            found = Some((e.path(), m.len()));
                            break;
                        }
                    }
                }
            }
            let queued = self.ctx.queued.get(&id).copied().unwrap_or(0);
            let resume = cp.acked.max(queued);
            match found {
                Some((path, len)) if !is_compressed_name(&path) => {
                    let Ok(file) = File::open(&path) else {
                        continue;
                    };
                    let same = cp.fp_len <= len
                        && fingerprint(&file, cp.fp_len)
                            .map(|(_, h)| h == cp.fp_hash)
                            .unwrap_or(false);
                    if !same || is_compressed_content(&file) || resume > len {
                        self.ctx.checkpoints.remove(id);
                        continue;
                    }
                    tracing::info!(path = %path.display(), offset = resume, "draining a file rotated while Steward was stopped");
                    self.files.push(Tracked {
                        id,
                        source,
                        label: Arc::from(path.to_string_lossy().as_ref()),
                        path,
                        file,
                        dev: cp.dev,
                        ino: cp.ino,
                        fp_len: cp.fp_len,
                        fp_hash: cp.fp_hash,
                        read_off: resume,
                        partial: Vec::new(),
                        partial_truncated: false,
                        pending: None,
                        rotated: true,
                        last_growth: Instant::now(),
                        seen: false,
                    });
                }
                _ => {
                    if cp.final_offset.is_none_or(|f| f > resume) {
                        tracing::warn!(
                            path = %cp.path.display(),
                            "a file rotated while Steward was stopped is gone (compressed or deleted); its unread end is lost"
                        );
                    }
                    self.ctx.checkpoints.remove(id);
                }
            }
        }
    }

    /// Reads what is new in every file; true if any read hit its budget
    /// (more data waiting: don't sleep).
    fn read_all(&mut self) -> bool {
        let mut busy = false;
        let mut close = Vec::new();
        let now_ns = now_nanos();
        for idx in 0..self.files.len() {
            let len = match self.files[idx].file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            if self.check_truncated(idx, len) {
                continue;
            }
            let mut budget = READ_BUDGET;
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(CHUNK, 0);
            loop {
                let f = &mut self.files[idx];
                if f.read_off >= len || budget == 0 {
                    break;
                }
                let want = ((len - f.read_off) as usize).min(CHUNK);
                let n = match f.file.read_at(&mut buf[..want], f.read_off) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(path = %f.path.display(), "read failed: {e}");
                        break;
                    }
                };
                budget = budget.saturating_sub(n);
                f.last_growth = Instant::now();
                self.consume(idx, &buf[..n], now_ns);
            }
            self.buf = buf;
            if budget == 0 {
                busy = true;
            }
            self.refresh_fingerprint(idx, len);
            let f = &mut self.files[idx];
            // A multiline record with nothing after it for a while is whole.
            if f.pending
                .as_ref()
                .is_some_and(|p| p.updated.elapsed() >= MULTILINE_FLUSH)
            {
                let p = f.pending.take().expect("checked");
                self.emit_record(idx, &p.text, p.end, p.truncated, now_ns);
            }
            let f = &self.files[idx];
            if f.rotated && f.read_off >= len && f.last_growth.elapsed() >= ROTATED_GRACE {
                close.push(idx);
            }
        }
        for idx in close.into_iter().rev() {
            let mut f = self.files.swap_remove(idx);
            if let Some(p) = f.pending.take() {
                self.push_record(
                    f.source,
                    f.id,
                    &f.label,
                    &p.text,
                    p.end,
                    p.truncated,
                    now_ns,
                );
            }
            // An unterminated last line of a finished file is a record too.
            if !f.partial.is_empty() {
                let text = std::mem::take(&mut f.partial);
                self.push_record(
                    f.source,
                    f.id,
                    &f.label,
                    &text,
                    f.read_off,
                    f.partial_truncated,
                    now_ns,
                );
            }
            tracing::debug!(path = %f.path.display(), "finished a rotated file");
            self.ctx.checkpoints.finish(f.id, f.read_off);
        }
        busy
    }

    /// copytruncate: the file shrank, or its first bytes changed. Starts it
    /// over as a new file from offset 0.
    fn check_truncated(&mut self, idx: usize, len: u64) -> bool {
        let f = &self.files[idx];
        let shrank = len < f.read_off;
        let changed = !shrank
            && f.fp_len > 0
            && fingerprint(&f.file, f.fp_len)
                .map(|(_, h)| h != f.fp_hash)
                .unwrap_or(false);
        if !shrank && !changed {
            return false;
        }
        tracing::info!(path = %f.path.display(), "file was truncated (copytruncate); reading it from the start");
        let old_id = f.id;
        let old_off = f.read_off;
        let new_id = self.new_id(f.dev, f.ino);
        let (fp_len, fp_hash) = fingerprint(&f.file, len).unwrap_or((0, 0));
        // What the old content still had pending is lost with it.
        self.ctx.checkpoints.finish(old_id, old_off);
        let f = &mut self.files[idx];
        f.id = new_id;
        f.read_off = 0;
        f.partial.clear();
        f.partial_truncated = false;
        f.pending = None;
        f.fp_len = fp_len;
        f.fp_hash = fp_hash;
        let cp = FileCheckpoint {
            source: self.sources[f.source].config.name.clone(),
            path: f.path.clone(),
            dev: f.dev,
            ino: f.ino,
            fp_len,
            fp_hash,
            acked: 0,
            final_offset: None,
        };
        self.ctx.checkpoints.upsert(new_id, cp);
        false
    }

    /// A file first seen small gets a longer fingerprint as it grows.
    fn refresh_fingerprint(&mut self, idx: usize, len: u64) {
        let f = &mut self.files[idx];
        if f.fp_len >= FINGERPRINT_BYTES || len <= f.fp_len {
            return;
        }
        if let Ok((fp_len, fp_hash)) = fingerprint(&f.file, len) {
            f.fp_len = fp_len;
            f.fp_hash = fp_hash;
            if let Some(mut cp) = self.ctx.checkpoints.get(f.id) {
                cp.fp_len = fp_len;
                cp.fp_hash = fp_hash;
                cp.path = f.path.clone();
                self.ctx.checkpoints.upsert(f.id, cp);
            }
        }
    }

    /// Splits `data` (read at the file's `read_off`) into lines.
    fn consume(&mut self, idx: usize, data: &[u8], now_ns: u64) {
        let max = self.sources[self.files[idx].source].config.max_record_bytes;
        let base = self.files[idx].read_off;
        let mut start = 0usize;
        let mut lines = 0u64;
        while let Some(pos) = memchr_newline(&data[start..]) {
            let end = start + pos;
            let f = &mut self.files[idx];
            let line_bytes = &data[start..end];
            let line_end_off = base + end as u64 + 1;
            // A line wholly inside this chunk is used in place (no copy).
            let (text, truncated) = if f.partial.is_empty() && !f.partial_truncated {
                if line_bytes.len() > max {
                    (Cow::Borrowed(&line_bytes[..max]), true)
                } else {
                    (Cow::Borrowed(line_bytes), false)
                }
            } else {
                let room = max.saturating_sub(f.partial.len());
                let take = line_bytes.len().min(room);
                f.partial.extend_from_slice(&line_bytes[..take]);
                let truncated = f.partial_truncated || take < line_bytes.len();
                f.partial_truncated = false;
                (Cow::Owned(std::mem::take(&mut f.partial)), truncated)
            };
            self.line(idx, text, line_end_off, truncated, now_ns);
            lines += 1;
            start = end + 1;
        }
        let f = &mut self.files[idx];
        let rest = &data[start..];
        if !rest.is_empty() {
            let room = max.saturating_sub(f.partial.len());
            let take = rest.len().min(room);
            f.partial.extend_from_slice(&rest[..take]);
            if take < rest.len() {
                f.partial_truncated = true;
            }
        }
        f.read_off = base + data.len() as u64;
        let source = &self.sources[f.source].config.name;
        self.ctx.stats.lines_read.add(&[source], lines);
    }

    /// One complete line; joins multiline records.
    fn line(&mut self, idx: usize, text: Cow<'_, [u8]>, end: u64, truncated: bool, now_ns: u64) {
        let text = match text {
            Cow::Borrowed(b) => Cow::Borrowed(b.strip_suffix(b"\r").unwrap_or(b)),
            Cow::Owned(mut v) => {
                if v.last() == Some(&b'\r') {
                    v.pop();
                }
                Cow::Owned(v)
            }
        };
        let source = self.files[idx].source;
        let Some(re) = &self.sources[source].multiline else {
            if !text.is_empty() {
                self.emit_record(idx, &text, end, truncated, now_ns);
            }
            return;
        };
        let text = text.into_owned();
        let starts = re.is_match(&String::from_utf8_lossy(&text));
        let max = self.sources[source].config.max_record_bytes;
        let f = &mut self.files[idx];
        match f.pending.take() {
            Some(mut p) if !starts => {
                let room = max.saturating_sub(p.text.len());
                if room > 1 {
                    p.text.push(b'\n');
                    let take = text.len().min(room - 1);
                    p.text.extend_from_slice(&text[..take]);
                    p.truncated |= take < text.len() || truncated;
                } else {
                    p.truncated = true;
                }
                p.end = end;
                p.updated = Instant::now();
                f.pending = Some(p);
            }
            previous => {
                f.pending = Some(PendingRecord {
                    text,
                    end,
                    truncated,
                    updated: Instant::now(),
                });
                if let Some(p) = previous {
                    self.emit_record(idx, &p.text, p.end, p.truncated, now_ns);
                }
            }
        }
    }

    fn emit_record(&mut self, idx: usize, text: &[u8], end: u64, truncated: bool, now_ns: u64) {
        let f = &self.files[idx];
        let (source, id, label) = (f.source, f.id, Arc::clone(&f.label));
        self.push_record(source, id, &label, text, end, truncated, now_ns);
    }

    /// Parses one record and encodes it into its source's batch.
    #[allow(clippy::too_many_arguments)]
    fn push_record(
        &mut self,
        source: usize,
        file_id: u64,
        path: &Arc<str>,
        text: &[u8],
        end: u64,
        truncated: bool,
        now_ns: u64,
    ) {
        let s = &mut self.sources[source];
        if truncated {
            self.ctx.stats.records_truncated.add(&[&s.config.name], 1);
        }
        // Invalid UTF-8 becomes U+FFFD; the record is kept.
        let text = wire::text_of(text);
        let attributes = &mut self.attributes;
        let (meta, body) = parse::parse_encoded(s.config.parser, &text, attributes);
        if let (Some(a), true) = (meta.access, s.config.access_metrics) {
            s.access_batch.push(a);
        }
        if truncated {
            attributes.attribute("log.record.truncated", wire::Value::Bool(true));
        }
        let b = &mut s.batch;
        if b.started.is_none() {
            b.started = Some(Instant::now());
        }
        let file = match b.files.iter().position(|f| f.id == file_id) {
            Some(i) => i,
            None => {
                let scope = InstrumentationScope {
                    name: "steward.filelog".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    attributes: vec![kv("log.file.path", path)],
                    ..Default::default()
                };
                b.files.push(BatchFile {
                    id: file_id,
                    scope: prost::Message::encode_to_vec(&scope),
                    records: Vec::new(),
                });
                b.files.len() - 1
            }
        };
        let records = &mut b.files[file].records;
        let before = records.len();
        wire::put_log_record(
            records,
            &RecordParts {
                time_unix_nano: meta.time_unix_nano,
                observed_time_unix_nano: now_ns,
                severity_number: meta.severity,
                severity_text: meta.severity_text,
                body: match &body {
                    Some(any) => Body::Any(any),
                    None => Body::Str(&text),
                },
                attributes: &attributes.0,
            },
        );
        let size = records.len() - before;
        let p = b.positions.entry(file_id).or_insert(0);
        *p = (*p).max(end);
        b.records += 1;
        b.bytes += size;
        if b.records >= self.ctx.max_batch_records || b.bytes >= self.ctx.max_batch_bytes {
            self.flush_source(source);
        }
    }

    fn flush_due(&mut self, all: bool) {
        for i in 0..self.sources.len() {
            let due = self.sources[i]
                .batch
                .started
                .is_some_and(|s| all || s.elapsed() >= self.ctx.batch_timeout);
            if due {
                self.flush_source(i);
            }
        }
    }

    /// Encodes the source's batch and appends it to the queue. A queue
    /// error (disk full) blocks the tailer and is retried: nothing read is
    /// checkpointed before it is queued, so at worst it is read again.
    fn flush_source(&mut self, i: usize) {
        let s = &mut self.sources[i];
        if s.batch.records == 0 {
            return;
        }
        let b = &mut s.batch;
        b.files.retain(|f| !f.records.is_empty());
        let scopes: Vec<ScopePart<'_>> = b
            .files
            .iter()
            .map(|f| ScopePart {
                scope: &f.scope,
                records: &f.records,
            })
            .collect();
        let mut payload = std::mem::take(&mut s.payload);
        wire::put_logs_request(&mut payload, &s.resource, &scopes);
        let entry = Entry {
            signal: Signal::Logs,
            items: b.records as u32,
            positions: b
                .positions
                .iter()
                .map(|(&file_id, &offset)| FilePosition { file_id, offset })
                .collect(),
            payload,
        };
        // Buffers stay for the next batch, unless one outsized record
        // (up to max_record_bytes) grew them far past the batch size.
        let keep = 2 * self.ctx.max_batch_bytes.max(64 * 1024);
        for f in &mut b.files {
            f.records.clear();
            f.records.shrink_to(keep);
        }
        b.positions.clear();
        b.records = 0;
        b.bytes = 0;
        b.started = None;
        let access = std::mem::take(&mut s.access_batch);
        let name = s.config.name.clone();
        loop {
            match self.ctx.queue.append(&entry) {
                Ok(()) => {
                    self.ctx.access.record(&name, &access);
                    break;
                }
                Err(e) => {
                    tracing::error!(source = %name, "{e}");
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        let s = &mut self.sources[i];
        s.payload = entry.payload;
        s.payload.shrink_to(keep);
        s.access_batch = access;
        s.access_batch.clear();
    }
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', data)
}
