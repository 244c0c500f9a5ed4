//! Disaster-recovery drills inside the daemon: drills run on
//! `backup.drill.schedule` (each outcome logged, traced and annotated in
//! Grafana) and the `steward_drill_*` metrics, read from the last report of
//! each job so drills run with `steward drill` show up too. The drill
//! itself is the backup library's ([`steward_backup::drill`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use steward_backup::drill;
use steward_backup::schedule::Schedule;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;
use crate::notify::{random_uuid, Event, Notifications};

/// Drill scheduling and metrics for one configuration generation: the
/// collector is always there (it reads the last reports, CLI drills
/// included); the loop runs only with `backup.drill.schedule`.
pub fn start(
    config: &Config,
    notifications: Notifications,
    cancel: CancellationToken,
) -> anyhow::Result<Subsystem> {
    let reports_dir = drill::reports_dir(&config.agent.state_dir);
    let mut tasks = Vec::new();
    let drill_config = &config.backup.drill;
    if let Some(expr) = &drill_config.schedule {
        let schedule = Schedule::parse(expr, &drill_config.timezone)
            .map_err(|e| anyhow::anyhow!("backup.drill.schedule: {e}"))?;
        let config = config.clone();
        tasks.push(tokio::spawn(schedule_loop(
            config,
            schedule,
            notifications,
            cancel,
        )));
    }
    Ok(Subsystem {
        collectors: vec![Arc::new(DrillCollector { reports_dir }) as Arc<dyn Collector>],
        tasks,
    })
}

async fn schedule_loop(
    config: Config,
    schedule: Schedule,
    notifications: Notifications,
    cancel: CancellationToken,
) {
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
        let host = config.agent.effective_hostname();
        let run_id = random_uuid();
        notifications.notify(Event::drill_start(&host, &run_id));
        // Every drill outcome becomes a Grafana annotation (no-op without
        // `[grafana]`), so drills show next to deployments on dashboards.
        let annotator =
            crate::grafana::Annotator::new(&config.grafana, config.agent.effective_hostname());
        let kind = crate::grafana::AnnotationKind::Drill;
        let span = crate::spans::command_span("drill");
        let result = tracing::Instrument::instrument(scheduled_drill(&config), span.clone()).await;
        crate::spans::record_drill(&span, &result);
        drop(span);
        notifications.notify(match &result {
            Ok(report) => Event::drill_finished(&run_id, report),
            Err(e) => Event::drill_not_run(&host, &run_id, &format!("{e:#}")),
        });
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
    let report = drill::run_scheduled(
        &config.backup,
        &config.agent.effective_hostname(),
        &config.agent.state_dir,
    )
    .await?;
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
            "Age of the snapshot restored by the last drill of the job when the drill ran (the measured RPO); for mysql jobs with binlog shipping, the live server's last commit at drill start minus the last replayed binlog event.",
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
