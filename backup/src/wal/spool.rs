//! The spool of async WAL archiving (`archive_async = true`): `wal push`
//! copies the file PostgreSQL hands it into `spool_dir` (synced, 0600)
//! and returns in milliseconds; the running agent uploads each spooled
//! file through the pipeline ([`archive::push_bytes`]) and removes it
//! only once every target holds it. The spool is bounded by
//! `spool_max_bytes`: a push that would go over it fails, so PostgreSQL
//! keeps the segment in `pg_wal` and retries: nothing is dropped (unlike
//! a queue that discards WAL when full, which loses the chain silently).
//!
//! Files in the spool carry their WAL name and nothing else; a push is
//! written under a temporary name (`.NAME.PID.spool-tmp`), synced, then
//! hard-linked to its name, which fails when the name exists: a file
//! already spooled is never replaced, and one with different content makes
//! the push fail, as the archive itself does.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustix::fs::OFlags;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::pipeline::PipelineSettings;
use crate::target::StorageTarget;
use crate::wal::archive::{self, MAX_WAL_BYTES};
use crate::wal::names::WalName;

/// Suffix of a push's temporary file.
const TEMP_SUFFIX: &str = ".spool-tmp";
/// A temporary file older than this belongs to a push that was killed
/// (a push writes one segment in well under a second).
const STALE_TEMP: Duration = Duration::from_secs(15 * 60);

/// What a push into the spool did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spooled {
    /// Copied now (bytes).
    Now(u64),
    /// The same content was already spooled (a push whose exit status
    /// PostgreSQL did not see).
    AlreadySpooled,
}

/// What the spool holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

fn local(doing: String, path: &Path, e: std::io::Error, hint: &str) -> Error {
    Error::Local {
        doing,
        path: path.to_path_buf(),
        source: e,
        hint: hint.to_string(),
    }
}

fn no_follow() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32);
    o
}

/// Creates `dir` (0700) when missing, then checks it: a directory, not a
/// symlink, and not writable by every user (who could plant WAL in it).
pub fn prepare_dir(dir: &Path, job: &str) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        crate::private_fs::create_dir_all(dir).map_err(|e| {
            local(
                format!("job {job}: cannot create the WAL spool"),
                dir,
                e,
                "; create it (0700) for archive_command's user, see README, asynchronous archiving",
            )
        })?;
    }
    check_dir(dir, job)
}

/// The checks of [`prepare_dir`] without creating anything.
pub fn check_dir(dir: &Path, job: &str) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| {
        local(
            format!("job {job}: the WAL spool"),
            dir,
            e,
            "; check spool_dir",
        )
    })?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(Error::Config(format!(
            "job {job}: the WAL spool {} is not a directory (a symlink is refused); point spool_dir at a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(Error::Config(format!(
            "job {job}: the WAL spool {} is writable by every user, who could plant WAL files in it; chmod o-w it (0700)",
            dir.display()
        )));
    }
    Ok(())
}

/// Bytes and files in the spool (temporary files of pushes included:
/// they take the same disk).
pub fn usage(dir: &Path) -> Result<Usage> {
    let mut u = Usage::default();
    for entry in read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if let Ok(meta) = entry.metadata() {
            if meta.is_file() {
                u.bytes += meta.len();
                u.files += 1;
            }
        }
    }
    Ok(u)
}

fn read_dir(dir: &Path) -> Result<std::fs::ReadDir> {
    std::fs::read_dir(dir).map_err(|e| {
        local(
            "reading the WAL spool".into(),
            dir,
            e,
            "; check spool_dir and its owner",
        )
    })
}

/// Opens a regular file of at most [`MAX_WAL_BYTES`], never through a
/// symlink; returns it with its size.
fn open_wal(path: &Path, what: &str) -> Result<(std::fs::File, u64)> {
    let fail = |e: std::io::Error| local(format!("reading {what}"), path, e, "");
    let file = no_follow().open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(Error::Source(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_WAL_BYTES {
        return Err(too_big(what, path));
    }
    Ok((file, meta.len()))
}

fn too_big(what: &str, path: &Path) -> Error {
    Error::Source(format!(
        "{what} {} holds more bytes than any WAL file",
        path.display()
    ))
}

/// Reads at most [`MAX_WAL_BYTES`] of a regular file, never through a
/// symlink.
fn read_wal(path: &Path, what: &str) -> Result<Vec<u8>> {
    let fail = |e: std::io::Error| local(format!("reading {what}"), path, e, "");
    let (file, len) = open_wal(path, what)?;
    let meta_len = len;
    let mut data = Vec::with_capacity(meta_len as usize);
    file.take(MAX_WAL_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(fail)?;
    if data.len() as u64 > MAX_WAL_BYTES {
        return Err(too_big(what, path));
    }
    Ok(data)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `wal push` in async mode: copies the WAL file at `path` into `dir`
/// unless the spool would then hold more than `max_bytes`. `Ok` only once
/// the copy and its directory entry are on disk.
pub fn spool(path: &Path, job: &str, dir: &Path, max_bytes: u64) -> Result<(WalName, Spooled)> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Config(format!("{}: no file name", path.display())))?;
    let name = WalName::parse(file_name)?;
    prepare_dir(dir, job)?;
    let what = format!("job {job}: WAL file {name} at");
    let (mut source, len) = open_wal(path, &what)?;
    let dest = dir.join(name.as_str());
    if std::fs::symlink_metadata(&dest).is_ok() {
        // Pushed before (PostgreSQL retries after a crash): the same
        // content is success, other content an error. Rare, so read whole.
        let data = read_wal(path, &what)?;
        if let Some(found) = already_spooled(&dest, &name, job, &data)? {
            return Ok((name, found));
        }
    }
    let used = usage(dir)?;
    if used.bytes + len > max_bytes {
        return Err(Error::Other(format!(
            "job {job}: the WAL spool {} is full ({} bytes in {} file(s), spool_max_bytes = {max_bytes}): {name} ({len} bytes) is not archived; PostgreSQL keeps it in pg_wal and retries. The running agent empties the spool: check that `steward agent` runs and its log for upload errors",
            dir.display(),
            used.bytes,
            used.files,
        )));
    }
    let tmp = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<u64> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::private_fs::FILE_MODE)
            .custom_flags((OFlags::NOFOLLOW | OFlags::CLOEXEC).bits() as i32)
            .open(&tmp)?;
        // File to file: std copies in the kernel (copy_file_range), with
        // no 16 MiB buffer to fault in and fill in this process.
        let copied = std::io::copy(&mut (&mut source).take(MAX_WAL_BYTES + 1), &mut out)?;
        if copied > MAX_WAL_BYTES {
            return Err(std::io::Error::other(
                "the file holds more bytes than any WAL file",
            ));
        }
        out.sync_all()?;
        std::fs::hard_link(&tmp, &dest)?;
        Ok(copied)
    })();
    let _ = std::fs::remove_file(&tmp);
    let copied = match written {
        Ok(n) => n,
        // Another push of the same name got there in between.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let data = read_wal(path, &what)?;
            if let Some(found) = already_spooled(&dest, &name, job, &data)? {
                return Ok((name, found));
            }
            data.len() as u64
        }
        Err(e) => {
            return Err(local(
                format!("job {job}: spooling WAL file {name} into"),
                dir,
                e,
                "; check the spool's owner and free space",
            ))
        }
    };
    sync_dir(dir).map_err(|e| local(format!("job {job}: syncing the WAL spool"), dir, e, ""))?;
    Ok((name, Spooled::Now(copied)))
}

/// `Some(AlreadySpooled)` when `dest` holds `data`, an error when it
/// holds other content, `None` when it does not exist. The bytes are
/// compared, and hashed only for the error: the usual push (nothing
/// spooled under its name) hashes nothing, the agent's upload does.
fn already_spooled(dest: &Path, name: &WalName, job: &str, data: &[u8]) -> Result<Option<Spooled>> {
    if std::fs::symlink_metadata(dest).is_err() {
        return Ok(None);
    }
    let there = read_wal(dest, &format!("job {job}: spooled WAL file {name} at"))?;
    if there == data {
        return Ok(Some(Spooled::AlreadySpooled));
    }
    Err(Error::Other(format!(
        "job {job}: {name} is already in the WAL spool {} with different content (sha256 {}; this file's is {}); nothing was replaced. Two servers may be archiving into job {job}: give each its own job",
        dest.display(),
        hex::encode(Sha256::digest(&there)),
        hex::encode(Sha256::digest(data))
    )))
}

/// The WAL files waiting in the spool, oldest first (by name: timeline,
/// then position). Temporary files of killed pushes older than
/// `STALE_TEMP` are removed; other names are left alone.
pub fn pending(dir: &Path) -> Result<Vec<WalName>> {
    let mut names = Vec::new();
    let now = SystemTime::now();
    for entry in read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if file_name.starts_with('.') && file_name.ends_with(TEMP_SUFFIX) {
            let age = now
                .duration_since(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime().max(0) as u64),
                )
                .unwrap_or_default();
            if age > STALE_TEMP {
                let _ = std::fs::remove_file(entry.path());
            }
            continue;
        }
        if let Ok(name) = WalName::parse(&file_name) {
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(names)
}

/// The agent's figures for one job's spool (read at scrape time).
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// WAL files stored on every target from the spool.
    pub archived_files: AtomicU64,
    /// Their plaintext bytes.
    pub archived_bytes: AtomicU64,
    /// Upload rounds that stopped on an error (retried).
    pub failures: AtomicU64,
    /// Unix time of the last file archived (0: none yet).
    pub last_archived_at: AtomicI64,
    pub last_archived: Mutex<Option<String>>,
    /// What the spool held at the last look.
    pub spool_bytes: AtomicU64,
    pub spool_files: AtomicU64,
    /// Unix time of the oldest file still in the spool at the last look
    /// (0: empty).
    pub oldest_pending_at: AtomicI64,
    pub last_error: Mutex<Option<String>>,
}

impl SpoolStats {
    fn note_usage(&self, dir: &Path) {
        if let Ok(u) = usage(dir) {
            self.spool_bytes.store(u.bytes, Ordering::Relaxed);
            self.spool_files.store(u.files, Ordering::Relaxed);
        }
    }
}

/// Where to drain one job's spool to.
pub struct Drain {
    pub job: String,
    pub host: String,
    pub dir: PathBuf,
    pub targets: Vec<(String, Result<Arc<dyn StorageTarget>>)>,
    pub settings: PipelineSettings,
}

/// One pass over the spool: uploads every pending file in order and
/// removes each once every target holds it. Stops at the first file that
/// cannot be archived (it stays, and the pass is retried): later files
/// are kept too, so the archive fills in order. Returns the files
/// archived.
pub async fn drain_once(d: &Drain, stats: &SpoolStats) -> Result<u64> {
    let dir = d.dir.clone();
    let job = d.job.clone();
    let names = tokio::task::spawn_blocking(move || {
        check_dir(&dir, &job)?;
        pending(&dir)
    })
    .await
    .map_err(|e| Error::Internal(format!("spool listing task: {e}")))??;
    let oldest = names
        .first()
        .and_then(|n| std::fs::symlink_metadata(d.dir.join(n.as_str())).ok())
        .map(|m| m.mtime())
        .unwrap_or(0);
    stats.oldest_pending_at.store(oldest, Ordering::Relaxed);
    stats.note_usage(&d.dir);
    let mut archived = 0;
    for name in names {
        let path = d.dir.join(name.as_str());
        let what = format!("job {}: spooled WAL file {name} at", d.job);
        let data = {
            let (path, what) = (path.clone(), what.clone());
            tokio::task::spawn_blocking(move || read_wal(&path, &what))
                .await
                .map_err(|e| Error::Internal(format!("spool read task: {e}")))??
        };
        let bytes = data.len() as u64;
        archive::push_bytes(&name, data, &d.host, &d.job, &d.targets, &d.settings).await?;
        std::fs::remove_file(&path).map_err(|e| {
            local(
                format!(
                    "job {}: {name} is archived, but removing it from the spool failed:",
                    d.job
                ),
                &path,
                e,
                "; the agent must be able to write spool_dir (README, asynchronous archiving)",
            )
        })?;
        let _ = sync_dir(&d.dir);
        archived += 1;
        stats.archived_files.fetch_add(1, Ordering::Relaxed);
        stats.archived_bytes.fetch_add(bytes, Ordering::Relaxed);
        stats
            .last_archived_at
            .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
        if let Ok(mut g) = stats.last_archived.lock() {
            *g = Some(name.to_string());
        }
        stats.note_usage(&d.dir);
    }
    stats.oldest_pending_at.store(0, Ordering::Relaxed);
    Ok(archived)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: &str = "000000010000000000000003";

    fn wal(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn spools_once_refuses_other_content_and_stops_when_full() {
        let pg = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let spool_dir = root.path().join("spool");
        let seg = wal(pg.path(), SEG, &[7u8; 1000]);

        let (name, got) = spool(&seg, "db", &spool_dir, 2500).unwrap();
        assert_eq!((name.as_str(), got), (SEG, Spooled::Now(1000)));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&spool_dir), 0o700);
        assert_eq!(mode(&spool_dir.join(SEG)), 0o600);
        // The same content again (PostgreSQL did not see the exit status).
        assert_eq!(
            spool(&seg, "db", &spool_dir, 2500).unwrap().1,
            Spooled::AlreadySpooled
        );
        // Different content under the same name: refused, nothing replaced.
        std::fs::write(&seg, [8u8; 1000]).unwrap();
        let e = spool(&seg, "db", &spool_dir, 2500).unwrap_err().to_string();
        assert!(e.contains("different content"), "{e}");
        assert_eq!(std::fs::read(spool_dir.join(SEG)).unwrap(), vec![7u8; 1000]);

        // Full: 1000 + 1000 fits in 2500, a third does not.
        let next = wal(pg.path(), "000000010000000000000004", &[1u8; 1000]);
        spool(&next, "db", &spool_dir, 2500).unwrap();
        let third = wal(pg.path(), "000000010000000000000005", &[2u8; 1000]);
        let e = spool(&third, "db", &spool_dir, 2500)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is full") && e.contains("PostgreSQL keeps it"),
            "{e}"
        );
        assert!(!spool_dir.join("000000010000000000000005").exists());
        assert_eq!(
            usage(&spool_dir).unwrap(),
            Usage {
                bytes: 2000,
                files: 2
            }
        );
        let names: Vec<String> = pending(&spool_dir)
            .unwrap()
            .into_iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, [SEG, "000000010000000000000004"]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&spool_dir).unwrap().count(), 2);
    }

    #[test]
    fn refuses_a_symlinked_or_world_writable_spool_and_non_wal_names() {
        let root = tempfile::tempdir().unwrap();
        let pg = tempfile::tempdir().unwrap();
        let seg = wal(pg.path(), SEG, b"x");
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = spool(&seg, "db", &link, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = spool(&seg, "db", &real, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("writable by every user"), "{e}");
        let odd = wal(pg.path(), "notes.txt", b"x");
        assert!(spool(&odd, "db", &root.path().join("s"), 1 << 20).is_err());
        // A spooled name that is a symlink is not followed.
        let s = root.path().join("s2");
        std::fs::create_dir(&s).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", s.join(SEG)).unwrap();
        assert!(spool(&seg, "db", &s, 1 << 20).is_err());
    }
}
