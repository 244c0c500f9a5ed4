//! The crate's error type. Every message names what failed (job, target,
//! key, command, path) and, where there is one, what to do about it; none
//! ever contains a secret (passwords, keys, signed URLs).

/// Why a backup operation failed.
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
    /// Another run of the same job holds the lock.
    #[error("{0}")]
    Locked(String),
    /// A snapshot, manifest or object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Stored data is not what the manifest says (hash or size mismatch,
    /// unreadable manifest, unsupported format version).
    #[error("{0}")]
    Integrity(String),
    /// The run took longer than the job's `timeout_secs` or was cancelled.
    #[error("{0}")]
    Cancelled(String),
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

    /// Converts to an `io::Error` so it can travel through a byte stream
    /// (a pipeline stage failing mid-stream) and come out with its text.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
