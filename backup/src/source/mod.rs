//! Sources: what a job backs up, as byte streams. A job is planned into one
//! or more [`PlannedObject`]s (one dump per database, one tar of files), each
//! with its [`Source`] (one RDB stream of a Redis server).

pub mod binlog_position;
pub mod command;
pub mod files;
pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod walk;

use async_trait::async_trait;

use crate::error::Result;
use crate::manifest::ObjectRole;
use crate::target::ByteReader;

/// One stream to back up. The pipeline calls `open` once, reads the stream
/// to its end (or to an error), then calls `finish`, whose verdict decides
/// whether the object is committed: a dump tool that exited non-zero, was
/// killed or left out its completion trailer makes `finish` fail, and then
/// nothing is stored.
#[async_trait]
pub trait Source: Send {
    /// What it is, for messages: `pg_dump of database "app" on 127.0.0.1:5432`.
    fn describe(&self) -> String;

    /// Starts producing the stream.
    async fn open(&mut self) -> Result<ByteReader>;

    /// Waits for the producer to end and says whether the stream it
    /// produced is whole. Called once, after the reader was dropped.
    async fn finish(&mut self) -> Result<()>;

    /// MySQL/MariaDB dumps made for point-in-time recovery: the binlog
    /// position of the dump's snapshot, known once `finish` succeeded.
    fn binlog_position(&self) -> Option<crate::manifest::BinlogPosition> {
        None
    }

    /// Sources that read into buffers of their own (a socket read into a
    /// fresh buffer) hand those buffers on as they are: the pipeline then
    /// takes them from the receiver instead of copying them through a
    /// byte stream from `open`. `None` (the default): the pipeline calls
    /// `open`. The stream ends when the sender is dropped; whether it is
    /// whole is `finish`'s verdict, as after `open`.
    async fn open_chunks(&mut self) -> Result<Option<ChunkReceiver>> {
        Ok(None)
    }

    /// The whole stream, when it is already in memory and hashed (see
    /// [`memory::MemorySource`]): the pipeline then hands out slices of
    /// it instead of copying it through `open`, and does not hash it a
    /// second time. Taken once; `open` and `finish` are not called then.
    fn take_in_memory(&mut self) -> Option<memory::InMemory> {
        None
    }
}

/// Buffers a source filled itself, in stream order (see
/// [`Source::open_chunks`]).
pub type ChunkReceiver = tokio::sync::mpsc::Receiver<bytes::Bytes>;

/// One object of a job run: its name in the snapshot, what it holds, and
/// the source that produces it.
pub struct PlannedObject {
    /// Name inside the snapshot, e.g. `postgres/app.pgdump.zst.age`.
    pub name: String,
    pub role: ObjectRole,
    pub database: Option<String>,
    pub source: Box<dyn Source>,
}

impl std::fmt::Debug for PlannedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedObject")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("database", &self.database)
            .field("source", &self.source.describe())
            .finish()
    }
}

/// Object names are path-like; keep database names from escaping them.
/// A name that had to change also gets `~` and 8 hex digits of its
/// sha256: whoever may create databases could otherwise name one `my app`
/// to overwrite the dump of `my_app` in the same snapshot (a name kept as
/// it is never holds a `~`, so the two kinds cannot meet either).
pub fn safe_object_segment(name: &str) -> String {
    use sha2::Digest;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == name {
        return safe;
    }
    let digest = sha2::Sha256::digest(name.as_bytes());
    format!("{safe}~{}", hex::encode(&digest[..4]))
}

#[cfg(test)]
mod tests {
    use super::safe_object_segment;

    #[test]
    fn object_segments_stay_in_place_and_never_collide() {
        assert_eq!(safe_object_segment("my_app"), "my_app");
        let spaced = safe_object_segment("my app");
        assert!(spaced.starts_with("my_app~") && spaced.len() == "my_app~".len() + 8);
        assert_ne!(safe_object_segment("my/app"), spaced);
        assert!(!safe_object_segment("../../etc").contains('/'));
    }
}
