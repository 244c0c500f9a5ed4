//! Which files the tailer reads and which file each one is: matches the
//! sources' globs, recognises a file by device+inode *and* a hash of its
//! first bytes (so a reused inode or a truncated file is told apart, and
//! two files with identical first lines are still two files), follows
//! rotation (rename+create: the old file is drained; copytruncate: it is
//! restarted at 0; compressed rotations are never read; deleted files are
//! drained) and resumes each file from its checkpoint.
//!
//! The log directory belongs to the web application, which may be hostile:
//! a matched path is read only if it is a regular file itself. Symlinks are
//! never followed (a link to `/root/backup.key` would ship the key), FIFOs
//! and devices never opened in a way that blocks; each is skipped, counted
//! and logged once.

use std::collections::{HashMap, HashSet};
use std::fs::{File, FileType, Metadata, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::checkpoint::{Checkpoints, FileCheckpoint};
use crate::config::{SourceConfig, StartAt};
use crate::stats::Stats;

use super::record::Assembler;

/// Bytes hashed to fingerprint a file.
const FINGERPRINT_BYTES: u64 = 1024;

/// Suffixes of compressed rotations: never read (their content was read
/// before compression, or is gone for good).
const COMPRESSED_SUFFIXES: &[&str] = &[
    ".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z", ".br", ".lzma",
];

/// A skipped path is remembered (so not logged again) this long after it
/// was last seen.
const SKIP_MEMORY: Duration = Duration::from_secs(3600);

/// Why a path the globs matched is not read.
#[derive(Debug)]
enum Skip {
    /// Never followed: whoever owns the log directory could point it at
    /// any file root can read. To read a link's target, list the target.
    Symlink,
    /// A FIFO, socket or device (named): opening or reading one can block.
    NotRegular(&'static str),
    Unreadable(std::io::Error),
}

impl Skip {
    /// The `reason` label of `steward_telemetry_files_skipped_total`.
    fn reason(&self) -> &'static str {
        match self {
            Skip::Symlink => "symlink",
            Skip::NotRegular(_) => "not_regular_file",
            Skip::Unreadable(_) => "unreadable",
        }
    }
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Symlink => f.write_str(
                "it is a symbolic link, and links in a log directory are never followed; list the target's path in the source's `paths` to read it",
            ),
            Skip::NotRegular(kind) => write!(f, "it is a {kind}, not a regular file"),
            Skip::Unreadable(e) => write!(f, "it cannot be opened: {e}"),
        }
    }
}

fn file_kind(t: &FileType) -> &'static str {
    if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// What makes a file the same file: where it lives and how it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    /// Bytes hashed (the file's length when it was shorter).
    fp_len: u64,
    fp_hash: u64,
}

/// A file being read.
pub(super) struct Tracked {
    pub id: u64,
    pub source: usize,
    pub path: PathBuf,
    /// `path` as text, shared by the records of a batch.
    pub label: Arc<str>,
    pub file: File,
    identity: Identity,
    /// Bytes consumed from the file.
    pub read_off: u64,
    pub assembler: Assembler,
    /// No longer at a path the globs match (renamed away or deleted).
    pub rotated: bool,
    pub last_growth: Instant,
    /// Seen at a glob path during the current discovery pass.
    seen: bool,
}

/// The part of a source discovery needs.
struct Watched {
    name: String,
    paths: Vec<String>,
    exclude: Vec<glob::Pattern>,
    start_at: StartAt,
}

/// The files of all sources and what is known of their past.
pub(super) struct FileSet {
    watched: Vec<Watched>,
    pub files: Vec<Tracked>,
    /// Files recognised as compressed: (dev, ino).
    ignored: HashSet<(u64, u64)>,
    /// Checkpoint entries not yet matched to a file at startup.
    startup: bool,
    checkpoints: Arc<Checkpoints>,
    /// Per file id: the furthest offset held in the queue (not acknowledged).
    queued: HashMap<u64, u64>,
    /// True when no checkpoint file existed (Steward's first start).
    first_start: bool,
    hasher: std::collections::hash_map::RandomState,
    id_counter: u64,
    stats: Arc<Stats>,
    /// Skipped paths: the reason and when last seen, so each is logged
    /// and counted once rather than at every poll.
    skipped: HashMap<PathBuf, (&'static str, Instant)>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Hashes the first `min(len, FINGERPRINT_BYTES)` bytes: (bytes, hash).
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

/// The file still starts with the `fp_len` bytes hashed to `fp_hash`.
fn starts_with(file: &File, len: u64, fp_len: u64, fp_hash: u64) -> bool {
    fp_len <= len
        && fingerprint(file, fp_len)
            .map(|(_, h)| h == fp_hash)
            .unwrap_or(false)
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

/// Opens a log file without trusting its path: `O_NOFOLLOW` refuses a
/// symlink as the last component, `O_NONBLOCK` keeps a FIFO or device from
/// blocking the open, and the opened descriptor (not the path, which can
/// be swapped after discovery looked at it) must be a regular file.
/// `O_NONBLOCK` stays set: reads of a regular file ignore it.
fn open_log(path: &Path) -> Result<(File, Metadata), Skip> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Skip::Symlink,
            _ => Skip::Unreadable(e),
        })?;
    let meta = file.metadata().map_err(Skip::Unreadable)?;
    if !meta.is_file() {
        return Err(Skip::NotRegular(file_kind(&meta.file_type())));
    }
    Ok((file, meta))
}

/// `start_at = end`: the offset after the last complete line.
fn end_of_last_line(file: &File, len: u64) -> u64 {
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

impl FileSet {
    pub fn new(
        sources: &[SourceConfig],
        checkpoints: Arc<Checkpoints>,
        queued: HashMap<u64, u64>,
        first_start: bool,
        stats: Arc<Stats>,
    ) -> FileSet {
        let watched = sources
            .iter()
            .map(|s| Watched {
                name: s.name.clone(),
                paths: s.paths.clone(),
                exclude: s
                    .exclude
                    .iter()
                    .filter_map(|p| glob::Pattern::new(p).ok())
                    .collect(),
                start_at: s.start_at,
            })
            .collect();
        FileSet {
            watched,
            files: Vec::new(),
            ignored: HashSet::new(),
            startup: true,
            checkpoints,
            queued,
            first_start,
            hasher: std::collections::hash_map::RandomState::new(),
            id_counter: 0,
            stats,
            skipped: HashMap::new(),
        }
    }

    /// The number of files tracked per source, in source order.
    pub fn tracked_per_source(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.watched.len()];
        for f in &self.files {
            counts[f.source] += 1;
        }
        counts
    }

    fn new_id(&mut self, dev: u64, ino: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(dev);
        h.write_u64(ino);
        h.write_u64(now_nanos());
        h.write_u64(self.id_counter);
        self.id_counter += 1;
        h.finish()
    }

    /// Every (source, path) the globs match now, minus excluded and
    /// compressed names.
    fn matching_paths(&self) -> Vec<(usize, PathBuf)> {
        let mut found = Vec::new();
        for (i, s) in self.watched.iter().enumerate() {
            for pattern in &s.paths {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    if is_compressed_name(&path) || s.exclude.iter().any(|e| e.matches_path(&path))
                    {
                        continue;
                    }
                    found.push((i, path));
                }
            }
        }
        found
    }

    /// Matches the globs; starts tracking new files, notices rotations.
    pub fn discover(&mut self) {
        for f in &mut self.files {
            f.seen = false;
        }
        let found = self.matching_paths();
        let mut by_inode: HashMap<(u64, u64), usize> = HashMap::new();
        for (idx, f) in self.files.iter().enumerate() {
            by_inode.insert((f.identity.dev, f.identity.ino), idx);
        }
        for (source, path) in found {
            // The path's own type, not its target's: a symlink is skipped.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = meta.file_type();
            if kind.is_symlink() {
                self.skip(source, &path, Skip::Symlink);
                continue;
            }
            if kind.is_dir() {
                // A `*` matching a directory: no log, and nothing suspicious.
                continue;
            }
            if !kind.is_file() {
                self.skip(source, &path, Skip::NotRegular(file_kind(&kind)));
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
            if let Some(idx) = self.open(source, &path) {
                let id = self.files[idx].identity;
                by_inode.insert((id.dev, id.ino), idx);
            }
        }
        let now = Instant::now();
        self.skipped
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < SKIP_MEMORY);
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
    }

    /// Logs and counts a skipped path, unless it was already skipped for
    /// the same reason.
    fn skip(&mut self, source: usize, path: &Path, why: Skip) {
        let now = Instant::now();
        let reason = why.reason();
        if let Some((known, seen)) = self.skipped.get_mut(path) {
            if *known == reason {
                *seen = now;
                return;
            }
        }
        self.skipped.insert(path.to_path_buf(), (reason, now));
        let name = &self.watched[source].name;
        self.stats.files_skipped.add(&[name, reason], 1);
        // `?path`: the file name is the directory owner's, quoted so it
        // cannot forge log lines.
        tracing::warn!(source = %name, path = ?path, reason, "not reading a file the globs match: {why}");
    }

    /// Opens a newly seen file; resumes from its checkpoint when its
    /// identity matches one.
    fn open(&mut self, source: usize, path: &Path) -> Option<usize> {
        let (file, meta) = match open_log(path) {
            Ok(opened) => opened,
            Err(why) => {
                self.skip(source, path, why);
                return None;
            }
        };
        let (dev, ino, len) = (meta.dev(), meta.ino(), meta.len());
        if is_compressed_content(&file) {
            self.ignored.insert((dev, ino));
            return None;
        }
        let source_name = self.watched[source].name.clone();
        let resumed = self.match_checkpoint(&file, dev, ino, len, &source_name);
        let (fp_len, fp_hash) = fingerprint(&file, len).unwrap_or((0, 0));
        let previous_ack = resumed
            .and_then(|(id, _)| self.checkpoints.get(id))
            .map(|cp| cp.acked);
        let (id, start) = match resumed {
            Some(found) => found,
            None => {
                let start = if self.startup
                    && self.first_start
                    && self.watched[source].start_at == StartAt::End
                {
                    end_of_last_line(&file, len)
                } else {
                    0
                };
                (self.new_id(dev, ino), start)
            }
        };
        self.checkpoints.upsert(
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
        if resumed.is_none() {
            // A file seen for the first time (a rotation's new file): its
            // checkpoint goes to disk before any of its lines are queued.
            // Queued records name the file by its checkpoint id; were the
            // process killed before the next periodic save, a restart
            // would find queued records of no known file and read the
            // file again from its start (a CI run counted 2,999
            // duplicates that way).
            if let Err(e) = self.checkpoints.save() {
                tracing::error!("{e}");
            }
        }
        tracing::debug!(path = %path.display(), offset = start, "tailing file");
        self.files.push(Tracked {
            id,
            source,
            label: Arc::from(path.to_string_lossy().as_ref()),
            path: path.to_path_buf(),
            file,
            identity: Identity {
                dev,
                ino,
                fp_len,
                fp_hash,
            },
            read_off: start,
            assembler: Assembler::default(),
            rotated: false,
            last_growth: Instant::now(),
            seen: true,
        });
        Some(self.files.len() - 1)
    }

    /// Finds the checkpoint of this file: same device and inode, same
    /// first bytes, long enough, and a line end right before the offset.
    /// Returns its id and the resume offset (acknowledged or already queued).
    fn match_checkpoint(
        &self,
        file: &File,
        dev: u64,
        ino: u64,
        len: u64,
        source: &str,
    ) -> Option<(u64, u64)> {
        let tracked: HashSet<u64> = self.files.iter().map(|f| f.id).collect();
        for (id, cp) in self.checkpoints.all() {
            if cp.dev != dev || cp.ino != ino || cp.source != source || tracked.contains(&id) {
                continue;
            }
            let same_start = starts_with(file, len, cp.fp_len, cp.fp_hash);
            let resume = cp.acked.max(self.queued.get(&id).copied().unwrap_or(0));
            let at_line_end = resume == 0 || {
                let mut b = [0u8; 1];
                resume <= len && file.read_exact_at(&mut b, resume - 1).is_ok() && b[0] == b'\n'
            };
            if same_start && resume <= len && at_line_end {
                return Some((id, resume));
            }
            // Same inode, other content: a new file (or a truncated one).
            self.checkpoints.remove(id);
        }
        None
    }

    /// At startup: files whose checkpoint names a path that now holds
    /// another file were rotated while Steward was stopped; find them by
    /// inode next to their old path (e.g. `access.log.1`) and drain them.
    fn resume_rotated_while_stopped(&mut self) {
        let tracked: HashSet<u64> = self.files.iter().map(|f| f.id).collect();
        for (id, cp) in self.checkpoints.all() {
            if tracked.contains(&id) {
                continue;
            }
            let Some(source) = self.watched.iter().position(|s| s.name == cp.source) else {
                self.checkpoints.remove(id);
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
            let queued = self.queued.get(&id).copied().unwrap_or(0);
            let resume = cp.acked.max(queued);
            match found {
                Some((path, _)) if !is_compressed_name(&path) => {
                    let Ok((file, meta)) = open_log(&path) else {
                        continue;
                    };
                    if (meta.dev(), meta.ino()) != (cp.dev, cp.ino) {
                        // Replaced since it was listed.
                        continue;
                    }
                    let len = meta.len();
                    let same = starts_with(&file, len, cp.fp_len, cp.fp_hash);
                    if !same || is_compressed_content(&file) || resume > len {
                        self.checkpoints.remove(id);
                        continue;
                    }
                    tracing::info!(path = %path.display(), offset = resume, "draining a file rotated while Steward was stopped");
                    self.files.push(Tracked {
                        id,
                        source,
                        label: Arc::from(path.to_string_lossy().as_ref()),
                        path,
                        file,
                        identity: Identity {
                            dev: cp.dev,
                            ino: cp.ino,
                            fp_len: cp.fp_len,
                            fp_hash: cp.fp_hash,
                        },
                        read_off: resume,
                        assembler: Assembler::default(),
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
                    self.checkpoints.remove(id);
                }
            }
        }
    }

    /// copytruncate: the file shrank, or its first bytes changed. Starts it
    /// over as a new file from offset 0.
    pub fn restart_if_truncated(&mut self, idx: usize, len: u64) {
        let f = &self.files[idx];
        let shrank = len < f.read_off;
        let changed = !shrank
            && f.identity.fp_len > 0
            && fingerprint(&f.file, f.identity.fp_len)
                .map(|(_, h)| h != f.identity.fp_hash)
                .unwrap_or(false);
        if !shrank && !changed {
            return;
        }
        tracing::info!(path = %f.path.display(), "file was truncated (copytruncate); reading it from the start");
        let (old_id, old_off) = (f.id, f.read_off);
        let (dev, ino) = (f.identity.dev, f.identity.ino);
        let (fp_len, fp_hash) = fingerprint(&f.file, len).unwrap_or((0, 0));
        let new_id = self.new_id(dev, ino);
        // What the old content still had pending is lost with it.
        self.checkpoints.finish(old_id, old_off);
        let f = &mut self.files[idx];
        f.id = new_id;
        f.read_off = 0;
        f.assembler.reset();
        f.identity.fp_len = fp_len;
        f.identity.fp_hash = fp_hash;
        let cp = FileCheckpoint {
            source: self.watched[f.source].name.clone(),
            path: f.path.clone(),
            dev,
            ino,
            fp_len,
            fp_hash,
            acked: 0,
            final_offset: None,
        };
        self.checkpoints.upsert(new_id, cp);
    }

    /// A file first seen small gets a longer fingerprint as it grows.
    pub fn refresh_fingerprint(&mut self, idx: usize, len: u64) {
        let f = &mut self.files[idx];
        if f.identity.fp_len >= FINGERPRINT_BYTES || len <= f.identity.fp_len {
            return;
        }
        if let Ok((fp_len, fp_hash)) = fingerprint(&f.file, len) {
            f.identity.fp_len = fp_len;
            f.identity.fp_hash = fp_hash;
            if let Some(mut cp) = self.checkpoints.get(f.id) {
                cp.fp_len = fp_len;
                cp.fp_hash = fp_hash;
                cp.path = f.path.clone();
                self.checkpoints.upsert(f.id, cp);
            }
        }
    }

    /// Stops reading a file (rotated away and drained); its checkpoint
    /// goes once what was read of it is acknowledged.
    pub fn release(&mut self, idx: usize) -> Tracked {
        let f = self.files.swap_remove(idx);
        self.checkpoints.finish(f.id, f.read_off);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file set for one source `app` reading `<dir>/*.log`, minus `*.skip.log`.
    fn file_set(dir: &Path, checkpoints: &Arc<Checkpoints>, start_at: &str) -> FileSet {
        let source: SourceConfig = toml::from_str(&format!(
            "name = \"app\"\npaths = [\"{}/*.log\"]\nexclude = [\"{}/*.skip.log\"]\nstart_at = \"{start_at}\"\n",
            dir.display(),
            dir.display()
        ))
        .unwrap();
        FileSet::new(
            &[source],
            Arc::clone(checkpoints),
            HashMap::new(),
            true,
            Arc::new(Stats::default()),
        )
    }

    fn checkpoints(dir: &Path) -> Arc<Checkpoints> {
        Arc::new(Checkpoints::load(&dir.join("checkpoints.json")).unwrap().0)
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    fn tracked(set: &FileSet) -> Vec<u64> {
        let mut v: Vec<u64> = set.files.iter().map(|f| f.identity.ino).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn fingerprint_tells_files_apart_by_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "first line\nsecond\n").unwrap();
        let fa = File::open(&a).unwrap();
        let (n, h) = fingerprint(&fa, 18).unwrap();
        assert_eq!(n, 18);
        assert!(starts_with(&fa, 18, n, h));
        assert!(starts_with(&fa, 18, 6, fingerprint(&fa, 6).unwrap().1));
        std::fs::write(&a, "other line\nsecond\n").unwrap();
        assert!(!starts_with(&fa, 18, n, h), "same inode, other content");
        assert!(!starts_with(&fa, 10, n, h), "shorter than the hashed part");
    }

    #[test]
    fn compressed_files_are_recognised_by_name_and_by_content() {
        assert!(is_compressed_name(Path::new("/l/access.log.2.gz")));
        assert!(is_compressed_name(Path::new("/l/access.log.zst")));
        assert!(!is_compressed_name(Path::new("/l/access.log.1")));
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("x");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert!(is_compressed_content(&File::open(&gz).unwrap()));
        std::fs::write(&gz, "plain\n").unwrap();
        assert!(!is_compressed_content(&File::open(&gz).unwrap()));
    }

    #[test]
    fn end_of_last_line_skips_an_unterminated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, "one\ntwo\nthr").unwrap();
        assert_eq!(end_of_last_line(&File::open(&p).unwrap(), 11), 8);
        std::fs::write(&p, "no newline").unwrap();
        assert_eq!(end_of_last_line(&File::open(&p).unwrap(), 10), 0);
    }

    #[test]
    fn discovery_tracks_matching_files_and_marks_renamed_ones_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let app = logs.join("app.log");
        std::fs::write(&app, "a\n").unwrap();
        std::fs::write(logs.join("old.log.gz"), "x").unwrap();
        std::fs::write(logs.join("noise.skip.log"), "x\n").unwrap();
        std::fs::write(logs.join("packed.log"), [0x28, 0xb5, 0x2f, 0xfd]).unwrap();
        let cps = checkpoints(dir.path());
        let mut set = file_set(&logs, &cps, "beginning");
        set.discover();
        assert_eq!(tracked(&set), vec![inode(&app)]);
        assert!(!set.files[0].rotated);
        assert_eq!(set.tracked_per_source(), vec![1]);

        std::fs::rename(&app, logs.join("app.log.1")).unwrap();
        std::fs::write(&app, "new\n").unwrap();
        set.discover();
        assert_eq!(set.files.len(), 2);
        let old = set
            .files
            .iter()
            .find(|f| f.rotated)
            .expect("the renamed file");
        assert_ne!(old.identity.ino, inode(&app));
        // Released, its checkpoint waits for the acknowledgement of what was read.
        let idx = set.files.iter().position(|f| f.rotated).unwrap();
        set.files[idx].read_off = 2;
        let id = set.files[idx].id;
        set.release(idx);
        assert_eq!(cps.get(id).and_then(|c| c.final_offset), Some(2));
        assert_eq!(tracked(&set), vec![inode(&app)]);
    }

    #[test]
    fn start_at_end_on_first_start_begins_after_the_last_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), "old\nolder\npart").unwrap();
        let mut set = file_set(dir.path(), &checkpoints(dir.path()), "end");
        set.discover();
        assert_eq!(set.files[0].read_off, 10);
    }

    #[test]
    fn a_restart_resumes_from_the_checkpoint_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.log");
        std::fs::write(&app, "one\ntwo\n").unwrap();
        let cps = checkpoints(dir.path());
        let mut set = file_set(dir.path(), &cps, "beginning");
        set.discover();
        let id = set.files[0].id;
        cps.advance(id, 4);
        cps.save().unwrap();

        let cps = checkpoints(dir.path());
        let mut again = file_set(dir.path(), &cps, "beginning");
        again.discover();
        assert_eq!((again.files[0].id, again.files[0].read_off), (id, 4));

        // Same inode, other first bytes: a new file, read from 0.
        std::fs::write(&app, "ONE\ntwo\n").unwrap();
        let cps = checkpoints(dir.path());
        let mut third = file_set(dir.path(), &cps, "beginning");
        third.discover();
        assert_ne!(third.files[0].id, id);
        assert_eq!(third.files[0].read_off, 0);
    }

    #[test]
    fn a_truncated_file_starts_over_under_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.log");
        std::fs::write(&app, "one\ntwo\n").unwrap();
        let cps = checkpoints(dir.path());
        let mut set = file_set(dir.path(), &cps, "beginning");
        set.discover();
        let id = set.files[0].id;
        set.files[0].read_off = 8;
        // Not truncated: nothing changes.
        set.restart_if_truncated(0, 8);
        assert_eq!((set.files[0].id, set.files[0].read_off), (id, 8));
        // copytruncate, then new lines.
        std::fs::write(&app, "x\n").unwrap();
        set.restart_if_truncated(0, 2);
        assert_ne!(set.files[0].id, id);
        assert_eq!(set.files[0].read_off, 0);
        assert_eq!(cps.get(id).and_then(|c| c.final_offset), Some(8));
    }

    #[test]
    fn a_growing_file_gets_a_longer_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.log");
        std::fs::write(&app, "a\n").unwrap();
        let cps = checkpoints(dir.path());
        let mut set = file_set(dir.path(), &cps, "beginning");
        set.discover();
        assert_eq!(set.files[0].identity.fp_len, 2);
        std::fs::write(&app, "a\n".repeat(1000)).unwrap();
        set.refresh_fingerprint(0, 2000);
        assert_eq!(set.files[0].identity.fp_len, FINGERPRINT_BYTES);
        let id = set.files[0].id;
        assert_eq!(cps.get(id).map(|c| c.fp_len), Some(FINGERPRINT_BYTES));
    }
}

#[cfg(test)]
mod hostile_directory {
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Runs `f` on its own thread; `None` if it did not return within
    /// `limit` (a regression that blocks fails the test instead of hanging it).
    fn within<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(limit).ok()
    }

    fn mkfifo(path: &Path) {
        let status = Command::new("mkfifo").arg(path).status().unwrap();
        assert!(status.success(), "mkfifo {}", path.display());
    }

    /// A file set for one source `app` reading `<dir>/*.log`.
    fn file_set(dir: &Path, state: &Path, stats: &Arc<Stats>) -> FileSet {
        let source: SourceConfig = toml::from_str(&format!(
            "name = \"app\"\npaths = [\"{}/*.log\"]\n",
            dir.display()
        ))
        .unwrap();
        let (checkpoints, _) = Checkpoints::load(&state.join("checkpoints.json")).unwrap();
        FileSet::new(
            &[source],
            Arc::new(checkpoints),
            HashMap::new(),
            false,
            Arc::clone(stats),
        )
    }

    fn inode(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    fn tracked(set: &FileSet) -> Vec<u64> {
        set.files.iter().map(|f| f.identity.ino).collect()
    }

    fn skipped(stats: &Stats, reason: &str) -> u64 {
        stats
            .files_skipped
            .snapshot()
            .into_iter()
            .find(|(k, _)| k == &["app".to_string(), reason.to_string()])
            .map(|(_, n)| n)
            .unwrap_or(0)
    }

    /// A log directory the web application owns, and a secret it must
    /// not be able to read through Steward.
    struct Hostile {
        _tmp: tempfile::TempDir,
        logs: PathBuf,
        state: PathBuf,
        secret: PathBuf,
    }

    fn hostile() -> Hostile {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let secret = tmp.path().join("backup.key");
        std::fs::write(&secret, "AGE-SECRET-KEY-1XYZ\n").unwrap();
        Hostile {
            logs,
            state,
            secret,
            _tmp: tmp,
        }
    }

    #[test]
    fn a_symlink_named_like_a_log_is_not_read_and_is_counted_once() {
        let h = hostile();
        let app = h.logs.join("app.log");
        std::fs::write(&app, "ok\n").unwrap();
        std::os::unix::fs::symlink(&h.secret, h.logs.join("x.log")).unwrap();
        let stats = Arc::new(Stats::default());
        let mut set = file_set(&h.logs, &h.state, &stats);
        for _ in 0..3 {
            set.discover();
        }
        assert_eq!(tracked(&set), vec![inode(&app)]);
        assert_eq!(skipped(&stats, "symlink"), 1, "once per path, not per pass");
    }

    #[test]
    fn a_symlink_swapped_in_by_rotation_is_not_followed() {
        let h = hostile();
        let log = h.logs.join("x.log");
        std::fs::write(&log, "before rotation\n").unwrap();
        let stats = Arc::new(Stats::default());
        let mut set = file_set(&h.logs, &h.state, &stats);
        set.discover();
        let original = inode(&log);
        assert_eq!(tracked(&set), vec![original]);
        // Rotation by rename, and a link where the new file should be.
        std::fs::rename(&log, h.logs.join("x.log.1")).unwrap();
        std::os::unix::fs::symlink(&h.secret, &log).unwrap();
        set.discover();
        assert_eq!(tracked(&set), vec![original], "the secret is not tracked");
        assert!(set.files[0].rotated, "the renamed file is drained");
        assert_eq!(skipped(&stats, "symlink"), 1);
    }

    #[test]
    fn opening_a_fifo_does_not_block() {
        let h = hostile();
        let fifo = h.logs.join("p.log");
        mkfifo(&fifo);
        // The path may be swapped for a FIFO after discovery looked at it:
        // the open itself must not wait for a writer.
        let opened = within(Duration::from_secs(5), move || open_log(&fifo).is_err());
        assert_eq!(opened, Some(true), "open blocked on a FIFO or accepted it");
    }

    #[test]
    fn a_fifo_named_like_a_log_does_not_stop_other_files_being_tailed() {
        let h = hostile();
        mkfifo(&h.logs.join("a.log"));
        let app = h.logs.join("b.log");
        std::fs::write(&app, "ok\n").unwrap();
        let stats = Arc::new(Stats::default());
        let mut set = file_set(&h.logs, &h.state, &stats);
        let (set, stats) = within(Duration::from_secs(10), move || {
            set.discover();
            set.discover();
            (set, stats)
        })
        .expect("discovery blocked on a FIFO");
        assert_eq!(tracked(&set), vec![inode(&app)]);
        assert_eq!(skipped(&stats, "not_regular_file"), 1);
    }

    #[test]
    fn open_log_refuses_a_symlink_even_when_called_directly() {
        let h = hostile();
        let link = h.logs.join("x.log");
        std::os::unix::fs::symlink(&h.secret, &link).unwrap();
        assert!(matches!(open_log(&link), Err(Skip::Symlink)));
        let regular = h.logs.join("app.log");
        std::fs::write(&regular, "ok\n").unwrap();
        assert!(open_log(&regular).is_ok());
    }
}
