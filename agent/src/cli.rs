//! The command line: global options and one subcommand per command, each
//! command's own arguments defined next to its code in `commands/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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

/// `steward agent --help` and steward-agent(1): signals, systemd, files.
const AGENT_NOTES: &str = "\
Signals: SIGHUP re-reads the configuration and the web-config file (a file \
that no longer loads is reported and the running configuration is kept); \
SIGTERM and SIGINT stop after the subsystems flush.

systemd: with NOTIFY_SOCKET set (Type=notify) the agent sends READY=1 once \
the configuration is loaded and the listener is bound, RELOADING=1 and \
READY=1 around a reload, STOPPING=1 on shutdown, and WATCHDOG=1 at half of \
WATCHDOG_USEC (WatchdogSec=).

Files: /etc/steward/steward.toml (the configuration when --config is not \
given), /var/lib/steward (state), /var/backups/steward (the local backup \
target). Every option: `steward config example`.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: metrics server, scheduled backups, log shipping.
    #[command(after_long_help = AGENT_NOTES)]
    Agent(crate::daemon::AgentArgs),
    /// Run one scrape of every enabled collector and print it to stdout.
    Metrics(crate::commands::metrics::MetricsArgs),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// Run, list, inspect, verify and prune backups.
    Backup(crate::commands::backup::BackupArgs),
    /// Restore a snapshot (works from a bucket and a key alone).
    Restore(crate::commands::restore::RestoreArgs),
    /// Disaster-recovery drill: restore the latest snapshots into scratch
    /// targets, check them, and measure RTO/RPO.
    Drill(crate::commands::drill::DrillArgs),
    /// PostgreSQL WAL archiving for postgres_pitr jobs: archive_command
    /// (`wal push`) and restore_command (`wal fetch`).
    Wal(crate::commands::wal::WalArgs),
    /// Post Grafana annotations (deployments).
    Annotate(crate::commands::annotate::AnnotateArgs),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(crate::commands::docs::CompletionsArgs),
    /// Print the steward(1) man page, or write every page with --dir.
    Man(crate::commands::docs::ManArgs),
}
