//! `[telemetry]`: log sources, the loopback OTLP receiver, the durable
//! queue and the OTLP exporter. Absent section (or one without an
//! `[telemetry.exporter]`) means nothing starts and no port is bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What each listener speaks over TLS.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];

/// The whole `[telemetry]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.name` of the records Steward produces (tailed files and its
    /// own spans); a source may override it.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// `deployment.environment.name` (e.g. `production`); omitted if empty.
    #[serde(default)]
    pub environment: String,
    /// Extra resource attributes on everything Steward produces.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Export Steward's own work (backups, restores, drills, scrapes) as spans.
    #[serde(default = "default_true")]
    pub self_traces: bool,
    /// How often files are checked for new data and rotation.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Where to send; without it telemetry is off.
    #[serde(default)]
    pub exporter: Option<ExporterConfig>,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub receiver: ReceiverConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            service_name: default_service_name(),
            environment: String::new(),
            resource: BTreeMap::new(),
            self_traces: true,
            poll_interval_ms: default_poll_interval_ms(),
            exporter: None,
            queue: QueueConfig::default(),
            receiver: ReceiverConfig::default(),
            sources: Vec::new(),
        }
    }
}

fn default_service_name() -> String {
    "steward".into()
}
fn default_true() -> bool {
    true
}
fn default_poll_interval_ms() -> u64 {
    200
}

/// Wire protocol of the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    Http,
}

/// Body compression of the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    None,
}

/// `[telemetry.exporter]`: the upstream (collector, Loki, Tempo...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// Base URL, e.g. `http://otel-collector:4317` (gRPC) or
    /// `https://otlp.example.com` (HTTP). `https` turns TLS on.
    pub endpoint: String,
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// HTTP only: path of the logs endpoint (Loki wants `/otlp/v1/logs`).
    #[serde(default = "default_logs_path")]
    pub logs_path: String,
    /// HTTP only: path of the traces endpoint.
    #[serde(default = "default_traces_path")]
    pub traces_path: String,
    /// Extra request headers (e.g. `X-Scope-OrgID`). Treated as a secret.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `authorization: <token_scheme> <token>`; or use `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_token_scheme")]
    pub token_scheme: String,
    /// PEM file of a CA to trust in addition to the built-in roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Deadline of one export request.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// A batch is cut at this many records...
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: usize,
    /// ...or this many bytes of record text...
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// ...or when its oldest record is this old.
    #[serde(default = "default_batch_timeout_ms")]
    pub batch_timeout_ms: u64,
    /// First retry delay; doubles up to `retry_max_backoff_secs`. Retries
    /// never give up: the durable queue bounds what is kept.
    #[serde(default = "default_retry_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    #[serde(default = "default_retry_max_backoff_secs")]
    pub retry_max_backoff_secs: u64,
    /// Export requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

fn default_protocol() -> Protocol {
    Protocol::Grpc
}
fn default_compression() -> Compression {
    Compression::Gzip
}
fn default_logs_path() -> String {
    "/v1/logs".into()
}
fn default_traces_path() -> String {
    "/v1/traces".into()
}
fn default_token_scheme() -> String {
    "Bearer".into()
}
fn default_timeout_secs() -> u64 {
    10
}
fn default_max_batch_records() -> usize {
    2048
}
fn default_max_batch_bytes() -> usize {
    1024 * 1024
}
fn default_batch_timeout_ms() -> u64 {
    200
}
fn default_retry_initial_backoff_ms() -> u64 {
    500
}
fn default_retry_max_backoff_secs() -> u64 {
    30
}
fn default_concurrency() -> usize {
    2
}

/// `[telemetry.queue]`: the disk queue between producers and the exporter.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Directory of the segment files (default `<state_dir>/telemetry/queue`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Upper bound of the queue on disk; past it the oldest data is dropped
    /// and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub max_bytes: u64,
    /// Size of one segment file.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// How often written data is fsynced (a process crash loses nothing
    /// written; a power loss at most this much).
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
}

fn default_queue_max_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_segment_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_fsync_interval_ms() -> u64 {
    500
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            dir: None,
            max_bytes: default_queue_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync_interval_ms: default_fsync_interval_ms(),
        }
    }
}

/// `[telemetry.receiver]`: OTLP for the applications on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// OTLP/gRPC listen address; keep it on loopback.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address (`/v1/logs`, `/v1/traces`).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// exporter-toolkit web-config file (TLS, client certificates, basic
    /// auth) for both listeners, for when they are not on loopback.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
    /// Largest request, after gunzipping, either protocol accepts: larger
    /// ones get HTTP 413 / gRPC RESOURCE_EXHAUSTED, and a
    /// gzip body is cut off while inflating once it passes this.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Requests decoded at once over both protocols; more wait for a turn
    /// (so memory stays near this times `max_request_bytes`).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

/// Upper bound of `max_request_bytes`: adding `host.name` to each resource
/// can grow a request several times before it becomes one queue record,
/// which must stay under the queue's record cap.
pub const RECEIVER_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

fn default_max_request_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_concurrent_requests() -> usize {
    4
}

fn default_grpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4317))
}
fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4318))
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            enabled: true,
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            web_config_file: None,
            max_request_bytes: default_max_request_bytes(),
            max_concurrent_requests: default_max_concurrent_requests(),
        }
    }
}

/// How the lines of a source are turned into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParserKind {
    /// The line is the body.
    Plain,
    /// nginx `combined`, optionally followed by `$request_time
    /// $upstream_response_time` (the `steward` log_format in the README).
    NginxCombined,
    /// nginx `log_format ... escape=json` objects.
    NginxJson,
    /// nginx `error_log`.
    NginxError,
    /// PHP-FPM error/slow logs and PHP's error_log (multiline).
    PhpFpm,
    /// One JSON object per line (Monolog/Laravel JSON formatter and alike).
    Json,
    /// Monolog's LineFormatter (Laravel's `storage/logs/laravel.log`),
    /// stack traces kept with their record.
    Monolog,
    /// MySQL/MariaDB error log (`log_error`).
    MysqlError,
    /// MySQL/MariaDB slow query log: one record per query.
    MysqlSlow,
    /// PostgreSQL server log (stderr with a `log_line_prefix`, or jsonlog),
    /// DETAIL/HINT/STATEMENT lines kept with their message.
    Postgresql,
    /// redis-server's log file.
    Redis,
    /// Syslog files: RFC 5424, RFC 3164 (traditional) and rsyslog's
    /// high-precision file format.
    Syslog,
    /// supervisord's own log and its programs' output files (plain lines
    /// tagged with the program).
    Supervisor,
}

/// Where reading starts in a file seen for the first time at Steward's
/// first start (files appearing later are always read from the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    Beginning,
    End,
}

/// One `[[telemetry.sources]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name used in metrics labels and as `log.source` scope name.
    pub name: String,
    /// Glob patterns of files to read, e.g. `/var/log/nginx/access.log`.
    /// Only regular files are read: symlinks are never followed.
    pub paths: Vec<String>,
    /// Glob patterns never read. Compressed files are never read anyway.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "default_parser")]
    pub parser: ParserKind,
    #[serde(default = "default_start_at")]
    pub start_at: StartAt,
    /// A line matching this regex starts a new record; other lines are
    /// appended to the previous one (stack traces). `php_fpm` has a default.
    #[serde(default)]
    pub multiline_start: Option<String>,
    /// Longer records are truncated (and counted); reading goes on.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Request metrics from this access log (nginx parsers only).
    #[serde(default = "default_true")]
    pub access_metrics: bool,
    /// Zone of timestamps the files write without one (MariaDB, Redis,
    /// Laravel, syslog): `local` (the host's), `UTC`, `+01:00` or an IANA
    /// name such as `Europe/Paris`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Overrides `telemetry.service_name` for this source.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Extra resource attributes of this source.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
}

fn default_parser() -> ParserKind {
    ParserKind::Plain
}
fn default_start_at() -> StartAt {
    StartAt::Beginning
}
fn default_time_zone() -> String {
    "local".into()
}
fn default_max_record_bytes() -> usize {
    64 * 1024
}

impl TelemetryConfig {
    /// True when telemetry should run (an exporter is configured).
    pub fn is_enabled(&self) -> bool {
        self.exporter.is_some()
    }

    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.service_name.trim().is_empty() {
            errors.push("service_name: must not be empty".to_string());
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            errors.push(format!(
                "poll_interval_ms: {} is out of range; use 10..=60000",
                self.poll_interval_ms
            ));
        }
        if self.exporter.is_none() && !self.sources.is_empty() {
            errors.push(
                "exporter: sources are configured but no [telemetry.exporter]; add one with an endpoint"
                    .to_string(),
            );
        }
        if let Some(e) = &self.exporter {
            errors.extend(e.validate().into_iter().map(|m| format!("exporter.{m}")));
        }
        errors.extend(
            self.queue
                .validate()
                .into_iter()
                .map(|m| format!("queue.{m}")),
        );
        if let (true, Some(path)) = (self.receiver.enabled, &self.receiver.web_config_file) {
            // Read now (certificates included): `config check`, startup and
            // reload refuse a file that cannot serve.
            if let Err(e) = steward_web::WebRuntime::load(path, GRPC_ALPN) {
                errors.push(format!("receiver.web_config_file: {e}"));
            }
        }
        if self.receiver.enabled && self.receiver.grpc_listen == self.receiver.http_listen {
            errors.push(format!(
                "receiver.http_listen: {} is also receiver.grpc_listen; use two addresses",
                self.receiver.http_listen
            ));
        }
        if !(64 * 1024..=RECEIVER_MAX_REQUEST_BYTES).contains(&self.receiver.max_request_bytes) {
            errors.push(format!(
                "receiver.max_request_bytes: {} is out of range; use 65536..={RECEIVER_MAX_REQUEST_BYTES}",
                self.receiver.max_request_bytes
            ));
        }
        if !(1..=64).contains(&self.receiver.max_concurrent_requests) {
            errors.push(format!(
                "receiver.max_concurrent_requests: {} is out of range; use 1..=64",
                self.receiver.max_concurrent_requests
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                errors.push(format!(
                    "sources[{i}].name: {:?} is used twice; names must be unique",
                    s.name
                ));
            }
            errors.extend(
                s.validate()
                    .into_iter()
                    .map(|m| format!("sources[{i}].{m}")),
            );
        }
        errors
    }
}

impl ExporterConfig {
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://")) {
            errors.push(format!(
                "endpoint: {:?} must start with http:// or https://",
                self.endpoint
            ));
        }
        for (key, value) in [
            ("logs_path", &self.logs_path),
            ("traces_path", &self.traces_path),
        ] {
            if !value.starts_with('/') {
                errors.push(format!("{key}: {value:?} must start with /"));
            }
        }
        for name in self.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                errors.push(format!("headers: {name:?} is not a valid header name"));
            }
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                errors.push(format!(
                    "ca_file: {} does not exist or is not a file",
                    ca.display()
                ));
            }
        }
        if !(1..=600).contains(&self.timeout_secs) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use 1..=600",
                self.timeout_secs
            ));
        }
        if !(1..=100_000).contains(&self.max_batch_records) {
            errors.push(format!(
                "max_batch_records: {} is out of range; use 1..=100000",
                self.max_batch_records
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_batch_bytes) {
            errors.push(format!(
                "max_batch_bytes: {} is out of range; use 1024..=16777216 (upstreams accept 4 MiB gRPC messages)",
                self.max_batch_bytes
            ));
        }
        if !(1..=60_000).contains(&self.batch_timeout_ms) {
            errors.push(format!(
                "batch_timeout_ms: {} is out of range; use 1..=60000",
                self.batch_timeout_ms
            ));
        }
        if self.retry_initial_backoff_ms == 0 {
            errors.push("retry_initial_backoff_ms: must be > 0".to_string());
        }
        if self.retry_max_backoff_secs == 0 {
            errors.push("retry_max_backoff_secs: must be > 0".to_string());
        }
        if !(1..=64).contains(&self.concurrency) {
            errors.push(format!(
                "concurrency: {} is out of range; use 1..=64",
                self.concurrency
            ));
        }
        errors
    }
}

impl QueueConfig {
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.segment_bytes < 64 * 1024 {
            errors.push(format!(
                "segment_bytes: {} is too small; use at least 65536",
                self.segment_bytes
            ));
        }
        if self.max_bytes < 2 * self.segment_bytes {
            errors.push(format!(
                "max_bytes: {} must be at least twice segment_bytes ({})",
                self.max_bytes, self.segment_bytes
            ));
        }
        if !(1..=60_000).contains(&self.fsync_interval_ms) {
            errors.push(format!(
                "fsync_interval_ms: {} is out of range; use 1..=60000",
                self.fsync_interval_ms
            ));
        }
        errors
    }
}

impl SourceConfig {
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must not be empty".to_string());
        }
        if self.paths.is_empty() {
            errors.push("paths: list at least one file or glob".to_string());
        }
        for (key, list) in [("paths", &self.paths), ("exclude", &self.exclude)] {
            for p in list {
                if !p.starts_with('/') {
                    errors.push(format!("{key}: {p:?} must be an absolute path"));
                } else if let Err(e) = glob::Pattern::new(p) {
                    errors.push(format!("{key}: {p:?} is not a valid glob: {e}"));
                }
            }
        }
        if let Some(re) = &self.multiline_start {
            if let Err(e) = regex::Regex::new(re) {
                errors.push(format!("multiline_start: invalid regex: {e}"));
            }
        }
        if let Err(e) = crate::zone::Zone::parse(&self.time_zone) {
            errors.push(format!("time_zone: {e}"));
        }
        if !(256..=16 * 1024 * 1024).contains(&self.max_record_bytes) {
            errors.push(format!(
                "max_record_bytes: {} is out of range; use 256..=16777216",
                self.max_record_bytes
            ));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_disabled_and_valid() {
        let c = TelemetryConfig::default();
        assert!(!c.is_enabled());
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn errors_name_their_keys() {
        let c: TelemetryConfig = toml_like(
            r#"{"exporter": {"endpoint": "ftp://x", "timeout_secs": 0},
                "queue": {"max_bytes": 10},
                "sources": [{"name": "a", "paths": ["relative.log"], "multiline_start": "("},
                            {"name": "a", "paths": []}]}"#,
        );
        let errors = c.validate();
        let joined = errors.join("\n");
        for key in [
            "exporter.endpoint",
            "exporter.timeout_secs",
            "queue.max_bytes",
            "sources[0].paths",
            "sources[0].multiline_start",
            "sources[1].name",
            "sources[1].paths",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} missing in {joined}"
            );
        }
    }

    fn toml_like(json: &str) -> TelemetryConfig {
        serde_json::from_str(json).unwrap()
    }
}
