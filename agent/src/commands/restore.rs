//! `steward restore list|show|JOB [SNAPSHOT|latest]`: get data back from the
//! configured targets, or with no configuration at all from `--from` (a
//! bucket or a directory) and the private key.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use steward_backup::binlog::replay::{locate_base, Until};
use steward_backup::manifest::JobKind;
use steward_backup::restore::{
    self, files, ConnectionOverrides, Identities, Progress, RestoreRequest, RestoredItem,
};

use crate::commands::progress::{human_bytes, TermProgress};
use crate::commands::source::{open_source, SourceArgs};
use crate::config::Loaded;

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

    /// Files and config: the directory to restore into. postgres_pitr: the
    /// new data directory (must not exist, or be empty; when it exists, its
    /// owner owns the restored files and runs the server). redis: where
    /// `dump.rdb` is written (never over an existing one).
    #[arg(long, value_name = "DIR", conflicts_with = "in_place")]
    pub to: Option<PathBuf>,

    /// postgres_pitr: where recovery stops, whether to start the server.
    #[command(flatten)]
    pub pitr: crate::commands::pitr::PitrArgs,

    /// Files and config: restore over the original paths (the live files).
    #[arg(long)]
    pub in_place: bool,

    /// Files and config: only paths matching this glob (repeatable), e.g.
    /// `--path 'var/www/shared/storage/**'`.
    #[arg(long = "path", value_name = "GLOB")]
    pub paths: Vec<String>,

    /// Files and config: keep setuid/setgid bits in a `--to` restore
    /// (dropped by default there; `--in-place` always keeps them).
    #[arg(long)]
    pub keep_setuid: bool,

    /// Files and config: after unpacking, read every restored file's
    /// content back from disk and hash it again. By default a file is read
    /// again only if it is no longer the inode the restore wrote, unchanged
    /// since (its content was hashed as it was written).
    #[arg(long)]
    pub reread: bool,

    /// Files and config: an exact rollback. Besides putting back the
    /// snapshot's entries, remove what was added since inside the job's
    /// paths (only entries the job would have archived: its exclude globs
    /// are respected). `--diff` lists them first as `added`.
    #[arg(long, conflicts_with = "paths")]
    pub exact: bool,

    /// Config: show how the snapshot differs from the live files; restores
    /// nothing.
    #[arg(long)]
    pub diff: bool,

    /// MySQL with binlog shipping: restore the newest dump taken before
    /// this time, then replay the shipped binlogs up to it (events at or
    /// after it are left out). postgres_pitr: the newest base backup that
    /// ended before it, then WAL up to it. RFC 3339, 'YYYY-MM-DD HH:MM:SS'
    /// (UTC), or `latest` for everything shipped.
    #[arg(
        long = "to-time",
        value_name = "TIME|latest",
        conflicts_with = "to_position"
    )]
    pub to_time: Option<String>,

    /// MySQL with binlog shipping: replay up to this binlog position
    /// (`mysql-bin.000042:1234`, exclusive).
    #[arg(long = "to-position", value_name = "FILE:POS")]
    pub to_position: Option<String>,

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
            let spans = crate::spans::CommandSpans::start(&loaded.config);
            let span = crate::spans::command_span("restore");
            span.record("steward.job", job.as_str());
            span.record("steward.snapshot.id", args.snapshot.as_str());
            let result = tracing::Instrument::instrument(
                restore_job(&args.source, loaded, &job, &args.snapshot, &args.options),
                span.clone(),
            )
            .await;
            crate::spans::record_command(&span, &result);
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
    if let Some(r) = &m.redis {
        let keys: Vec<String> = (r.keyspace.iter())
            .map(|k| format!("db{} {} keys", k.db, k.keys))
            .collect();
        println!(
            "redis      {} (RDB version {}, {}), {}",
            r.version,
            r.rdb_version,
            human_bytes(r.rdb_bytes),
            if keys.is_empty() {
                "no keys".to_string()
            } else {
                keys.join(", ")
            }
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
    /// The point to roll a MySQL dump forward to, if one was asked for.
    pub fn binlog_until(&self) -> anyhow::Result<Option<Until>> {
        Ok(match (&self.to_time, &self.to_position) {
            (Some(t), _) => Some(Until::parse_time(t)?),
            (None, Some(p)) => Some(Until::parse_position(p)?),
            (None, None) => None,
        })
    }

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
    // --to-time is shared: binlog replay for MySQL jobs, WAL replay for
    // postgres_pitr jobs (told apart by the job's newest snapshot).
    let pitr = restore::locate(&src.targets, &src.host, job, "latest")
        .await
        .is_ok_and(|l| l.manifest.kind == JobKind::PostgresPitr);
    let until = if pitr { None } else { opts.binlog_until()? };
    let mut located = match &until {
        Some(u) => locate_base(&src.targets, &src.host, job, snapshot, u).await?,
        None => restore::locate(&src.targets, &src.host, job, snapshot).await?,
    };
    let pitr = located.manifest.kind == JobKind::PostgresPitr;
    if opts.pitr.asked() && !pitr {
        anyhow::bail!(
            "--to-lsn, --to-name and --start-port apply to postgres_pitr jobs; job {job} has kind {}",
            located.manifest.kind
        );
    }
    let pitr_target = if pitr {
        opts.pitr.recovery_target(opts.to_time.as_deref())?
    } else {
        Default::default()
    };
    if pitr && snapshot == "latest" {
        located =
            steward_backup::wal::recovery::locate_base(&src.targets, &src.host, job, &pitr_target)
                .await?;
    }
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
    // With --from there is no configured target name to show ("from"):
    // the location itself says where.
    let origin = match &source.from {
        Some(url) => url.clone(),
        None => format!("target {}", located.target.name()),
    };
    eprintln!(
        "restoring snapshot {} of job {job} ({}, taken {}) from {origin}",
        m.snapshot_id,
        m.kind,
        m.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
    );
    let started = std::time::Instant::now();
    // `--diff` concerns files and config snapshots only (a flag the other
    // kinds do not use, as before).
    if opts.diff && matches!(m.kind, JobKind::Files | JobKind::Config) {
        let root = opts.to.clone().unwrap_or_else(|| PathBuf::from("/"));
        let diffs =
            restore::diff::diff_with_live(&located, &identities, dyn_progress, &root, &opts.paths)
                .await?;
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
        binlog_until: until,
        files: files::FilesRestoreOptions {
            to: opts.to.clone(),
            in_place: opts.in_place,
            paths: opts.paths.clone(),
            keep_setuid: opts.keep_setuid,
            reread: opts.reread,
            exact: opts.exact,
        },
        pitr: steward_backup::wal::recovery::PitrRestoreOptions {
            data_dir: opts.to.clone(),
            target: pitr_target,
            restore_command: if pitr {
                crate::commands::pitr::restore_command(source, loaded, &located)?
            } else {
                String::new()
            },
            start_port: opts.pitr.start_port,
            pg_bin: opts.pitr.pg_bin.clone(),
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
    diffs: &[restore::diff::DiffEntry],
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
