//! File checkpoints: for every tailed file, its identity and the offset up
//! to which the upstream acknowledged its records. Advanced only by
//! acknowledgements; saved atomically (write, fsync, rename).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// Why the checkpoints cannot be loaded or saved. The cause is part of
/// the message (not a `source`), so a log line with `{e}` says it all.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file is not what Steward writes (a crash cannot cause this:
    /// saves are atomic) and cannot even be copied aside.
    #[error("telemetry checkpoint file {} is damaged ({error}) and cannot be copied aside ({copy_error}); move it away to start over (files are then re-read from their start)", path.display())]
    Damaged {
        path: PathBuf,
        error: serde_json::Error,
        copy_error: std::io::Error,
    },
    #[error("cannot read telemetry checkpoints {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot save telemetry checkpoints to {}: {error}", path.display())]
    Save {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Identity and progress of one file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileCheckpoint {
    pub source: String,
    /// Where the file was last seen.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Hash of the file's first `fp_len` bytes: tells a reused inode or a
    /// truncated file from the one read before.
    pub fp_len: u64,
    pub fp_hash: u64,
    /// Acknowledged up to here (always at a record boundary).
    pub acked: u64,
    /// The tailer let go of the file (rotated away and drained, deleted,
    /// truncated); the entry goes once `acked` reaches `final_offset`.
    #[serde(default)]
    pub final_offset: Option<u64>,
}

/// All checkpoints, shared by the tailer (identity) and the exporter (acks).
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<u64, FileCheckpoint>,
    dirty: bool,
}

/// Where a damaged checkpoint file is copied: `checkpoints.json.damaged`.
pub fn damaged_copy_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

#[derive(Serialize, Deserialize, Default)]
struct OnDisk {
    files: Vec<(u64, FileCheckpoint)>,
}

impl Checkpoints {
    /// Loads `path`; `existed` tells a first start (no file) from a restart.
    ///
    /// A damaged file (disk error, an editor) does not stop telemetry: it
    /// is copied aside to `<path>.damaged`, logged as an error, and every
    /// file is read again from its start. Of the two safe-looking places
    /// to resume without positions, the start sends duplicates and the end
    /// loses whatever was not yet acknowledged; for logs, duplicates are
    /// the lesser harm (a backend can deduplicate, nothing brings back a
    /// lost line). It counts as a restart, so `start_at = "end"` does not
    /// apply.
    pub fn load(path: &Path) -> Result<(Checkpoints, bool), CheckpointError> {
        let (files, existed) = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(on_disk) => (on_disk.files.into_iter().collect(), true),
                Err(error) => {
                    let aside = damaged_copy_path(path);
                    if let Err(copy_error) = std::fs::write(&aside, &bytes) {
                        return Err(CheckpointError::Damaged {
                            path: path.to_path_buf(),
                            error,
                            copy_error,
                        });
                    }
                    tracing::error!(
                        checkpoints = %path.display(),
                        copy = %aside.display(),
                        "telemetry checkpoint file is damaged ({error}); kept a copy and starting every file from its beginning: expect duplicate log records, no loss"
                    );
                    (HashMap::new(), true)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (HashMap::new(), false),
            Err(error) => {
                return Err(CheckpointError::Read {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        Ok((
            Checkpoints {
                path: path.to_path_buf(),
                inner: Mutex::new(Inner {
                    files,
                    dirty: false,
                }),
            },
            existed,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn all(&self) -> Vec<(u64, FileCheckpoint)> {
        self.lock()
            .files
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<FileCheckpoint> {
        self.lock().files.get(&id).cloned()
    }

    /// Adds or replaces the identity of a file (keeps the larger `acked`).
    pub fn upsert(&self, id: u64, mut cp: FileCheckpoint) {
        let mut inner = self.lock();
        if let Some(old) = inner.files.get(&id) {
            cp.acked = cp.acked.max(old.acked);
        }
        inner.files.insert(id, cp);
        inner.dirty = true;
    }

    /// An acknowledgement: the file's records up to `offset` are delivered.
    pub fn advance(&self, id: u64, offset: u64) {
        let mut inner = self.lock();
        let mut remove = false;
        if let Some(cp) = inner.files.get_mut(&id) {
            if offset > cp.acked {
                cp.acked = offset;
            }
            remove = cp.final_offset.is_some_and(|f| cp.acked >= f);
        }
        if remove {
            inner.files.remove(&id);
        }
        inner.dirty = true;
    }

    /// The tailer let go of a file at `offset`.
    pub fn finish(&self, id: u64, offset: u64) {
        let mut inner = self.lock();
        let remove = match inner.files.get_mut(&id) {
            Some(cp) => {
                cp.final_offset = Some(offset);
                cp.acked >= offset
            }
            None => false,
        };
        if remove {
            inner.files.remove(&id);
        }
        inner.dirty = true;
    }

    pub fn remove(&self, id: u64) {
        let mut inner = self.lock();
        inner.files.remove(&id);
        inner.dirty = true;
    }

    /// Writes the checkpoints if they changed.
    pub fn save(&self) -> Result<(), CheckpointError> {
        let bytes = {
            let mut inner = self.lock();
            if !inner.dirty {
                return Ok(());
            }
            inner.dirty = false;
            let mut files: Vec<(u64, FileCheckpoint)> =
                inner.files.iter().map(|(k, v)| (*k, v.clone())).collect();
            files.sort_by_key(|(k, _)| *k);
            serde_json::to_vec_pretty(&OnDisk { files })
        };
        let tmp = self.path.with_extension("tmp");
        let result = (|| -> std::io::Result<()> {
            let bytes = bytes.map_err(std::io::Error::other)?;
            let mut f = crate::queue::private_file().open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(error) = result {
            self.lock().dirty = true;
            return Err(CheckpointError::Save {
                path: self.path.clone(),
                error,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_file_is_kept_aside_and_reading_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.json");
        let garbage = b"{\"files\": [[1, {\"source\": \"app\"";
        std::fs::write(&path, garbage).unwrap();
        let (checkpoints, existed) = Checkpoints::load(&path).expect("telemetry starts");
        assert!(existed, "a restart: start_at = end must not skip lines");
        assert!(checkpoints.all().is_empty());
        assert_eq!(std::fs::read(damaged_copy_path(&path)).unwrap(), garbage);
        // The next save replaces the damaged file with a good one.
        checkpoints.remove(1);
        checkpoints.save().unwrap();
        let (_, existed) = Checkpoints::load(&path).unwrap();
        assert!(existed);
    }
}
