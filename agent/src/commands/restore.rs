//! `steward restore list|show|JOB [SNAPSHOT|latest]`: get data back from the
//! configured targets, or with no configuration at all from `--from` (a
//! bucket or a directory) and the private key.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use steward_backup::manifest::JobKind;
use steward_backup::restore::{
    self, files, ConnectionOverrides, Identities, Progress, RestoreRequest, RestoredItem, S3Access,
};
use steward_backup::target::{self, Target};
use steward_backup::verify;

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

    /// S3 endpoint for S3-compatible stores (e.g. https://s3.gra.io.cloud.ovh.net).
    #[arg(long, env = "AWS_ENDPOINT_URL", value_name = "URL", global = true)]
    pub endpoint: Option<String>,

    /// S3 region.
    #[arg(long, env = "AWS_REGION", value_name = "REGION", global = true)]
    pub region: Option<String>,

    /// Address buckets as https://endpoint/bucket (most S3-compatible stores
    /// need this) instead of https://bucket.endpoint.
    #[arg(long, env = "STEWARD_S3_PATH_STYLE", global = true)]
    pub path_style: bool,

    /// Profile of the AWS shared config/credentials files. Without it the
    /// usual AWS chain applies: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY,
    /// AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE, instance profile. Secrets
    /// are never taken as flags (they would show in `ps`).
    #[arg(long, env = "AWS_PROFILE", value_name = "NAME", global = true)]
    pub profile: Option<String>,

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

#[derive(Debug, Args)]
#[command(
    subcommand_negates_reqs = true,
    after_help = "Examples (on a fresh server, no configuration):\n  \
        export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...\n  \
        steward restore --from s3://backups/steward list\n  \
        steward restore --from s3://backups/steward -i key.txt db latest --into app\n  \
        steward restore --from /mnt/usb/steward -i key.txt files latest --to /srv/restore"
)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    #[command(subcommand)]
    pub command: Option<RestoreCommand>,

    /// Job whose snapshot to restore.
    #[arg(value_name = "JOB", required = true)]
    pub job: Option<String>,

    /// Snapshot id, or `latest` (default).
    #[arg(value_name = "SNAPSHOT|latest", default_value = "latest")]
    pub snapshot: String,

    #[command(flatten)]
    pub options: IntoArgs,
}

/// Where the restored data goes.
#[derive(Debug, Clone, Default, Args)]
pub struct IntoArgs {
    /// Databases: restore this database of the snapshot (default: every
    /// database it holds).
    #[arg(long = "database", short = 'd', value_name = "NAME")]
    pub databases: Vec<String>,

    /// Databases: the name to restore into (one database only; default: its
    /// original name). Created when missing.
    #[arg(long, value_name = "NAME")]
    pub into: Option<String>,

    /// Restore into an existing database that already holds tables
    /// (PostgreSQL: objects in the dump are dropped and recreated).
    #[arg(long)]
    pub force: bool,

    /// PostgreSQL: also restore roles and tablespaces from the globals dump.
    #[arg(long)]
    pub globals: bool,

    /// PostgreSQL: run `pg_restore -j N` (the dump is spooled to a temporary
    /// file first, since parallel restore needs a seekable file).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<u32>,

    /// Database server to restore into (default: the job's, or local
    /// socket). Passwords come from PGPASSWORD / MYSQL_PWD or the job.
    #[arg(long = "db-host", value_name = "HOST")]
    pub db_host: Option<String>,
    #[arg(long = "db-port", value_name = "PORT")]
    pub db_port: Option<u16>,
    #[arg(long = "db-user", value_name = "USER")]
    pub db_user: Option<String>,

    /// Files and config: the directory to restore into.
    #[arg(long, value_name = "DIR", conflicts_with = "in_place")]
    pub to: Option<PathBuf>,

    /// Files and config: restore over the original paths (the live files).
    #[arg(long)]
    pub in_place: bool,

    /// Files and config: only paths matching this glob (repeatable), e.g.
    /// `--path 'var/www/shared/storage/**'`.
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,

    /// Config: show how the snapshot differs from the live files; restores
    /// nothing.
    #[arg(long)]
    pub diff: bool,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// List snapshots (newest last).
    List {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot's manifest: objects, sizes, hashes, databases, tools.
    Show {
        /// Snapshot id, or `JOB/latest`.
        snapshot: String,
        #[arg(long)]
        json: bool,
    },
}

/// The targets to read snapshots from and the host whose snapshots they are.
pub struct SnapshotSource {
    pub targets: Vec<Arc<dyn Target>>,
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

pub async fn run(args: RestoreArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(RestoreCommand::List { job, json }) => list(&args.source, loaded, job, json).await,
        Some(RestoreCommand::Show { snapshot, json }) => {
            show(&args.source, loaded, &snapshot, json).await
        }
        None => {
            let job = args.job.ok_or_else(|| {
                anyhow::anyhow!("name the job to restore (see `steward restore list`)")
            })?;
            let spans = crate::telemetry::CommandSpans::start(&loaded.config);
            let span = crate::telemetry::command_span("restore");
            span.record("steward.job", job.as_str());
            span.record("steward.snapshot.id", args.snapshot.as_str());
            let result = tracing::Instrument::instrument(
                restore_job(&args.source, loaded, &job, &args.snapshot, &args.options),
                span.clone(),
            )
            .await;
            crate::telemetry::record_command(&span, &result);
            drop(span);
            if let Some(spans) = spans {
                spans.finish().await;
            }
            result
        }
    }
}

async fn list(
    source: &SourceArgs,
    loaded: &Loaded,
    job: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let src = open_source(source, loaded, job.as_deref()).await?;
    let entries = restore::list(&src.targets, &src.host, job.as_deref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!(
            "no snapshots of host {}{}",
            src.host,
            job.map(|j| format!(", job {j}")).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<22} {:<12} {:<9} {:<10} {:<20} {:>10} {:>10}",
        "SNAPSHOT", "JOB", "KIND", "TARGET", "STARTED (UTC)", "DATA", "STORED"
    );
    for e in &entries {
        let m = &e.manifest;
        println!(
            "{:<22} {:<12} {:<9} {:<10} {:<20} {:>10} {:>10}",
            m.snapshot_id,
            m.job,
            m.kind.as_str(),
            e.target,
            m.started_at.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(m.plaintext_bytes()),
            human_bytes(m.stored_bytes())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID`, or `JOB/latest` / `JOB/ID`.
async fn show(
    source: &SourceArgs,
    loaded: &Loaded,
    snapshot: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let located = match snapshot.split_once('/') {
        Some((job, id)) => {
            let src = open_source(source, loaded, Some(job)).await?;
            restore::locate(&src.targets, &src.host, job, id).await?
        }
        None => {
            let src = open_source(source, loaded, None).await?;
            restore::locate_id(&src.targets, &src.host, snapshot).await?
        }
    };
    let m = &located.manifest;
    if json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshot   {}", m.snapshot_id);
    println!("job        {} ({})", m.job, m.kind);
    println!("host       {}", m.host);
    println!(
        "target     {} ({})",
        located.target.name(),
        located.target.location()
    );
    println!("reason     {}", m.reason);
    println!("started    {}", m.started_at.to_rfc3339());
    println!("finished   {}", m.finished_at.to_rfc3339());
    println!(
        "size       {} plaintext, {} stored",
        human_bytes(m.plaintext_bytes()),
        human_bytes(m.stored_bytes())
    );
    for r in &m.recipients {
        println!("recipient  {} ({})", r.recipient, r.fingerprint);
    }
    for o in &m.objects {
        println!(
            "object     {}  {} -> {}",
            o.name,
            human_bytes(o.plaintext_bytes),
            human_bytes(o.stored_bytes)
        );
    }
    for d in &m.databases {
        let rows: u64 = d.tables.iter().map(|t| t.rows).sum();
        println!(
            "database   {} ({} tables, {rows} rows)",
            d.name,
            d.tables.len()
        );
    }
    if let Some(f) = &m.files {
        println!(
            "files      {} files, {} directories, {} symlinks, {} in {}",
            f.files,
            f.directories,
            f.symlinks,
            human_bytes(f.bytes),
            f.paths.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

impl IntoArgs {
    /// The `--db-*` flags, which take precedence over the environment and
    /// the job's configuration.
    pub fn connection_overrides(&self) -> ConnectionOverrides {
        ConnectionOverrides {
            host: self.db_host.clone(),
            port: self.db_port,
            user: self.db_user.clone(),
        }
    }
}

async fn restore_job(
    source: &SourceArgs,
    loaded: &Loaded,
    job: &str,
    snapshot: &str,
    opts: &IntoArgs,
) -> anyhow::Result<ExitCode> {
    // The key first: a bad key file is the cheapest thing to find out.
    let identities = Identities::from_file_or_env(source.identity.as_deref())?;
    let src = open_source(source, loaded, Some(job)).await?;
    let located = restore::locate(&src.targets, &src.host, job, snapshot).await?;
    let m = located.manifest.clone();
    let span = tracing::Span::current();
    span.record("steward.snapshot.id", m.snapshot_id.as_str());
    span.record("steward.target", located.target.name());
    let progress = Arc::new(TermProgress::new(source.quiet));
    let dyn_progress: Arc<dyn Progress> = progress.clone();
    let job_config = if source.from.is_none() {
        loaded.config.backup.jobs.get(job)
    } else {
        None
    };
    eprintln!(
        "restoring snapshot {} of job {job} ({}, taken {}) from target {}",
        m.snapshot_id,
        m.kind,
        m.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        located.target.name()
    );
    let started = std::time::Instant::now();
    // `--diff` concerns files and config snapshots only (a flag the other
    // kinds do not use, as before).
    if opts.diff && matches!(m.kind, JobKind::Files | JobKind::Config) {
        let root = opts.to.clone().unwrap_or_else(|| PathBuf::from("/"));
        let diffs = files::diff(&located, &identities, dyn_progress, &root, &opts.paths).await?;
        progress.finish();
        print_diffs(&diffs, &m.snapshot_id, &root, opts.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let overrides = opts.connection_overrides();
    let request = RestoreRequest {
        databases: opts.databases.clone(),
        into: opts.into.clone(),
        force: opts.force,
        globals: opts.globals,
        parallel: opts.jobs,
        spool_dir: None,
        pg: overrides.postgres(job_config),
        mysql: overrides.mysql(job_config),
        files: files::FilesRestoreOptions {
            to: opts.to.clone(),
            in_place: opts.in_place,
            paths: opts.paths.clone(),
        },
    };
    let items: Vec<RestoredItem> =
        restore::restore_snapshot(&located, &identities, dyn_progress, &request).await?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "snapshot": m.snapshot_id,
                "job": m.job,
                "kind": m.kind,
                "target": located.target.name(),
                "seconds": secs,
                "restored": items,
            }))?
        );
    } else {
        for item in &items {
            println!(
                "restored {} -> {} ({} in {:.1}s)",
                if item.source.is_empty() {
                    &m.job
                } else {
                    &item.source
                },
                item.name,
                human_bytes(item.bytes),
                secs
            );
            for c in &item.checks {
                println!("  ok  {}: {}", c.name, c.detail);
            }
        }
        println!("verified: snapshot {} restored and checked", m.snapshot_id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--diff` output: one line per changed path (with a unified diff for
/// text files), or JSON.
fn print_diffs(
    diffs: &[files::DiffEntry],
    snapshot_id: &str,
    root: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(diffs)?);
    } else if diffs.is_empty() {
        println!(
            "no difference between snapshot {snapshot_id} and {}",
            root.display()
        );
    } else {
        for d in diffs {
            println!("{:<10} {}  {}", d.change, d.path, d.detail);
            if let Some(text) = &d.diff {
                print!("{text}");
            }
        }
    }
    Ok(())
}

/// `steward backup verify [JOB] [SNAPSHOT|--all|--sample N%]`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Only this job (default: every job with snapshots).
    pub job: Option<String>,
    /// This snapshot id (default: the latest of each job).
    #[arg(conflicts_with_all = ["all", "sample"])]
    pub snapshot: Option<String>,
    /// Every snapshot.
    #[arg(long, conflicts_with = "sample")]
    pub all: bool,
    /// A random share of the snapshots, e.g. `10%` (at least one per job).
    #[arg(long, value_name = "N%")]
    pub sample: Option<String>,
    /// Directory of `pg_restore` for the dump check (default: PATH).
    #[arg(long, value_name = "DIR")]
    pub pg_bin_dir: Option<PathBuf>,
    /// Print the verdicts as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn verify(args: VerifyArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let selection = match (&args.snapshot, args.all, &args.sample) {
        (Some(id), _, _) => verify::Selection::Id(id.clone()),
        (None, true, _) => verify::Selection::All,
        (None, false, Some(s)) => verify::Selection::sample(s)?,
        (None, false, None) => verify::Selection::Latest,
    };
    if args.snapshot.is_some() && args.job.is_none() {
        anyhow::bail!("name the job of the snapshot: steward backup verify JOB SNAPSHOT");
    }
    let identities = Identities::from_file_or_env(args.source.identity.as_deref())?;
    let src = open_source(&args.source, loaded, args.job.as_deref()).await?;
    let progress = Arc::new(TermProgress::new(args.source.quiet));
    let tools = verify::VerifyTools {
        pg_bin_dir: args.pg_bin_dir.clone().or_else(|| {
            args.job
                .as_deref()
                .and_then(|j| loaded.config.backup.jobs.get(j))
                .and_then(|j| j.bin_dir.clone())
        }),
    };
    let jobs: Vec<String> = args.job.iter().cloned().collect();
    let verdicts = verify::verify(
        &src.targets,
        &src.host,
        &jobs,
        &selection,
        &identities,
        progress.clone(),
        &tools,
    )
    .await?;
    progress.finish();
    let ok = verdicts.iter().all(|v| v.ok);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdicts)?);
    } else {
        for v in &verdicts {
            let bytes: u64 = v.objects.iter().map(|o| o.stored_bytes).sum();
            println!(
                "{:<6} {:<12} {:<22} {:<10} {} objects, {} in {:.1}s",
                if v.ok { "ok" } else { "FAILED" },
                v.job,
                v.snapshot,
                v.target,
                v.objects.len(),
                human_bytes(bytes),
                v.seconds
            );
            for o in &v.objects {
                if let Some(p) = o.problem() {
                    println!("  {p}");
                }
            }
        }
    }
    if !ok {
        let bad = verdicts.iter().filter(|v| !v.ok).count();
        eprintln!(
            "error: {bad} of {} snapshot(s) failed verification",
            verdicts.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress on a terminal: a bar with bytes, throughput and ETA when the
/// size is known, a spinner with bytes and throughput otherwise. Hidden
/// (no output at all) when stderr is not a terminal or `--quiet`.
#[derive(Debug, Clone)]
pub struct TermProgress {
    bar: indicatif::ProgressBar,
}

impl TermProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
        };
        TermProgress { bar }
    }
}

impl Progress for TermProgress {
    fn start(&self, label: &str, total: Option<u64>) {
        let template = match total {
            Some(_) => "{msg:<32!} [{bar:28}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
            None => "{spinner} {msg:<32!} {bytes:>10} {binary_bytes_per_sec:>12} {elapsed}",
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.reset();
        match total {
            Some(t) => self.bar.set_length(t),
            None => self.bar.unset_length(),
        }
        self.bar.set_message(label.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Printed above the bar on a terminal, plainly on stderr otherwise.
    fn note(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `1.5 GiB`-style sizes for tables.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
