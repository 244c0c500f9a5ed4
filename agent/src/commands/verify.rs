//! `steward backup verify [JOB] [SNAPSHOT|--all|--sample N%]`: download,
//! decrypt, decompress and check snapshots against their manifests without
//! writing anything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use steward_backup::restore::{Identities, Progress};
use steward_backup::verify;

use crate::commands::progress::{human_bytes, TermProgress};
use crate::commands::source::{open_source, SourceArgs};
use crate::config::Loaded;

/// The arguments of `steward backup verify`.
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

pub async fn run(args: VerifyArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
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
