//! Physical PostgreSQL protection (`kind = "postgres_pitr"`): continuous
//! WAL archiving through the backup pipeline, base backups, the WAL chain
//! and its pruning, and restore to a point in time.
//!
//! - [`names`]: WAL file names and LSNs.
//! - [`archive`]: `steward wal push` / `wal fetch`.
//! - [`keys`]: their content-addressed keys under `<host>/<job>/wal/`.
//! - [`prefetch`]: `wal fetch` downloads the next segments in parallel.
//! - [`base`]: `pg_basebackup -Ft -X none` as a job's source.
//! - [`chain`]: which WAL a base backup needs; what pruning may remove.
//! - [`retention`]: removes what no kept base backup needs (segments and
//!   streamed deltas).
//! - [`spool`]: async archiving's local spool, drained by the agent.
//! - [`status`]: what the archive holds, for the agent's metrics.
//! - [`recovery`]: unpack and recovery settings; `server`: start and wait.
//! - [`tar_watch`]: the backup's own positions, read from its tar stream.
//! - [`stream`]: the streamed tail (deltas of the segment being written);
//!   [`receive`]: `pg_receivewal` as a supervised child that feeds it;
//!   `slot`: the replication slot as the server reports it.

pub mod archive;
pub mod base;
pub mod chain;
pub mod keys;
pub mod names;
pub mod prefetch;
pub mod receive;
pub mod recovery;
pub mod retention;
mod server;
mod slot;
pub mod spool;
pub mod status;
pub mod stream;
pub mod tar_watch;
