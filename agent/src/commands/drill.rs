//! `steward drill [JOB...]`: restore the latest snapshot of each job into a
//! scratch database or directory, check it, measure RTO and RPO against the
//! objectives, clean up, print a table and write a JSON report. Also the
//! daemon side: drills on `backup.drill.schedule` and the `steward_drill_*`
//! metrics read from the last reports (so CLI drills show up too).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use async_trait::async_trait;
use clap::Args;
use steward_backup::drill::{self, DrillJob, DrillSettings, Objective};
use steward_backup::restore::{ConnectionOverrides, Identities, Progress};
use steward_backup::schedule::Schedule;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::commands::restore::{open_source, SourceArgs, TermProgress};
use crate::config::{Config, Loaded};
use crate::daemon::Subsystem;

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

    /// Database server for the scratch databases (default: the job's).
    #[arg(long = "db-host", value_name = "HOST")]
    pub db_host: Option<String>,
    #[arg(long = "db-port", value_name = "PORT")]
    pub db_port: Option<u16>,
    #[arg(long = "db-user", value_name = "USER")]
    pub db_user: Option<String>,
}

pub async fn run(args: DrillArgs, loaded: &Loaded) -> anyhow::Result<ExitCode> {
    let spans = crate::telemetry::CommandSpans::start(&loaded.config);
    let span = crate::telemetry::command_span("drill");
    span.record("steward.jobs", args.jobs.join(",").as_str());
    let result = tracing::Instrument::instrument(run_drill(args, loaded), span.clone()).await;
    crate::telemetry::record_command(&span, &result);
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
    if names.is_empty() && args.source.from.is_none() {
        names = config.backup.jobs.keys().cloned().collect();
    }
    if names.is_empty() {
        let entries = steward_backup::restore::list(&src.targets, &src.host, None).await?;
        names = entries.into_iter().map(|e| e.manifest.job).collect();
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
            let mut objective = config
                .backup
                .drill
                .objectives
                .get(name)
                .cloned()
                .unwrap_or_default();
            if args.rto_secs.is_some() {
                objective.rto_secs = args.rto_secs;
            }
            if args.rpo_secs.is_some() {
                objective.rpo_secs = args.rpo_secs;
            }
            DrillJob {
                name: name.clone(),
                kind: job.map(|j| j.kind),
                pg: overrides.postgres(job),
                mysql: overrides.mysql(job),
                objective,
            }
        })
        .collect();
    let scratch_dir = args
        .scratch_dir
        .clone()
        .or_else(|| config.backup.drill.scratch_dir.clone())
        .unwrap_or_else(|| config.agent.state_dir.join("drill").join("scratch"));
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
    let report = drill::run(&settings, &jobs).await;
    progress.finish();

    let reports_dir = config.agent.state_dir.join("drill");
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

/// Drill scheduling and metrics for one configuration generation: the
/// collector is always there (it reads the last reports, CLI drills
/// included); the loop runs only with `backup.drill.schedule`.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let reports_dir = config.agent.state_dir.join("drill");
    let mut tasks = Vec::new();
    let drill_config = &config.backup.drill;
    if let Some(expr) = &drill_config.schedule {
        let schedule = Schedule::parse(expr, &drill_config.timezone)
            .map_err(|e| anyhow::anyhow!("backup.drill.schedule: {e}"))?;
        let config = config.clone();
        tasks.push(tokio::spawn(schedule_loop(config, schedule, cancel)));
    }
    Ok(Subsystem {
        collectors: vec![Arc::new(DrillCollector { reports_dir }) as Arc<dyn Collector>],
        tasks,
    })
}

async fn schedule_loop(config: Config, schedule: Schedule, cancel: CancellationToken) {
    loop {
        let now = steward_backup::chrono::Utc::now();
        let Some(next) = schedule.next_after(now) else {
            tracing::warn!("backup.drill.schedule has no future run; scheduled drills stop");
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        tracing::info!("scheduled drill starting");
        // Every drill outcome becomes a Grafana annotation (no-op without
        // `[grafana]`), so drills show next to deployments on dashboards.
        let annotator = crate::grafana::Annotator::from_config(&config);
        let kind = crate::grafana::AnnotationKind::Drill;
        let span = crate::telemetry::command_span("drill");
        let result = tracing::Instrument::instrument(scheduled_drill(&config), span.clone()).await;
        crate::telemetry::record_drill(&span, &result);
        drop(span);
        match result {
            Ok(report) if report.success => {
                tracing::info!(jobs = report.jobs.len(), "scheduled drill passed");
                annotator.annotate_in_background(
                    kind,
                    format!("drill passed ({} jobs)", report.jobs.len()),
                    vec!["result:success".into()],
                );
            }
            Ok(report) => {
                let mut failed = Vec::new();
                for j in report.jobs.iter().filter(|j| !j.success()) {
                    tracing::error!(job = %j.job, problems = %j.problems().join("; "), "scheduled drill failed");
                    failed.push(format!("{}: {}", j.job, j.problems().join("; ")));
                }
                annotator.annotate_in_background(
                    kind,
                    format!("drill failed: {}", failed.join(" | ")),
                    vec!["result:failure".into()],
                );
            }
            Err(e) => {
                tracing::error!("scheduled drill could not run: {e:#}");
                annotator.annotate_in_background(
                    kind,
                    format!("drill could not run: {e:#}"),
                    vec!["result:failure".into()],
                );
            }
        }
    }
}

async fn scheduled_drill(config: &Config) -> anyhow::Result<drill::DrillReport> {
    let dc = &config.backup.drill;
    let identities = Identities::from_file_or_env(dc.identity_file.as_deref())?;
    let names: Vec<String> = if dc.jobs.is_empty() {
        config.backup.jobs.keys().cloned().collect()
    } else {
        dc.jobs.clone()
    };
    let mut targets = Vec::new();
    let names = config.backup.target_names();
    for (name, opened) in steward_backup::target::open_all(&config.backup, &names).await {
        match opened {
            Ok(t) => targets.push(t),
            Err(e) => tracing::warn!("drill: target {name} unavailable: {e}"),
        }
    }
    let jobs = names
        .iter()
        .map(|n| {
            let job = config.backup.jobs.get(n);
            DrillJob {
                name: n.clone(),
                kind: job.map(|j| j.kind),
                pg: ConnectionOverrides::default().postgres(job),
                mysql: ConnectionOverrides::default().mysql(job),
                objective: dc
                    .objectives
                    .get(n)
                    .cloned()
                    .unwrap_or_else(Objective::default),
            }
        })
        .collect::<Vec<_>>();
    let scratch_dir = dc
        .scratch_dir
        .clone()
        .unwrap_or_else(|| config.agent.state_dir.join("drill").join("scratch"));
    std::fs::create_dir_all(&scratch_dir)?;
    let settings = DrillSettings {
        host: config.agent.effective_hostname(),
        targets,
        identities,
        scratch_dir,
        progress: Arc::new(steward_backup::restore::Silent) as Arc<dyn Progress>,
    };
    let report = drill::run(&settings, &jobs).await;
    drill::write_report(
        &config.agent.state_dir.join("drill"),
        &report,
        dc.reports_keep,
    )?;
    Ok(report)
}

/// `steward_drill_*{job}` from the last drill report of each job.
#[derive(Debug)]
pub struct DrillCollector {
    reports_dir: PathBuf,
}

impl DrillCollector {
    pub fn families(dir: &Path) -> Vec<MetricFamily> {
        let last = drill::read_last(dir);
        let mut when = MetricFamily::gauge(
            "steward_drill_last_run_timestamp_seconds",
            "When the last disaster-recovery drill of the job finished (Unix time).",
        );
        let mut success = MetricFamily::gauge(
            "steward_drill_success",
            "1 when the last drill of the job restored, verified and met its RTO and RPO objectives.",
        );
        let mut seconds = MetricFamily::gauge(
            "steward_drill_restore_seconds",
            "Time the last drill of the job took to restore and check the latest snapshot (the measured RTO).",
        );
        let mut age = MetricFamily::gauge(
            "steward_drill_data_age_seconds",
            "Age of the snapshot restored by the last drill of the job when the drill ran (the measured RPO).",
        );
        for l in &last {
            let job = l.job.job.as_str();
            when.push([("job", job)], l.finished_at);
            success.push([("job", job)], if l.job.success() { 1.0 } else { 0.0 });
            if let Some(s) = l.job.restore_seconds {
                seconds.push([("job", job)], s);
            }
            if let Some(a) = l.job.data_age_seconds {
                age.push([("job", job)], a);
            }
        }
        vec![when, success, seconds, age]
    }
}

#[async_trait]
impl Collector for DrillCollector {
    fn name(&self) -> &str {
        "drill"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let dir = self.reports_dir.clone();
        let families = tokio::task::spawn_blocking(move || DrillCollector::families(&dir))
            .await
            .map_err(|e| CollectError::failed(format!("reading drill reports: {e}")))?;
        Ok(families.into())
    }
}
