//! `steward`: one binary that replaces a host's exporters, log/trace shipper
//! and backup scripts. This file holds the command line; each command lives
//! in its own module.

mod commands;
mod config;
mod daemon;
mod grafana;
mod logging;
mod memory;
mod scheduler;
mod self_metrics;
mod server;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a configuration or usage problem (as `config check` uses).
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "steward",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("STEWARD_REVISION_OR_UNKNOWN"), ")"),
    about = "Observability and backup sidecar: Prometheus metrics for the host, nginx, PHP-FPM, MySQL and PostgreSQL; logs and traces over OTLP; encrypted backups with restore and drills.",
    propagate_version = true
)]
pub struct Cli {
    /// Configuration file. Without it, /etc/steward/steward.toml is used if
    /// it exists, else embedded defaults.
    #[arg(long, short = 'c', global = true, env = "STEWARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: text or json (overrides agent.log_format).
    #[arg(long, global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: metrics server, scheduled backups, log shipping.
    Agent(daemon::AgentArgs),
    /// Run one scrape of every enabled collector and print it to stdout.
    Metrics(commands::metrics::MetricsArgs),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Run, list, inspect, verify and prune backups.
    Backup(commands::backup::BackupArgs),
    /// Restore a snapshot (works from a bucket and a key alone).
    Restore(commands::restore::RestoreArgs),
    /// Disaster-recovery drill: restore the latest snapshots into scratch
    /// targets, check them, and measure RTO/RPO.
    Drill(commands::drill::DrillArgs),
    /// Post Grafana annotations (deployments).
    Annotate(commands::annotate::AnnotateArgs),
}

fn main() -> ExitCode {
    memory::limit_malloc_arenas();
    let cli = Cli::parse();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // One clear line (plus causes), never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
