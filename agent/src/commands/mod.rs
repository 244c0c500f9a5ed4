//! Command implementations; `dispatch` routes the parsed CLI to them.

pub mod annotate;
pub mod backup;
pub mod config;
pub mod docs;
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
    // Read (and cleared) while the process has one thread; only the daemon
    // talks to systemd.
    let systemd = if matches!(cli.command, Command::Agent(_)) {
        crate::sd_notify::take_from_env()
    } else {
        crate::sd_notify::FromEnv::default()
    };
    // `config` commands report config errors themselves, with exit code 2.
    // Neither do these read it: they describe the command line.
    match cli.command {
        Command::Config(cmd) => return Ok(config::run(cmd, cli.config.as_deref())),
        Command::Completions(args) => {
            return Ok(docs::completions(
                &args,
                <Cli as clap::CommandFactory>::command(),
            ))
        }
        Command::Man(args) => return docs::man(&args, <Cli as clap::CommandFactory>::command()),
        _ => {}
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
    if let Some(problem) = &systemd.problem {
        tracing::warn!("{problem}");
    }
    runtime.block_on(run_async(cli.command, loaded, cli.config, systemd.notifier))
}

async fn run_async(
    command: Command,
    loaded: Loaded,
    config_path: Option<std::path::PathBuf>,
    systemd: Option<crate::sd_notify::Notifier>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Agent(args) => crate::daemon::run(args, loaded, config_path, systemd).await,
        Command::Metrics(args) => metrics::run(args, &loaded).await,
        Command::Backup(args) => backup::run(args, &loaded).await,
        Command::Restore(args) => restore::run(args, &loaded).await,
        Command::Drill(args) => drill::run(args, &loaded).await,
        Command::Annotate(args) => annotate::run(args, &loaded).await,
        Command::Wal(args) => wal::run(args, &loaded).await,
        Command::Config(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled before loading")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_gets_a_page_that_names_its_options() {
        let dir = tempfile::tempdir().unwrap();
        docs::write_pages(Cli::command(), dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for page in [
            "steward.1",
            "steward-agent.1",
            "steward-backup.1",
            "steward-restore.1",
            "steward-config-check.1",
            "steward-completions.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} in {names:?}");
        }
        let agent = std::fs::read_to_string(dir.path().join("steward-agent.1")).unwrap();
        assert!(agent.starts_with(".ie \\n(.g .ds Aq"), "roff: {agent}");
        assert!(agent.contains("web.config.file"), "{agent}");
    }
}
