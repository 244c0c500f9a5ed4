//! `steward metrics`: one scrape of every enabled collector, to stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use steward_exporters::{exposition, ScrapeOptions};

use crate::config::Loaded;

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Only these collectors (repeatable), like `collect[]`.
    #[arg(long = "collect")]
    pub collect: Vec<String>,
    /// Never these collectors (repeatable), like `exclude[]`.
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
}

pub async fn run(args: MetricsArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let scraper = crate::generation::build_scraper(&loaded.config, Vec::new());
    let output = scraper
        .scrape(&ScrapeOptions {
            include: args.collect,
            exclude: args.exclude,
            timeout: Duration::from_secs_f64(loaded.config.agent.scrape_timeout_secs),
        })
        .await;
    let text = exposition::encode(&output.families);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
