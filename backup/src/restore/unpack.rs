//! Writing a tar stream to disk safely: every path is resolved one
//! component at a time from a descriptor of the destination with
//! `O_NOFOLLOW`, files are written under a temporary name and renamed in,
//! so neither the archive nor what is already on disk can redirect a write.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use globset::GlobSet;
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;

use crate::restore::tree::{content_hex, ContentHasher, TreeDigest, TreeRecord, Written};

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

/// Whether an archive path is selected by `filter`: matched itself, or a
/// directory that leads to matches is decided later.
pub(crate) fn selected(filter: Option<&GlobSet>, path: &Path) -> bool {
    match filter {
        None => true,
        Some(f) => f.is_match(path),
    }
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
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
    // One copy buffer for every file: allocating (and faulting in) 256 KiB
    // per file cost a page fault per 4 KiB of it on restores of many files.
    let mut copy_buf = vec![0u8; COPY_BYTES];
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
        let (record, file) = if kind.is_file() {
            counts.files += 1;
            counts.bytes += header.size().unwrap_or(0);
            let (record, file) =
                write_file(&mut entry, &path, &dir, &temp, root, opts, &mut copy_buf)?;
            (record, Some(file))
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
            (TreeRecord::from_header(&path, &header, None)?, None)
        };
        replace(&dir, &temp, name, &path)?;
        if let Some(file) = file {
            // After the rename, which sets the inode's ctime too.
            let written = Written::of(&file.metadata()?);
            tree.written.insert(record.path.clone(), written);
        }
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

pub(crate) fn io_context(e: std::io::Error, doing: &str, path: &Path) -> std::io::Error {
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

/// Bytes per read from the archive when writing a file.
const COPY_BYTES: usize = 256 * 1024;

/// Writes one regular file entry as `temp` in `dir` with its mode, owner
/// (when root) and mtime, hashing the content as it is written (through
/// `buf`, the caller's copy buffer). Setuid/setgid bits are dropped unless
/// `opts.keep_setuid`. Returns the record and the written file, still open.
fn write_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    dir: &OwnedFd,
    temp: &str,
    root: bool,
    opts: UnpackOptions,
    buf: &mut [u8],
) -> std::io::Result<(TreeRecord, std::fs::File)> {
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
        let mut hasher = ContentHasher::new();
        loop {
            let n = entry.read(buf)?;
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
        Ok::<_, std::io::Error>(content_hex(&hasher))
    })();
    let content = match written {
        Ok(content) => content,
        Err(e) => {
            let _ = rustix::fs::unlinkat(dir, temp, AtFlags::empty());
            return Err(e);
        }
    };
    let mut record = TreeRecord::from_header(path, &header, Some(content))?;
    record.mode = mode;
    Ok((record, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::files::build_filter;

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
        assert_eq!(disk.contents_read, 0, "an untouched file was read again");
        let kept = tempfile::tempdir().unwrap();
        let opts = UnpackOptions { keep_setuid: true };
        unpack_recording(&bytes[..], kept.path(), None, opts).unwrap();
        assert_eq!(mode(kept.path()), 0o6755);
    }

    #[test]
    fn read_back_rereads_only_files_changed_since_the_unpack_and_finds_the_change() {
        use std::os::unix::fs::MetadataExt;
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, tar::EntryType::Regular, "a", 0o644, None, b"alpha");
        raw_entry(&mut b, tar::EntryType::Regular, "b", 0o644, None, b"bravo");
        let bytes = b.into_inner().unwrap();
        let out = tempfile::tempdir().unwrap();
        let (_, tree) =
            unpack_recording(&bytes[..], out.path(), None, UnpackOptions::default()).unwrap();
        let clean = tree.read_back(out.path()).unwrap();
        assert_eq!(tree.digest(false), clean.digest(false));
        assert_eq!(clean.contents_read, 0);
        let full = tree.read_back_with(out.path(), true).unwrap();
        assert_eq!(tree.digest(false), full.digest(false));
        assert_eq!(full.contents_read, 2);

        // Same size, same mtime put back, same inode: only ctime tells.
        let a = out.path().join("a");
        let before = std::fs::metadata(&a).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"ALPHA"))
            .unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(before.mtime() as u64);
        std::fs::File::open(&a).unwrap().set_modified(when).unwrap();
        let after = std::fs::metadata(&a).unwrap();
        assert_eq!(
            (after.ino(), after.len(), after.mtime()),
            (before.ino(), before.len(), before.mtime())
        );
        let disk = tree.read_back(out.path()).unwrap();
        assert_eq!(disk.contents_read, 1, "only the changed file is read again");
        assert_ne!(tree.digest(false), disk.digest(false));
        assert_eq!(
            tree.differences(&disk, false, 5),
            vec!["/a: content".to_string()]
        );
    }
}
