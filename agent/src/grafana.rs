//! Grafana annotations: the `[grafana]` section, a small client for the
//! documented annotations API (`POST`/`PATCH`/`GET /api/annotations`), and
//! the daemon's [`Annotator`] that marks backup failures, restores and
//! drills on every dashboard that shows annotations by tag.
//!
//! Grafana has no idempotency for `POST /api/annotations`: a retried POST
//! creates a duplicate. So nothing here retries a POST blindly; callers that
//! need "exactly once" (deployments) tag the annotation with a unique
//! `deploy_id:<x>` and look it up before posting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};

/// The environment variable the CLI and the daemon read the service-account
/// token from when neither `--token-file` nor `grafana.token` gives one.
pub const TOKEN_ENV: &str = "GRAFANA_TOKEN";
/// The environment variable that may give the Grafana URL to the CLI.
pub const URL_ENV: &str = "GRAFANA_URL";

/// `[grafana]`: where annotations go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaConfig {
    /// Base URL, e.g. `http://127.0.0.1:3000` (a sub-path such as
    /// `https://example.com/grafana` works). Unset: no annotations.
    #[serde(default)]
    pub url: Option<String>,
    /// Service-account token (or `token_file`, or `${GRAFANA_TOKEN}`).
    #[serde(default)]
    pub token: Option<String>,
    /// Upper bound of one request to Grafana, connection included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Attach annotations to this dashboard. Unset: organization
    /// annotations, shown on every dashboard that queries them by tag
    /// (what the dashboards in `dashboards/` do).
    #[serde(default)]
    pub dashboard_uid: Option<String>,
    /// Tags added to every annotation (e.g. `["env:prod"]`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Which of the agent's own events become annotations:
    /// `backup_failure`, `backup_success`, `restore`, `drill`.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
}

impl Default for GrafanaConfig {
    fn default() -> Self {
        GrafanaConfig {
            url: None,
            token: None,
            timeout_secs: default_timeout_secs(),
            dashboard_uid: None,
            tags: Vec::new(),
            events: default_events(),
        }
    }
}

fn default_timeout_secs() -> f64 {
    5.0
}

fn default_events() -> Vec<String> {
    vec!["backup_failure".into(), "restore".into(), "drill".into()]
}

/// Grafana's limit on a dashboard UID.
const MAX_UID_LEN: usize = 40;

impl GrafanaConfig {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(url) = &self.url {
            if let Err(e) = parse_base_url(url) {
                errors.push(format!("url: {e}"));
            }
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        if let Some(uid) = &self.dashboard_uid {
            if let Err(e) = check_dashboard_uid(uid) {
                errors.push(format!("dashboard_uid: {e}"));
            }
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if tag.trim().is_empty() {
                errors.push(format!("tags[{i}]: empty tag; remove it"));
            }
        }
        for (i, event) in self.events.iter().enumerate() {
            if AnnotationKind::from_event_name(event).is_none() {
                errors.push(format!(
                    "events[{i}]: unknown event {event:?}; use backup_failure, backup_success, restore or drill"
                ));
            }
        }
        errors
    }
}

/// Checks a URL is usable as Grafana's base URL and normalizes it to end
/// with `/` so `api/annotations` joins below any sub-path.
pub fn parse_base_url(url: &str) -> Result<reqwest::Url, String> {
    let mut parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("{url:?} is not a URL ({e}); use e.g. \"http://127.0.0.1:3000\""))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?}: the scheme must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not supported; use token or token_file".into());
    }
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

/// Grafana UIDs: at most 40 characters of `[A-Za-z0-9_-]`.
pub fn check_dashboard_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() || uid.len() > MAX_UID_LEN {
        return Err(format!(
            "{uid:?} must be 1 to {MAX_UID_LEN} characters long"
        ));
    }
    if !uid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{uid:?} may only hold letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, as Grafana's `time`/`timeEnd` want.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Body of `POST /api/annotations`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAnnotation {
    #[serde(rename = "dashboardUID", skip_serializing_if = "Option::is_none")]
    pub dashboard_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_end: Option<i64>,
    pub tags: Vec<String>,
    pub text: String,
}

/// Body of `PATCH /api/annotations/:id`: only the fields that change.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_end: Option<i64>,
}

/// One annotation as `GET /api/annotations` returns it (the fields we use).
#[derive(Debug, Clone, Deserialize)]
#[allow(dead_code)] // read by callers that inspect what they found
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    pub id: u64,
    #[serde(default)]
    pub time: i64,
    #[serde(default)]
    pub time_end: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub text: String,
}

/// What went wrong talking to Grafana. Messages name the URL and the cause
/// and say what to do; they never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    #[error("Grafana at {url} rejected the token (HTTP 401): check the service-account token (--token-file, {TOKEN_ENV} or grafana.token) and that it has not expired")]
    Unauthorized { url: String },
    #[error("Grafana at {url} refused the request (HTTP 403): the service account needs the Editor role or the annotations:create/annotations:write permissions ({message})")]
    Forbidden { url: String, message: String },
    #[error("Grafana at {url} rejected the request as invalid (HTTP 400): {message}")]
    BadRequest { url: String, message: String },
    #[error("Grafana at {url} has no dashboard with UID {uid:?}: fix grafana.dashboard_uid or --dashboard-uid (Grafana would silently attach the annotation to no dashboard)")]
    UnknownDashboard { url: String, uid: String },
    #[error("Grafana at {url} has no annotation {id} (HTTP 404): check the id printed by `steward annotate deploy`")]
    AnnotationNotFound { url: String, id: u64 },
    #[error("Grafana at {url} did not answer within {after:?}: check that it is up and reachable, or raise grafana.timeout_secs")]
    Timeout { url: String, after: Duration },
    #[error("Grafana at {url} did not answer within {after:?}; the annotation may have been added all the same: rerun with --deploy-id {deploy_id} to check without adding a duplicate")]
    PostTimeout {
        url: String,
        after: Duration,
        deploy_id: String,
    },
    #[error("Grafana at {url} has no deployment annotation tagged deploy_id:{deploy_id}: was `steward annotate deploy --deploy-id {deploy_id}` run against this Grafana?")]
    DeploymentNotFound { url: String, deploy_id: String },
    #[error("cannot connect to Grafana at {url}: {cause}; check grafana.url and that Grafana is running")]
    Connect { url: String, cause: String },
    #[error("Grafana at {url} answered HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },
    #[error("Grafana at {url} answered something that is not the documented JSON: {cause}")]
    InvalidResponse { url: String, cause: String },
}

impl GrafanaError {
    /// A short, stable label for the error counter.
    #[allow(dead_code)]
    pub fn reason(&self) -> &'static str {
        match self {
            GrafanaError::Unauthorized { .. } => "unauthorized",
            GrafanaError::Forbidden { .. } => "forbidden",
            GrafanaError::BadRequest { .. } => "bad_request",
            GrafanaError::UnknownDashboard { .. } => "unknown_dashboard",
            GrafanaError::AnnotationNotFound { .. } => "not_found",
            GrafanaError::Timeout { .. } | GrafanaError::PostTimeout { .. } => "timeout",
            GrafanaError::DeploymentNotFound { .. } => "not_found",
            GrafanaError::Connect { .. } => "connect",
            GrafanaError::Http { .. } => "http",
            GrafanaError::InvalidResponse { .. } => "invalid_response",
        }
    }
}

/// A client for one Grafana and one token.
pub struct GrafanaClient {
    http: reqwest::Client,
    base: reqwest::Url,
    token: String,
    timeout: Duration,
}

impl std::fmt::Debug for GrafanaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of every debug print.
        f.debug_struct("GrafanaClient")
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct CreatedBody {
    id: u64,
}

impl GrafanaClient {
    /// A client for `base_url` (validated like `grafana.url`).
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> Result<Self, String> {
        let base = parse_base_url(base_url)?;
        if token.trim().is_empty() {
            return Err("the Grafana token is empty".into());
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("steward/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(GrafanaClient {
            http,
            base,
            token: token.trim().to_string(),
            timeout,
        })
    }

    /// The base URL (for messages).
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, path: &str) -> reqwest::Url {
        // `path` is one of our constants plus numbers or encoded query
        // parameters, so joining cannot fail; fall back to the base anyway.
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    fn shown_url(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), GrafanaError> {
        let response = request
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        Ok((status, body))
    }

    fn transport_error(&self, e: &reqwest::Error) -> GrafanaError {
        if e.is_timeout() {
            GrafanaError::Timeout {
                url: self.shown_url(),
                after: self.timeout,
            }
        } else {
            // reqwest's message may carry the URL but never the header.
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                cause = format!("{cause}: {s}");
                source = s.source();
            }
            GrafanaError::Connect {
                url: self.shown_url(),
                cause,
            }
        }
    }

    /// Maps the non-2xx answers every endpoint shares.
    fn status_error(&self, status: u16, body: &str) -> GrafanaError {
        let message = serde_json::from_str::<MessageBody>(body)
            .map(|m| m.message)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        let url = self.shown_url();
        match status {
            401 => GrafanaError::Unauthorized { url },
            403 => GrafanaError::Forbidden { url, message },
            400 => GrafanaError::BadRequest { url, message },
            _ => GrafanaError::Http {
                url,
                status,
                message,
            },
        }
    }

    /// `POST /api/annotations`; returns the new annotation's id. Not
    /// retried: a POST that timed out may have been stored.
    pub async fn create(&self, annotation: &NewAnnotation) -> Result<u64, GrafanaError> {
        let (status, body) = self
            .send(self.http.post(self.url("api/annotations")).json(annotation))
            .await?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(status, &body));
        }
        serde_json::from_str::<CreatedBody>(&body)
            .map(|c| c.id)
            .map_err(|e| GrafanaError::InvalidResponse {
                url: self.shown_url(),
                cause: format!("POST /api/annotations: {e}"),
            })
    }

    /// `PATCH /api/annotations/:id`.
    pub async fn patch(&self, id: u64, patch: &AnnotationPatch) -> Result<(), GrafanaError> {
        let (status, body) = self
            .send(
                self.http
                    .patch(self.url(&format!("api/annotations/{id}")))
                    .json(patch),
            )
            .await?;
        match status {
            200..=299 => Ok(()),
            404 => Err(GrafanaError::AnnotationNotFound {
                url: self.shown_url(),
                id,
            }),
            _ => Err(self.status_error(status, &body)),
        }
    }

    /// `GET /api/annotations?tags=..` (tags ANDed), newest first.
    pub async fn find_by_tags(
        &self,
        tags: &[String],
        limit: u32,
    ) -> Result<Vec<Annotation>, GrafanaError> {
        let mut url = self.url("api/annotations");
        {
            let mut query = url.query_pairs_mut();
            for tag in tags {
                query.append_pair("tags", tag);
            }
            query.append_pair("type", "annotation");
            query.append_pair("limit", &limit.to_string());
        }
        let (status, body) = self.send(self.http.get(url)).await?;
        if !(200..300).contains(&status) {
            return Err(self.status_error(status, &body));
        }
        let mut found: Vec<Annotation> =
            serde_json::from_str(&body).map_err(|e| GrafanaError::InvalidResponse {
                url: self.shown_url(),
                cause: format!("GET /api/annotations: {e}"),
            })?;
        found.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        Ok(found)
    }

    /// Fails with [`GrafanaError::UnknownDashboard`] when no dashboard has
    /// this UID: Grafana itself would silently drop the link.
    pub async fn check_dashboard(&self, uid: &str) -> Result<(), GrafanaError> {
        let mut url = self.url("api/dashboards/uid/");
        url.path_segments_mut()
            .map(|mut s| {
                s.pop_if_empty().push(uid);
            })
            .ok();
        let (status, body) = self.send(self.http.get(url)).await?;
        match status {
            200..=299 => Ok(()),
            404 => Err(GrafanaError::UnknownDashboard {
                url: self.shown_url(),
                uid: uid.to_string(),
            }),
            _ => Err(self.status_error(status, &body)),
        }
    }
}

/// The agent's own events that can become annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    Deploy,
    BackupFailure,
    BackupSuccess,
    Restore,
    Drill,
}

impl AnnotationKind {
    pub const ALL: [AnnotationKind; 5] = [
        AnnotationKind::Deploy,
        AnnotationKind::BackupFailure,
        AnnotationKind::BackupSuccess,
        AnnotationKind::Restore,
        AnnotationKind::Drill,
    ];

    /// The `kind` label of the self-metrics and the name in `grafana.events`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnotationKind::Deploy => "deploy",
            AnnotationKind::BackupFailure => "backup_failure",
            AnnotationKind::BackupSuccess => "backup_success",
            AnnotationKind::Restore => "restore",
            AnnotationKind::Drill => "drill",
        }
    }

    fn from_event_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| *k != AnnotationKind::Deploy && k.as_str() == name)
    }

    /// Tags that let a dashboard select this kind (`deploy`, `backup`...).
    #[allow(dead_code)]
    pub fn tags(self) -> &'static [&'static str] {
        match self {
            AnnotationKind::Deploy => &["deploy"],
            AnnotationKind::BackupFailure => &["backup", "failure"],
            AnnotationKind::BackupSuccess => &["backup"],
            AnnotationKind::Restore => &["restore"],
            AnnotationKind::Drill => &["drill"],
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

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

#[allow(dead_code)] // used by the Annotator, which the backup wiring calls
fn count_error(kind: AnnotationKind, reason: &str) {
    if let Some(r) = REASONS.iter().position(|x| *x == reason) {
        STATS.errors[kind.index()][r].fetch_add(1, Ordering::Relaxed);
    }
}

/// Resolves the token: an explicit one (CLI `--token-file`), else
/// `grafana.token` (which may itself come from `token_file`), else
/// `$GRAFANA_TOKEN`.
pub fn resolve_token(explicit: Option<String>, config: &GrafanaConfig) -> Option<String> {
    explicit
        .or_else(|| config.token.clone())
        .or_else(|| std::env::var(TOKEN_ENV).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The daemon's annotation sender: cheap to clone, never fails its caller.
/// Errors are logged and counted in `steward_grafana_annotation_errors_total`.
///
/// ```ignore
/// let annotator = crate::grafana::Annotator::from_config(&config);
/// annotator.annotate(AnnotationKind::BackupFailure, "backup db failed: ...", &["job:db".into()]).await;
/// ```
#[derive(Clone, Debug)]
#[allow(dead_code)] // the backup, restore and drill wiring calls it
pub struct Annotator {
    inner: Option<Arc<AnnotatorInner>>,
}

#[derive(Debug)]
#[allow(dead_code)]
struct AnnotatorInner {
    client: GrafanaClient,
    dashboard_uid: Option<String>,
    tags: Vec<String>,
    host: String,
    events: Vec<AnnotationKind>,
    /// Whether `dashboard_uid` was found, checked once on first use.
    dashboard_ok: tokio::sync::OnceCell<bool>,
}

#[allow(dead_code)] // the backup, restore and drill wiring calls it
impl Annotator {
    /// An annotator that sends nothing (no `grafana.url`).
    pub fn disabled() -> Self {
        Annotator { inner: None }
    }

    /// Builds the annotator of a configuration: disabled without
    /// `grafana.url`, and (with a warning) without any token.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let grafana = &config.grafana;
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
                    host: config.agent.effective_hostname(),
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

    /// Whether annotations are sent at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
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
                STATS.sent[kind.index()].fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_disabled() {
        let c = GrafanaConfig::default();
        assert!(c.validate().is_empty());
        assert!(c.url.is_none());
    }

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let c = GrafanaConfig {
            url: Some("ftp://grafana".into()),
            token: None,
            timeout_secs: 0.0,
            dashboard_uid: Some("x".repeat(41)),
            tags: vec![" ".into()],
            events: vec!["backup_failure".into(), "coffee".into()],
        };
        let errors = c.validate();
        assert_eq!(errors.len(), 5, "{errors:?}");
        for (e, key) in errors.iter().zip([
            "url:",
            "timeout_secs:",
            "dashboard_uid:",
            "tags[0]:",
            "events[1]:",
        ]) {
            assert!(e.starts_with(key), "{e} should start with {key}");
        }
    }

    #[test]
    fn base_url_keeps_sub_path() {
        let u = parse_base_url("https://example.com/grafana").unwrap();
        assert_eq!(
            u.join("api/annotations").unwrap().as_str(),
            "https://example.com/grafana/api/annotations"
        );
        assert!(parse_base_url("http://u:p@host").is_err());
        assert!(parse_base_url("not a url").is_err());
    }

    #[test]
    fn uid_rules() {
        assert!(check_dashboard_uid("steward-host").is_ok());
        assert!(check_dashboard_uid("").is_err());
        assert!(check_dashboard_uid("a/b").is_err());
    }

    #[test]
    fn client_debug_hides_token() {
        let c = GrafanaClient::new("http://127.0.0.1:1", "glsa_secret", Duration::from_secs(1))
            .unwrap();
        assert!(!format!("{c:?}").contains("glsa_secret"));
    }

    #[test]
    fn new_annotation_body_uses_grafana_field_names() {
        let body = serde_json::to_value(NewAnnotation {
            dashboard_uid: Some("d".into()),
            time: Some(1),
            time_end: Some(2),
            tags: vec!["deploy".into()],
            text: "t".into(),
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"dashboardUID": "d", "time": 1, "timeEnd": 2, "tags": ["deploy"], "text": "t"})
        );
        let patch = serde_json::to_value(AnnotationPatch {
            time_end: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(patch, serde_json::json!({"timeEnd": 5}));
    }

    fn errors(kind: AnnotationKind, reason: &str) -> u64 {
        let r = REASONS.iter().position(|x| *x == reason).unwrap();
        STATS.errors[kind.index()][r].load(Ordering::Relaxed)
    }

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
        let mut config = crate::config::Config::default();
        config.grafana.url = Some(format!("http://127.0.0.1:{port}"));
        config.grafana.token = Some("t".into());
        config.grafana.dashboard_uid = Some("gone".into());
        let annotator = Annotator::from_config(&config);
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
        let mut config = crate::config::Config::default();
        config.grafana.url = Some(format!("http://127.0.0.1:{port}"));
        config.grafana.token = Some("t".into());
        config.grafana.timeout_secs = 2.0;
        let annotator = Annotator::from_config(&config);
        assert!(annotator.is_enabled());
        let reason = REASONS.iter().position(|r| *r == "connect").unwrap();
        let before = STATS.errors[AnnotationKind::Restore.index()][reason].load(Ordering::Relaxed);
        let id = annotator
            .annotate(AnnotationKind::Restore, "restore db", &[])
            .await;
        assert_eq!(id, None);
        let after = STATS.errors[AnnotationKind::Restore.index()][reason].load(Ordering::Relaxed);
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
