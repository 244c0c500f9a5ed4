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
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::manifest::FilesInfo;
use crate::pipeline::{piece_reader, Piece, CHUNK_BYTES};
pub use crate::source::walk::Selection;
use crate::source::walk::Walked;
use crate::source::Source;
use crate::target::ByteReader;

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
            selection: Some(selection.globs.clone()),
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
            &mut |path, meta, walked| append_entry(&mut builder, path, meta, walked, &mut totals),
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
    walked: Walked,
    totals: &mut FilesInfo,
) -> std::io::Result<()> {
    let name = archive_name(path);
    if name.as_os_str().is_empty() {
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    match walked {
        Walked::Dir => {
            totals.directories += 1;
            builder.append_data(&mut header, &name, std::io::empty())
        }
        Walked::Symlink(target) => {
            totals.symlinks += 1;
            header.set_size(0);
            builder.append_link(&mut header, &name, &target)
        }
        Walked::File(file) => {
            let size = meta.len();
            header.set_size(size);
            totals.files += 1;
            totals.bytes += size;
            // The header says `size`: a file that grows or shrinks while
            // read is cut or zero-padded to it, so the archive stays
            // well-formed.
            let data = file.take(size).chain(std::io::repeat(0)).take(size);
            builder.append_data(&mut header, &name, data)
        }
        Walked::Other => {
            // Sockets, fifos and devices are not backed up.
            totals.skipped.push(format!(
                "{}: not a regular file, directory or symlink",
                path.display()
            ));
            Ok(())
        }
    }
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
        &mut |path, meta, walked| {
            hasher.update(path.as_os_str().as_encoded_bytes());
            hasher.update([0]);
            hasher.update(format!("{:o}:{}:{}:", meta.mode(), meta.uid(), meta.gid()).as_bytes());
            match walked {
                Walked::Symlink(target) => hasher.update(target.as_os_str().as_encoded_bytes()),
                Walked::File(mut f) => {
                    std::io::copy(&mut f, &mut hasher)?;
                }
                Walked::Dir | Walked::Other => {}
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
}
