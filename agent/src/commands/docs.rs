//! `steward completions SHELL` and `steward man [--dir DIR]`: shell
//! completions and man pages generated from the clap definition (cli.rs),
//! so what the package installs always matches the binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

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

/// Prints the completion script of `cmd` (the whole CLI) for `args.shell`
/// to stdout.
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> ExitCode {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut cmd, "steward", &mut out);
    ExitCode::SUCCESS
}

/// Prints steward(1) for `cmd` (the whole CLI), or writes every page into
/// `args.dir`.
pub fn man(args: &ManArgs, cmd: clap::Command) -> anyhow::Result<ExitCode> {
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

pub fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    Ok(())
}
