//! A small client for Grafana's documented annotations API (`POST`/`PATCH`/
//! `GET /api/annotations`, and the dashboard lookup that tells a wrong
//! `dashboard_uid` from a silently unlinked annotation).
//!
//! Grafana has no idempotency for `POST /api/annotations`: a retried POST
//! creates a duplicate. So nothing here retries a POST blindly; callers that
//! need "exactly once" (deployments) tag the annotation with a unique
//! `deploy_id:<x>` and look it up before posting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::config::{parse_base_url, TOKEN_ENV};

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
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    pub id: u64,
    #[serde(default)]
    pub time: i64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
