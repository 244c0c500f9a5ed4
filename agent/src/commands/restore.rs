//! `steward restore` (placeholder until implemented).

use std::process::ExitCode;

use crate::config::Loaded;

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {}

pub async fn run(_args: RestoreArgs, _loaded: &Loaded) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`steward restore` is not implemented yet")
}
