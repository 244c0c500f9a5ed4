//! A directory on this host as a target. Objects are written to
//! `<key>.partial` and renamed into place after `fsync`, so a key exists
//! only complete; a dropped or failed `put` removes its partial file, and
//! `cleanup_incomplete` removes those a killed process left.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::config::LocalTargetConfig;
use crate::error::{Error, Result};
use crate::target::{ByteReader, ObjectInfo, RangeRead, RangedReads, StorageTarget};

/// Suffix of files being written.
pub const PARTIAL_SUFFIX: &str = ".partial";

#[derive(Debug)]
pub struct LocalTarget {
    name: String,
    root: PathBuf,
    /// Off unless asked for: a local object streams from the page cache
    /// or disk faster than one core decrypts it, so ranges only add work.
    ranged: Option<RangedReads>,
}

impl LocalTarget {
    pub fn new(name: &str, config: &LocalTargetConfig) -> Self {
        LocalTarget {
            name: name.to_string(),
            root: config.path.clone(),
            ranged: None,
        }
    }

    /// A target rooted at `root` (tests, restore from a copied directory).
    pub fn at(name: &str, root: impl Into<PathBuf>) -> Self {
        LocalTarget {
            name: name.to_string(),
            root: root.into(),
            ranged: None,
        }
    }

    /// Reads large objects as parallel byte ranges (see
    /// [`StorageTarget::ranged_reads`]).
    pub fn with_ranged_reads(mut self, plan: RangedReads) -> Self {
        self.ranged = Some(plan);
        self
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::target(&self.name, self.location(), message)
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty()
            || rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(self.err(format!("invalid key {key:?}")));
        }
        Ok(self.root.join(rel))
    }
}

/// Removes a partial file unless the write completed.
struct PartialGuard {
    path: Option<PathBuf>,
}

impl Drop for PartialGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[async_trait]
impl StorageTarget for LocalTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, mut body: ByteReader) -> Result<u64> {
        let path = self.path_of(key)?;
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::private_fs::DIR_MODE)
            .create(&parent)
            .await
            .map_err(|e| self.err(format!("cannot create directory {}: {e}", parent.display())))?;
        let mut partial_name = path.as_os_str().to_owned();
        partial_name.push(PARTIAL_SUFFIX);
        let partial = PathBuf::from(partial_name);
        let mut guard = PartialGuard {
            path: Some(partial.clone()),
        };
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(crate::private_fs::FILE_MODE)
            .open(&partial)
            .await
            .map_err(|e| self.err(format!("cannot create {}: {e}", partial.display())))?;
        let mut file = tokio::io::BufWriter::with_capacity(1024 * 1024, file);
        let written = tokio::io::copy(&mut body, &mut file).await.map_err(|e| {
            self.err(format!(
                "writing {key}: {e}; nothing was stored under this key"
            ))
        })?;
        file.flush().await.map_err(|e| {
            self.err(format!(
                "writing {key}: {e}; nothing was stored under this key"
            ))
        })?;
        let file = file.into_inner();
        file.sync_all()
            .await
            .map_err(|e| self.err(format!("syncing {key}: {e}")))?;
        drop(file);
        tokio::fs::rename(&partial, &path).await.map_err(|e| {
            self.err(format!(
                "cannot rename {} into place: {e}",
                partial.display()
            ))
        })?;
        guard.path = None;
        // Make the rename durable too.
        if let Ok(dir) = tokio::fs::File::open(&parent).await {
            let _ = dir.sync_all().await;
        }
        Ok(written)
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        let path = self.path_of(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, f))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound(format!(
                "target {} ({}): no object {key}",
                self.name,
                self.location()
            ))),
            Err(e) => Err(self.err(format!("cannot open {}: {e}", path.display()))),
        }
    }

    fn ranged_reads(&self) -> Option<RangedReads> {
        self.ranged
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<RangeRead> {
        let path = self.path_of(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!(
                    "target {} ({}): no object {key}",
                    self.name,
                    self.location()
                )))
            }
            Err(e) => return Err(self.err(format!("cannot open {}: {e}", path.display()))),
        };
        let object_size = file
            .metadata()
            .await
            .map_err(|e| self.err(format!("cannot stat {}: {e}", path.display())))?
            .len();
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|e| self.err(format!("cannot seek in {}: {e}", path.display())))?;
        let len = range.end.saturating_sub(range.start);
        Ok(RangeRead {
            body: Box::pin(file.take(len)),
            object_size,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let name = self.name.clone();
        let location = self.location();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Walk only the directory part of the prefix.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let start = root.join(dir_part);
            walk(&root, &start, &mut |key, meta| {
                if key.starts_with(&prefix) && !key.ends_with(PARTIAL_SUFFIX) {
                    out.push(ObjectInfo {
                        key: key.to_string(),
                        size: meta.len(),
                        modified: meta.modified().ok().map(DateTime::<Utc>::from),
                    });
                }
            })
            .map_err(|e| Error::target(&name, &location, format!("listing {prefix:?}: {e}")))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| self.err(format!("listing failed: {e}")))?
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.err(format!("cannot remove {}: {e}", path.display()))),
        }
        // Remove directories left empty, up to the root.
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            if tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    async fn cleanup_incomplete(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let root = self.root.clone();
        let start = root.join(prefix.trim_end_matches('/'));
        let name = self.name.clone();
        let location = self.location();
        tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            let mut partials = Vec::new();
            walk(&root, &start, &mut |key, meta| {
                let old = meta
                    .modified()
                    .is_ok_and(|m| DateTime::<Utc>::from(m) <= older_than);
                if key.ends_with(PARTIAL_SUFFIX) && old {
                    partials.push(key.to_string());
                }
            })
            .map_err(|e| {
                Error::target(
                    &name,
                    &location,
                    format!("listing {}: {e}", start.display()),
                )
            })?;
            for key in partials {
                let p = root.join(&key);
                std::fs::remove_file(&p).map_err(|e| {
                    Error::target(
                        &name,
                        &location,
                        format!("cannot remove {}: {e}", p.display()),
                    )
                })?;
                removed.push(format!("partial file {key}"));
            }
            Ok(removed)
        })
        .await
        .map_err(|e| self.err(format!("cleanup failed: {e}")))?
    }
}

/// Calls `visit(key, metadata)` for every file under `start` (keys relative
/// to `root`, `/`-separated). A missing `start` is an empty listing.
fn walk(
    root: &Path,
    start: &Path,
    visit: &mut dyn FnMut(&str, &std::fs::Metadata),
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(start) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc_enotdir()) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            walk(root, &path, visit)?;
        } else if meta.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                let key: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect();
                visit(&key.join("/"), &meta);
            }
        }
    }
    Ok(())
}

fn libc_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}
