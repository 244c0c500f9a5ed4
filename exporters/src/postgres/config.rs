//! `[[postgres]]`: one PostgreSQL server to scrape, its validation, and the
//! driver configuration built from it (which may hold the password, so
//! nothing here ever prints it).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::config::Host;

/// One `[[postgres]]` entry: a PostgreSQL server to scrape. ("Scrape" tells
/// it from the backup crate's storage targets.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresScrapeTarget {
    /// Name of this target, used in `/health`, logs and (with several
    /// targets) as the `target` label.
    #[serde(default)]
    pub name: String,
    /// Secret: a full libpq URL or key=value string
    /// (`postgres://user:pw@host:5432/db`). When set, the host, port, user,
    /// password and database keys must not be.
    #[serde(default)]
    pub dsn: Option<String>,
    /// Host name, IP address, or the directory of the unix socket
    /// (e.g. `/var/run/postgresql`).
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_user")]
    pub user: String,
    /// Secret: prefer `password_file` or `${ENV}`. Not needed with peer
    /// authentication over the unix socket.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: f64,
    /// `statement_timeout` of Steward's session, so no statistics query
    /// keeps running on the server after a scrape gave up.
    #[serde(default = "default_statement_timeout_secs")]
    pub statement_timeout_secs: f64,
    /// Export `pg_settings_*` (postgres_exporter's
    /// `--disable-settings-metrics` turns it off).
    #[serde(default = "default_true")]
    pub settings: bool,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "exporter".into()
}
fn default_database() -> String {
    "postgres".into()
}
fn default_connect_timeout_secs() -> f64 {
    5.0
}
fn default_statement_timeout_secs() -> f64 {
    10.0
}
fn default_true() -> bool {
    true
}

impl Default for PostgresScrapeTarget {
    fn default() -> Self {
        PostgresScrapeTarget {
            name: String::new(),
            dsn: None,
            host: default_host(),
            port: default_port(),
            user: default_user(),
            password: None,
            database: default_database(),
            connect_timeout_secs: default_connect_timeout_secs(),
            statement_timeout_secs: default_statement_timeout_secs(),
            settings: true,
        }
    }
}

impl PostgresScrapeTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must be set (used in /health, logs and labels)".into());
        }
        if let Some(dsn) = &self.dsn {
            // Never echo the DSN: it holds the password.
            match tokio_postgres::Config::from_str(dsn) {
                Err(_) => errors.push(
                    "dsn: not a valid PostgreSQL URL or key=value string (value not shown: it is a secret)".into(),
                ),
                Ok(cfg) => {
                    if cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                        errors.push("dsn: sslmode=require is not supported; connect over loopback or the unix socket with sslmode=disable".into());
                    }
                }
            }
            let defaults = PostgresScrapeTarget::default();
            if self.host != defaults.host
                || self.port != defaults.port
                || self.user != defaults.user
                || self.password.is_some()
                || self.database != defaults.database
            {
                errors.push(
                    "dsn: set either dsn or host/port/user/password/database, not both".into(),
                );
            }
        } else {
            if self.host.trim().is_empty() {
                errors.push("host: must be set".into());
            }
            if self.port == 0 {
                errors.push("port: must be 1-65535".into());
            }
            if self.user.is_empty() {
                errors.push("user: must be set".into());
            }
            if self.database.is_empty() {
                errors.push("database: must be set".into());
            }
        }
        if !(self.connect_timeout_secs.is_finite() && self.connect_timeout_secs > 0.0) {
            errors.push("connect_timeout_secs: must be a positive number of seconds".into());
        }
        if !(self.statement_timeout_secs.is_finite() && self.statement_timeout_secs > 0.0) {
            errors.push("statement_timeout_secs: must be a positive number of seconds".into());
        }
        errors
    }

    /// The driver configuration (may hold the password: never print it).
    pub(super) fn config(&self) -> Result<tokio_postgres::Config, String> {
        let mut cfg = match &self.dsn {
            Some(dsn) => tokio_postgres::Config::from_str(dsn)
                .map_err(|_| "dsn is not a valid PostgreSQL URL".to_string())?,
            None => {
                let mut cfg = tokio_postgres::Config::new();
                if self.host.starts_with('/') {
                    cfg.host_path(PathBuf::from(&self.host));
                } else {
                    cfg.host(&self.host);
                }
                cfg.port(self.port).user(&self.user).dbname(&self.database);
                if let Some(pw) = &self.password {
                    cfg.password(pw.as_bytes());
                }
                cfg
            }
        };
        cfg.application_name("steward")
            .connect_timeout(Duration::from_secs_f64(
                self.connect_timeout_secs.max(0.001),
            ))
            .options(format!(
                "-c statement_timeout={}",
                (self.statement_timeout_secs * 1000.0).max(1.0) as u64
            ));
        Ok(cfg)
    }

    /// postgres_exporter's `server` label: `host:port` of the connection.
    pub(super) fn fingerprint(&self) -> String {
        let Ok(cfg) = self.config() else {
            return "localhost:5432".into();
        };
        let host = match cfg.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem() {
        let t = PostgresScrapeTarget {
            dsn: Some("postgres://u:hunter2@h:5432/db".into()),
            password: Some("x".into()),
            statement_timeout_secs: -1.0,
            ..PostgresScrapeTarget::default()
        };
        let errors = t.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("hunter2")));
        let bad_dsn = PostgresScrapeTarget {
            name: "x".into(),
            dsn: Some("postgres://u:hunter2@[bad".into()),
            ..PostgresScrapeTarget::default()
        };
        let errors = bad_dsn.validate();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(!errors[0].contains("hunter2"));
        let ok = PostgresScrapeTarget {
            name: "db".into(),
            ..PostgresScrapeTarget::default()
        };
        assert!(ok.validate().is_empty());
    }

    #[test]
    fn server_label_is_host_and_port() {
        let t = PostgresScrapeTarget {
            dsn: Some("postgres://u:p@db.example:6543/x".into()),
            ..PostgresScrapeTarget::default()
        };
        assert_eq!(t.fingerprint(), "db.example:6543");
        let t = PostgresScrapeTarget {
            host: "/var/run/postgresql".into(),
            ..PostgresScrapeTarget::default()
        };
        assert_eq!(t.fingerprint(), "/var/run/postgresql:5432");
    }
}
