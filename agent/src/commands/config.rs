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

    /// The commented `[[redis]]` example, uncommented once (its `# #`
    /// notes stay comments), parses into one Redis target with the
    /// documented defaults: the example cannot drift from the schema.
    #[test]
    fn committed_redis_example_parses_when_uncommented() {
        let start = EXAMPLE
            .find("\n# [[redis]]\n")
            .expect("examples/steward.toml has a commented [[redis]] block")
            + 1;
        let block: String = EXAMPLE[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        assert!(block.starts_with("[[redis]]\n"), "{block}");
        let config = crate::config::parse(&block, "redis example", &|_| None)
            .unwrap_or_else(|e| panic!("{e}\n{block}"));
        let redis = config
            .collectors
            .iter()
            .find(|s| s.key() == "redis")
            .expect("a redis section");
        assert_eq!(redis.collectors().len(), 1, "{block}");
        let toml = redis.to_toml().unwrap();
        let entry = &toml.as_array().expect("[[redis]] is a list")[0];
        assert_eq!(entry["name"].as_str(), Some("redis"));
        assert_eq!(entry["addr"].as_str(), Some("redis://127.0.0.1:6379"));
        assert_eq!(entry["queue_prefix"].as_str(), Some("queues:"));
        assert_eq!(entry["timeout_secs"].as_float(), Some(5.0));
    }

    /// The package's /etc/steward/steward.toml: valid, loopback, node
    /// metrics on, and nothing else to start (no backup job, no upstream).
    #[test]
    fn packaged_default_config_is_node_metrics_on_loopback() {
        let text = include_str!("../../../packaging/steward.toml");
        let config = crate::config::parse(text, "packaging/steward.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.agent.listen.to_string(), "127.0.0.1:9810");
        assert_eq!(
            config.agent.state_dir,
            std::path::Path::new("/var/lib/steward")
        );
        let built: Vec<&str> = config
            .collectors
            .iter()
            .flat_map(|s| s.collectors().into_iter().map(move |_| s.key()))
            .collect();
        assert!(
            !built.is_empty() && built.iter().all(|k| *k == "node"),
            "{built:?}"
        );
        assert!(config.backup.jobs.is_empty());
        assert!(config.telemetry.exporter.is_none());
    }
}
