//! `steward wal push|fetch`: PostgreSQL's `archive_command` and
//! `restore_command` for `postgres_pitr` jobs.
//!
//! Exit codes follow PostgreSQL's contract. push: 0 only when every
//! target holds the file; anything else is retried by the server. fetch:
//! 0 when `%p` was written whole, 1 when the archive does not have the
//! file (the normal end of recovery), and 255 for everything else (damaged
//! or unreadable archive, wrong key): PostgreSQL aborts recovery on an exit
//! status above 125 instead of ending it early as if the archive ended.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use steward_backup::manifest::JobKind;
use steward_backup::pipeline::PipelineSettings;
use steward_backup::restore::Identities;
use steward_backup::target;
use steward_backup::wal::archive::{self, Fetched};
use steward_backup::wal::names::WalName;

use crate::commands::source::{open_source, SourceArgs};
use crate::config::Loaded;

/// Exit status of a fetch that must stop recovery (see the module doc).
pub const EXIT_FETCH_FATAL: u8 = 255;

#[derive(Debug, Args)]
pub struct WalArgs {
    #[command(subcommand)]
    pub command: WalCommand,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing would only complicate the clap shape.
#[allow(clippy::large_enum_variant)]
pub enum WalCommand {
    /// Archive one WAL file: archive_command = 'steward wal push JOB %p'.
    /// Exits 0 only once every target of the job holds it.
    Push {
        /// The `postgres_pitr` job (`[backup.jobs.NAME]`).
        job: String,
        /// The file to archive (PostgreSQL's %p).
        path: PathBuf,
    },
    /// Restore one WAL file from the archive:
    /// restore_command = 'steward wal fetch JOB %f %p' (`steward restore`
    /// writes it). Exits 1 when the archive does not hold the file.
    Fetch {
        #[command(flatten)]
        source: SourceArgs,
        /// The `postgres_pitr` job whose archive to read.
        job: String,
        /// The WAL file name (PostgreSQL's %f).
        file: String,
        /// Where to write it (PostgreSQL's %p).
        path: PathBuf,
        /// Also download the next N segments in parallel into
        /// pg_wal/.steward-prefetch/, from where the next requests are
        /// served (0: off; at most 64).
        #[arg(long, value_name = "N", default_value_t = 8)]
        prefetch: u32,
    },
}

pub async fn run(args: WalArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    match args.command {
        WalCommand::Push { job, path } => push(loaded, &job, &path).await,
        WalCommand::Fetch {
            source,
            job,
            file,
            path,
            prefetch,
        } => Ok(
            match fetch(&source, loaded, &job, &file, &path, prefetch).await {
                Ok(Fetched::Restored { .. }) => ExitCode::SUCCESS,
                Ok(Fetched::Absent) => {
                    eprintln!("steward wal fetch: {file} is not in the archive of job {job}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!(
                        "error: steward wal fetch {file}: {e:#}; recovery cannot go on without it"
                    );
                    ExitCode::from(EXIT_FETCH_FATAL)
                }
            },
        ),
    }
}

async fn push(loaded: &Loaded, job_name: &str, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let backup = &loaded.config.backup;
    let job = backup.jobs.get(job_name).ok_or_else(|| {
        anyhow::anyhow!(
            "no backup job named {job_name:?} in {}; archive_command must name a postgres_pitr job",
            config_name(loaded)
        )
    })?;
    if job.kind != JobKind::PostgresPitr {
        anyhow::bail!(
            "job {job_name} has kind {}, not postgres_pitr: WAL belongs to a postgres_pitr job",
            job.kind
        );
    }
    if job.archive_async {
        return push_async(job, job_name, path);
    }
    let settings = PipelineSettings {
        zstd_level: job.zstd_level,
        // One segment at a time: a worker pool costs more than it saves.
        zstd_workers: 1,
        recipients: backup.recipients()?,
    };
    let targets = target::open_all(backup, &job.target_names()).await;
    let host = loaded.config.agent.effective_hostname();
    let report = archive::push(path, &host, job_name, &targets, &settings).await?;
    tracing::debug!(
        wal = report.name,
        bytes = report.plaintext_bytes,
        "archived"
    );
    Ok(ExitCode::SUCCESS)
}

/// `archive_async = true`: the file goes into the spool (synced) and the
/// running agent uploads it; no target is opened here.
fn push_async(
    job: &steward_backup::config::JobConfig,
    job_name: &str,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let dir = job.spool_dir.as_deref().ok_or_else(|| {
        anyhow::anyhow!("job {job_name}: archive_async is set but spool_dir is not")
    })?;
    let (name, spooled) =
        steward_backup::wal::spool::spool(path, job_name, dir, job.spool_max_bytes)?;
    tracing::debug!(wal = %name, ?spooled, "spooled");
    Ok(ExitCode::SUCCESS)
}

async fn fetch(
    source: &SourceArgs,
    loaded: &Loaded,
    job: &str,
    file: &str,
    path: &std::path::Path,
    prefetch: u32,
) -> anyhow::Result<Fetched> {
    let name = WalName::parse(file)?;
    let identities = Identities::from_file_or_env(source.identity.as_deref())?;
    let src = open_source(source, loaded, Some(job)).await?;
    if prefetch > steward_backup::wal::prefetch::MAX_AHEAD {
        anyhow::bail!(
            "--prefetch {prefetch}: use 0 to {}",
            steward_backup::wal::prefetch::MAX_AHEAD
        );
    }
    // The archive first; for the newest segment, not archived yet, its
    // streamed deltas.
    Ok(steward_backup::wal::stream::fetch(
        &src.targets,
        &src.host,
        job,
        &name,
        path,
        &identities,
        prefetch,
    )
    .await?)
}

fn config_name(loaded: &Loaded) -> String {
    loaded
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the embedded defaults (no configuration file)".into())
}
