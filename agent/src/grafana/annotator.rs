//! The daemon's [`Annotator`]: marks backup failures, restores and drills
//! on every dashboard that shows annotations by tag, and never fails or
//! delays its caller.

use std::sync::Arc;
use std::time::Duration;

use super::client::{now_ms, GrafanaClient, GrafanaError, NewAnnotation};
use super::config::{resolve_token, GrafanaConfig, TOKEN_ENV};
use super::kind::AnnotationKind;
use super::metrics::{count_error, count_sent};

/// The daemon's annotation sender: cheap to clone, never fails its caller.
/// Errors are logged and counted in `steward_grafana_annotation_errors_total`.
///
/// ```ignore
/// let annotator = Annotator::new(&config.grafana, config.agent.effective_hostname());
/// annotator.annotate(AnnotationKind::BackupFailure, "backup db failed: ...", &["job:db".into()]).await;
/// ```
#[derive(Clone, Debug)]
pub struct Annotator {
    inner: Option<Arc<AnnotatorInner>>,
}

#[derive(Debug)]
struct AnnotatorInner {
    client: GrafanaClient,
    dashboard_uid: Option<String>,
    tags: Vec<String>,
    host: String,
    events: Vec<AnnotationKind>,
    /// Whether `dashboard_uid` was found, checked once on first use.
    dashboard_ok: tokio::sync::OnceCell<bool>,
}

impl Annotator {
    /// An annotator that sends nothing (no `grafana.url`).
    pub fn disabled() -> Self {
        Annotator { inner: None }
    }

    /// Builds the annotator of `[grafana]` for `host` (the `host:` tag):
    /// disabled without `grafana.url`, and (with a warning) without any
    /// token.
    pub fn new(grafana: &GrafanaConfig, host: String) -> Self {
        let Some(url) = &grafana.url else {
            return Self::disabled();
        };
        let Some(token) = resolve_token(None, grafana) else {
            tracing::warn!(
                url = %url,
                "grafana.url is set but no token is (grafana.token, grafana.token_file or ${TOKEN_ENV}); the agent will not annotate"
            );
            return Self::disabled();
        };
        match GrafanaClient::new(url, &token, Duration::from_secs_f64(grafana.timeout_secs)) {
            Ok(client) => Annotator {
                inner: Some(Arc::new(AnnotatorInner {
                    client,
                    dashboard_uid: grafana.dashboard_uid.clone(),
                    tags: grafana.tags.clone(),
                    host,
                    events: grafana
                        .events
                        .iter()
                        .filter_map(|e| AnnotationKind::from_event_name(e))
                        .collect(),
                    dashboard_ok: tokio::sync::OnceCell::new(),
                })),
            },
            Err(e) => {
                tracing::warn!("grafana.url: {e}; the agent will not annotate");
                Self::disabled()
            }
        }
    }

    /// Whether `kind` is one of `grafana.events` (deployments always are).
    pub fn wants(&self, kind: AnnotationKind) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| kind == AnnotationKind::Deploy || i.events.contains(&kind))
    }

    /// Posts one point annotation now. Returns its id, or `None` when
    /// disabled, not wanted, or failed (logged and counted).
    pub async fn annotate(
        &self,
        kind: AnnotationKind,
        text: &str,
        extra_tags: &[String],
    ) -> Option<u64> {
        let inner = self.inner.as_ref()?;
        if !self.wants(kind) {
            return None;
        }
        let dashboard_uid = match &inner.dashboard_uid {
            None => None,
            Some(uid) => {
                let ok = *inner
                    .dashboard_ok
                    .get_or_init(|| async {
                        match inner.client.check_dashboard(uid).await {
                            Ok(()) => true,
                            Err(e) => {
                                // An unknown UID: still annotate, as an
                                // organization annotation found by tag.
                                tracing::warn!(kind = kind.as_str(), "{e}");
                                count_error(kind, e.reason());
                                !matches!(e, GrafanaError::UnknownDashboard { .. })
                            }
                        }
                    })
                    .await;
                ok.then(|| uid.clone())
            }
        };
        let mut tags: Vec<String> = vec!["steward".into()];
        tags.extend(kind.tags().iter().map(|t| t.to_string()));
        tags.push(format!("host:{}", inner.host));
        tags.extend(inner.tags.iter().cloned());
        tags.extend(extra_tags.iter().cloned());
        dedup_keep_order(&mut tags);
        let text = if text.trim().is_empty() {
            format!("steward {} on {}", kind.as_str(), inner.host)
        } else {
            text.to_string()
        };
        let annotation = NewAnnotation {
            dashboard_uid,
            time: Some(now_ms()),
            time_end: None,
            tags,
            text,
        };
        match inner.client.create(&annotation).await {
            Ok(id) => {
                count_sent(kind);
                tracing::debug!(kind = kind.as_str(), id, "Grafana annotation added");
                Some(id)
            }
            Err(e) => {
                count_error(kind, e.reason());
                tracing::warn!(
                    kind = kind.as_str(),
                    reason = e.reason(),
                    "annotation not sent: {e}"
                );
                None
            }
        }
    }

    /// [`Annotator::annotate`] on a spawned task, for callers that must not
    /// wait on Grafana (a backup failing must not be delayed by it).
    pub fn annotate_in_background(&self, kind: AnnotationKind, text: String, tags: Vec<String>) {
        if !self.wants(kind) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.annotate(kind, &text, &tags).await;
        });
    }
}

/// Removes repeated tags, keeping the first occurrence.
pub fn dedup_keep_order(tags: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::grafana::metrics::error_count as errors;

    /// A Grafana that knows no dashboard and refuses the token: the daemon
    /// counts `unknown_dashboard` once (checked on first use, then posted
    /// as an organization annotation) and `unauthorized` per annotation.
    #[tokio::test]
    async fn annotator_counts_grafana_refusals_by_reason() {
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        let app = axum::Router::new()
            .route(
                "/api/dashboards/uid/{uid}",
                get(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        r#"{"message":"Dashboard not found"}"#,
                    )
                }),
            )
            .route(
                "/api/annotations",
                post(|| async { (StatusCode::UNAUTHORIZED, r#"{"message":"Unauthorized"}"#) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = GrafanaConfig {
            url: Some(format!("http://127.0.0.1:{port}")),
            token: Some("t".into()),
            dashboard_uid: Some("gone".into()),
            ..GrafanaConfig::default()
        };
        let annotator = Annotator::new(&config, "web1".into());
        let kind = AnnotationKind::Drill;
        let (dash, auth) = (
            errors(kind, "unknown_dashboard"),
            errors(kind, "unauthorized"),
        );
        for _ in 0..2 {
            assert_eq!(annotator.annotate(kind, "drill db", &[]).await, None);
        }
        assert_eq!(errors(kind, "unknown_dashboard"), dash + 1);
        assert_eq!(errors(kind, "unauthorized"), auth + 2);
    }

    /// The daemon path never fails its caller: an unreachable Grafana is
    /// logged and counted under its kind and reason.
    #[tokio::test]
    async fn annotator_counts_failures_and_carries_on() {
        // A port nothing listens on: bind, read the port, drop.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = GrafanaConfig {
            url: Some(format!("http://127.0.0.1:{port}")),
            token: Some("t".into()),
            timeout_secs: 2.0,
            ..GrafanaConfig::default()
        };
        let annotator = Annotator::new(&config, "web1".into());
        assert!(annotator.wants(AnnotationKind::Restore));
        let before = errors(AnnotationKind::Restore, "connect");
        let id = annotator
            .annotate(AnnotationKind::Restore, "restore db", &[])
            .await;
        assert_eq!(id, None);
        let after = errors(AnnotationKind::Restore, "connect");
        assert_eq!(after, before + 1);
        // Not in grafana.events by default: nothing sent, nothing counted.
        assert!(!annotator.wants(AnnotationKind::BackupSuccess));
        assert_eq!(
            annotator
                .annotate(AnnotationKind::BackupSuccess, "ok", &[])
                .await,
            None
        );
    }
}
