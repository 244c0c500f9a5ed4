//! Exact rollback of a files or config snapshot: the live entries the
//! snapshot did not have, inside the job's roots and only those the job
//! would have archived (its include/exclude globs, recorded in the
//! manifest), are listed for `--diff` and removed for `--exact`.
//!
//! Everything is walked by descriptor with `O_NOFOLLOW`: a symlink planted
//! under a root by the web application's user never leads a listing or a
//! removal outside the root, and a link is removed as a link.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{Error, Result};
use crate::manifest::FilesInfo;
use crate::source::walk::Selection;

/// The part of a destination tree an exact rollback may touch.
pub struct Scope {
    /// Archive paths of the job's roots (`etc/nginx`, no leading `/`).
    roots: Vec<String>,
    selection: Selection,
}

/// A live entry the snapshot does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    /// Archive path (`etc/nginx/sites-enabled/new.conf`).
    pub path: String,
    pub is_dir: bool,
}

impl Scope {
    /// The scope recorded in a snapshot's manifest. Snapshots taken before
    /// the job's globs were recorded cannot tell an excluded file from an
    /// added one, so they have no scope.
    pub fn from_manifest(snapshot_id: &str, info: Option<&FilesInfo>) -> Result<Scope> {
        let info = info.ok_or_else(|| {
            Error::Config(format!(
                "snapshot {snapshot_id} is not a files or config snapshot; --exact applies to those only"
            ))
        })?;
        let globs = info.selection.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "snapshot {snapshot_id} does not record the job's include/exclude globs (it predates them), so an exact rollback could remove excluded files; take a new snapshot first or restore without --exact"
            ))
        })?;
        let roots: Vec<PathBuf> = info.paths.iter().map(PathBuf::from).collect();
        let selection = Selection::new(&roots, &globs.include, &globs.exclude)?;
        Ok(Scope {
            roots: info
                .paths
                .iter()
                .map(|p| p.trim_matches('/').to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            selection,
        })
    }

    /// The path of `archive_path` relative to the root holding it, if any.
    fn relative<'a>(&self, archive_path: &'a str) -> Option<&'a str> {
        self.roots.iter().find_map(|root| {
            if archive_path == root {
                Some("")
            } else {
                archive_path
                    .strip_prefix(root.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
            }
        })
    }
}

/// Finds (and with `remove`, deletes) the entries under `dest` that the
/// snapshot does not hold, below each of the snapshot's directories that
/// lie inside a root. `snapshot` holds every archive path of the snapshot,
/// `dirs` its directories. A directory is removed only once empty: files
/// the job excludes stay, and so does the directory holding them.
pub fn extras(
    dest: &Path,
    snapshot: &BTreeSet<String>,
    dirs: &[String],
    scope: &Scope,
    remove: bool,
) -> std::io::Result<Vec<Extra>> {
    let base = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for dir in dirs {
        if scope.relative(dir).is_none() {
            continue;
        }
        // A directory the snapshot has but the disk does not, or one that
        // is a link now: nothing of ours is below it.
        let Ok(fd) = open_beneath(&base, dir) else {
            continue;
        };
        visit(&fd, dir, snapshot, scope, remove, &mut out)?;
    }
    Ok(out)
}

/// Puts back the mtime of the snapshot's directories that lost entries in
/// a removal (removing an entry touches its directory), from `mtimes`
/// (archive path -> seconds, as recorded by the archive).
pub fn restore_dir_mtimes(
    dest: &Path,
    removed: &[Extra],
    mtimes: &std::collections::BTreeMap<String, u64>,
) -> std::io::Result<()> {
    let base = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let parents: BTreeSet<&str> = removed
        .iter()
        .filter_map(|e| e.path.rsplit_once('/').map(|(dir, _)| dir))
        .collect();
    for dir in parents {
        let Some(mtime) = mtimes.get(dir) else {
            continue;
        };
        let fd = open_beneath(&base, dir)?;
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime);
        std::fs::File::from(fd).set_times(
            std::fs::FileTimes::new()
                .set_modified(when)
                .set_accessed(when),
        )?;
    }
    Ok(())
}

/// Opens `path` (relative, `/`-separated) beneath `base` one component at
/// a time, never through a symlink.
pub(crate) fn open_beneath(base: &OwnedFd, path: &str) -> std::io::Result<OwnedFd> {
    let mut fd = rustix::io::dup(base)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        fd = open_dir_at(&fd, OsStr::new(part))?;
    }
    Ok(fd)
}

fn open_dir_at(parent: &OwnedFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn visit(
    dir_fd: &OwnedFd,
    dir_path: &str,
    snapshot: &BTreeSet<String>,
    scope: &Scope,
    remove: bool,
    out: &mut Vec<Extra>,
) -> std::io::Result<()> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir_fd.as_fd())? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    names.sort();
    for name in names {
        let child = format!("{dir_path}/{}", name.to_string_lossy());
        if snapshot.contains(&child) {
            continue;
        }
        let Some(relative) = scope.relative(&child) else {
            continue;
        };
        let stat = match rustix::fs::statat(dir_fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            // Gone since the listing: nothing to do.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        if !scope.selection.archives(Path::new(relative), is_dir) {
            continue;
        }
        if is_dir {
            let sub = open_dir_at(dir_fd, &name)?;
            visit(&sub, &child, snapshot, scope, remove, out)?;
            drop(sub);
            if remove {
                match rustix::fs::unlinkat(dir_fd, name.as_os_str(), AtFlags::REMOVEDIR) {
                    Ok(()) => {}
                    // It still holds entries the job excludes: they stay.
                    Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        } else if remove {
            rustix::fs::unlinkat(dir_fd, name.as_os_str(), AtFlags::empty())?;
        }
        out.push(Extra {
            path: child,
            is_dir,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::SelectionGlobs;

    fn scope(roots: &[&str], exclude: &[&str]) -> Scope {
        let info = FilesInfo {
            paths: roots.iter().map(|r| r.to_string()).collect(),
            selection: Some(SelectionGlobs {
                include: vec![],
                exclude: exclude.iter().map(|e| e.to_string()).collect(),
            }),
            ..Default::default()
        };
        Scope::from_manifest("s1", Some(&info)).unwrap()
    }

    #[test]
    fn only_entries_inside_the_roots_and_selected_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("etc/nginx/sites/new")).unwrap();
        std::fs::create_dir_all(root.join("etc/other")).unwrap();
        std::fs::write(root.join("etc/nginx/nginx.conf"), "keep").unwrap();
        std::fs::write(root.join("etc/nginx/added.conf"), "x").unwrap();
        std::fs::write(root.join("etc/nginx/sites/new/a.conf"), "x").unwrap();
        std::fs::write(root.join("etc/nginx/cache.tmp"), "excluded").unwrap();
        std::fs::write(root.join("etc/other/file"), "outside the root").unwrap();
        std::os::unix::fs::symlink(root.join("etc/other"), root.join("etc/nginx/link")).unwrap();
        let snapshot: BTreeSet<String> = [
            "etc",
            "etc/nginx",
            "etc/nginx/nginx.conf",
            "etc/nginx/sites",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let dirs = vec![
            "etc".to_string(),
            "etc/nginx".into(),
            "etc/nginx/sites".into(),
        ];
        let sc = scope(&["/etc/nginx"], &["*.tmp"]);

        let listed = extras(root, &snapshot, &dirs, &sc, false).unwrap();
        let names: Vec<&str> = listed.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "etc/nginx/added.conf",
                "etc/nginx/link",
                "etc/nginx/sites/new/a.conf",
                "etc/nginx/sites/new"
            ]
        );
        assert!(
            root.join("etc/nginx/added.conf").exists(),
            "listing removed a file"
        );

        extras(root, &snapshot, &dirs, &sc, true).unwrap();
        assert!(!root.join("etc/nginx/added.conf").exists());
        assert!(!root.join("etc/nginx/sites/new").exists());
        assert!(std::fs::symlink_metadata(root.join("etc/nginx/link")).is_err());
        assert_eq!(
            std::fs::read_to_string(root.join("etc/other/file")).unwrap(),
            "outside the root"
        );
        assert!(
            root.join("etc/nginx/cache.tmp").exists(),
            "an excluded file was removed"
        );
        assert!(root.join("etc/nginx/nginx.conf").exists());
    }

    #[test]
    fn a_snapshot_without_recorded_globs_has_no_scope() {
        let info = FilesInfo {
            paths: vec!["/etc/nginx".into()],
            ..Default::default()
        };
        let err = Scope::from_manifest("s1", Some(&info))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("predates"), "{err}");
    }
}
