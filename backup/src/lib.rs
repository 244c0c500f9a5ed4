//! Encrypted (age), compressed (zstd) backups of databases, files and config
//! to local and S3 targets, with retention, restore, verify and drills.
//! A library: no CLI, no globals; the agent drives it.

pub mod config;
