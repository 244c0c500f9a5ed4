//! Comparing a files or config snapshot with the live files (`steward
//! restore JOB --diff`): content, mode, symlink target, and live files the
//! snapshot does not have. The archive is streamed and checked like any
//! restore, but nothing is written.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::GlobSet;
use rustix::fs::{Mode, OFlags};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::restore::exact::{extras, open_beneath, Scope};
use crate::restore::files::{archive_object, build_filter};
use crate::restore::identity::Identities;
use crate::restore::stream::{open_object, take_fault, Progress};
use crate::restore::tree::{normalize, ContentHasher};
use crate::restore::unpack::selected;
use crate::restore::Located;

/// How a path of the snapshot compares with the live system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// `/etc/nginx/nginx.conf`
    pub path: String,
    /// `modified`, `missing` (in the snapshot, not live), `mode`,
    /// `type`, `link`.
    pub change: String,
    pub detail: String,
    /// A unified diff of text content, when both sides are small text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// Compares a config (or files) snapshot with the live files: content,
/// mode, symlink target. Writes nothing. Live files absent from the
/// snapshot are reported for the snapshot's directories.
pub async fn diff_with_live(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    root: &Path,
    paths: &[String],
) -> Result<Vec<DiffEntry>> {
    let manifest = &located.manifest;
    let entry = archive_object(located)?;
    let filter = build_filter(paths)?;
    progress.start(&format!("{} diff", manifest.job), Some(entry.stored_bytes));
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
    // Live entries the snapshot lacks are named precisely (what `--exact`
    // would remove) when the snapshot recorded the job's globs.
    let scope = Scope::from_manifest(&manifest.snapshot_id, manifest.files.as_ref()).ok();
    let root = root.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        diff_archive(reader, &root, filter.as_ref(), scope.as_ref())
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    progress.finish();
    result.map_err(|e| match take_fault(&slot) {
        Some(f) => Error::from(f),
        None => Error::Other(format!("reading snapshot {}: {e}", manifest.snapshot_id)),
    })
}

/// Largest file whose content is compared as text for a unified diff.
const DIFF_TEXT_LIMIT: u64 = 1024 * 1024;

fn diff_archive(
    input: impl Read,
    root: &Path,
    filter: Option<&GlobSet>,
    scope: Option<&Scope>,
) -> std::io::Result<Vec<DiffEntry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut archive = tar::Archive::new(input);
    let mut out = Vec::new();
    let mut dirs_in_snapshot = Vec::new();
    let mut names_in_snapshot = BTreeSet::new();
    let mut archive_names = BTreeSet::new();
    let mut archive_dirs = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = entry.path()?.into_owned();
        if rel.components().any(|c| matches!(c, Component::ParentDir)) {
            continue;
        }
        if !selected(filter, &rel) {
            continue;
        }
        let live = root.join(&rel);
        let shown = format!("/{}", rel.display());
        names_in_snapshot.insert(live.clone());
        archive_names.insert(normalize(&rel));
        let header_mode = entry.header().mode().unwrap_or(0) & 0o7777;
        let kind = entry.header().entry_type();
        let meta = match std::fs::symlink_metadata(&live) {
            Ok(m) => m,
            Err(_) => {
                out.push(DiffEntry {
                    path: shown,
                    change: "missing".into(),
                    detail: "in the snapshot, not on this system".into(),
                    diff: None,
                });
                continue;
            }
        };
        if kind.is_dir() {
            dirs_in_snapshot.push(live.clone());
            archive_dirs.push(normalize(&rel));
            if !meta.is_dir() {
                out.push(type_change(shown, "directory"));
            }
            continue;
        }
        if kind.is_symlink() {
            let want = entry
                .link_name()?
                .map(|l| l.into_owned())
                .unwrap_or_default();
            match std::fs::read_link(&live) {
                Ok(have) if have == want => {}
                Ok(have) => out.push(DiffEntry {
                    path: shown,
                    change: "link".into(),
                    detail: format!(
                        "points to {} live, {} in the snapshot",
                        have.display(),
                        want.display()
                    ),
                    diff: None,
                }),
                Err(_) => out.push(type_change(shown, "symlink")),
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if !meta.is_file() {
            out.push(type_change(shown, "file"));
            continue;
        }
        let live_mode = meta.permissions().mode() & 0o7777;
        if live_mode != header_mode {
            out.push(DiffEntry {
                path: shown.clone(),
                change: "mode".into(),
                detail: format!("{live_mode:04o} live, {header_mode:04o} in the snapshot"),
                diff: None,
            });
        }
        let size = entry.header().size().unwrap_or(0);
        let mut snap = Vec::new();
        let mut hasher = ContentHasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if size <= DIFF_TEXT_LIMIT {
                snap.extend_from_slice(&buf[..n]);
            }
        }
        let snap_hash = hasher.finalize();
        let (live_hash, live_text) = match read_live_file(root, &rel, DIFF_TEXT_LIMIT) {
            Ok(read) => read,
            Err(e) => {
                out.push(DiffEntry {
                    path: shown,
                    change: "unreadable".into(),
                    detail: e.to_string(),
                    diff: None,
                });
                continue;
            }
        };
        if snap_hash != live_hash {
            let diff = if size <= DIFF_TEXT_LIMIT && meta.len() <= DIFF_TEXT_LIMIT {
                let live_text = live_text.unwrap_or_default();
                match (std::str::from_utf8(&snap), std::str::from_utf8(&live_text)) {
                    (Ok(a), Ok(b)) => Some(unified_diff(a, b, &shown)),
                    _ => None,
                }
            } else {
                None
            };
            out.push(DiffEntry {
                path: shown,
                change: "modified".into(),
                detail: format!("{} bytes live, {size} in the snapshot", meta.len()),
                diff,
            });
        }
    }
    if let Some(scope) = scope {
        for extra in extras(root, &archive_names, &archive_dirs, scope, false)? {
            out.push(DiffEntry {
                path: format!("/{}", extra.path),
                change: "added".into(),
                detail: format!(
                    "{} on this system, not in the snapshot (--exact removes it)",
                    if extra.is_dir {
                        "a directory"
                    } else {
                        "an entry"
                    }
                ),
                diff: None,
            });
        }
        return Ok(out);
    }
    for dir in dirs_in_snapshot {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut added: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| !names_in_snapshot.contains(p))
            .collect();
        added.sort();
        for p in added {
            let rel = p.strip_prefix(root).unwrap_or(&p);
            out.push(DiffEntry {
                path: format!("/{}", rel.display()),
                change: "added".into(),
                detail: "on this system, not in the snapshot".into(),
                diff: None,
            });
        }
    }
    Ok(out)
}

/// Reads a live file for comparison: reached from `root` one component at
/// a time and opened with `O_NOFOLLOW|O_NONBLOCK`, so a link swapped in
/// since the type check (by whoever owns the directory) is never read
/// through and a fifo never blocks. Returns its content hash, and its bytes when
/// it is at most `keep` long.
fn read_live_file(
    root: &Path,
    rel: &Path,
    keep: u64,
) -> std::io::Result<(blake3::Hash, Option<Vec<u8>>)> {
    let archive_path = normalize(rel);
    let (dir, name) = match archive_path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", archive_path.as_str()),
    };
    let base = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let parent = open_beneath(&base, dir)?;
    let fd = rustix::fs::openat(
        &parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut file = std::fs::File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file any more"));
    }
    let mut hasher = ContentHasher::new();
    let mut kept = (meta.len() <= keep).then(Vec::new);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(k) = kept.as_mut() {
            if k.len() as u64 + n as u64 <= keep {
                k.extend_from_slice(&buf[..n]);
            } else {
                kept = None;
            }
        }
    }
    Ok((hasher.finalize(), kept))
}

fn type_change(path: String, was: &str) -> DiffEntry {
    DiffEntry {
        path,
        change: "type".into(),
        detail: format!("a {was} in the snapshot, something else live"),
        diff: None,
    }
}

/// A small unified diff (snapshot as `a/`, live as `b/`), line based, from
/// the longest common subsequence; meant for config files.
pub fn unified_diff(snapshot: &str, live: &str, path: &str) -> String {
    let a: Vec<&str> = snapshot.lines().collect();
    let b: Vec<&str> = live.lines().collect();
    // Config files are small; an O(n*m) table is fine up to the size limit
    // checked by the caller, but cap it to stay bounded on long files.
    if a.len() * b.len() > 4_000_000 {
        return format!(
            "--- snapshot{path}\n+++ live{path}\n(files too long to diff: {} and {} lines)\n",
            a.len(),
            b.len()
        );
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = format!("--- snapshot{path}\n+++ live{path}\n");
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--diff` runs as root over directories other users may own: a live
    /// file or directory swapped for a link is not read through.
    #[test]
    fn live_files_are_never_read_through_a_symlink() {
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("shadow"), "root-only").unwrap();
        let root = scratch.path().join("root");
        std::fs::create_dir_all(root.join("etc/app")).unwrap();
        std::fs::write(root.join("etc/app/app.conf"), "a=1").unwrap();
        let (_, kept) = read_live_file(&root, Path::new("etc/app/app.conf"), 100).unwrap();
        assert_eq!(kept.as_deref(), Some(&b"a=1"[..]));

        std::os::unix::fs::symlink(outside.join("shadow"), root.join("etc/app/linked.conf"))
            .unwrap();
        assert!(read_live_file(&root, Path::new("etc/app/linked.conf"), 100).is_err());
        std::os::unix::fs::symlink(&outside, root.join("etc/dir")).unwrap();
        assert!(read_live_file(&root, Path::new("etc/dir/shadow"), 100).is_err());
    }

    #[test]
    fn diff_shows_changed_lines_only() {
        let d = unified_diff("a\nb\nc\n", "a\nB\nc\nd\n", "/etc/x");
        assert_eq!(d, "--- snapshot/etc/x\n+++ live/etc/x\n-b\n+B\n+d\n");
    }
}
