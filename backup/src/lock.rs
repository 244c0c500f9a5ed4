//! One run of a job at a time, across the daemon and the CLI: an exclusive
//! `flock` on `<state_dir>/backup/locks/<job>.lock`. The kernel releases it
//! when the holder exits, even by SIGKILL, so a crash never leaves a stale
//! lock; the file holds the holder's pid and start time for the message
//! another run prints.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, Result};

/// A held job lock; released on drop.
#[derive(Debug)]
pub struct JobLock {
    file: std::fs::File,
    pub path: PathBuf,
}

/// The lock file of `job`.
pub fn lock_path(state_dir: &Path, job: &str) -> PathBuf {
    state_dir
        .join("backup")
        .join("locks")
        .join(format!("{job}.lock"))
}

impl JobLock {
    /// Takes the lock or fails at once naming the holder.
    pub fn try_acquire(state_dir: &Path, job: &str) -> Result<JobLock> {
        let path = lock_path(state_dir, job);
        if let Some(dir) = path.parent() {
            crate::private_fs::create_dir_all(dir).map_err(|e| {
                Error::local(
                    format!("job {job}: cannot create lock directory"),
                    dir,
                    e,
                    Some("check agent.state_dir"),
                )
            })?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::private_fs::FILE_MODE)
            .open(&path)
            .map_err(|e| Error::local(format!("job {job}: cannot open lock"), &path, e, None))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::Locked {
                job: job.to_string(),
                holder: if holder.is_empty() {
                    "holder unknown".to_string()
                } else {
                    holder.to_string()
                },
                lock: path,
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(
            file,
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        let _ = file.flush();
        Ok(JobLock { file, path })
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobLock::try_acquire(dir.path(), "db").unwrap();
        let err = JobLock::try_acquire(dir.path(), "db").unwrap_err();
        assert!(err.to_string().contains("already running"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(JobLock::try_acquire(dir.path(), "other").is_ok());
        drop(first);
        assert!(JobLock::try_acquire(dir.path(), "db").is_ok());
    }
}
