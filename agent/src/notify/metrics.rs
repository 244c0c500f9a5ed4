//! Notification self-metrics, process-wide so they survive reloads (a
//! counter that resets on SIGHUP hides failures from `increase()`):
//! `steward_notifications_total{notifier,kind,result}` and
//! `steward_notification_retries_total{notifier,kind}`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};

/// One notifier's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub retries: u64,
}

static REGISTRY: Mutex<BTreeMap<String, (&'static str, Counts)>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<String, (&'static str, Counts)>> {
    match REGISTRY.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Makes `name`'s series exist (at 0 the first time).
pub fn register(name: &str, kind: &'static str) {
    let mut r = registry();
    let entry = r
        .entry(name.to_string())
        .or_insert((kind, Counts::default()));
    entry.0 = kind;
}

/// Adds to `name`'s counters.
pub fn count(name: &str, f: impl FnOnce(&mut Counts)) {
    if let Some((_, c)) = registry().get_mut(name) {
        f(c);
    }
}

/// `name`'s counters so far.
#[cfg(test)]
pub fn counts(name: &str) -> Counts {
    registry().get(name).map(|(_, c)| *c).unwrap_or_default()
}

/// Exports the counters of the configured notifiers.
#[derive(Debug)]
pub struct NotifyCollector {
    names: Vec<String>,
}

impl NotifyCollector {
    pub fn new(names: Vec<String>) -> Self {
        NotifyCollector { names }
    }
}

#[async_trait]
impl Collector for NotifyCollector {
    fn name(&self) -> &str {
        "notify"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let mut total = MetricFamily::counter(
            "steward_notifications_total",
            "Backup and drill notifications by notifier and result: sent (accepted by the service), failed (refused, or retries exhausted), dropped (queue full).",
        );
        let mut retries = MetricFamily::counter(
            "steward_notification_retries_total",
            "Notification attempts that were retried (timeout, connection refused, 5xx, 429).",
        );
        let r = registry();
        for name in &self.names {
            let Some((kind, c)) = r.get(name) else {
                continue;
            };
            for (result, n) in [
                ("sent", c.sent),
                ("failed", c.failed),
                ("dropped", c.dropped),
            ] {
                total.push(
                    [
                        ("notifier", name.as_str()),
                        ("kind", kind),
                        ("result", result),
                    ],
                    n as f64,
                );
            }
            retries.push(
                [("notifier", name.as_str()), ("kind", kind)],
                c.retries as f64,
            );
        }
        Ok(vec![total, retries].into())
    }
}
