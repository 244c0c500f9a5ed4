//! The one configuration schema: load a TOML file, substitute `${VAR}` in
//! its string values, read `*_file` secrets, deserialize every section and validate, reporting
//! every error at once with the key it is about.

pub mod collectors;
mod env;
pub mod http;
pub mod notify;
mod secrets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use steward_backup::config::BackupConfig;
use steward_telemetry::config::TelemetryConfig;

use crate::grafana::GrafanaConfig;
use collectors::{CollectorSections, KINDS};

pub use secrets::redact;

/// Where `steward` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/steward/steward.toml";

/// The default listen address: loopback only, on a port of Steward's own
/// that none of the exporters it replaces use (9100, 9113, 9104, 9187, 9253).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9810";

/// The whole configuration. Each library owns the structs of its section.
/// Built by [`parse`], section by section (unknown sections and keys are
/// errors there), so it is only serialized, never deserialized whole.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    pub agent: AgentConfig,
    /// `[node]`, `[[nginx]]`, ...: one section per kind in
    /// [`collectors::KINDS`], at the top level of the file.
    #[serde(flatten)]
    pub collectors: CollectorSections,
    pub backup: BackupConfig,
    pub telemetry: TelemetryConfig,
    pub grafana: GrafanaConfig,
    /// `[[notify]]`: Healthchecks, Slack and webhook notifications of
    /// backups and drills.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<notify::NotifierConfig>,
}

/// `[agent]`: the daemon itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the HTTP server (`/metrics`, `/health`, ...). Loopback by
    /// default; expose it deliberately.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Host name used in backup paths, OTLP `host.name` and annotations.
    /// Defaults to the kernel's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Upper bound of a scrape when Prometheus sends no
    /// `X-Prometheus-Scrape-Timeout-Seconds` header.
    #[serde(default = "default_scrape_timeout_secs")]
    pub scrape_timeout_secs: f64,
    /// Where Steward keeps its state: locks, run reports, telemetry
    /// checkpoints and queue.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `text` (journald-friendly) or `json`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// A tracing filter such as `info` or `steward=debug`.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// exporter-toolkit's web-config file (TLS, client certificates, basic
    /// auth, headers), as node_exporter's `--web.config.file`.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
    /// `[agent.http]`: server timeouts and scrape limits.
    #[serde(default)]
    pub http: http::HttpConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen: default_listen(),
            hostname: None,
            scrape_timeout_secs: default_scrape_timeout_secs(),
            state_dir: default_state_dir(),
            log_format: default_log_format(),
            log_level: default_log_level(),
            web_config_file: None,
            http: http::HttpConfig::default(),
        }
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}
fn default_scrape_timeout_secs() -> f64 {
    10.0
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/steward")
}
fn default_log_format() -> String {
    "text".into()
}
fn default_log_level() -> String {
    "info".into()
}

impl AgentConfig {
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(self.scrape_timeout_secs > 0.0 && self.scrape_timeout_secs <= 300.0) {
            errors.push(format!(
                "scrape_timeout_secs: {} is out of range; use a value in (0, 300]",
                self.scrape_timeout_secs
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            errors.push(format!(
                "log_format: unknown format {:?}; use \"text\" or \"json\"",
                self.log_format
            ));
        }
        errors.extend(self.http.validate());
        if let Some(path) = &self.web_config_file {
            // Read now (certificates included), so `config check`, startup
            // and a reload all refuse a file that cannot serve.
            if let Err(e) = steward_web::WebRuntime::load(path, http::ALPN) {
                errors.push(format!("web_config_file: {e}"));
            }
        }
        errors
    }

    /// The configured host name, or the kernel's.
    pub fn effective_hostname(&self) -> String {
        self.hostname.clone().unwrap_or_else(system_hostname)
    }
}

/// The kernel's host name (what `uname -n` prints).
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Every problem found in a configuration, each naming its location.
#[derive(Debug)]
pub struct ConfigErrors {
    pub source: String,
    pub errors: Vec<String>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "configuration {} has {} error{}:",
            self.source,
            self.errors.len(),
            if self.errors.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        write!(
            f,
            "fix them and run `steward config check --config {}`",
            self.source
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// `None` when running on embedded defaults (no file).
    pub path: Option<PathBuf>,
}

/// Loads the configuration. `explicit` is `--config`: a missing explicit
/// file is an error, while a missing default file means embedded defaults.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let config = parse(&text, &path.display().to_string(), &|k| {
                std::env::var(k).ok()
            })?;
            Ok(Loaded {
                config,
                path: Some(path),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Loaded {
            config: Config::default(),
            path: None,
        }),
        Err(e) => Err(ConfigErrors {
            source: path.display().to_string(),
            errors: vec![format!("cannot read the file: {e}")],
        }),
    }
}

/// Parses configuration text; `lookup` resolves environment variables.
pub fn parse(
    text: &str,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |errors: Vec<String>| ConfigErrors {
        source: source.to_string(),
        errors,
    };
    // Parsed before substitution: the parser only ever quotes the file.
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        let hint = if text.contains("= ${") {
            "; `${VAR}` is substituted inside quoted strings only: write \"${VAR}\""
        } else {
            ""
        };
        fail(vec![format!(
            "{} (TOML syntax{hint})",
            e.to_string().trim().replace('\n', "\n    ")
        )])
    })?;
    let (substituted, errors) = env::substitute(&mut table, lookup);
    if !errors.is_empty() {
        return Err(fail(errors));
    }
    // From here on a message may quote a value: never one from the
    // environment.
    let fail = |errors: Vec<String>| ConfigErrors {
        source: source.to_string(),
        errors: errors.iter().map(|e| substituted.scrub(e)).collect(),
    };
    let mut errors = secrets::resolve_files(&mut table, "");

    let mut config = Config::default();
    let mut known = vec!["agent"];
    known.extend(KINDS.iter().map(|k| k.key()));
    known.extend(["backup", "telemetry", "grafana", "notify"]);
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            errors.push(format!(
                "{key}: unknown section; known sections are {}",
                known.join(", ")
            ));
        }
    }
    section(&table, "agent", &mut config.agent, &mut errors);
    for kind in KINDS {
        if let Some(parsed) = section_with(&table, kind.key(), |v| kind.parse(v), &mut errors) {
            config.collectors.set(parsed);
        }
    }
    section(&table, "backup", &mut config.backup, &mut errors);
    section(&table, "telemetry", &mut config.telemetry, &mut errors);
    section(&table, "grafana", &mut config.grafana, &mut errors);
    section(&table, "notify", &mut config.notify, &mut errors);

    if errors.is_empty() {
        errors.extend(validate(&config));
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(fail(errors))
    }
}

/// Deserializes one top-level section, recording an error with its key path
/// instead of stopping, so all sections are checked in one pass.
fn section<T: DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    slot: &mut T,
    errors: &mut Vec<String>,
) {
    if let Some(v) = section_with(table, key, serde_path_to_error::deserialize, errors) {
        *slot = v;
    }
}

/// [`section`] with the deserializer given: `None` when the section is
/// absent or its error was recorded.
fn section_with<T>(
    table: &toml::Table,
    key: &str,
    deserialize: impl FnOnce(toml::Value) -> Result<T, serde_path_to_error::Error<toml::de::Error>>,
    errors: &mut Vec<String>,
) -> Option<T> {
    let value = table.get(key)?.clone();
    match deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let location = if path == "." || path.is_empty() {
                key.to_string()
            } else if path.starts_with('[') {
                format!("{key}{path}")
            } else {
                format!("{key}.{path}")
            };
            // The deserializer appends "in `key`" lines; the path says it.
            let message = e.into_inner().to_string();
            let message = message.lines().next().unwrap_or("").trim().to_string();
            errors.push(format!("{location}: {message}"));
            None
        }
    }
}

/// Cross-section semantic checks, all of them, each prefixed by its key.
pub fn validate(config: &Config) -> Vec<String> {
    fn under(prefix: &str, list: Vec<String>) -> impl Iterator<Item = String> + '_ {
        list.into_iter().map(move |e| format!("{prefix}.{e}"))
    }
    let mut errors: Vec<String> = under("agent", config.agent.validate()).collect();
    for section in config.collectors.iter() {
        errors.extend(section.validate());
    }
    errors.extend(under("backup", config.backup.validate()));
    errors.extend(under("telemetry", config.telemetry.validate()));
    errors.extend(under("grafana", config.grafana.validate()));
    let jobs: Vec<&str> = config.backup.jobs.keys().map(String::as_str).collect();
    errors.extend(notify::validate_all(&config.notify, &jobs));
    // After every section's own checks, so messages keep their order.
    for section in config.collectors.iter() {
        errors.extend(section.duplicates());
    }
    errors
}

/// The effective configuration as TOML with every secret replaced by
/// `<redacted>`, for `steward config check --print`.
pub fn to_redacted_toml(config: &Config) -> String {
    match toml::Table::try_from(config) {
        Ok(mut table) => {
            redact(&mut table);
            toml::to_string_pretty(&table).unwrap_or_default()
        }
        Err(e) => format!("# cannot render the configuration: {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_text_is_embedded_defaults() {
        let c = parse("", "t", &no_env).unwrap();
        assert_eq!(c.agent.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.agent.listen.ip().is_loopback());
        let node = c.collectors.iter().find(|s| s.key() == "node").unwrap();
        assert_eq!(node.to_toml().unwrap()["enabled"].as_bool(), Some(true));
    }

    #[test]
    fn reports_every_error_with_location() {
        let text = "[agent]\nlisten = \"nope\"\n[node]\nenabld = true\n[bogus]\n";
        let err = parse(text, "t", &no_env).unwrap_err();
        assert_eq!(err.errors.len(), 3, "{err}");
        let all = err.to_string();
        assert!(all.contains("agent.listen"), "{all}");
        assert!(all.contains("node.enabld: unknown field `enabld`"), "{all}");
        assert!(all.contains("bogus: unknown section"), "{all}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let text = "[agent]\nscrape_timeout_secs = -1\nlog_format = \"xml\"\n";
        let err = parse(text, "t", &no_env).unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
        assert!(err.errors[0].starts_with("agent.scrape_timeout_secs"));
    }

    #[test]
    fn duplicate_target_names_name_every_entry() {
        let text = "[[nginx]]\nname = \"web\"\n[[nginx]]\nname = \"web\"\n\
                    [[postgres]]\nname = \"db\"\n[[postgres]]\nname = \"other\"\n\
                    [[postgres]]\nname = \"db\"\n[[probe]]\nname = \"livez\"\n\
                    url = \"http://127.0.0.1/livez\"\n\
                    [[phpfpm]]\nscrape_uri = \"tcp://127.0.0.1:9000/status\"\n\
                    [[phpfpm]]\nscrape_uri = \"tcp://127.0.0.1:9000/status\"\nname = \"www\"\n";
        let err = parse(text, "t", &no_env).unwrap_err();
        let all = err.to_string();
        assert_eq!(err.errors.len(), 3, "{all}");
        assert!(
            all.contains("nginx[1].name: \"web\" is used by nginx[0] and nginx[1]"),
            "{all}"
        );
        assert!(
            all.contains("postgres[2].name: \"db\" is used by postgres[0] and postgres[2]"),
            "{all}"
        );
        assert!(all.contains("phpfpm[1].scrape_uri:"), "{all}");
        assert!(!all.contains("probe"), "{all}");
        let distinct = "[[mysql]]\nname = \"a\"\n[[mysql]]\nname = \"b\"\n";
        assert!(parse(distinct, "t", &no_env).is_ok());
    }

    #[test]
    fn unknown_section_lists_every_known_one_in_schema_order() {
        let err = parse("[memcached]\n", "t", &no_env).unwrap_err();
        assert_eq!(
            err.errors,
            [
                "memcached: unknown section; known sections are agent, node, nginx, phpfpm, \
              mysql, postgres, probe, redis, backup, telemetry, grafana, notify"
            ]
        );
    }

    #[test]
    fn collector_sections_report_key_paths_and_print_at_top_level() {
        let text = "[node]\nenabled = false\n[[nginx]]\nname = \"web\"\n\
                    [[probe]]\nname = \"\"\nurl = \"http://127.0.0.1/\"\n[[mysql]]\nnam = \"x\"\n";
        let err = parse(text, "t", &no_env).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(
            err.errors[0].starts_with("mysql[0].nam: unknown field"),
            "{err}"
        );
        let err = parse(&text.replace("nam = ", "name = "), "t", &no_env).unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(err.errors[0].starts_with("probe[0].name: "), "{err}");

        let valid = text
            .replace("nam = ", "name = ")
            .replace("name = \"\"", "name = \"up\"");
        let config = parse(&valid, "t", &no_env).unwrap();
        // Unredacted: `<redacted>` probe headers would not parse back.
        let print = |c: &Config| toml::to_string(&toml::Table::try_from(c).unwrap()).unwrap();
        let printed = print(&config);
        let table: toml::Table = toml::from_str(&printed).unwrap();
        assert_eq!(table["node"]["enabled"].as_bool(), Some(false), "{printed}");
        assert_eq!(table["nginx"][0]["name"].as_str(), Some("web"), "{printed}");
        assert_eq!(
            table["phpfpm"].as_array().map(Vec::len),
            Some(0),
            "{printed}"
        );
        let again = parse(&printed, "printed", &no_env).unwrap();
        assert_eq!(print(&again), printed);
    }

    #[test]
    fn env_substitution_applies() {
        let text = "[agent]\nlisten = \"${ADDR:-127.0.0.1:1}\"\nhostname = \"${HOST}\"\n";
        let c = parse(text, "t", &|k| (k == "HOST").then(|| "web1".to_string())).unwrap();
        assert_eq!(c.agent.listen.to_string(), "127.0.0.1:1");
        assert_eq!(c.agent.hostname.as_deref(), Some("web1"));
    }

    /// A secret as hostile as environment values get.
    const NASTY: &str = "s3\"cr\\et\nx = 1\n[evil]";

    fn nasty_env(k: &str) -> Option<String> {
        (k == "SECRET").then(|| NASTY.to_string())
    }

    #[test]
    fn a_secret_with_quotes_backslashes_and_newlines_is_taken_as_is() {
        let text = "[grafana]\nurl = \"http://127.0.0.1:3000\"\ntoken = \"${SECRET}\"\n";
        let c = parse(text, "t", &nasty_env).unwrap();
        assert_eq!(c.grafana.token.as_deref(), Some(NASTY));
    }

    #[test]
    fn errors_never_show_a_substituted_value() {
        // A syntax error on the secret's line quotes the file, not the secret.
        let text = "[grafana]\ntoken = \"${SECRET}\" oops\n";
        let all = parse(text, "t", &nasty_env).unwrap_err().to_string();
        assert!(all.contains("TOML syntax"), "{all}");
        assert!(!all.contains("s3") && !all.contains("evil"), "{all}");
        // A value the schema rejects is named by its key, its content hidden.
        let text = "[agent]\nlisten = \"${SECRET}\"\n";
        let all = parse(text, "t", &nasty_env).unwrap_err().to_string();
        assert!(all.contains("agent.listen"), "{all}");
        assert!(!all.contains("s3") && !all.contains("evil"), "{all}");
        // Unquoted, `${VAR}` is a syntax error with a hint.
        let all = parse("[agent]\nhostname = ${SECRET}\n", "t", &nasty_env)
            .unwrap_err()
            .to_string();
        assert!(all.contains("inside quoted strings"), "{all}");
    }
}
