//! `steward backup` (placeholder until implemented).

use std::process::ExitCode;

use crate::config::Loaded;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {}

pub async fn run(_args: BackupArgs, _loaded: &Loaded) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`steward backup` is not implemented yet")
}
