//! `steward drill` (placeholder until implemented).

use std::process::ExitCode;

use crate::config::Loaded;

#[derive(Debug, clap::Args)]
pub struct DrillArgs {}

pub async fn run(_args: DrillArgs, _loaded: &Loaded) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`steward drill` is not implemented yet")
}
