//! The crate's error type. Every message names what failed (job, target,
//! key, command, path) and, where there is one, what to do about it; none
//! ever contains a secret (passwords, keys, signed URLs).

use std::path::PathBuf;

/// Why a backup operation failed. Callers match on the kind: the CLI and
/// the scheduler treat [`Error::Locked`] as "skipped", a restore shows
/// [`Error::NotFound`] and [`Error::Integrity`] as what they are.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[backup]` section is inconsistent (unknown job or target, bad
    /// recipient, ...).
    #[error("{0}")]
    Config(String),
    /// A source did not produce a whole stream: the dump tool failed, was
    /// killed, could not reach its database, or a file could not be read.
    #[error("{0}")]
    Source(String),
    /// A target refused or failed an operation.
    #[error("target {target} ({location}): {message}")]
    Target {
        target: String,
        location: String,
        message: String,
    },
    /// Another run of the same job holds its lock (`holder` is what the
    /// lock file says: pid and start time).
    #[error(
        "job {job} is already running ({holder}); wait for it to finish (the lock {} is released when that process exits)",
        lock.display()
    )]
    Locked {
        job: String,
        holder: String,
        lock: PathBuf,
    },
    /// A snapshot, manifest or object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Stored data is not what the manifest says (hash or size mismatch,
    /// unreadable manifest, unsupported format version).
    #[error("{0}")]
    Integrity(String),
    /// The run took longer than the job's `timeout_secs`.
    #[error(
        "job {job}: timed out after {timeout_secs}s (timeout_secs); the dump was stopped and nothing was committed"
    )]
    TimedOut { job: String, timeout_secs: u64 },
    /// A local file or directory (state directory, lock, scratch space)
    /// could not be used; `doing` says what for and what to check.
    #[error("{doing} {}: {source}{hint}", path.display())]
    Local {
        doing: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
        /// `; check ...` or empty.
        hint: String,
    },
    /// A background task of Steward's own failed (panicked or was
    /// cancelled): a bug, not the data's or the configuration's fault.
    #[error("internal: {0}")]
    Internal(String),
    /// Anything else, already described.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn target(
        target: impl Into<String>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Target {
            target: target.into(),
            location: location.into(),
            message: message.into(),
        }
    }

    /// A [`Error::Local`] error: `doing` what to `path` (`cannot create the
    /// lock directory`), with `hint` (`check agent.state_dir`) or none.
    pub fn local(
        doing: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
        hint: Option<&str>,
    ) -> Self {
        Error::Local {
            doing: doing.into(),
            path: path.into(),
            source,
            hint: hint.map(|h| format!("; {h}")).unwrap_or_default(),
        }
    }

    /// Converts to an `io::Error` so it can travel through a byte stream
    /// (a pipeline stage failing mid-stream) and come out with its text.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
