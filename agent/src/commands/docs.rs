//! `steward completions SHELL` and `steward man [--dir DIR]`: shell
//! completions and man pages generated from the clap definition (cli.rs),
//! so what the package installs always matches the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write steward.1 and one page per subcommand (steward-agent.1,
    /// steward-backup-run.1, ...) into this directory instead of printing
    /// steward.1 to stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut cmd = crate::cli::Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "steward", &mut out);
    ExitCode::SUCCESS
}

/// Prints steward(1), or writes every page into `args.dir`.
pub fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = crate::cli::Cli::command();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().lock().write_all(&page)?;
        }
        Some(dir) => write_pages(cmd, dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_page_that_names_its_options() {
        let dir = tempfile::tempdir().unwrap();
        write_pages(crate::cli::Cli::command(), dir.path()).unwrap();
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
