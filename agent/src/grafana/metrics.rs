//! Annotation self-metrics: what the daemon sent and what failed, by kind
//! and reason, counted process-wide and exported by [`AnnotationCollector`].

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};

use super::kind::AnnotationKind;

/// Reasons counted in `steward_grafana_annotation_errors_total`.
const REASONS: [&str; 9] = [
    "unauthorized",
    "forbidden",
    "bad_request",
    "unknown_dashboard",
    "not_found",
    "timeout",
    "connect",
    "http",
    "invalid_response",
];

/// Process-wide annotation counters. The agent is one process and its
/// counters must survive configuration reloads (a counter that resets on
/// SIGHUP hides failures from `increase()`), so they live here rather than
/// in a per-generation object.
struct Stats {
    sent: [AtomicU64; AnnotationKind::ALL.len()],
    errors: [[AtomicU64; REASONS.len()]; AnnotationKind::ALL.len()],
}

static STATS: Stats = Stats {
    sent: [const { AtomicU64::new(0) }; AnnotationKind::ALL.len()],
    errors: [const { [const { AtomicU64::new(0) }; REASONS.len()] }; AnnotationKind::ALL.len()],
};

/// Counts one annotation of `kind` that Grafana accepted.
pub(super) fn count_sent(kind: AnnotationKind) {
    STATS.sent[kind.index()].fetch_add(1, Ordering::Relaxed);
}

/// Counts one annotation of `kind` that failed; `reason` is one of
/// [`REASONS`] (what `GrafanaError::reason` returns).
pub(super) fn count_error(kind: AnnotationKind, reason: &str) {
    if let Some(r) = REASONS.iter().position(|x| *x == reason) {
        STATS.errors[kind.index()][r].fetch_add(1, Ordering::Relaxed);
    }
}

/// The failures of `kind` counted so far for `reason`.
#[cfg(test)]
pub(super) fn error_count(kind: AnnotationKind, reason: &str) -> u64 {
    let r = REASONS
        .iter()
        .position(|x| *x == reason)
        .expect("a counted reason");
    STATS.errors[kind.index()][r].load(Ordering::Relaxed)
}

/// `steward_grafana_annotations_total{kind}` and
/// `steward_grafana_annotation_errors_total{kind,reason}`. Registered by the
/// daemon when `grafana.url` is set; all series start at 0 so `increase()`
/// sees the first failure.
#[derive(Debug, Default)]
pub struct AnnotationCollector;

#[async_trait]
impl Collector for AnnotationCollector {
    fn name(&self) -> &str {
        "grafana"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let mut sent = MetricFamily::counter(
            "steward_grafana_annotations_total",
            "Grafana annotations the agent added, by kind.",
        );
        let mut errors = MetricFamily::counter(
            "steward_grafana_annotation_errors_total",
            "Grafana annotations the agent failed to add, by kind and reason.",
        );
        for kind in AnnotationKind::ALL {
            if kind == AnnotationKind::Deploy {
                // Deployments are annotated by the CLI, not the daemon.
                continue;
            }
            sent.push(
                [("kind", kind.as_str())],
                STATS.sent[kind.index()].load(Ordering::Relaxed) as f64,
            );
            for (r, reason) in REASONS.iter().enumerate() {
                errors.push(
                    [("kind", kind.as_str()), ("reason", reason)],
                    STATS.errors[kind.index()][r].load(Ordering::Relaxed) as f64,
                );
            }
        }
        Ok(vec![sent, errors].into())
    }
}
