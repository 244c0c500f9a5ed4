//! Which entries of a files or config job are taken, and the walk that
//! reaches them. The walk holds each directory open and reaches every
//! child through that descriptor with `O_NOFOLLOW`: the web application's
//! user, who owns the uploads being backed up, cannot redirect it out of
//! the tree by swapping a directory or a file for a symlink mid-walk. A
//! file is read only if the inode opened for reading is the one the walk
//! saw; a swapped one is skipped and listed, never followed.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::manifest::SelectionGlobs;

/// Which entries under the roots are taken.
#[derive(Debug, Clone)]
pub struct Selection {
    pub roots: Vec<PathBuf>,
    include: Option<GlobSet>,
    exclude: GlobSet,
    /// The globs as configured, recorded in the manifest.
    pub globs: SelectionGlobs,
}

/// What the walk hands over for one entry, already opened safely.
pub enum Walked {
    Dir,
    /// A regular file open for reading: the inode the walk saw.
    File(std::fs::File),
    /// A symlink and its target (never followed).
    Symlink(PathBuf),
    /// A socket, fifo or device: not backed up.
    Other,
}

/// The callback of [`Selection::walk`]: the entry's path, its metadata
/// (of the opened inode for files) and the opened entry.
pub type Visit<'a> = dyn FnMut(&Path, &std::fs::Metadata, Walked) -> std::io::Result<()> + 'a;

impl Selection {
    pub fn new(roots: &[PathBuf], include: &[String], exclude: &[String]) -> Result<Self> {
        let build = |globs: &[String], key: &str| -> Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                b.add(Glob::new(g).map_err(|e| Error::Config(format!("{key}: {g:?}: {e}")))?);
            }
            b.build().map_err(|e| Error::Config(format!("{key}: {e}")))
        };
        Ok(Selection {
            roots: roots.to_vec(),
            include: if include.is_empty() {
                None
            } else {
                Some(build(include, "include")?)
            },
            exclude: build(exclude, "exclude")?,
            globs: SelectionGlobs {
                include: include.to_vec(),
                exclude: exclude.to_vec(),
            },
        })
    }

    /// Whether an entry at `relative` (to its root) is one a run archives:
    /// directories unless excluded, other entries when also included.
    pub fn archives(&self, relative: &Path, is_dir: bool) -> bool {
        !self.excluded(relative) && (is_dir || self.included(relative))
    }

    fn excluded(&self, relative: &Path) -> bool {
        !relative.as_os_str().is_empty() && self.exclude.is_match(relative)
    }

    fn included(&self, relative: &Path) -> bool {
        match &self.include {
            None => true,
            Some(set) => set.is_match(relative),
        }
    }

    /// Visits every selected entry, depth first, in name order (so archives
    /// and digests are reproducible), a directory before its children.
    /// Entries that vanish, cannot be read or change type while walked are
    /// reported through `skipped`, not fatal. A root that cannot be read is.
    pub fn walk(&self, visit: &mut Visit<'_>, skipped: &mut Vec<String>) -> std::io::Result<()> {
        for root in &self.roots {
            // The root is configuration, trusted as written; only its last
            // component is not followed (a root that is a link is archived
            // as the link), as for every entry below it.
            let (at, name) = match (root.parent(), root.file_name()) {
                (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
                    (parent, name.to_os_string())
                }
                (_, Some(name)) => (Path::new("."), name.to_os_string()),
                // `/` itself.
                _ => (root.as_path(), OsString::from(".")),
            };
            let opened = rustix::fs::open(
                at,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)
            .and_then(|at| {
                let (fd, meta) = open_entry(&at, &name)?;
                Ok((at, name, fd, meta))
            });
            let (at, name, fd, meta) = opened.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", root.display()))
            })?;
            self.walk_entry(&at, &name, fd, root, Path::new(""), &meta, visit, skipped)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_entry(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        entry: OwnedFd,
        path: &Path,
        relative: &Path,
        meta: &std::fs::Metadata,
        visit: &mut Visit<'_>,
        skipped: &mut Vec<String>,
    ) -> std::io::Result<()> {
        if self.excluded(relative) {
            return Ok(());
        }
        let kind = meta.file_type();
        if kind.is_dir() {
            // Opened for listing through the entry itself: "." of a
            // descriptor that is already this directory cannot be swapped.
            let dir = match rustix::fs::openat(
                &entry,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(d) => d,
                Err(e) => {
                    skipped.push(format!("{}: {e}", path.display()));
                    return Ok(());
                }
            };
            visit(path, meta, Walked::Dir)?;
            let mut children = Vec::new();
            match rustix::fs::Dir::read_from(dir.as_fd()) {
                Ok(listing) => {
                    for item in listing {
                        match item {
                            Ok(item) => {
                                let n = item.file_name().to_bytes();
                                if n != b"." && n != b".." {
                                    children.push(OsString::from_vec(n.to_vec()));
                                }
                            }
                            Err(e) => {
                                skipped.push(format!("{}: {e}", path.display()));
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    skipped.push(format!("{}: {e}", path.display()));
                    return Ok(());
                }
            }
            children.sort();
            for child in children {
                let child_path = path.join(&child);
                match open_entry(&dir, &child) {
                    Ok((fd, m)) => self.walk_entry(
                        &dir,
                        &child,
                        fd,
                        &child_path,
                        &relative.join(&child),
                        &m,
                        visit,
                        skipped,
                    )?,
                    Err(e) => skipped.push(format!("{}: {e}", child_path.display())),
                }
            }
            Ok(())
        } else if self.included(relative) || relative.as_os_str().is_empty() {
            if kind.is_symlink() {
                let target = rustix::fs::readlinkat(&entry, "", Vec::new())?;
                let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                visit(path, meta, Walked::Symlink(target))
            } else if kind.is_file() {
                match open_for_reading(parent, name, meta)? {
                    Ok((file, now)) => visit(path, &now, Walked::File(file)),
                    Err(why) => {
                        skipped.push(format!("{}: {why}", path.display()));
                        Ok(())
                    }
                }
            } else {
                visit(path, meta, Walked::Other)
            }
        } else {
            Ok(())
        }
    }
}

/// Opens `name` in `dir` as a path-only descriptor of the entry itself
/// (a symlink stays a symlink) and reads its metadata through it.
fn open_entry(dir: &OwnedFd, name: &OsStr) -> std::io::Result<(OwnedFd, std::fs::Metadata)> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
    Ok((fd, meta))
}

/// Opens a file the walk saw as regular, through its directory's
/// descriptor: never through a symlink swapped in since (`O_NOFOLLOW`),
/// never blocking on a fifo (`O_NONBLOCK`), and only when the opened inode
/// is still the one walked. `Ok(Err(why))` when the entry vanished or
/// changed: it is skipped, not archived.
pub(crate) fn open_for_reading(
    dir: &OwnedFd,
    name: &OsStr,
    walked: &std::fs::Metadata,
) -> std::io::Result<std::result::Result<(std::fs::File, std::fs::Metadata), &'static str>> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Err("vanished")),
        Err(rustix::io::Errno::LOOP) => return Ok(Err("replaced by a symlink while backed up")),
        Err(e) => {
            return Err(std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!(
                    "cannot open {}: {e}",
                    Path::new(OsStr::from_bytes(name.as_bytes())).display()
                ),
            ))
        }
    };
    let file = std::fs::File::from(fd);
    let now = file.metadata()?;
    if !now.is_file() || now.dev() != walked.dev() || now.ino() != walked.ino() {
        return Ok(Err("replaced by another file or a fifo while backed up"));
    }
    Ok(Ok((file, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_fd(path: &Path) -> OwnedFd {
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn selection_applies_globs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("srv");
        std::fs::create_dir_all(root.join("cache")).unwrap();
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("app/a.php"), "a").unwrap();
        std::fs::write(root.join("app/b.log"), "b").unwrap();
        std::fs::write(root.join("cache/c.php"), "c").unwrap();
        let sel = Selection::new(
            std::slice::from_ref(&root),
            &["**/*.php".into()],
            &["cache".into()],
        )
        .unwrap();
        let mut seen = Vec::new();
        sel.walk(
            &mut |p, _, w| {
                if matches!(w, Walked::File(_)) {
                    seen.push(p.strip_prefix(&root).unwrap().display().to_string());
                }
                Ok(())
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(seen, vec!["app/a.php"]);
    }

    /// A directory swapped for a symlink to somewhere else after the walk
    /// reached it: the walk goes on inside the directory it opened and
    /// never reads the link's target.
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_walk_is_not_followed() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("root-only");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "root-only-content").unwrap();
        let root = scratch.path().join("uploads");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/photo.jpg"), "picture").unwrap();
        let sel = Selection::new(std::slice::from_ref(&root), &[], &[]).unwrap();
        let mut contents = Vec::new();
        let mut paths = Vec::new();
        sel.walk(
            &mut |p, _, w| {
                paths.push(p.strip_prefix(&root).unwrap().display().to_string());
                match w {
                    // The web user's move, at the worst moment.
                    Walked::Dir if p == root.join("a") => {
                        std::fs::rename(root.join("a"), root.join("a.old")).unwrap();
                        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
                    }
                    Walked::File(mut f) => {
                        let mut s = String::new();
                        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
                        contents.push(s);
                    }
                    _ => {}
                }
                Ok(())
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(contents, ["picture"], "{paths:?}");
        assert!(!paths.iter().any(|p| p.contains("secret")), "{paths:?}");
    }

    #[test]
    fn a_file_swapped_after_the_walk_saw_it_is_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root-only-content").unwrap();
        let upload = dir.path().join("upload.jpg");
        std::fs::write(&upload, "picture").unwrap();
        let walked = std::fs::symlink_metadata(&upload).unwrap();
        std::fs::remove_file(&upload).unwrap();
        std::os::unix::fs::symlink(&secret, &upload).unwrap();
        let fd = dir_fd(dir.path());
        let why = open_for_reading(&fd, OsStr::new("upload.jpg"), &walked)
            .unwrap()
            .err()
            .unwrap();
        assert!(why.contains("symlink"), "{why}");

        // Swapped for another regular file (a hard link to the secret):
        // not the inode walked, so not read either.
        std::fs::remove_file(&upload).unwrap();
        std::fs::hard_link(&secret, &upload).unwrap();
        let why = open_for_reading(&fd, OsStr::new("upload.jpg"), &walked)
            .unwrap()
            .err()
            .unwrap();
        assert!(why.contains("replaced"), "{why}");
    }

    #[test]
    fn a_file_swapped_for_a_fifo_is_skipped_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let upload = dir.path().join("upload.jpg");
        std::fs::write(&upload, "picture").unwrap();
        let walked = std::fs::symlink_metadata(&upload).unwrap();
        std::fs::remove_file(&upload).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &upload,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let fd = dir_fd(dir.path());
        let why = open_for_reading(&fd, OsStr::new("upload.jpg"), &walked)
            .unwrap()
            .err()
            .unwrap();
        assert!(why.contains("fifo"), "{why}");
        // The whole walk passes the fifo by (as `Other`) without blocking.
        let sel = Selection::new(&[dir.path().to_path_buf()], &[], &[]).unwrap();
        let mut others = 0;
        sel.walk(
            &mut |_, _, w| {
                if matches!(w, Walked::Other) {
                    others += 1;
                }
                Ok(())
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(others, 1);
    }
}
