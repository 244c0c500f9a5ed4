//! Where `restore`, `backup verify` and `drill` read snapshots from: the
//! configured targets, or `--from` a bucket or directory with no
//! configuration at all. One set of flags and one opening function for the
//! three commands.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use steward_backup::restore::{self, S3Access};
use steward_backup::target::{self, StorageTarget};

use crate::config::Loaded;

/// Where the snapshots are and how to read them; shared by `restore`,
/// `backup verify` and `drill`.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Read snapshots from this location instead of the configured targets:
    /// `s3://bucket/prefix` or a directory (`/path` or `file:///path`).
    /// Works with no configuration file at all.
    #[arg(long, value_name = "URL|DIR", global = true)]
    pub from: Option<String>,

    /// Read from this configured target (by name) instead of the first one
    /// that holds the snapshot.
    #[arg(long = "target", value_name = "NAME", global = true)]
    pub target_name: Option<String>,

    /// S3 endpoint for S3-compatible stores (e.g. `https://s3.gra.io.cloud.ovh.net`).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL", global = true)]
    pub endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "AWS_REGION", value_name = "REGION", global = true)]
    pub region: Option<String>,

    /// Address buckets as https://endpoint/bucket (most S3-compatible stores
    /// need this) instead of `https://bucket.endpoint`.
    #[arg(long, env = "STEWARD_S3_PATH_STYLE", global = true)]
    pub path_style: bool,

    /// Profile of the AWS shared config/credentials files. Without it the
    /// usual AWS chain applies: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY,
    /// AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, instance profile. Secrets
    /// are never taken as flags (they would show in `ps`).
    #[arg(long, env = "AWS_PROFILE", value_name = "NAME", global = true)]
    pub profile: Option<String>,

    /// With --from s3://: byte ranges downloaded at once per object (1: one
    /// stream per object). Memory is about this x --restore-part-size.
    #[arg(
        long,
        env = "STEWARD_RESTORE_CONCURRENCY",
        value_name = "N",
        global = true
    )]
    pub restore_concurrency: Option<usize>,

    /// With --from s3://: size in bytes of the ranges an object larger than
    /// one range is downloaded in (default 6291456).
    #[arg(
        long,
        env = "STEWARD_RESTORE_PART_SIZE",
        value_name = "BYTES",
        global = true
    )]
    pub restore_part_size: Option<u64>,

    /// Snapshots of this host (default: the host named in the configuration,
    /// or the only host found at `--from`).
    #[arg(long = "host", value_name = "HOST", global = true)]
    pub host: Option<String>,

    /// The age private key file (`AGE-SECRET-KEY-1...`), mode 0600. Or set
    /// STEWARD_IDENTITY to the key itself.
    #[arg(
        long,
        short = 'i',
        env = "STEWARD_IDENTITY_FILE",
        value_name = "FILE",
        global = true
    )]
    pub identity: Option<PathBuf>,

    /// No progress bar even on a terminal.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// The targets to read snapshots from and the host whose snapshots they are.
pub struct SnapshotSource {
    pub targets: Vec<Arc<dyn StorageTarget>>,
    pub host: String,
}

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSource")
            .field("host", &self.host)
            .field("targets", &self.targets.len())
            .finish()
    }
}

/// Opens `--from`, or the configured targets (those of `job` when it is a
/// configured job, `--target` when given).
pub async fn open_source(
    args: &SourceArgs,
    loaded: &Loaded,
    job: Option<&str>,
) -> anyhow::Result<SnapshotSource> {
    if let Some(url) = &args.from {
        let access = S3Access {
            endpoint: args.endpoint.clone(),
            region: args.region.clone(),
            path_style: args.path_style,
            profile: args.profile.clone(),
            restore_concurrency: args.restore_concurrency,
            restore_part_size_bytes: args.restore_part_size,
        };
        let config = restore::target_from_url(url, &access)?;
        let target = target::open("from", &config).await?;
        let targets = vec![target];
        let host = restore::resolve_host(&targets, args.host.as_deref()).await?;
        return Ok(SnapshotSource { targets, host });
    }
    let backup = &loaded.config.backup;
    let names: Vec<String> = match (&args.target_name, job.and_then(|j| backup.jobs.get(j))) {
        (Some(t), _) => vec![t.clone()],
        (None, Some(j)) => j.target_names(),
        (None, None) => backup.target_names(),
    };
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for (name, opened) in target::open_all(backup, &names).await {
        match opened {
            Ok(t) => targets.push(t),
            Err(e) => errors.push(format!("target {name}: {e}")),
        }
    }
    if targets.is_empty() {
        anyhow::bail!(
            "no target to read snapshots from ({}); on a server without the configuration use --from s3://BUCKET/PREFIX or --from /path",
            errors.join("; ")
        );
    }
    for e in errors {
        eprintln!("warning: {e}");
    }
    let host = args
        .host
        .clone()
        .unwrap_or_else(|| loaded.config.agent.effective_hostname());
    Ok(SnapshotSource { targets, host })
}
