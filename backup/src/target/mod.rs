//! Storage targets: where snapshots are kept. One small object-safe trait
//! ([`StorageTarget`]) with a local-directory and an S3 implementation.
//!
//! Keys are relative to the target's configured root/prefix and follow
//! [`crate::layout`]. A `put` is atomic from a reader's point of view: the
//! object is visible under its key only once the whole stream has been
//! stored (local: temp file + rename; S3: multipart upload completed), and a
//! failed or dropped `put` leaves nothing under the key (leftovers of a
//! crash are removed by [`StorageTarget::cleanup_incomplete`]).

pub mod local;
pub mod s3;

use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{BackupConfig, TargetConfig};
use crate::error::{Error, Result};

/// A byte stream read from or written to a target.
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;

/// One stored object as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectInfo {
    /// Relative to the target root (no configured prefix).
    pub key: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
}

/// Bytes of a stored object opened by [`StorageTarget::get_range`].
pub struct RangeRead {
    /// Exactly the bytes asked for (the target checks what the store sent).
    pub body: ByteReader,
    /// The size of the whole object as the store reports it now.
    pub object_size: u64,
}

/// How a target wants large objects read back: byte ranges of
/// `part_size` bytes, `concurrency` of them in flight. Memory held for
/// one object is at most `part_size x concurrency`, whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangedReads {
    pub part_size: u64,
    pub concurrency: usize,
}

/// Where snapshots are stored.
#[async_trait]
pub trait StorageTarget: Send + Sync {
    /// The configured name (`local`, `offsite`, ...): used in metrics labels
    /// and messages.
    fn name(&self) -> &str;

    /// Where it points, for messages: a path or `s3://bucket/prefix`. Never
    /// contains credentials.
    fn location(&self) -> String;

    /// Stores the whole of `body` under `key`; returns the bytes stored.
    /// If `body` yields an error, the upload is abandoned (nothing appears
    /// under `key`) and that error is returned with the target's context.
    async fn put(&self, key: &str, body: ByteReader) -> Result<u64>;

    /// Opens `key` for streaming reads. [`Error::NotFound`] when absent.
    async fn get(&self, key: &str) -> Result<ByteReader>;

    /// Whether objects larger than one part are read as parallel byte
    /// ranges ([`Self::get_range`]) rather than one stream, and how.
    /// `None` (the default): one stream.
    fn ranged_reads(&self) -> Option<RangedReads> {
        None
    }

    /// Opens the bytes `range` of `key` ([`Error::NotFound`] when absent).
    /// Called only when [`Self::ranged_reads`] is `Some`.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<RangeRead> {
        let _ = range;
        Err(Error::target(
            self.name(),
            self.location(),
            format!("reading part of {key}: this target reads whole objects only"),
        ))
    }

    /// Every object whose key starts with `prefix` (recursive), sorted by
    /// key. Incomplete uploads and temp files are not listed.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Removes what a crashed or killed run left under `prefix`: temp files
    /// (local) or unfinished multipart uploads (S3) started before
    /// `older_than`. Returns a description of each item removed. The job
    /// lock is local to one machine, so a younger item may be another
    /// writer's upload in progress (a cloned VM with the same host name):
    /// those, and items of unknown age, are left alone.
    async fn cleanup_incomplete(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<String>>;

    /// The Object Lock retention that still protects `key` from deletion:
    /// its mode (`GOVERNANCE`, `COMPLIANCE`) and retain-until date, or
    /// `None` when nothing stops a delete (targets without Object Lock).
    async fn locked_until(&self, key: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        let _ = key;
        Ok(None)
    }

    /// Stores a small in-memory object (manifests).
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<u64> {
        self.put(key, Box::pin(std::io::Cursor::new(bytes))).await
    }

    /// Reads a small object whole, refusing more than `limit` bytes.
    async fn get_bytes(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        let mut reader = self.get(key).await?;
        let mut out = Vec::new();
        (&mut reader)
            .take(limit + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| {
                Error::target(self.name(), self.location(), format!("reading {key}: {e}"))
            })?;
        if out.len() as u64 > limit {
            return Err(Error::Integrity(format!(
                "target {} ({}): {key} is larger than {limit} bytes",
                self.name(),
                self.location()
            )));
        }
        Ok(out)
    }
}

/// Builds the target named `name` from its configuration.
pub async fn open(name: &str, config: &TargetConfig) -> Result<Arc<dyn StorageTarget>> {
    Ok(match config {
        TargetConfig::Local(c) => Arc::new(local::LocalTarget::new(name, c)),
        TargetConfig::S3(c) => Arc::new(s3::S3Target::new(name, c).await?),
    })
}

/// Opens every target called `names`, for a long-running subsystem that
/// needs all of them (it retries until it has them): the targets in that
/// order, or one message naming each that failed (`target NAME: why; ...`).
pub async fn open_every(
    config: &BackupConfig,
    names: &[String],
) -> std::result::Result<Vec<Arc<dyn StorageTarget>>, String> {
    let mut opened = Vec::with_capacity(names.len());
    let mut errors = Vec::new();
    for (name, result) in open_all(config, names).await {
        match result {
            Ok(t) => opened.push(t),
            Err(e) => errors.push(format!("target {name}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(opened)
    } else {
        Err(errors.join("; "))
    }
}

/// Opens the configured targets called `names`, in that order. Each entry
/// is the target or why it cannot be used (not configured, or failing to
/// open), so every caller decides whether one bad target fails the whole
/// operation: a backup run carries on with the others, a restore warns.
pub async fn open_all(
    config: &BackupConfig,
    names: &[String],
) -> Vec<(String, Result<Arc<dyn StorageTarget>>)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let opened = match config.target(name) {
            Some(cfg) => open(name, &cfg).await,
            None => Err(Error::Config(format!(
                "no target named {name:?}; configured targets: {}",
                config.target_names().join(", ")
            ))),
        };
        out.push((name.clone(), opened));
    }
    out
}
