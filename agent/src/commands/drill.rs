//! `steward drill [JOB...]`: restore the latest snapshot of each job into a
//! scratch database or directory, check it, measure RTO and RPO against the
//! objectives, clean up, print a table and write a JSON report (which the
//! daemon's `steward_drill_*` metrics read, see `crate::scheduled_drills`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use steward_backup::drill::{self, DrillJob, DrillSettings};
use steward_backup::manifest::JobKind;
use steward_backup::restore::{ConnectionOverrides, Identities, Progress};

use crate::commands::progress::TermProgress;
use crate::commands::source::{open_source, SourceArgs};
use crate::config::Loaded;

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Jobs to drill (default: backup.drill.jobs, else every configured
    /// job, else every job found at --from).
    #[arg(value_name = "JOB")]
    pub jobs: Vec<String>,

    /// RTO for every drilled job, overriding the configuration (seconds).
    #[arg(long, value_name = "SECS")]
    pub rto_secs: Option<f64>,

    /// RPO for every drilled job, overriding the configuration (seconds).
    #[arg(long, value_name = "SECS")]
    pub rpo_secs: Option<f64>,

    /// Scratch space for file restores and spooled dumps (default:
    /// backup.drill.scratch_dir, else <state_dir>/drill/scratch).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,

    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub notify: crate::commands::backup::NotifyArgs,

    /// Database server for the scratch databases (default: the job's).
    #[arg(long = "db-host", value_name = "HOST")]
    pub db_host: Option<String>,
    #[arg(long = "db-port", value_name = "PORT")]
    pub db_port: Option<u16>,
    #[arg(long = "db-user", value_name = "USER")]
    pub db_user: Option<String>,
}

pub async fn run(args: DrillArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let spans = crate::spans::CommandSpans::start(&loaded.config);
    let span = crate::spans::command_span("drill");
    span.record("steward.jobs", args.jobs.join(",").as_str());
    let result = tracing::Instrument::instrument(run_drill(args, loaded), span.clone()).await;
    crate::spans::record_command(&span, &result);
    drop(span);
    if let Some(spans) = spans {
        spans.finish().await;
    }
    result
}

async fn run_drill(args: DrillArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let config = &loaded.config;
    let identity = args
        .source
        .identity
        .clone()
        .or_else(|| config.backup.drill.identity_file.clone());
    let identities = Identities::from_file_or_env(identity.as_deref())?;
    let src = open_source(&args.source, loaded, args.jobs.first().map(String::as_str)).await?;
    let mut names = args.jobs.clone();
    if names.is_empty() {
        names = config.backup.drill.jobs.clone();
    }
    // Drills of postgres_pitr jobs are not built: left out unless named.
    if names.is_empty() && args.source.from.is_none() {
        names = (config.backup.jobs.iter())
            .filter(|(_, j)| j.kind != JobKind::PostgresPitr)
            .map(|(n, _)| n.clone())
            .collect();
    }
    if names.is_empty() {
        let entries = steward_backup::restore::list(&src.targets, &src.host, None).await?;
        names = (entries.into_iter())
            .filter(|e| e.manifest.kind != JobKind::PostgresPitr)
            .map(|e| e.manifest.job)
            .collect();
        names.sort();
        names.dedup();
    }
    if names.is_empty() {
        anyhow::bail!(
            "nothing to drill: no job named, none configured, and no snapshot of host {} found",
            src.host
        );
    }
    let overrides = ConnectionOverrides {
        host: args.db_host.clone(),
        port: args.db_port,
        user: args.db_user.clone(),
    };
    let jobs: Vec<DrillJob> = names
        .iter()
        .map(|name| {
            let job = if args.source.from.is_none() {
                config.backup.jobs.get(name)
            } else {
                None
            };
            let mut drill_job = DrillJob::configured(name, job, &config.backup.drill, &overrides);
            if args.rto_secs.is_some() {
                drill_job.objective.rto_secs = args.rto_secs;
            }
            if args.rpo_secs.is_some() {
                drill_job.objective.rpo_secs = args.rpo_secs;
            }
            drill_job
        })
        .collect();
    let scratch_dir = args
        .scratch_dir
        .clone()
        .or_else(|| config.backup.drill.scratch_dir.clone())
        .unwrap_or_else(|| drill::reports_dir(&config.agent.state_dir).join("scratch"));
    std::fs::create_dir_all(&scratch_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the scratch directory {}: {e}; choose one with --scratch-dir",
            scratch_dir.display()
        )
    })?;
    let progress = Arc::new(TermProgress::new(args.source.quiet));
    let settings = DrillSettings {
        host: src.host.clone(),
        targets: src.targets,
        identities,
        scratch_dir,
        progress: progress.clone(),
    };
    // Drills from the command line (cron on a recovery host) are
    // notified like scheduled ones.
    let notifications = args.notify.start(config);
    let run_id = crate::notify::random_uuid();
    notifications.notify(crate::notify::Event::drill_start(&src.host, &run_id));
    let report = drill::run(&settings, &jobs).await;
    progress.finish();
    notifications.notify(crate::notify::Event::drill_finished(&run_id, &report));
    args.notify.finish(notifications).await;

    let reports_dir = drill::reports_dir(&config.agent.state_dir);
    match drill::write_report(&reports_dir, &report, config.backup.drill.reports_keep) {
        Ok(p) => eprintln!("drill report written to {}", p.display()),
        Err(e) => eprintln!(
            "warning: cannot write the drill report into {}: {e} (metrics will not show this drill)",
            reports_dir.display()
        ),
    }
    if let Some(path) = &args.report {
        std::fs::write(path, drill::to_json(&report))
            .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
    }
    if args.json {
        print!("{}", String::from_utf8_lossy(&drill::to_json(&report)));
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
