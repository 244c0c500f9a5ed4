//! `steward annotate` (placeholder until implemented).

use std::process::ExitCode;

use crate::config::Loaded;

#[derive(Debug, clap::Args)]
pub struct AnnotateArgs {}

pub async fn run(_args: AnnotateArgs, _loaded: &Loaded) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`steward annotate` is not implemented yet")
}
