//! The `[[redis]]` entry: where the server is (TCP, unix socket, TLS), how
//! to log in, which keys and queues to look at, and its semantic checks.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One `[[redis]]` entry: a Redis server to scrape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisScrapeTarget {
    /// Name of this target, used in `/health`, logs and (with several
    /// targets) as the `target` label.
    #[serde(default = "default_name")]
    pub name: String,
    /// `redis://host:port`, `rediss://host:port` (TLS) or
    /// `unix:/path/to/redis.sock`.
    #[serde(default = "default_addr")]
    pub addr: String,
    /// ACL user (Redis 6+); without it AUTH uses the password alone.
    #[serde(default)]
    pub user: Option<String>,
    /// Secret: prefer `password_file` or `${ENV}`.
    #[serde(default)]
    pub password: Option<String>,
    /// `rediss://` only: PEM CA certificates that signed the server's
    /// certificate. Without it the web PKI roots are used (managed Redis).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `rediss://` only: PEM client certificate (chain) for servers that
    /// require one (`tls-auth-clients yes`), with `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// `rediss://` only: PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// `rediss://` only: the name the server's certificate must carry, when
    /// it differs from the host in `addr` (e.g. connecting by IP address).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Upper bound of one scrape's exchange; the scrape deadline may cut it
    /// shorter.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Exact keys whose size is exported as `redis_key_size{db,key}`:
    /// `"key"` (db 0) or `"db3=key"`, the exporter's `--check-single-keys`
    /// syntax. Never SCANs.
    #[serde(default)]
    pub check_single_keys: Vec<String>,
    /// Key patterns (the exporter's `--check-keys`): a glob (`*`, `?`,
    /// `[`) is expanded with SCAN MATCH, at most `check_keys_max_scanned`
    /// keys examined per scrape; a name without glob characters is checked
    /// as an exact key.
    #[serde(default)]
    pub check_keys: Vec<String>,
    /// SCAN's COUNT (the exporter's `--check-keys-batch-size`).
    #[serde(default = "default_batch_size")]
    pub check_keys_batch_size: u32,
    /// Bound on the keys all `check_keys` SCANs of one scrape may examine
    /// (SCAN calls times COUNT); a pattern cut short is reported in
    /// `steward_redis_key_check_truncated`.
    #[serde(default = "default_max_scanned")]
    pub check_keys_max_scanned: u32,
    /// Job queue names (`"default"`, `"emails"`) counted into
    /// `steward_queue_jobs{queue,state}`.
    #[serde(default)]
    pub queues: Vec<String>,
    /// The connection's key prefix, prepended to every queue key (Laravel's
    /// `database.redis.options.prefix`, e.g. `laravel_database_`).
    #[serde(default)]
    pub prefix: String,
    /// Between the prefix and the queue name (Laravel: `queues:`).
    #[serde(default = "default_queue_prefix")]
    pub queue_prefix: String,
    /// Database the queues live in (Laravel's `database` of the connection).
    #[serde(default)]
    pub queue_db: u32,
}

fn default_name() -> String {
    "redis".into()
}
fn default_addr() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_timeout_secs() -> f64 {
    5.0
}
fn default_queue_prefix() -> String {
    "queues:".into()
}
fn default_batch_size() -> u32 {
    1000
}
fn default_max_scanned() -> u32 {
    10_000
}

impl Default for RedisScrapeTarget {
    fn default() -> Self {
        RedisScrapeTarget {
            name: default_name(),
            addr: default_addr(),
            user: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_server_name: None,
            timeout_secs: default_timeout_secs(),
            check_single_keys: Vec::new(),
            check_keys: Vec::new(),
            check_keys_batch_size: default_batch_size(),
            check_keys_max_scanned: default_max_scanned(),
            queues: Vec::new(),
            prefix: String::new(),
            queue_prefix: default_queue_prefix(),
            queue_db: 0,
        }
    }
}

impl RedisScrapeTarget {
    /// The `tls_*` settings, for the rustls client configuration.
    pub(super) fn tls_files(&self) -> steward_tls::TlsFiles<'_> {
        steward_tls::TlsFiles {
            ca: self.tls_ca_file.as_deref(),
            cert: self.tls_cert_file.as_deref(),
            key: self.tls_key_file.as_deref(),
            server_name: self.tls_server_name.as_deref(),
        }
    }

    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must not be empty; it names the target in logs and labels".into());
        }
        match Address::parse(&self.addr) {
            Err(e) => errors.push(format!("addr: {e}")),
            Ok(Address::Tls { .. }) => {
                if let Err(e) = steward_tls::client_config(&self.tls_files()) {
                    errors.push(e);
                }
            }
            Ok(_) => {
                for (key, set) in [
                    ("tls_ca_file", self.tls_ca_file.is_some()),
                    ("tls_cert_file", self.tls_cert_file.is_some()),
                    ("tls_key_file", self.tls_key_file.is_some()),
                    ("tls_server_name", self.tls_server_name.is_some()),
                ] {
                    if set {
                        errors.push(format!(
                            "{key}: only used with a rediss:// addr; write addr = \"rediss://host:port\" for TLS"
                        ));
                    }
                }
            }
        }
        if self.user.is_some() && self.password.is_none() {
            errors.push("user: an ACL user needs password (or password_file)".into());
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        for (i, key) in self.check_single_keys.iter().enumerate() {
            if let Err(e) = parse_check_key(key) {
                errors.push(format!("check_single_keys[{i}]: {e}"));
            }
        }
        for (i, key) in self.check_keys.iter().enumerate() {
            if let Err(e) = parse_check_key(key) {
                errors.push(format!("check_keys[{i}]: {e}"));
            }
        }
        if !(1..=10_000).contains(&self.check_keys_batch_size) {
            errors.push(format!(
                "check_keys_batch_size: {} is out of range; use 1 to 10000 (SCAN's COUNT)",
                self.check_keys_batch_size
            ));
        }
        if !(1..=1_000_000).contains(&self.check_keys_max_scanned) {
            errors.push(format!(
                "check_keys_max_scanned: {} is out of range; use 1 to 1000000 keys per scrape",
                self.check_keys_max_scanned
            ));
        }
        for (i, queue) in self.queues.iter().enumerate() {
            if queue.is_empty() {
                errors.push(format!("queues[{i}]: must not be empty"));
            }
        }
        errors
    }
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Address {
    Tcp(String),
    /// `rediss://`: `addr` is host:port, `host` the name checked against
    /// the certificate unless `tls_server_name` says otherwise.
    Tls {
        addr: String,
        host: String,
    },
    Unix(PathBuf),
}

impl Address {
    pub(super) fn parse(raw: &str) -> Result<Self, String> {
        if let Some(path) = raw.strip_prefix("unix:") {
            let path = path.trim_start_matches("//");
            if !path.starts_with('/') {
                return Err(format!("{raw:?}: write unix:/absolute/path/to/redis.sock"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let (rest, tls) = if let Some(rest) = raw.strip_prefix("rediss://") {
            (rest, true)
        } else if let Some(rest) = raw.strip_prefix("redis://") {
            (rest, false)
        } else {
            return Err(format!(
                "{raw:?}: use redis://host:port, rediss://host:port (TLS) or unix:/path/to/redis.sock"
            ));
        };
        if rest.contains('@') {
            return Err(format!(
                "{:?}: put credentials in user/password_file, not in the address (it is logged)",
                "redis://...@..."
            ));
        }
        let host_port = rest.trim_end_matches('/');
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p),
            _ => (host_port, "6379"),
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) || host.contains('/') {
            return Err(format!("{raw:?}: use redis://host:port"));
        }
        let addr = format!("{host}:{port}");
        Ok(if tls {
            Address::Tls {
                addr,
                host: host.trim_start_matches('[').trim_end_matches(']').into(),
            }
        } else {
            Address::Tcp(addr)
        })
    }
}

/// `"key"` -> (0, key); `"db3=key"` -> (3, key).
pub(super) fn parse_check_key(raw: &str) -> Result<(u32, String), String> {
    if let Some((db, key)) = raw.split_once('=') {
        if let Some(n) = db.strip_prefix("db").and_then(|n| n.parse().ok()) {
            if key.is_empty() {
                return Err(format!("{raw:?} has an empty key"));
            }
            return Ok((n, key.to_string()));
        }
    }
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    Ok((0, raw.to_string()))
}

/// The three keys of one queue in Laravel's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueKeys {
    pub ready: String,
    pub delayed: String,
    pub reserved: String,
}

impl QueueKeys {
    pub fn new(prefix: &str, queue_prefix: &str, queue: &str) -> Self {
        let base = format!("{prefix}{queue_prefix}{queue}");
        QueueKeys {
            delayed: format!("{base}:delayed"),
            reserved: format!("{base}:reserved"),
            ready: base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("redis://127.0.0.1:6380").unwrap(),
            Address::Tcp("127.0.0.1:6380".into())
        );
        assert_eq!(
            Address::parse("redis://cache").unwrap(),
            Address::Tcp("cache:6379".into())
        );
        assert_eq!(
            Address::parse("rediss://cache.internal:6380").unwrap(),
            Address::Tls {
                addr: "cache.internal:6380".into(),
                host: "cache.internal".into()
            }
        );
        assert_eq!(
            Address::parse("rediss://[::1]:6380").unwrap(),
            Address::Tls {
                addr: "[::1]:6380".into(),
                host: "::1".into()
            }
        );
        assert_eq!(
            Address::parse("unix:/run/redis/redis.sock").unwrap(),
            Address::Unix("/run/redis/redis.sock".into())
        );
        let creds = Address::parse("redis://u:hunter2@cache:6379").unwrap_err();
        assert!(!creds.contains("hunter2"), "{creds}");
        for bad in [
            "cache:6379",
            "redis://:6379",
            "redis://h:0",
            "redis://h:x",
            "rediss://h:x",
            "unix:relative",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_keys_and_queue_layout() {
        assert_eq!(
            parse_check_key("queues:default").unwrap(),
            (0, "queues:default".into())
        );
        assert_eq!(parse_check_key("db3=a=b").unwrap(), (3, "a=b".into()));
        assert_eq!(parse_check_key("x=y").unwrap(), (0, "x=y".into()));
        assert!(parse_check_key("db1=").is_err());
        let k = QueueKeys::new("laravel_database_", "queues:", "emails");
        assert_eq!(k.ready, "laravel_database_queues:emails");
        assert_eq!(k.delayed, "laravel_database_queues:emails:delayed");
        assert_eq!(k.reserved, "laravel_database_queues:emails:reserved");
    }

    #[test]
    fn validate_reports_every_problem() {
        let t = RedisScrapeTarget {
            name: " ".into(),
            addr: "rediss://x".into(),
            user: Some("app".into()),
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            timeout_secs: 0.0,
            check_single_keys: vec![String::new()],
            check_keys: vec!["db1=".into()],
            check_keys_batch_size: 0,
            check_keys_max_scanned: 0,
            queues: vec![String::new()],
            ..Default::default()
        };
        let errors = t.validate();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "tls_ca_file",
                "user",
                "timeout_secs",
                "check_single_keys[0]",
                "check_keys[0]",
                "check_keys_batch_size",
                "check_keys_max_scanned",
                "queues[0]"
            ],
            "{errors:?}"
        );
        let plain = RedisScrapeTarget {
            tls_server_name: Some("cache".into()),
            ..Default::default()
        };
        assert!(plain.validate()[0].starts_with("tls_server_name: only used with a rediss://"));
        assert!(RedisScrapeTarget::default().validate().is_empty());
    }
}
