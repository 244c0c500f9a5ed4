//! Starts each subsystem (scheduler, telemetry) so that one failing to
//! start degrades the agent instead of stopping it: the others run, the
//! failed one is retried with backoff, and its state shows in `/health`
//! and in `steward_subsystem_up{subsystem}`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::{Subsystem, SubsystemHealth};

/// How a subsystem is started for one generation.
pub type StartFn = fn(&Config, CancellationToken) -> anyhow::Result<Subsystem>;

/// First retry after this; doubles up to `MAX_BACKOFF`. A port held by a
/// process that is being restarted frees within seconds.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// `steward_subsystem_up{subsystem}`.
pub struct SubsystemCollector(pub Arc<SubsystemHealth>);

#[async_trait]
impl Collector for SubsystemCollector {
    fn name(&self) -> &str {
        "subsystems"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let mut family = MetricFamily::gauge(
            "steward_subsystem_up",
            "1 if the subsystem (scheduler, telemetry) is running, 0 if it failed to start and is being retried.",
        );
        for state in self.0.states() {
            family.push(
                [("subsystem", state.subsystem)],
                f64::from(u8::from(state.up)),
            );
        }
        Ok(vec![family].into())
    }
}

/// Stands in for the collectors of a subsystem that has not started yet,
/// and answers with theirs once it has (the scraper is built once per
/// generation).
struct LateCollectors {
    name: &'static str,
    inner: RwLock<Vec<Arc<dyn Collector>>>,
}

impl LateCollectors {
    fn fill(&self, collectors: Vec<Arc<dyn Collector>>) {
        match self.inner.write() {
            Ok(mut g) => *g = collectors,
            Err(p) => *p.into_inner() = collectors,
        }
    }
}

#[async_trait]
impl Collector for LateCollectors {
    fn name(&self) -> &str {
        self.name
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let inner: Vec<Arc<dyn Collector>> = match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut all = Collected::default();
        for collector in inner {
            let got = collector.collect(ctx).await?;
            all.families.extend(got.families);
            all.error = all.error.or(got.error);
        }
        Ok(all)
    }
}

/// Starts `start` now; if it fails, the returned subsystem retries it with
/// backoff until it starts or `cancel` fires. Never fails.
pub fn start_or_retry(
    name: &'static str,
    start: StartFn,
    config: &Arc<Config>,
    cancel: &CancellationToken,
    health: &Arc<SubsystemHealth>,
) -> Subsystem {
    let error = match start(config, cancel.child_token()) {
        Ok(sub) => {
            health.set(name, None);
            return sub;
        }
        Err(e) => format!("{e:#}"),
    };
    tracing::error!(
        subsystem = name,
        "cannot start ({error}); the rest of the agent runs and this is retried"
    );
    health.set(name, Some(error));
    let late = Arc::new(LateCollectors {
        name,
        inner: RwLock::new(Vec::new()),
    });
    let task = tokio::spawn(retry(
        name,
        start,
        Arc::clone(config),
        cancel.clone(),
        Arc::clone(health),
        Arc::clone(&late),
    ));
    Subsystem {
        collectors: vec![late],
        tasks: vec![task],
    }
}

async fn retry(
    name: &'static str,
    start: StartFn,
    config: Arc<Config>,
    cancel: CancellationToken,
    health: Arc<SubsystemHealth>,
    late: Arc<LateCollectors>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        match start(&config, cancel.child_token()) {
            Ok(sub) => {
                health.set(name, None);
                late.fill(sub.collectors);
                tracing::info!(subsystem = name, "started after an earlier failure");
                // Stops on `cancel` like any subsystem; the generation
                // waits for this task.
                for task in sub.tasks {
                    let _ = task.await;
                }
                return;
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(subsystem = name, retry_in = ?backoff, "still cannot start: {error}");
                health.set(name, Some(error));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

    /// Fails twice, then starts.
    fn flaky(_: &Config, _: CancellationToken) -> anyhow::Result<Subsystem> {
        if ATTEMPTS.fetch_add(1, Ordering::SeqCst) < 2 {
            anyhow::bail!("port taken");
        }
        // Any collector with a sample will do.
        let inner = Arc::new(SubsystemHealth::default());
        inner.set("inner", None);
        Ok(Subsystem {
            collectors: vec![Arc::new(SubsystemCollector(inner))],
            tasks: Vec::new(),
        })
    }

    #[tokio::test]
    async fn a_failed_start_is_reported_and_retried_until_it_runs() {
        let health = Arc::new(SubsystemHealth::default());
        let cancel = CancellationToken::new();
        let config = Arc::new(Config::default());
        let sub = start_or_retry("telemetry", flaky, &config, &cancel, &health);
        let states = health.states();
        assert!(!states[0].up);
        assert_eq!(states[0].error.as_deref(), Some("port taken"));
        let text = collect_text(&SubsystemCollector(Arc::clone(&health))).await;
        assert!(
            text.contains("steward_subsystem_up{subsystem=\"telemetry\"} 0\n"),
            "{text}"
        );
        assert_eq!(sub.collectors[0].name(), "telemetry");

        // Retries after 1 s, then 2 s more.
        for _ in 0..100 {
            if health.states()[0].up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(health.states()[0].up, "started on a retry");
        assert_eq!(
            ATTEMPTS.load(Ordering::SeqCst),
            3,
            "backoff, not a busy loop"
        );
        // The late collectors answer with the started subsystem's.
        let late = collect_text(sub.collectors[0].as_ref()).await;
        assert!(
            late.contains("steward_subsystem_up{subsystem=\"inner\"} 1\n"),
            "{late}"
        );
        cancel.cancel();
        for t in sub.tasks {
            t.await.unwrap();
        }
    }

    async fn collect_text(c: &dyn Collector) -> String {
        let got = c
            .collect(CollectContext::with_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
        steward_exporters::exposition::encode(&got.families)
    }
}
