//! Restoring files and config snapshots: the tar archive is unpacked into a
//! directory (never over the live paths unless asked), keeping modes,
//! owners, mtimes and symlinks, optionally only paths matching globs.
//! Comparing a snapshot with the live files is [`crate::restore::diff`].

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{ObjectEntry, ObjectRole};
use crate::restore::identity::Identities;
use crate::restore::stream::{open_object, take_fault, Progress};
use crate::restore::{Check, Located, RestoredItem};

/// Where and what to restore.
#[derive(Debug, Clone, Default)]
pub struct FilesRestoreOptions {
    /// Directory the archive's paths are recreated under (`DIR/etc/nginx/...`).
    pub to: Option<PathBuf>,
    /// Restore over the original paths (`/`): the live files.
    pub in_place: bool,
    /// Only entries matching these globs (archive paths, no leading `/`);
    /// directories leading to them are recreated too.
    pub paths: Vec<String>,
    /// Keep setuid/setgid bits in a `--to` restore (always kept in place).
    pub keep_setuid: bool,
}

/// The tar object of a files/config snapshot.
pub fn archive_object(located: &Located) -> Result<ObjectEntry> {
    located
        .manifest
        .objects
        .iter()
        .find(|o| o.role == ObjectRole::Tar)
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "snapshot {} holds no file archive (it is a {} snapshot)",
                located.manifest.snapshot_id, located.manifest.kind
            ))
        })
}

pub(crate) fn build_filter(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let g = g.trim_start_matches('/');
        b.add(Glob::new(g).map_err(|e| Error::Config(format!("--path {g:?}: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Config(format!("--path: {e}")))
}

/// Counts of what was unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Unpacked {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Hard links, devices and fifos, which are not recreated.
    pub skipped: u64,
}

/// Restores the archive of a files/config snapshot. Refuses to write into
/// `/` unless `in_place`, and into a non-empty directory only when the
/// caller allowed it (`allow_non_empty`).
pub async fn restore(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    opts: &FilesRestoreOptions,
    allow_non_empty: bool,
) -> Result<RestoredItem> {
    let manifest = &located.manifest;
    let dest = match (&opts.to, opts.in_place) {
        (_, true) => PathBuf::from("/"),
        (Some(d), false) => {
            if d.components().all(|c| matches!(c, Component::RootDir)) {
                return Err(Error::Config(
                    "--to /: that is the live system; pass --in-place to restore over the original paths".into(),
                ));
            }
            d.clone()
        }
        (None, false) => {
            return Err(Error::Config(
                "say where to restore: --to DIR (recreates the original paths under DIR), or --in-place to overwrite the live files".into(),
            ))
        }
    };
    if !opts.in_place {
        refuse_foreign_owner(&dest)?;
    }
    if !opts.in_place && !allow_non_empty {
        if let Ok(mut rd) = std::fs::read_dir(&dest) {
            if rd.next().is_some() {
                return Err(Error::Config(format!(
                    "{} is not empty; restore into an empty or new directory, or pass --force to write into it",
                    dest.display()
                )));
            }
        }
    }
    let filter = build_filter(&opts.paths)?;
    let entry = archive_object(located)?;
    progress.start(
        &format!("{} -> {}", manifest.job, dest.display()),
        Some(entry.stored_bytes),
    );
    let reader = open_object(
        Arc::clone(&located.target),
        manifest,
        &entry,
        identities,
        Arc::clone(&progress),
    )
    .await
    .map_err(Error::from)?;
    let slot = reader.fault_slot();
    let dest_for_task = dest.clone();
    let filtered = filter.is_some();
    let unpack_opts = UnpackOptions {
        keep_setuid: opts.keep_setuid || opts.in_place,
    };
    let in_place = opts.in_place;
    let result = tokio::task::spawn_blocking(move || {
        let (counts, tree) = if in_place {
            // Over live files, nothing is touched before the whole object
            // decrypted and matched its hashes: a truncated or tampered
            // object must not leave half-replaced live files.
            let spool = spool_verified(reader)?;
            unpack_recording(
                std::io::BufReader::new(spool),
                &dest_for_task,
                filter.as_ref(),
                unpack_opts,
            )?
        } else {
            unpack_recording(reader, &dest_for_task, filter.as_ref(), unpack_opts)?
        };
        let disk = tree.read_back(&dest_for_task)?;
        Ok::<_, std::io::Error>((counts, tree, disk))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    progress.finish();
    let (unpacked, tree, disk) = match result {
        Ok(u) => u,
        Err(e) => {
            return Err(match take_fault(&slot) {
                Some(f) => Error::from(f),
                None => Error::Other(format!(
                    "unpacking snapshot {} into {}: {e}",
                    manifest.snapshot_id,
                    dest.display()
                )),
            }
            .annotate_partial(&dest))
        }
    };
    let mut checks = Vec::new();
    if !filtered {
        if let Some(info) = &manifest.files {
            let same = info.files == unpacked.files
                && info.directories == unpacked.directories
                && info.symlinks == unpacked.symlinks
                && info.bytes == unpacked.bytes;
            let detail = format!(
                "{} files, {} directories, {} symlinks, {} bytes (manifest: {}, {}, {}, {})",
                unpacked.files,
                unpacked.directories,
                unpacked.symlinks,
                unpacked.bytes,
                info.files,
                info.directories,
                info.symlinks,
                info.bytes
            );
            checks.push(if same {
                Check::ok("file counts", detail)
            } else {
                Check::failed("file counts", detail)
            });
        }
    } else {
        checks.push(Check::ok(
            "selection",
            format!(
                "{} files, {} directories, {} symlinks matched --path",
                unpacked.files, unpacked.directories, unpacked.symlinks
            ),
        ));
        if unpacked.files + unpacked.directories + unpacked.symlinks == 0 {
            return Err(Error::NotFound(format!(
                "no path of snapshot {} matches {}; list them with `tar -t` on the escape-hatch pipeline or check the globs (archive paths have no leading /)",
                manifest.snapshot_id,
                opts.paths.join(", ")
            )));
        }
    }
    checks.push(Check::ok(
        "hashes",
        "stored and plaintext sha256 match the manifest",
    ));
    let owners = is_root();
    let (want, have) = (tree.digest(owners), disk.digest(owners));
    checks.push(if want == have {
        Check::ok(
            "tree hash",
            format!(
                "{} entries on disk match the archive (content, modes, mtimes, links{}): {}",
                tree.records.len(),
                if owners { ", owners" } else { "" },
                &want[..16]
            ),
        )
    } else {
        Check::failed(
            "tree hash",
            format!(
                "the restored tree differs from the archive: {}",
                tree.differences(&disk, owners, 5).join("; ")
            ),
        )
    });
    let item = RestoredItem {
        name: dest.display().to_string(),
        source: manifest
            .files
            .as_ref()
            .map(|f| f.paths.join(", "))
            .unwrap_or_default(),
        bytes: entry.plaintext_bytes,
        checks,
    };
    if let Some(bad) = item.checks.iter().find(|c| !c.ok) {
        return Err(Error::Integrity(format!(
            "files restored from snapshot {} into {} do not match the manifest: {}: {}",
            manifest.snapshot_id,
            dest.display(),
            bad.name,
            bad.detail
        )));
    }
    Ok(item)
}

/// Refuses a `--to` directory owned by another user: its owner could swap
/// or pre-seed entries while a root restore writes into it.
fn refuse_foreign_owner(dest: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    match std::fs::metadata(dest) {
        Ok(meta) if meta.uid() != me => Err(Error::Config(format!(
            "{} is owned by uid {}, not by the user running the restore (uid {me}); restore into a new directory or one you own",
            dest.display(),
            meta.uid()
        ))),
        _ => Ok(()),
    }
}

/// Reads the whole plaintext into an unnamed temporary file (`$TMPDIR`);
/// reaching its end means the object's sizes and hashes were checked.
fn spool_verified(mut reader: impl Read) -> std::io::Result<std::fs::File> {
    use std::io::Seek;
    let dir = std::env::temp_dir();
    let fd = rustix::fs::open(
        &dir,
        OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_context(e.into(), "creating a spool file (O_TMPFILE) in", &dir))?;
    let mut spool = std::fs::File::from(fd);
    std::io::copy(&mut reader, &mut spool)?;
    spool.rewind()?;
    Ok(spool)
}

trait AnnotatePartial {
    fn annotate_partial(self, dest: &Path) -> Self;
}

impl AnnotatePartial for Error {
    fn annotate_partial(self, dest: &Path) -> Self {
        let note = format!("; {} may hold a partial restore", dest.display());
        match self {
            Error::NotFound(m) => Error::NotFound(m + &note),
            Error::Integrity(m) => Error::Integrity(m + &note),
            Error::Config(m) => Error::Config(m + &note),
            other => Error::Other(other.to_string() + &note),
        }
    }
}

/// Whether an archive path is selected by `filter`: matched itself, or a
/// directory that leads to matches is decided later.
pub(crate) fn selected(filter: Option<&GlobSet>, path: &Path) -> bool {
    match filter {
        None => true,
        Some(f) => f.is_match(path),
    }
}

/// How an archive is written to disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Keep setuid/setgid bits on restored files. Off for `--to` restores:
    /// a copy under a scratch directory must not hand out privileges.
    pub keep_setuid: bool,
}

/// Unpacks a tar stream under `dest` (modes, owners when root, mtimes,
/// symlinks), directories last so their mtimes and modes stick. Every path
/// is resolved one component at a time from a descriptor of `dest` with
/// `O_NOFOLLOW`, so neither a symlink in the archive nor one already on
/// disk can redirect a write outside `dest`; entries with `..` or an
/// absolute path are refused. Files and symlinks are written under a
/// temporary name and renamed over the old entry, never written through it.
pub fn unpack(
    input: impl Read,
    dest: &Path,
    filter: Option<&GlobSet>,
) -> std::io::Result<Unpacked> {
    unpack_recording(input, dest, filter, UnpackOptions::default()).map(|(counts, _)| counts)
}

/// [`unpack`], also returning the tree as the archive describes it.
pub fn unpack_recording(
    input: impl Read,
    dest: &Path,
    filter: Option<&GlobSet>,
    opts: UnpackOptions,
) -> std::io::Result<(Unpacked, TreeDigest)> {
    std::fs::create_dir_all(dest)?;
    let root_fd = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_context(e.into(), "opening", dest))?;
    let root = is_root();
    let mut archive = tar::Archive::new(input);
    let mut counts = Unpacked::default();
    let mut tree = TreeDigest::default();
    let mut parents_of_selected: BTreeSet<PathBuf> = BTreeSet::new();
    let mut directories = Vec::new();
    let mut temp_names = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let parts = archive_parts(&path)?;
        let Some((name, parents)) = parts.split_last() else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            directories.push((path, parts.clone(), entry.header().clone()));
            continue;
        }
        if !selected(filter, &path) {
            continue;
        }
        let mut parent = path.parent();
        while let Some(p) = parent {
            if p.as_os_str().is_empty() {
                break;
            }
            parents_of_selected.insert(p.to_path_buf());
            parent = p.parent();
        }
        if !(kind.is_file() || kind.is_symlink()) {
            // Hard links, devices and fifos are never produced by the
            // files source; one in an archive is not recreated.
            counts.skipped += 1;
            continue;
        }
        let dir = open_dirs(&root_fd, parents, &path)?;
        temp_names += 1;
        let temp = format!(".steward-restore-{}-{temp_names}", std::process::id());
        let header = entry.header().clone();
        let record = if kind.is_file() {
            counts.files += 1;
            counts.bytes += header.size().unwrap_or(0);
            write_file(&mut entry, &path, &dir, &temp, root, opts)?
        } else {
            counts.symlinks += 1;
            let target = header.link_name()?.unwrap_or_default().into_owned();
            rustix::fs::symlinkat(&target, &dir, temp.as_str())
                .map_err(|e| io_context(e.into(), "creating the symlink", &path))?;
            if root {
                let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
                let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
                rustix::fs::chownat(
                    &dir,
                    temp.as_str(),
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            TreeRecord::from_header(&path, &header, None)?
        };
        replace(&dir, &temp, name, &path)?;
        tree.records.push(record);
    }
    // Deepest first, as tar's own unpack does, so restrictive parent modes
    // are applied after their children were written.
    directories.sort_by(|a, b| b.0.as_os_str().cmp(a.0.as_os_str()));
    for (path, parts, header) in directories {
        if filter.is_some() && !selected(filter, &path) && !parents_of_selected.contains(&path) {
            continue;
        }
        counts.directories += 1;
        tree.records
            .push(TreeRecord::from_header(&path, &header, None)?);
        let dir = open_dirs(&root_fd, &parts, &path)?;
        if root {
            let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
            let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
            rustix::fs::fchown(
                &dir,
                uid.map(rustix::fs::Uid::from_raw),
                gid.map(rustix::fs::Gid::from_raw),
            )?;
        }
        let mode = header.mode().unwrap_or(0o755) & 0o7777;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))?;
        if let Ok(mtime) = header.mtime() {
            set_mtime(&std::fs::File::from(dir), mtime)
                .map_err(|e| io_context(e, "setting the mtime of", &path))?;
        }
    }
    tree.records.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((counts, tree))
}

/// The components of an archive path; `..` and absolute paths are refused
/// (the files source writes neither, so such an entry is hostile).
fn archive_parts(path: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    let mut parts = Vec::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "archive entry {} leaves the destination (absolute or `..` path); the snapshot was not written by steward",
                        path.display()
                    ),
                ))
            }
        }
    }
    Ok(parts)
}

/// Opens (creating when missing) the directory `parts` below `root`, one
/// component at a time and never through a symlink.
fn open_dirs(
    root: &OwnedFd,
    parts: &[std::ffi::OsString],
    entry: &Path,
) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(root, ".", flags, Mode::empty())?;
    for part in parts {
        let next = match rustix::fs::openat(&dir, part.as_os_str(), flags, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, part.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io_context(e.into(), "creating a directory for", entry)),
                }
                rustix::fs::openat(&dir, part.as_os_str(), flags, Mode::empty())
            }
            other => other,
        };
        dir = next.map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "archive entry {} would be written through a symlink or non-directory ({}); nothing is written through links",
                    entry.display(),
                    part.to_string_lossy()
                ),
            ),
            e => io_context(e.into(), "opening a directory for", entry),
        })?;
    }
    Ok(dir)
}

/// Renames `temp` over `name` in `dir`: the old entry (a file or a link,
/// never followed) is replaced in one step.
fn replace(dir: &OwnedFd, temp: &str, name: &std::ffi::OsStr, entry: &Path) -> std::io::Result<()> {
    match rustix::fs::renameat(dir, temp, dir, name) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
            Err(match e {
                rustix::io::Errno::ISDIR | rustix::io::Errno::NOTEMPTY | rustix::io::Errno::NOTDIR => {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is a directory on disk but not in the archive; move it away and restore again",
                            entry.display()
                        ),
                    )
                }
                e => io_context(e.into(), "replacing", entry),
            })
        }
    }
}

fn io_context(e: std::io::Error, doing: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

fn set_mtime(file: &std::fs::File, mtime: u64) -> std::io::Result<()> {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    file.set_times(
        std::fs::FileTimes::new()
            .set_modified(when)
            .set_accessed(when),
    )
}

/// Writes one regular file entry as `temp` in `dir` with its mode, owner
/// (when root) and mtime, hashing the content. Setuid/setgid bits are
/// dropped unless `opts.keep_setuid`.
fn write_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    dir: &OwnedFd,
    temp: &str,
    root: bool,
    opts: UnpackOptions,
) -> std::io::Result<TreeRecord> {
    let header = entry.header().clone();
    let mut mode = header.mode().unwrap_or(0o644) & 0o7777;
    if !opts.keep_setuid {
        mode &= !0o6000;
    }
    let fd = rustix::fs::openat(
        dir,
        temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_context(e.into(), "creating", path))?;
    let mut file = std::fs::File::from(fd);
    let written = (|| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            std::io::Write::write_all(&mut file, &buf[..n])
                .map_err(|e| io_context(e, "writing", path))?;
        }
        if root {
            let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
            let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
            std::os::unix::fs::fchown(&file, uid, gid)?;
        }
        // After chown, which clears setuid/setgid bits.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
        if let Ok(mtime) = header.mtime() {
            set_mtime(&file, mtime)?;
        }
        Ok::<_, std::io::Error>(hasher.finalize())
    })();
    let sha = match written {
        Ok(sha) => sha,
        Err(e) => {
            let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
            return Err(e);
        }
    };
    let mut record = TreeRecord::from_header(path, &header, Some(hex::encode(sha)))?;
    record.mode = mode;
    Ok(record)
}

/// One entry of a tree as compared: metadata and content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeRecord {
    /// Archive path (no leading `/`, no trailing `/`).
    pub path: String,
    /// `f`ile, `d`irectory or `l`ink.
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds (tar keeps whole seconds); directories and links excluded
    /// from mtime comparison only where the OS cannot keep them.
    pub mtime: u64,
    pub size: u64,
    /// sha256 of the content (files) or the link target (links).
    pub content: String,
}

impl TreeRecord {
    fn from_header(
        path: &Path,
        h: &tar::Header,
        content_sha: Option<String>,
    ) -> std::io::Result<Self> {
        let kind = h.entry_type();
        let (kind, content) = if kind.is_dir() {
            ('d', String::new())
        } else if kind.is_symlink() {
            let link = h
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            ('l', link)
        } else {
            ('f', content_sha.unwrap_or_default())
        };
        Ok(TreeRecord {
            path: normalize(path),
            kind,
            mode: if kind == 'l' {
                0
            } else {
                h.mode().unwrap_or(0) & 0o7777
            },
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: if kind == 'l' {
                0
            } else {
                h.mtime().unwrap_or(0)
            },
            size: if kind == 'f' {
                h.size().unwrap_or(0)
            } else {
                0
            },
            content,
        })
    }
}

fn normalize(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A tree as a sorted list of records, with a digest over them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TreeDigest {
    pub records: Vec<TreeRecord>,
}

impl TreeDigest {
    /// sha256 over every record (owners included only when `owners`).
    pub fn digest(&self, owners: bool) -> String {
        let mut h = Sha256::new();
        for r in &self.records {
            let (uid, gid) = if owners { (r.uid, r.gid) } else { (0, 0) };
            h.update(
                format!(
                    "{}\0{}\0{:o}\0{uid}\0{gid}\0{}\0{}\0{}\n",
                    r.path, r.kind, r.mode, r.mtime, r.size, r.content
                )
                .as_bytes(),
            );
        }
        hex::encode(h.finalize())
    }

    /// Reads the same paths back from the disk under `dest`.
    pub fn read_back(&self, dest: &Path) -> std::io::Result<TreeDigest> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let mut records = Vec::new();
        for r in &self.records {
            let p = dest.join(&r.path);
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let ft = meta.file_type();
            let (kind, content, size) = if ft.is_dir() {
                ('d', String::new(), 0)
            } else if ft.is_symlink() {
                (
                    'l',
                    std::fs::read_link(&p)?.to_string_lossy().into_owned(),
                    0,
                )
            } else {
                // Not through a link swapped in since, and never blocking
                // on a fifo: such an entry reads as a different type.
                let mut file = match std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
                    .open(&p)
                {
                    Ok(f) if f.metadata()?.is_file() => f,
                    _ => {
                        records.push(TreeRecord {
                            path: r.path.clone(),
                            kind: '?',
                            mode: 0,
                            uid: 0,
                            gid: 0,
                            mtime: 0,
                            size: 0,
                            content: String::new(),
                        });
                        continue;
                    }
                };
                let mut h = Sha256::new();
                std::io::copy(&mut file, &mut h)?;
                ('f', hex::encode(h.finalize()), meta.len())
            };
            records.push(TreeRecord {
                path: r.path.clone(),
                kind,
                mode: if kind == 'l' { 0 } else { meta.mode() & 0o7777 },
                uid: u64::from(meta.uid()),
                gid: u64::from(meta.gid()),
                mtime: if kind == 'l' {
                    0
                } else {
                    meta.mtime().max(0) as u64
                },
                size,
                content,
            });
        }
        Ok(TreeDigest { records })
    }

    /// The first few differences with `other`, for a message.
    pub fn differences(&self, other: &TreeDigest, owners: bool, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        let find = |path: &str| other.records.iter().find(|r| r.path == path);
        for r in &self.records {
            if out.len() >= limit {
                break;
            }
            match find(&r.path) {
                None => out.push(format!("/{} is missing", r.path)),
                Some(o) => {
                    let mut what = Vec::new();
                    if o.kind != r.kind {
                        what.push("type".to_string());
                    }
                    if o.mode != r.mode {
                        what.push(format!("mode {:04o} (archive {:04o})", o.mode, r.mode));
                    }
                    if o.mtime != r.mtime {
                        what.push(format!("mtime {} (archive {})", o.mtime, r.mtime));
                    }
                    if o.content != r.content || o.size != r.size {
                        what.push("content".to_string());
                    }
                    if owners && (o.uid != r.uid || o.gid != r.gid) {
                        what.push(format!(
                            "owner {}:{} (archive {}:{})",
                            o.uid, o.gid, r.uid, r.gid
                        ));
                    }
                    if !what.is_empty() {
                        out.push(format!("/{}: {}", r.path, what.join(", ")));
                    }
                }
            }
        }
        out
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_keeps_modes_mtimes_symlinks_and_filters() {
        use std::os::unix::fs::PermissionsExt;
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_uid(0);
        dir.set_gid(0);
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o750);
        dir.set_mtime(1_000_000);
        dir.set_size(0);
        builder
            .append_data(&mut dir, "srv/app", std::io::empty())
            .unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_uid(0);
        file.set_gid(0);
        file.set_mode(0o640);
        file.set_mtime(1_234_567);
        file.set_size(5);
        builder
            .append_data(&mut file, "srv/app/a.txt", &b"hello"[..])
            .unwrap();
        let mut other = tar::Header::new_gnu();
        other.set_uid(0);
        other.set_gid(0);
        other.set_mode(0o644);
        other.set_size(1);
        builder
            .append_data(&mut other, "srv/app/skip.log", &b"x"[..])
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_uid(0);
        link.set_gid(0);
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "srv/app/current", "a.txt")
            .unwrap();
        let bytes = builder.into_inner().unwrap();

        let out = tempfile::tempdir().unwrap();
        let counts = unpack(&bytes[..], out.path(), None).unwrap();
        assert_eq!(
            (counts.files, counts.directories, counts.symlinks),
            (2, 1, 1)
        );
        let a = out.path().join("srv/app/a.txt");
        let meta = std::fs::metadata(&a).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mtime(), 1_234_567);
        let dmeta = std::fs::metadata(out.path().join("srv/app")).unwrap();
        assert_eq!(dmeta.permissions().mode() & 0o777, 0o750);
        assert_eq!(dmeta.mtime(), 1_000_000);
        assert_eq!(
            std::fs::read_link(out.path().join("srv/app/current")).unwrap(),
            Path::new("a.txt")
        );

        let out2 = tempfile::tempdir().unwrap();
        let filter = build_filter(&["/srv/app/*.txt".to_string()]).unwrap();
        let counts = unpack(&bytes[..], out2.path(), filter.as_ref()).unwrap();
        assert_eq!((counts.files, counts.directories), (1, 1));
        assert!(!out2.path().join("srv/app/skip.log").exists());
    }

    /// Appends an entry with `name` written raw into the header, so names
    /// the tar crate's builder refuses (`..`, absolute) can be made.
    fn raw_entry(
        builder: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        mode: u32,
        link: Option<&Path>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        if let Some(link) = link {
            h.set_link_name(link).unwrap();
        }
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }

    #[test]
    fn parent_and_absolute_entries_are_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let dest = scratch.path().join("dest");
        let absolute = scratch.path().join("absolute.txt");
        for name in ["../escape.txt", absolute.to_str().unwrap()] {
            let mut b = tar::Builder::new(Vec::new());
            raw_entry(&mut b, tar::EntryType::Regular, name, 0o644, None, b"evil");
            let bytes = b.into_inner().unwrap();
            let err = unpack(&bytes[..], &dest, None).unwrap_err();
            assert!(err.to_string().contains("leaves the destination"), "{err}");
        }
        assert!(!scratch.path().join("escape.txt").exists());
        assert!(!absolute.exists());
        assert!(!dest.join(absolute.strip_prefix("/").unwrap()).exists());
    }

    #[test]
    fn nothing_is_written_through_a_symlink_from_the_archive() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("etc");
        std::fs::create_dir(&outside).unwrap();
        let dest = scratch.path().join("dest");
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(
            &mut b,
            tar::EntryType::Symlink,
            "link",
            0o777,
            Some(&outside),
            b"",
        );
        raw_entry(
            &mut b,
            tar::EntryType::Regular,
            "link/passwd",
            0o644,
            None,
            b"evil",
        );
        let bytes = b.into_inner().unwrap();
        let err = unpack(&bytes[..], &dest, None).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        assert!(!outside.join("passwd").exists());
    }

    #[test]
    fn symlinks_already_in_the_destination_are_never_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("target"), "precious").unwrap();
        let dest = scratch.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("srv")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), dest.join("a.txt")).unwrap();

        // A directory link: refused before anything is created beyond it.
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(
            &mut b,
            tar::EntryType::Regular,
            "srv/app/x.php",
            0o644,
            None,
            b"evil",
        );
        let bytes = b.into_inner().unwrap();
        let err = unpack(&bytes[..], &dest, None).unwrap_err();
        assert!(err.to_string().contains("through a symlink"), "{err}");
        assert!(
            !outside.join("app").exists(),
            "a directory was created through the link"
        );

        // A file link: replaced, its target untouched.
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(
            &mut b,
            tar::EntryType::Regular,
            "a.txt",
            0o644,
            None,
            b"new",
        );
        let bytes = b.into_inner().unwrap();
        unpack(&bytes[..], &dest, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("target")).unwrap(),
            "precious"
        );
        let meta = std::fs::symlink_metadata(dest.join("a.txt")).unwrap();
        assert!(meta.is_file());
        assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "new");
    }

    #[test]
    fn setuid_bits_are_dropped_unless_kept() {
        use std::os::unix::fs::PermissionsExt;
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(
            &mut b,
            tar::EntryType::Regular,
            "bin/tool",
            0o6755,
            None,
            b"#!",
        );
        let bytes = b.into_inner().unwrap();
        let mode = |dir: &Path| {
            std::fs::metadata(dir.join("bin/tool"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        let stripped = tempfile::tempdir().unwrap();
        let (_, tree) =
            unpack_recording(&bytes[..], stripped.path(), None, UnpackOptions::default()).unwrap();
        assert_eq!(mode(stripped.path()), 0o755);
        let disk = tree.read_back(stripped.path()).unwrap();
        assert_eq!(tree.digest(false), disk.digest(false));
        let kept = tempfile::tempdir().unwrap();
        let opts = UnpackOptions { keep_setuid: true };
        unpack_recording(&bytes[..], kept.path(), None, opts).unwrap();
        assert_eq!(mode(kept.path()), 0o6755);
    }

    #[test]
    fn a_destination_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_foreign_owner(dir.path()).is_ok());
        let me = rustix::process::geteuid();
        let other = if me.is_root() { 65534 } else { 0 };
        if rustix::fs::chown(dir.path(), Some(rustix::fs::Uid::from_raw(other)), None).is_ok() {
            let err = refuse_foreign_owner(dir.path()).unwrap_err().to_string();
            assert!(err.contains("owned by uid"), "{err}");
        } else {
            assert!(!me.is_root(), "root could not chown a temp dir");
        }
    }
}
