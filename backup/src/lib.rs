//! Encrypted (age), compressed (zstd) backups of databases, files and config
//! to local and S3 targets, with retention, restore, verify and drills.
//! A library: no CLI, no globals; the agent drives it.
//!
//! The seams, each in its own module:
//! - [`target::StorageTarget`]: put/get streaming, list, delete (local dir, S3).
//! - [`layout`]: `<prefix>/<host>/<job>/<snapshot-id>/<object>` keys.
//! - [`manifest::Manifest`]: the JSON written last into every snapshot.
//! - [`catalog`]: snapshots = manifests found on a target.
//! - [`source::Source`] and [`pipeline`]: stream -> zstd -> age -> targets.
//! - [`retention::decide`]: a pure keep/remove function with reasons.
//! - [`run::run_job`]: one run, end to end, and [`report::RunReport`].
//! - [`wal`]: PostgreSQL WAL archiving, base backups, point-in-time restore.

pub mod binlog;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod pipeline;
pub mod private_fs;
pub mod report;
pub mod restore;
pub mod retention;
pub mod run;
pub mod schedule;
pub mod source;
pub mod target;
pub mod verify;
pub mod wal;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

/// Re-exported so the agent uses the same time types as the manifests.
pub use chrono;
pub use error::{Error, Result};
