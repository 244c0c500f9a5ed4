//! `[backup]`: age recipients, storage targets and jobs.
//!
//! ```toml
//! [backup]
//! recipients = ["age1..."]
//! [backup.targets.offsite]
//! kind = "s3"
//! bucket = "backups"
//! [backup.jobs.db]
//! kind = "postgres"
//! schedule = "0 */6 * * *"
//! targets = ["local", "offsite"]
//! ```
//! A target named `local` (a directory, `/var/backups/steward`) exists even
//! when not configured, and jobs use it when they name no target.

mod drill;
mod wal;

pub use drill::{DrillConfig, Objective};
pub use wal::MIN_SPOOL_BYTES;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::manifest::JobKind;
use crate::retention::RetentionPolicy;

/// The name of the implicit local-directory target.
pub const DEFAULT_TARGET: &str = "local";
/// Where the implicit `local` target stores snapshots.
pub const DEFAULT_LOCAL_PATH: &str = "/var/backups/steward";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// age X25519 recipients (`age1...`, public keys) every snapshot is
    /// encrypted to. The host never needs the matching identities.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Files of recipients, one per line (`#` comments), as `age -R` reads.
    #[serde(default)]
    pub recipients_files: Vec<PathBuf>,
    /// Run reports kept per job in `<state_dir>/backup/reports/<job>/`.
    #[serde(default = "default_reports_keep")]
    pub reports_keep: usize,
    /// Storage targets by name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Jobs by name (the name is a path segment of every snapshot key).
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    /// Disaster-recovery drills: schedule and RTO/RPO objectives per job.
    #[serde(default)]
    pub drill: DrillConfig,
}

fn default_reports_keep() -> usize {
    50
}

/// A storage target.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
// Read once per run; boxing would only complicate the serde shape.
#[allow(clippy::large_enum_variant)]
pub enum TargetConfig {
    Local(LocalTargetConfig),
    S3(S3TargetConfig),
}

impl TargetConfig {
    /// The retention applied to this target unless a job overrides it.
    pub fn retention(&self) -> &RetentionPolicy {
        match self {
            TargetConfig::Local(c) => &c.retention,
            TargetConfig::S3(c) => &c.retention,
        }
    }

    /// The implicit `local` target.
    pub fn default_local() -> Self {
        TargetConfig::Local(LocalTargetConfig {
            path: PathBuf::from(DEFAULT_LOCAL_PATH),
            retention: RetentionPolicy::default(),
        })
    }
}

/// `kind = "local"`: a directory on this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTargetConfig {
    #[serde(default = "default_local_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub retention: RetentionPolicy,
}

fn default_local_path() -> PathBuf {
    PathBuf::from(DEFAULT_LOCAL_PATH)
}

/// `kind = "s3"`: AWS S3 or an S3-compatible store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3TargetConfig {
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/` needed).
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL of an S3-compatible store (`https://s3.gra.io.cloud.ovh.net`);
    /// AWS's own endpoint when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// S3-compatible stores need.
    #[serde(default)]
    pub path_style: bool,
    /// Static credentials. When unset, the standard chain is used:
    /// `AWS_*` environment variables, the shared credentials file
    /// (`profile`), then the instance profile.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Profile of the shared config/credentials files.
    #[serde(default)]
    pub profile: Option<String>,
    /// `STANDARD`, `STANDARD_IA`, `GLACIER_IR`, ... (store default when unset).
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Server-side encryption: `AES256` or `aws:kms` (on top of age).
    #[serde(default)]
    pub sse: Option<String>,
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// Object Lock on every object written: `GOVERNANCE` or `COMPLIANCE`
    /// (the bucket must have Object Lock enabled). Locked objects cannot be
    /// deleted or overwritten until `object_lock_days` have passed, not even
    /// with the credentials on this host.
    #[serde(default)]
    pub object_lock_mode: Option<String>,
    #[serde(default)]
    pub object_lock_days: Option<u32>,
    /// Upload checksums: `when_supported` (default: a CRC32 checksum on
    /// every PutObject and UploadPart, checked by the store on receipt) or
    /// `when_required` (only where the API demands one, for S3-compatible
    /// stores that reject the newer checksum headers). Downloads are never
    /// checked with the store's checksum: every object's sha256 is checked
    /// against the manifest instead (multi-part objects only have a
    /// checksum of their parts' checksums, which a reader cannot recompute).
    #[serde(default = "default_checksum")]
    pub checksum: String,
    /// First multipart part size; parts grow (x2 every 1,000 parts) so an
    /// upload of unknown length never reaches the 10,000-part limit (5 MiB,
    /// the default, holds 4.8 TiB in 10,000 parts; 6 MiB S3's 5 TiB).
    /// Memory use is about part size x (concurrency + 1).
    #[serde(default = "default_part_size_bytes")]
    pub part_size_bytes: u64,
    /// Parts uploaded at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Restores and verifies read an object larger than this as byte
    /// ranges of this size, `restore_concurrency` of them downloading at
    /// once and reassembled in order; memory held is about part size x
    /// concurrency, whatever the object's size. A failed range is fetched
    /// again on its own (3 attempts) instead of restarting the object.
    #[serde(default = "default_restore_part_size_bytes")]
    pub restore_part_size_bytes: u64,
    /// Ranges downloaded at once; 1 reads every object as one stream
    /// (best for stores whose range reads cost a read of the whole object,
    /// as moto's do).
    #[serde(default = "default_restore_concurrency")]
    pub restore_concurrency: usize,
    /// Timeout of one HTTP attempt (connect excluded).
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    #[serde(default)]
    pub retention: RetentionPolicy,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_checksum() -> String {
    "when_supported".into()
}
/// S3's smallest part: three of them (two in flight, one filling) keep
/// an S3 run within 64 MB; 8 MiB parts measured 6-9 MiB more peak RSS
/// and no faster.
fn default_part_size_bytes() -> u64 {
    5 * 1024 * 1024
}
fn default_upload_concurrency() -> usize {
    2
}
/// 4 x 6 MiB: 24 MiB of ranges in flight, enough to keep a store that
/// answers each request at ~100 MB/s busy while one core decrypts. 4 x 8
/// MiB measured 64-71 MB peak RSS for a restore against Garage (target 64);
/// 6 MiB parts 53 MB on moto at 256 MB and at 1 GB (release-quick).
fn default_restore_part_size_bytes() -> u64 {
    6 * 1024 * 1024
}
fn default_restore_concurrency() -> usize {
    4
}
fn default_request_timeout_secs() -> u64 {
    120
}

/// A backup job. One flat table: `kind` says which of the kind-specific
/// keys apply; the others must be left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub kind: JobKind,
    /// Cron expression, 5 fields (`min hour day month weekday`) or 6 with
    /// seconds first. Unset: on demand only (`steward backup run`) and, for
    /// `config` jobs, on change.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of `schedule` (IANA name, e.g. `Europe/Paris`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// After downtime, run once at startup when scheduled runs were missed
    /// (they are always reported in the log and in
    /// `steward_backup_missed_runs_total`).
    #[serde(default = "default_true")]
    pub catch_up: bool,
    /// Target names; `["local"]` when empty.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Retention per target name, overriding the target's own.
    #[serde(default)]
    pub retention: BTreeMap<String, RetentionPolicy>,
    /// zstd level (1..=19).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
    /// zstd worker threads for dumps and base backups; 0 = one per CPU.
    /// Unset: one per CPU, except `redis` jobs: one (see
    /// [`JobConfig::zstd_workers`]). WAL and binlog shipping compress with
    /// one thread.
    #[serde(default, rename = "zstd_workers")]
    pub zstd_workers_setting: Option<u32>,
    /// A run taking longer fails (the dump is killed, uploads aborted).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,

    // --- postgres, mysql and redis ---
    /// Server host name or socket directory (`postgres`), or host (`mysql`,
    /// `redis`: 127.0.0.1 and port 6379 when unset). `user` and
    /// `password` are Redis's ACL user (Redis 6+) and its password, or
    /// `requirepass` alone.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// MySQL/MariaDB or Redis unix socket path.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Databases to dump; every database the user can connect to when empty.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Databases left out when `databases` is empty.
    #[serde(default)]
    pub exclude_databases: Vec<String>,
    /// `postgres`: also `pg_dumpall --globals-only` (roles, tablespaces).
    #[serde(default = "default_true")]
    pub globals: bool,
    /// Record per-table row counts in the manifest (drills compare them).
    #[serde(default = "default_true")]
    pub table_stats: bool,
    /// Directory of the client tools (`pg_dump`, `psql`, `mariadb-dump`, ...);
    /// `PATH` when unset.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,

    // --- redis over TLS (the Redis collector's `tls_*` keys) ---
    /// `redis`: connect to `host`:`port` over TLS (Redis's `tls-port`).
    /// The server's certificate is always verified, against `tls_ca_file`
    /// or the web PKI roots.
    #[serde(default)]
    pub tls: bool,
    /// `tls`: PEM CA certificates that signed the server's certificate;
    /// the web PKI roots when unset (managed Redis).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// `tls`: PEM client certificate (chain), with `tls_key_file`, for a
    /// server with `tls-auth-clients yes`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// `tls`: PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// `tls`: the name the server's certificate must carry when it differs
    /// from `host` (e.g. connecting by IP address).
    #[serde(default)]
    pub tls_server_name: Option<String>,

    // --- files and config ---
    /// Roots to archive (files, directories).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Globs (relative to each root, e.g. `**/*.php`); everything when empty.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs left out (e.g. `cache/**`, `**/*.tmp`).
    #[serde(default)]
    pub exclude: Vec<String>,

    // --- config ---
    /// `config`: back up when the content changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// `config`: how often the paths are checked for changes.
    #[serde(default = "default_watch_interval_secs")]
    pub watch_interval_secs: u64,
    /// `config`: quiet time after the last change before the backup runs,
    /// so a burst of edits makes one snapshot.
    #[serde(default = "default_debounce_secs")]
    pub debounce_secs: u64,

    // --- mysql point-in-time recovery (backup/src/binlog) ---
    /// `mysql`: record each dump's binlog position and GTID (the dump fails
    /// when the server has binary logging off) and, in the agent, follow
    /// the server's binary logs and ship them to the job's targets.
    #[serde(default)]
    pub binlog: bool,
    /// `mysql` with `binlog`: the open binlog's new bytes are shipped at
    /// least this often (the RPO on a quiet server).
    #[serde(default = "default_binlog_flush_interval_secs")]
    pub binlog_flush_interval_secs: u64,
    /// `mysql` with `binlog`: the server sends Steward's follower a
    /// heartbeat after this much silence, and a connection silent for 3
    /// heartbeats + 5 s is taken for dead and opened again (30: 95 s).
    #[serde(default = "default_binlog_heartbeat_secs")]
    pub binlog_heartbeat_secs: u64,

    // --- postgres_pitr async archiving (backup/src/wal/spool.rs) ---
    /// `postgres_pitr`: `wal push` only copies the file into `spool_dir`
    /// (synced) and returns; the running agent uploads it to every target
    /// and removes it from the spool once all hold it.
    #[serde(default)]
    pub archive_async: bool,
    /// `archive_async`: the spool directory (0700, written by
    /// archive_command's user, drained by the agent).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// `archive_async`: the spool's limit; a push that would go over it
    /// fails, and PostgreSQL keeps the file and retries.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    // --- postgres_pitr streaming (backup/src/wal/receive.rs) ---
    /// `postgres_pitr`: the agent follows the server's WAL with
    /// `pg_receivewal` over a physical replication slot and ships the
    /// segment being written as it grows (an RPO of seconds).
    #[serde(default)]
    pub streaming: bool,
    /// `postgres_pitr` with `streaming`: the replication slot (created
    /// when missing; one per job and server).
    #[serde(default = "default_stream_slot")]
    pub slot: String,
    /// `postgres_pitr` with `streaming`: WAL received is shipped at least
    /// this often (the RPO under steady writes is this + one upload; 3 s
    /// keeps it under 5 s with room for a slow upload, at one small
    /// object per 3 s of writes).
    #[serde(default = "default_stream_flush_secs")]
    pub stream_flush_secs: u64,
}

fn default_stream_slot() -> String {
    "steward".into()
}
fn default_stream_flush_secs() -> u64 {
    3
}

/// The streaming keys of a job: only for `postgres_pitr`, a slot name
/// PostgreSQL accepts, a flush interval of at least a second.
fn validate_streaming(at: &str, job: &JobConfig, errors: &mut Vec<String>) {
    if job.streaming && job.kind != JobKind::PostgresPitr {
        errors.push(format!(
            "{at}.streaming: not used by kind = \"{}\" (WAL streaming is for postgres_pitr jobs)",
            job.kind
        ));
    }
    let slot_ok = !job.slot.is_empty()
        && job.slot.len() <= 63
        && job
            .slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !slot_ok {
        errors.push(format!(
            "{at}.slot: {:?} is not a replication slot name (1 to 63 lower-case letters, digits and '_')",
            job.slot
        ));
    }
    if job.stream_flush_secs == 0 {
        errors.push(format!("{at}.stream_flush_secs: must be at least 1"));
    }
}

/// The TLS keys of a job: only for `redis`, the `tls_*` ones only with
/// `tls = true` (which needs `host`/`port`, not `socket`), and files that
/// load (read at validation, as the collector's are, so a typo fails
/// `steward config check` instead of the first scheduled run).
fn validate_tls(at: &str, job: &JobConfig, errors: &mut Vec<String>) {
    let files = [
        ("tls_ca_file", job.tls_ca_file.is_some()),
        ("tls_cert_file", job.tls_cert_file.is_some()),
        ("tls_key_file", job.tls_key_file.is_some()),
        ("tls_server_name", job.tls_server_name.is_some()),
    ];
    if job.kind != JobKind::Redis {
        for (key, set) in [("tls", job.tls)].into_iter().chain(files) {
            if set {
                errors.push(format!(
                    "{at}.{key}: not used by kind = \"{}\" (TLS settings are for redis jobs)",
                    job.kind
                ));
            }
        }
        return;
    }
    if !job.tls {
        for (key, set) in files {
            if set {
                errors.push(format!(
                    "{at}.{key}: only used with tls = true; add tls = true to connect over TLS"
                ));
            }
        }
        return;
    }
    if job.socket.is_some() {
        errors.push(format!(
            "{at}.tls: a unix socket is not a TLS port; set host and port (Redis's tls-port) instead of socket"
        ));
    }
    if let Err(e) = steward_tls::client_config(&job.tls_files()) {
        errors.push(format!("{at}.{e}"));
    }
}

fn default_true() -> bool {
    true
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_zstd_level() -> i32 {
    3
}
fn default_timeout_secs() -> u64 {
    6 * 3600
}
fn default_watch_interval_secs() -> u64 {
    10
}
fn default_binlog_flush_interval_secs() -> u64 {
    60
}
fn default_binlog_heartbeat_secs() -> u64 {
    30
}
/// Longest heartbeat accepted: an hour (MariaDB takes up to 4294967 s, but
/// a dead connection would then go unnoticed for half a day).
pub const MAX_BINLOG_HEARTBEAT_SECS: u64 = 3600;
/// 64 segments of 16 MiB: an hour of a busy server's WAL with the agent
/// down or the store unreachable, before PostgreSQL starts keeping it.
fn default_spool_max_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_debounce_secs() -> u64 {
    30
}

impl JobConfig {
    /// zstd worker threads for this job's runs (0 = one per CPU).
    ///
    /// A `redis` job defaults to one: Redis serialises the RDB on one core
    /// (about 120 MB/s on the benchmark machine), which one zstd-3 thread
    /// outpaces, so more threads only add zstdmt's job overhead and take
    /// CPU from Redis's fork on a small host. Measured on 2 cores with a
    /// 1.1 GB RDB: 10.4-10.6 s against 11.3-11.6 s with two, 450 MiB stored
    /// against 470, 26 MiB peak RSS against 34-36.
    pub fn zstd_workers(&self) -> u32 {
        match (self.zstd_workers_setting, self.kind) {
            (Some(n), _) => n,
            (None, JobKind::Redis) => 1,
            (None, _) => 0,
        }
    }

    /// The `tls_*` settings, for the TLS client configuration.
    pub fn tls_files(&self) -> steward_tls::TlsFiles<'_> {
        steward_tls::TlsFiles {
            ca: self.tls_ca_file.as_deref(),
            cert: self.tls_cert_file.as_deref(),
            key: self.tls_key_file.as_deref(),
            server_name: self.tls_server_name.as_deref(),
        }
    }

    /// The target names this job writes to.
    pub fn target_names(&self) -> Vec<String> {
        if self.targets.is_empty() {
            vec![DEFAULT_TARGET.to_string()]
        } else {
            self.targets.clone()
        }
    }
}

impl BackupConfig {
    /// The recipients every snapshot is encrypted to: `recipients` and
    /// the keys of `recipients_files`, deduplicated and parsed.
    pub fn recipients(&self) -> Result<Recipients> {
        let mut texts: Vec<String> = self
            .recipients
            .iter()
            .map(|r| r.trim().to_string())
            .collect();
        for (i, f) in self.recipients_files.iter().enumerate() {
            texts.extend(
                crate::crypto::read_recipients_file(f)
                    .map_err(|e| Error::Config(format!("backup.recipients_files[{i}]: {e}")))?,
            );
        }
        texts.sort();
        texts.dedup();
        Recipients::from_strings(&texts)
    }

    /// The target configuration for `name`, including the implicit `local`.
    pub fn target(&self, name: &str) -> Option<TargetConfig> {
        match self.targets.get(name) {
            Some(t) => Some(t.clone()),
            None if name == DEFAULT_TARGET => Some(TargetConfig::default_local()),
            None => None,
        }
    }

    /// Every target name, the implicit `local` included.
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.targets.keys().cloned().collect();
        if !self.targets.contains_key(DEFAULT_TARGET) {
            names.push(DEFAULT_TARGET.to_string());
        }
        names.sort();
        names
    }

    /// The retention for `job` on `target`: the job's override, else the
    /// target's own.
    pub fn retention(&self, job: &str, target: &str) -> RetentionPolicy {
        self.jobs
            .get(job)
            .and_then(|j| j.retention.get(target).cloned())
            .or_else(|| self.target(target).map(|t| t.retention().clone()))
            .unwrap_or_default()
    }

    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (i, r) in self.recipients.iter().enumerate() {
            if let Err(e) = crate::crypto::parse_recipient(r) {
                errors.push(format!("recipients[{i}]: {e}"));
            }
        }
        for (i, f) in self.recipients_files.iter().enumerate() {
            if let Err(e) = crate::crypto::read_recipients_file(f) {
                errors.push(format!("recipients_files[{i}]: {e}"));
            }
        }
        if !self.jobs.is_empty() && self.recipients.is_empty() && self.recipients_files.is_empty() {
            errors.push(
                "recipients: backups are always encrypted but no age recipient is set; create a key pair off this host with `age-keygen -o backup.key` and put its public key (age1...) here"
                    .to_string(),
            );
        }
        for (name, target) in &self.targets {
            let at = format!("targets.{name}");
            if !crate::layout::is_valid_segment(name) {
                errors.push(format!(
                    "{at}: a target name may use letters, digits, '-', '_' and '.'"
                ));
            }
            match target {
                TargetConfig::Local(c) => {
                    if !c.path.is_absolute() {
                        errors.push(format!(
                            "{at}.path: {} is not an absolute path",
                            c.path.display()
                        ));
                    }
                }
                TargetConfig::S3(c) => validate_s3(&at, c, &mut errors),
            }
            errors.extend(
                target
                    .retention()
                    .validate()
                    .into_iter()
                    .map(|e| format!("{at}.retention.{e}")),
            );
        }
        for (name, job) in &self.jobs {
            validate_job(self, name, job, &mut errors);
        }
        let job_names: Vec<String> = self.jobs.keys().cloned().collect();
        errors.extend(
            self.drill
                .validate(&job_names)
                .into_iter()
                .map(|e| format!("drill.{e}")),
        );
        errors
    }
}

/// The problems of an S3 target configuration, each naming its key under
/// `at` (a target given on the command line is checked with this too).
pub fn s3_problems(at: &str, c: &S3TargetConfig) -> Vec<String> {
    let mut errors = Vec::new();
    validate_s3(at, c, &mut errors);
    errors
}

fn validate_s3(at: &str, c: &S3TargetConfig, errors: &mut Vec<String>) {
    if c.bucket.trim().is_empty() {
        errors.push(format!("{at}.bucket: must not be empty"));
    }
    if let Some(ep) = &c.endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            errors.push(format!(
                "{at}.endpoint: {ep:?} must start with http:// or https://"
            ));
        }
    }
    if c.access_key_id.is_some() != c.secret_access_key.is_some() {
        errors.push(format!(
            "{at}.secret_access_key: set both access_key_id and secret_access_key, or neither (to use the environment, the credentials file or the instance profile)"
        ));
    }
    if let Some(s) = &c.sse {
        if !matches!(s.as_str(), "AES256" | "aws:kms") {
            errors.push(format!("{at}.sse: {s:?} is not AES256 or aws:kms"));
        }
    }
    if c.sse_kms_key_id.is_some() && c.sse.as_deref() != Some("aws:kms") {
        errors.push(format!("{at}.sse_kms_key_id: needs sse = \"aws:kms\""));
    }
    match (&c.object_lock_mode, c.object_lock_days) {
        (Some(m), Some(d)) => {
            if !matches!(m.as_str(), "GOVERNANCE" | "COMPLIANCE") {
                errors.push(format!(
                    "{at}.object_lock_mode: {m:?} is not GOVERNANCE or COMPLIANCE"
                ));
            }
            if d == 0 {
                errors.push(format!("{at}.object_lock_days: must be at least 1"));
            }
        }
        (Some(_), None) => errors.push(format!(
            "{at}.object_lock_days: needed with object_lock_mode"
        )),
        (None, Some(_)) => errors.push(format!(
            "{at}.object_lock_mode: needed with object_lock_days"
        )),
        (None, None) => {}
    }
    if !matches!(c.checksum.as_str(), "when_supported" | "when_required") {
        errors.push(format!(
            "{at}.checksum: {:?} is not when_supported or when_required",
            c.checksum
        ));
    }
    if !(5 * 1024 * 1024..=5 * 1024 * 1024 * 1024).contains(&c.part_size_bytes) {
        errors.push(format!(
            "{at}.part_size_bytes: {} is outside S3's part size range 5 MiB..5 GiB",
            c.part_size_bytes
        ));
    }
    if !(1..=16).contains(&c.upload_concurrency) {
        errors.push(format!("{at}.upload_concurrency: use 1..=16"));
    }
    if !(1024 * 1024..=256 * 1024 * 1024).contains(&c.restore_part_size_bytes) {
        errors.push(format!(
            "{at}.restore_part_size_bytes: {} is outside 1 MiB..256 MiB",
            c.restore_part_size_bytes
        ));
    }
    if !(1..=16).contains(&c.restore_concurrency) {
        errors.push(format!("{at}.restore_concurrency: use 1..=16"));
    }
    if c.request_timeout_secs == 0 {
        errors.push(format!("{at}.request_timeout_secs: must be at least 1"));
    }
}

fn validate_job(config: &BackupConfig, name: &str, job: &JobConfig, errors: &mut Vec<String>) {
    let at = format!("jobs.{name}");
    wal::validate_async_archive(&at, job, errors);
    if job.binlog && job.binlog_flush_interval_secs == 0 {
        errors.push(format!(
            "{at}.binlog_flush_interval_secs: must be at least 1"
        ));
    }
    if job.binlog && !(1..=MAX_BINLOG_HEARTBEAT_SECS).contains(&job.binlog_heartbeat_secs) {
        errors.push(format!(
            "{at}.binlog_heartbeat_secs: must be 1 to {MAX_BINLOG_HEARTBEAT_SECS} (seconds; 30 if left out)"
        ));
    }
    if !crate::layout::is_valid_segment(name) {
        errors.push(format!(
            "{at}: a job name may use letters, digits, '-', '_' and '.'"
        ));
    }
    validate_streaming(&at, job, errors);
    validate_tls(&at, job, errors);
    if let Some(s) = &job.schedule {
        if let Err(e) = crate::schedule::Schedule::parse(s, &job.timezone) {
            errors.push(format!("{at}.schedule: {e}"));
        }
    }
    if chrono_tz::Tz::from_str(&job.timezone).is_err() {
        errors.push(format!(
            "{at}.timezone: unknown time zone {:?}; use an IANA name such as UTC or Europe/Paris",
            job.timezone
        ));
    }
    let targets = job.target_names();
    for (i, t) in job.targets.iter().enumerate() {
        if config.target(t).is_none() {
            errors.push(format!(
                "{at}.targets[{i}]: no target named {t:?}; define [backup.targets.{t}]"
            ));
        }
    }
    for (t, policy) in &job.retention {
        if !targets.contains(t) {
            errors.push(format!(
                "{at}.retention.{t}: the job does not write to target {t:?}"
            ));
        }
        errors.extend(
            policy
                .validate()
                .into_iter()
                .map(|e| format!("{at}.retention.{t}.{e}")),
        );
    }
    if !(1..=19).contains(&job.zstd_level) {
        errors.push(format!(
            "{at}.zstd_level: {} is outside 1..=19",
            job.zstd_level
        ));
    }
    if job.zstd_workers_setting.unwrap_or(0) > 64 {
        errors.push(format!("{at}.zstd_workers: use 0 (one per CPU) to 64"));
    }
    if job.timeout_secs == 0 {
        errors.push(format!("{at}.timeout_secs: must be at least 1"));
    }
    let is_db = matches!(
        job.kind,
        JobKind::Postgres | JobKind::Mysql | JobKind::PostgresPitr
    );
    // A physical backup takes the whole cluster: no database selection.
    let is_dump = matches!(job.kind, JobKind::Postgres | JobKind::Mysql);
    let is_files = matches!(job.kind, JobKind::Files | JobKind::Config);
    let mut unused = |key: &str, set: bool| {
        if set {
            errors.push(format!("{at}.{key}: not used by kind = \"{}\"", job.kind));
        }
    };
    // Redis jobs connect too (host/port or socket, ACL user, password).
    let connects = is_db || job.kind == JobKind::Redis;
    unused("host", !connects && job.host.is_some());
    unused("port", !connects && job.port.is_some());
    unused("user", !connects && job.user.is_some());
    unused("password", !connects && job.password.is_some());
    unused("databases", !is_dump && !job.databases.is_empty());
    unused(
        "exclude_databases",
        !is_dump && !job.exclude_databases.is_empty(),
    );
    unused("bin_dir", !is_db && job.bin_dir.is_some());
    unused(
        "socket",
        !matches!(job.kind, JobKind::Mysql | JobKind::Redis) && job.socket.is_some(),
    );
    unused("binlog", job.kind != JobKind::Mysql && job.binlog);
    unused("paths", !is_files && !job.paths.is_empty());
    unused("include", !is_files && !job.include.is_empty());
    unused("exclude", !is_files && !job.exclude.is_empty());
    if is_files {
        if job.paths.is_empty() {
            errors.push(format!(
                "{at}.paths: list the files or directories to back up"
            ));
        }
        for (i, p) in job.paths.iter().enumerate() {
            if !p.is_absolute() {
                errors.push(format!(
                    "{at}.paths[{i}]: {} is not an absolute path",
                    p.display()
                ));
            }
        }
        for (key, globs) in [("include", &job.include), ("exclude", &job.exclude)] {
            for (i, g) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    errors.push(format!("{at}.{key}[{i}]: {e}"));
                }
            }
        }
    }
    if job.kind == JobKind::Config {
        if job.watch_interval_secs == 0 {
            errors.push(format!("{at}.watch_interval_secs: must be at least 1"));
        }
    } else if job.kind != JobKind::Config && job.schedule.is_none() {
        // Allowed: on-demand jobs (e.g. run only before deployments).
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(text: &str) -> BackupConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn zstd_workers_default_to_one_per_cpu_but_one_for_redis_and_a_setting_wins() {
        let c = parse(
            r#"
[jobs.db]
kind = "postgres"
[jobs.cache]
kind = "redis"
[jobs.cache_mt]
kind = "redis"
zstd_workers = 0
[jobs.db_one]
kind = "postgres"
zstd_workers = 1
"#,
        );
        let workers = |j: &str| c.jobs[j].zstd_workers();
        assert_eq!(workers("db"), 0);
        assert_eq!(workers("cache"), 1);
        assert_eq!(workers("cache_mt"), 0);
        assert_eq!(workers("db_one"), 1);
    }

    #[test]
    fn empty_is_valid() {
        assert!(BackupConfig::default().validate().is_empty());
    }

    #[test]
    fn valid_config_passes() {
        let c = parse(&format!(
            r#"
recipients = ["{RECIPIENT}"]
[targets.offsite]
kind = "s3"
bucket = "b"
endpoint = "http://127.0.0.1:9000"
path_style = true
retention = {{ keep_within_days = 90 }}
[jobs.db]
kind = "postgres"
schedule = "0 */6 * * *"
targets = ["local", "offsite"]
retention.local = {{ keep_within_days = 7 }}
[jobs.etc]
kind = "config"
paths = ["/etc/nginx"]
schedule = "0 3 * * *"
"#
        ));
        assert_eq!(c.validate(), Vec::<String>::new());
        assert_eq!(c.retention("db", "local").keep_within_days, Some(7));
        assert_eq!(c.retention("db", "offsite").keep_within_days, Some(90));
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let c = parse(
            r#"
recipients = ["age1nope"]
[targets.s]
kind = "s3"
bucket = ""
object_lock_mode = "FOREVER"
[jobs.db]
kind = "postgres"
schedule = "every hour"
targets = ["missing"]
paths = ["/etc"]
zstd_level = 40
"#,
        );
        let errors = c.validate();
        let all = errors.join("\n");
        for key in [
            "recipients[0]:",
            "targets.s.bucket:",
            "targets.s.object_lock_days:",
            "jobs.db.schedule:",
            "jobs.db.targets[0]:",
            "jobs.db.paths: not used",
            "jobs.db.zstd_level:",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key} missing in:\n{all}"
            );
        }
    }

    #[test]
    fn a_pitr_job_takes_a_connection_but_no_database_list() {
        let ok = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.pg]\nkind = \"postgres_pitr\"\nhost = \"127.0.0.1\"\nport = 5433\nschedule = \"0 3 * * *\"\n"
        ));
        assert_eq!(ok.validate(), Vec::<String>::new());
        assert_eq!(ok.jobs["pg"].kind, JobKind::PostgresPitr);
        let bad = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.pg]\nkind = \"postgres_pitr\"\ndatabases = [\"app\"]\n"
        ));
        let errors = bad.validate();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("jobs.pg.databases: not used by kind = \"postgres_pitr\"")),
            "{errors:?}"
        );
    }

    #[test]
    fn a_redis_job_takes_a_connection_but_no_database_list() {
        let ok = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.cache]\nkind = \"redis\"\nhost = \"10.0.0.5\"\nport = 6380\nuser = \"backup\"\npassword = \"pw\"\n[jobs.sock]\nkind = \"redis\"\nsocket = \"/run/redis/redis-server.sock\"\n"
        ));
        assert_eq!(ok.validate(), Vec::<String>::new());
        assert_eq!(ok.jobs["cache"].kind, JobKind::Redis);
        let bad = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.cache]\nkind = \"redis\"\ndatabases = [\"0\"]\npaths = [\"/var/lib/redis\"]\n"
        ));
        let errors = bad.validate();
        for key in [
            "jobs.cache.databases: not used",
            "jobs.cache.paths: not used",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key}: {errors:?}"
            );
        }
    }

    #[test]
    fn tls_keys_are_for_redis_jobs_with_tls_on_and_files_that_load() {
        let ok = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.managed]\nkind = \"redis\"\nhost = \"cache.example\"\nport = 6380\ntls = true\ntls_server_name = \"cache.internal\"\n"
        ));
        assert_eq!(ok.validate(), Vec::<String>::new());
        let bad = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n\
             [jobs.plain]\nkind = \"redis\"\ntls_ca_file = \"/etc/ssl/ca.pem\"\n\
             [jobs.sock]\nkind = \"redis\"\ntls = true\nsocket = \"/run/redis.sock\"\n\
             [jobs.missing]\nkind = \"redis\"\ntls = true\ntls_ca_file = \"/nonexistent/ca.pem\"\n\
             [jobs.half]\nkind = \"redis\"\ntls = true\ntls_cert_file = \"/nonexistent/c.pem\"\n\
             [jobs.db]\nkind = \"postgres\"\ntls = true\n"
        ));
        let errors = bad.validate();
        for key in [
            "jobs.plain.tls_ca_file: only used with tls = true",
            "jobs.sock.tls: a unix socket is not a TLS port",
            "jobs.missing.tls_ca_file: cannot read /nonexistent/ca.pem",
            "jobs.half.tls_key_file: tls_cert_file needs its private key",
            "jobs.db.tls: not used by kind = \"postgres\"",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(key)),
                "{key}: {errors:?}"
            );
        }
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    #[test]
    fn binlog_heartbeats_are_one_second_to_an_hour() {
        let job = |extra: &str| {
            parse(&format!(
                "recipients = [\"{RECIPIENT}\"]\n[jobs.db]\nkind = \"mysql\"\nbinlog = true\n{extra}"
            ))
            .validate()
        };
        assert!(job("").is_empty(), "{:?}", job(""));
        assert!(job("binlog_heartbeat_secs = 1\n").is_empty());
        for bad in ["0", "3601"] {
            let errors = job(&format!("binlog_heartbeat_secs = {bad}\n"));
            assert!(
                errors.len() == 1
                    && errors[0].contains("jobs.db.binlog_heartbeat_secs: must be 1 to 3600"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn jobs_need_a_recipient() {
        let c = parse("[jobs.f]\nkind = \"files\"\npaths = [\"/srv\"]\n");
        let errors = c.validate();
        assert!(
            errors.iter().any(|e| e.starts_with("recipients: ")),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(
            toml::from_str::<BackupConfig>("[jobs.x]\nkind = \"files\"\npathz = []\n").is_err()
        );
        assert!(
            toml::from_str::<BackupConfig>("[targets.x]\nkind = \"local\"\nroot = \"/x\"\n")
                .is_err()
        );
    }
    #[test]
    fn streaming_is_for_pitr_jobs_with_a_valid_slot() {
        let ok = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.pg]\nkind = \"postgres_pitr\"\nstreaming = true\nslot = \"steward_2\"\n"
        ));
        assert_eq!(ok.validate(), Vec::<String>::new());
        assert_eq!(ok.jobs["pg"].stream_flush_secs, 3);
        let bad = parse(&format!(
            "recipients = [\"{RECIPIENT}\"]\n[jobs.dump]\nkind = \"postgres\"\nstreaming = true\n[jobs.pg]\nkind = \"postgres_pitr\"\nstreaming = true\nslot = \"Steward-1\"\nstream_flush_secs = 0\n"
        ));
        let errors = bad.validate().join("\n");
        assert!(
            errors.contains("jobs.dump.streaming: not used by kind = \"postgres\""),
            "{errors}"
        );
        assert!(
            errors.contains("jobs.pg.slot: \"Steward-1\" is not a replication slot name"),
            "{errors}"
        );
        assert!(
            errors.contains("jobs.pg.stream_flush_secs: must be at least 1"),
            "{errors}"
        );
    }
}
