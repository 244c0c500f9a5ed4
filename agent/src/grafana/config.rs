//! `[grafana]`: where annotations go, and the checks of its values that
//! the CLI's flags share (base URL, dashboard UID, token precedence).

use serde::{Deserialize, Serialize};

use super::kind::AnnotationKind;

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
}
