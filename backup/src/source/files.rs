//! Files and config sources: directory trees as one tar stream that keeps
//! modes, owners, mtimes and symlinks (restore with `tar -x`), with
//! include/exclude globs relative to each root. Archive paths are the
//! absolute paths without the leading `/` (`etc/nginx/nginx.conf`).

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use globset::{Glob, GlobSet, GlobSetBuilder};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::manifest::FilesInfo;
use crate::pipeline::{piece_reader, Piece, CHUNK_BYTES};
use crate::source::Source;
use crate::target::ByteReader;

/// Which entries under the roots are taken.
#[derive(Debug, Clone)]
pub struct Selection {
    pub roots: Vec<PathBuf>,
    include: Option<GlobSet>,
    exclude: GlobSet,
}

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
        })
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
    /// and digests are reproducible). Entries that vanish or cannot be read
    /// are reported through `skipped`, not fatal.
    pub fn walk(
        &self,
        visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> std::io::Result<()>,
        skipped: &mut Vec<String>,
    ) -> std::io::Result<()> {
        for root in &self.roots {
            let meta = match std::fs::symlink_metadata(root) {
                Ok(m) => m,
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot read {}: {e}", root.display()),
                    ))
                }
            };
            self.walk_entry(root, Path::new(""), &meta, visit, skipped)?;
        }
        Ok(())
    }

    fn walk_entry(
        &self,
        path: &Path,
        relative: &Path,
        meta: &std::fs::Metadata,
        visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> std::io::Result<()>,
        skipped: &mut Vec<String>,
    ) -> std::io::Result<()> {
        if self.excluded(relative) {
            return Ok(());
        }
        if meta.is_dir() {
            visit(path, meta)?;
            let mut children: Vec<_> = match std::fs::read_dir(path) {
                Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect(),
                Err(e) => {
                    skipped.push(format!("{}: {e}", path.display()));
                    return Ok(());
                }
            };
            children.sort();
            for name in children {
                let child = path.join(&name);
                let child_rel = relative.join(&name);
                match std::fs::symlink_metadata(&child) {
                    Ok(m) => self.walk_entry(&child, &child_rel, &m, visit, skipped)?,
                    Err(e) => skipped.push(format!("{}: {e}", child.display())),
                }
            }
            Ok(())
        } else if self.included(relative) || relative.as_os_str().is_empty() {
            visit(path, meta)
        } else {
            Ok(())
        }
    }
}

/// The archive path of an absolute path.
fn archive_name(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_path_buf()
}

/// A tar stream of a [`Selection`], produced on a blocking thread.
pub struct TarSource {
    description: String,
    selection: Option<Selection>,
    worker: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Totals, filled while the archive is written.
    pub info: Arc<Mutex<FilesInfo>>,
}

impl TarSource {
    pub fn new(description: impl Into<String>, selection: Selection) -> Self {
        let info = FilesInfo {
            paths: selection
                .roots
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            ..Default::default()
        };
        TarSource {
            description: description.into(),
            selection: Some(selection),
            worker: None,
            info: Arc::new(Mutex::new(info)),
        }
    }
}

#[async_trait]
impl Source for TarSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn open(&mut self) -> Result<ByteReader> {
        let selection = self
            .selection
            .take()
            .ok_or_else(|| Error::Other(format!("{} was already started", self.description)))?;
        let (tx, rx) = mpsc::channel(8);
        let info = Arc::clone(&self.info);
        self.worker = Some(tokio::task::spawn_blocking(move || {
            write_tar(&selection, tx, &info)
        }));
        Ok(piece_reader(rx))
    }

    async fn finish(&mut self) -> Result<()> {
        let worker = self
            .worker
            .take()
            .ok_or_else(|| Error::Source(format!("{} was never started", self.description)))?;
        match worker.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Source(format!("{}: {e}", self.description))),
            Err(e) => Err(Error::Source(format!(
                "{}: archiver crashed: {e}",
                self.description
            ))),
        }
    }
}

fn write_tar(
    selection: &Selection,
    tx: mpsc::Sender<Piece>,
    info: &Mutex<FilesInfo>,
) -> std::io::Result<()> {
    let out = PieceWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK_BYTES),
    };
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut totals = FilesInfo::default();
    let mut skipped = Vec::new();
    let result = selection
        .walk(
            &mut |path, meta| append_entry(&mut builder, path, meta, &mut totals, &mut Vec::new()),
            &mut skipped,
        )
        .and_then(|()| builder.finish());
    let result = result.and_then(|()| {
        let mut out = builder.into_inner()?;
        out.flush_all()
    });
    if !skipped.is_empty() || !totals.skipped.is_empty() {
        tracing::warn!(
            skipped = skipped.len() + totals.skipped.len(),
            "entries skipped by the files backup (vanished, unreadable, changed while read or not regular files); the manifest lists them"
        );
    }
    if let Ok(mut i) = info.lock() {
        i.files = totals.files;
        i.directories = totals.directories;
        i.symlinks = totals.symlinks;
        i.bytes = totals.bytes;
        i.skipped = skipped;
        i.skipped.extend(totals.skipped);
    }
    let piece = match &result {
        Ok(()) => Piece::End,
        Err(e) => Piece::Failed(e.to_string()),
    };
    let _ = tx.blocking_send(piece);
    result
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    meta: &std::fs::Metadata,
    totals: &mut FilesInfo,
    _scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    let name = archive_name(path);
    if name.as_os_str().is_empty() {
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    let ft = meta.file_type();
    if ft.is_dir() {
        totals.directories += 1;
        builder.append_data(&mut header, &name, std::io::empty())
    } else if ft.is_symlink() {
        let link = std::fs::read_link(path)?;
        totals.symlinks += 1;
        header.set_size(0);
        builder.append_link(&mut header, &name, &link)
    } else if ft.is_file() {
        let file = match open_walked_file(path, meta) {
            Ok(Ok(f)) => f,
            Ok(Err(why)) => {
                totals.skipped.push(format!("{}: {why}", path.display()));
                return Ok(());
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let meta = file.metadata()?;
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let size = meta.len();
        header.set_size(size);
        totals.files += 1;
        totals.bytes += size;
        // The header says `size`: a file that grows or shrinks while read
        // is cut or zero-padded to it, so the archive stays well-formed.
        let data = file.take(size).chain(std::io::repeat(0)).take(size);
        builder.append_data(&mut header, &name, data)
    } else {
        // Sockets, fifos and devices are not backed up.
        totals.skipped.push(format!(
            "{}: not a regular file, directory or symlink",
            path.display()
        ));
        Ok(())
    }
}

/// Opens a file the walk saw as regular: never through a symlink swapped in
/// since (`O_NOFOLLOW`), never blocking on a fifo (`O_NONBLOCK`), and only
/// when the opened inode is still the one walked. `Ok(Err(why))` when the
/// entry vanished or changed: it is skipped, not archived.
fn open_walked_file(
    path: &Path,
    walked: &std::fs::Metadata,
) -> std::io::Result<std::result::Result<std::fs::File, &'static str>> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err("vanished")),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Ok(Err("replaced by a symlink while backed up"))
        }
        Err(e) => return Err(e),
    };
    let now = file.metadata()?;
    if !now.is_file() || now.dev() != walked.dev() || now.ino() != walked.ino() {
        return Ok(Err("replaced by another file or a fifo while backed up"));
    }
    Ok(Ok(file))
}

struct PieceWriter {
    tx: mpsc::Sender<Piece>,
    buf: Vec<u8>,
}

impl PieceWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.tx
            .blocking_send(Piece::Data(Bytes::from(data)))
            .map_err(|_| std::io::Error::other("the backup stream was abandoned"))
    }

    fn flush_all(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Write for PieceWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = (CHUNK_BYTES - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// sha256 over what a config backup would hold: paths, types, modes,
/// owners, symlink targets and file contents (not mtimes, so touching an
/// unchanged file makes no new snapshot).
pub fn content_digest(selection: &Selection) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut skipped = Vec::new();
    selection.walk(
        &mut |path, meta| {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            hasher.update(format!("{:o}:{}:{}:", meta.mode(), meta.uid(), meta.gid()).as_bytes());
            if meta.file_type().is_symlink() {
                hasher.update(std::fs::read_link(path)?.as_os_str().as_encoded_bytes());
            } else if meta.is_file() {
                match open_walked_file(path, meta)? {
                    Ok(mut f) => {
                        std::io::copy(&mut f, &mut hasher)?;
                    }
                    Err(why) => hasher.update(why.as_bytes()),
                }
            }
            hasher.update([0xff]);
            Ok(())
        },
        &mut skipped,
    )?;
    for s in skipped {
        hasher.update(s.as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            &mut |p, m| {
                if m.is_file() {
                    seen.push(p.strip_prefix(&root).unwrap().display().to_string());
                }
                Ok(())
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(seen, vec!["app/a.php"]);
    }

    #[test]
    fn digest_ignores_mtime_but_sees_content() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.conf");
        std::fs::write(&f, "a=1").unwrap();
        let sel = Selection::new(&[dir.path().to_path_buf()], &[], &[]).unwrap();
        let d1 = content_digest(&sel).unwrap();
        std::fs::write(&f, "a=1").unwrap();
        assert_eq!(d1, content_digest(&sel).unwrap());
        std::fs::write(&f, "a=2").unwrap();
        assert_ne!(d1, content_digest(&sel).unwrap());
    }

    /// Archives one entry the walk saw as `walked`, after `path` changed.
    fn archive_changed(path: &Path, walked: &std::fs::Metadata) -> (Vec<u8>, FilesInfo) {
        let mut builder = tar::Builder::new(Vec::new());
        let mut totals = FilesInfo::default();
        append_entry(&mut builder, path, walked, &mut totals, &mut Vec::new()).unwrap();
        (builder.into_inner().unwrap(), totals)
    }

    #[test]
    fn file_swapped_for_a_symlink_is_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root-only-content").unwrap();
        let upload = dir.path().join("upload.jpg");
        std::fs::write(&upload, "picture").unwrap();
        let walked = std::fs::symlink_metadata(&upload).unwrap();
        std::fs::remove_file(&upload).unwrap();
        std::os::unix::fs::symlink(&secret, &upload).unwrap();
        let (bytes, totals) = archive_changed(&upload, &walked);
        assert!(
            !bytes.windows(17).any(|w| w == b"root-only-content"),
            "the symlink's target was archived"
        );
        assert_eq!((totals.files, totals.skipped.len()), (0, 1), "{totals:?}");
        assert!(totals.skipped[0].contains("symlink"), "{totals:?}");
    }

    #[test]
    fn file_swapped_for_a_fifo_is_skipped_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let upload = dir.path().join("upload.jpg");
        std::fs::write(&upload, "picture").unwrap();
        let walked = std::fs::symlink_metadata(&upload).unwrap();
        std::fs::remove_file(&upload).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &upload,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let (_, totals) = archive_changed(&upload, &walked);
        assert_eq!((totals.files, totals.skipped.len()), (0, 1), "{totals:?}");
        let sel = Selection::new(&[dir.path().to_path_buf()], &[], &[]).unwrap();
        content_digest(&sel).unwrap();
    }
}
