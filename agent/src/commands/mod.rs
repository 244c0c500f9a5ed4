//! Command implementations; `dispatch` routes the parsed CLI to them.

pub mod annotate;
pub mod backup;
pub mod config;
pub mod drill;
pub mod metrics;
pub mod pitr;
pub mod progress;
pub mod restore;
pub mod source;
pub mod verify;
pub mod wal;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{load, Loaded};
use crate::exit_code::EXIT_CONFIG;

/// Runs the chosen command and returns its exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let log_format = cli.log_format.clone();
    // `config` commands report config errors themselves, with exit code 2.
    if let Command::Config(cmd) = cli.command {
        return Ok(config::run(cmd, cli.config.as_deref()));
    }
    let loaded = match load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            // Any exit status up to 125 tells PostgreSQL's recovery "no
            // such file", which would end it early without an error.
            if matches!(
                cli.command,
                Command::Wal(wal::WalArgs {
                    command: wal::WalCommand::Fetch { .. }
                })
            ) {
                return Ok(ExitCode::from(wal::EXIT_FETCH_FATAL));
            }
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let format = log_format.unwrap_or_else(|| loaded.config.agent.log_format.clone());
    crate::logging::init(&format, &loaded.config.agent.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("steward")
        .build()?;
    runtime.block_on(run_async(cli.command, loaded, cli.config))
}

async fn run_async(
    command: Command,
    loaded: Loaded,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Agent(args) => crate::daemon::run(args, loaded, config_path).await,
        Command::Metrics(args) => metrics::run(args, &loaded).await,
        Command::Backup(args) => backup::run(args, &loaded).await,
        Command::Restore(args) => restore::run(args, &loaded).await,
        Command::Drill(args) => drill::run(args, &loaded).await,
        Command::Annotate(args) => annotate::run(args, &loaded).await,
        Command::Wal(args) => wal::run(args, &loaded).await,
        Command::Config(_) => unreachable!("handled before loading"),
    }
}
