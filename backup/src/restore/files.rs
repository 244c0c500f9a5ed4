//! Restoring files and config snapshots: the tar archive is unpacked into a
//! directory (never over the live paths unless asked), keeping modes,
//! owners, mtimes and symlinks, optionally only paths matching globs.
//! Comparing a snapshot with the live files is [`crate::restore::diff`].

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};
use crate::manifest::{ObjectEntry, ObjectRole};
use crate::restore::exact::{extras, restore_dir_mtimes, Scope};
use crate::restore::identity::Identities;
use crate::restore::stream::{open_object, take_fault, Progress};
pub use crate::restore::tree::{TreeDigest, TreeRecord};
use crate::restore::unpack::{io_context, is_root};
pub use crate::restore::unpack::{unpack, unpack_recording, UnpackOptions, Unpacked};
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
    /// Exact rollback: also remove the entries inside the job's roots that
    /// the snapshot does not have (those the job would have archived).
    pub exact: bool,
    /// Read every restored file's content back for the tree hash, not only
    /// the files no longer as the unpack left them (see
    /// [`crate::restore::tree::TreeDigest::read_back`]).
    pub reread: bool,
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
    let scope = if opts.exact {
        if filter.is_some() {
            return Err(Error::Config(
                "--exact puts back the whole snapshot tree and cannot be combined with --path"
                    .into(),
            ));
        }
        Some(Scope::from_manifest(
            &manifest.snapshot_id,
            manifest.files.as_ref(),
        )?)
    } else {
        None
    };
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
    let reread = opts.reread;
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
        let removed = match &scope {
            Some(scope) => {
                let (names, dirs) = tree.names_and_dirs();
                let removed = extras(&dest_for_task, &names, &dirs, scope, true)?;
                restore_dir_mtimes(&dest_for_task, &removed, &tree.dir_mtimes())?;
                removed
            }
            None => Vec::new(),
        };
        let disk = tree.read_back_with(&dest_for_task, reread)?;
        Ok::<_, std::io::Error>((counts, tree, disk, removed))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    progress.finish();
    let exact = opts.exact;
    let (unpacked, tree, disk, removed) = match result {
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
        "stored sha256 and plaintext hash match the manifest",
    ));
    if exact {
        let shown: Vec<String> = removed
            .iter()
            .take(5)
            .map(|e| format!("/{}", e.path))
            .collect();
        checks.push(Check::ok(
            "exact",
            if removed.is_empty() {
                "nothing inside the job's paths was missing from the snapshot".to_string()
            } else {
                format!(
                    "removed {} entries the snapshot did not have: {}{}",
                    removed.len(),
                    shown.join(", "),
                    if removed.len() > shown.len() {
                        ", ..."
                    } else {
                        ""
                    }
                )
            },
        ));
    }
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
pub(crate) fn refuse_foreign_owner(dest: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
