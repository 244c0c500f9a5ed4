//! `steward config check|example`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{load, to_redacted_toml};
use crate::exit_code::EXIT_CONFIG;

/// The committed, commented example configuration (`examples/steward.toml`).
pub const EXAMPLE: &str = include_str!("../../../examples/steward.toml");

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration; report every error with its location.
    Check {
        /// Print the effective configuration (defaults filled in, secrets
        /// redacted).
        #[arg(long)]
        print: bool,
    },
    /// Print a complete, commented example configuration.
    Example,
}

pub fn run(cmd: ConfigCommand, path: Option<&Path>) -> ExitCode {
    match cmd {
        ConfigCommand::Example => {
            print!("{EXAMPLE}");
            ExitCode::SUCCESS
        }
        ConfigCommand::Check { print } => match load(path) {
            Ok(loaded) => {
                match &loaded.path {
                    Some(p) => eprintln!("configuration {} is valid", p.display()),
                    None => eprintln!(
                        "no configuration file at {}; embedded defaults are valid",
                        crate::config::DEFAULT_CONFIG_PATH
                    ),
                }
                if print {
                    print!("{}", to_redacted_toml(&loaded.config));
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_example_parses() {
        let config = crate::config::parse(EXAMPLE, "examples/steward.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.agent.listen.ip().is_loopback());
    }
}
