//! `[[notify]]`: where backup and drill outcomes are sent without the
//! monitoring stack (Healthchecks pings, Slack incoming webhooks, a generic
//! JSON webhook), and the checks of those entries. The URLs and the signing
//! secret are secrets (`*_file`, `${VAR}`): no message here quotes them.

use serde::{Deserialize, Serialize};

/// The service a notifier talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Healthchecks.io (or a self-hosted Healthchecks): `/start`, success
    /// and `/fail` pings of one job, with the run's outcome as the body.
    Healthchecks,
    /// A Slack incoming webhook (or a Slack-compatible one: Mattermost,
    /// Rocket.Chat): `{"text": ..., "blocks": [...]}`.
    Slack,
    /// Any HTTP endpoint: the documented JSON event, optionally signed.
    Webhook,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Healthchecks => "healthchecks",
            NotifierKind::Slack => "slack",
            NotifierKind::Webhook => "webhook",
        }
    }
}

/// What happened to a run: the values of `on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A scheduled backup or drill starts.
    Start,
    /// A backup committed everywhere (or its content was unchanged); a drill
    /// restored, checked and met every objective.
    Success,
    /// Anything else: a failed or partial backup, a run that could not
    /// start, a drill that failed or missed its RTO/RPO.
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Start => "start",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One `[[notify]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// Names the notifier in logs and in `steward_notifications_total`.
    pub name: String,
    pub kind: NotifierKind,
    /// Healthchecks: the check's ping URL (`https://hc-ping.com/<uuid>` or
    /// `https://hc-ping.com/<ping-key>/<slug>`). A secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,
    /// Slack and webhook: where to POST. A secret (Slack's URL is its
    /// only credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Webhook: HMAC-SHA256 key for `X-Steward-Signature`. A secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Which outcomes to send. Default: every one for Healthchecks,
    /// `["failure"]` for Slack, `["success", "failure"]` for webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<Outcome>>,
    /// Backup jobs reported. Default: every job (Slack, webhook); a
    /// Healthchecks check follows exactly one job, so it must be named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<String>>,
    /// Whether scheduled drills are reported. Default: true for Slack and
    /// webhooks, false for Healthchecks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drills: Option<bool>,
    /// Upper bound of one HTTP request, connection included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// How long one notification is retried (5xx, 429, timeouts, refused
    /// connections) before it is counted as failed.
    #[serde(default = "default_retry_for_secs")]
    pub retry_for_secs: f64,
    /// Healthchecks: the most body bytes sent with a ping. Healthchecks
    /// stores the first 100 kB on healthchecks.io and `PING_BODY_LIMIT`
    /// (10 kB by default) when self-hosted; the lower of this and the
    /// `Ping-Body-Limit` the server announces is used.
    #[serde(default = "default_body_limit_bytes")]
    pub body_limit_bytes: usize,
}

fn default_timeout_secs() -> f64 {
    10.0
}
fn default_retry_for_secs() -> f64 {
    300.0
}
fn default_body_limit_bytes() -> usize {
    10_000
}

impl NotifierConfig {
    /// The outcomes this notifier sends (`on` or the kind's default).
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.on.clone().unwrap_or_else(|| match self.kind {
            NotifierKind::Healthchecks => vec![Outcome::Start, Outcome::Success, Outcome::Failure],
            NotifierKind::Slack => vec![Outcome::Failure],
            NotifierKind::Webhook => vec![Outcome::Success, Outcome::Failure],
        })
    }

    /// Whether drills are reported (`drills` or the kind's default).
    pub fn reports_drills(&self) -> bool {
        self.drills
            .unwrap_or(self.kind != NotifierKind::Healthchecks)
    }

    /// Whether backups of `job` are reported.
    pub fn reports_job(&self, job: &str) -> bool {
        self.jobs
            .as_ref()
            .is_none_or(|jobs| jobs.iter().any(|j| j == job))
    }

    /// The URL requests go to, whichever key the kind uses.
    pub fn url(&self) -> Option<&str> {
        match self.kind {
            NotifierKind::Healthchecks => self.ping_url.as_deref(),
            NotifierKind::Slack | NotifierKind::Webhook => self.webhook_url.as_deref(),
        }
    }

    /// Checks of this entry alone; `jobs` are the configured backup jobs.
    /// Messages start with the key after `notify[i].` and never quote a
    /// URL or the secret.
    pub fn validate(&self, jobs: &[&str]) -> Vec<String> {
        let mut errors = Vec::new();
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            errors.push(format!(
                "name: {:?} must be non-empty and hold only letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        let (url_key, other_key) = match self.kind {
            NotifierKind::Healthchecks => ("ping_url", "webhook_url"),
            _ => ("webhook_url", "ping_url"),
        };
        let other_set = match self.kind {
            NotifierKind::Healthchecks => self.webhook_url.is_some(),
            _ => self.ping_url.is_some(),
        };
        if other_set {
            errors.push(format!(
                "{other_key}: not used by kind = \"{}\"; set {url_key} (or {url_key}_file)",
                self.kind.as_str()
            ));
        }
        match self.url() {
            None => errors.push(format!(
                "{url_key}: missing; set {url_key}, {url_key}_file or {url_key} = \"${{VAR}}\""
            )),
            Some(url) => {
                if let Err(e) = check_url(url) {
                    errors.push(format!("{url_key}: {e}"));
                }
            }
        }
        if self.signing_secret.is_some() && self.kind != NotifierKind::Webhook {
            errors.push(format!(
                "signing_secret: only kind = \"webhook\" signs its requests; remove it from this {} notifier",
                self.kind.as_str()
            ));
        }
        if let Some(secret) = &self.signing_secret {
            if secret.is_empty() {
                errors.push("signing_secret: empty; set a random key of at least 16 bytes (or remove it to send unsigned)".into());
            }
        }
        if self.on.as_ref().is_some_and(Vec::is_empty) {
            errors.push("on: empty; list at least one of \"start\", \"success\", \"failure\" (or remove the notifier)".into());
        }
        if let Some(list) = &self.jobs {
            for (i, job) in list.iter().enumerate() {
                if !jobs.contains(&job.as_str()) {
                    errors.push(format!(
                        "jobs[{i}]: no backup job named {job:?}; configured jobs: {}",
                        if jobs.is_empty() {
                            "none".to_string()
                        } else {
                            jobs.join(", ")
                        }
                    ));
                }
            }
        }
        if self.kind == NotifierKind::Healthchecks {
            // One check per job: a check that two jobs ping would show one
            // job's success over the other's failure.
            let n_jobs = self.jobs.as_ref().map(Vec::len);
            let drills = self.reports_drills();
            let one_subject = matches!((n_jobs, drills), (Some(1), false) | (Some(0), true));
            if !one_subject {
                errors.push(
                    "jobs: a Healthchecks check follows exactly one thing: set jobs = [\"JOB\"] (one [[notify]] per job), or jobs = [] with drills = true for the drill check"
                        .into(),
                );
            }
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        if !(self.retry_for_secs >= 0.0 && self.retry_for_secs <= 86_400.0) {
            errors.push(format!(
                "retry_for_secs: {} is out of range; use a value in [0, 86400]",
                self.retry_for_secs
            ));
        }
        if self.body_limit_bytes < 100 || self.body_limit_bytes > 10_000_000 {
            errors.push(format!(
                "body_limit_bytes: {} is out of range; use a value in [100, 10000000]",
                self.body_limit_bytes
            ));
        }
        errors
    }
}

/// Checks a notifier URL without ever quoting it (it is a secret).
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
        format!("not a URL ({e}); use e.g. \"https://hooks.slack.com/services/...\" (the value is not shown: it is a secret)")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if parsed.fragment().is_some() {
        return Err("the URL has a #fragment, which is never sent; remove it".into());
    }
    Ok(parsed)
}

/// Checks every `[[notify]]` entry, each message prefixed `notify[i].`.
pub fn validate_all(notify: &[NotifierConfig], jobs: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, n) in notify.iter().enumerate() {
        errors.extend(
            n.validate(jobs)
                .into_iter()
                .map(|e| format!("notify[{i}].{e}")),
        );
        if let Some(first) = notify[..i].iter().position(|m| m.name == n.name) {
            errors.push(format!(
                "notify[{i}].name: {:?} is used by notify[{first}] and notify[{i}]; names must be unique",
                n.name
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<NotifierConfig> {
        #[derive(Deserialize)]
        struct W {
            notify: Vec<NotifierConfig>,
        }
        toml::from_str::<W>(text).unwrap().notify
    }

    #[test]
    fn kinds_have_their_defaults() {
        let n = parse(
            "[[notify]]\nname = \"hc\"\nkind = \"healthchecks\"\nping_url = \"https://hc-ping.com/x\"\njobs = [\"db\"]\n\
             [[notify]]\nname = \"s\"\nkind = \"slack\"\nwebhook_url = \"https://hooks.slack.com/services/a\"\n",
        );
        assert!(validate_all(&n, &["db", "files"]).is_empty());
        assert_eq!(n[0].outcomes().len(), 3);
        assert!(!n[0].reports_drills());
        assert!(n[0].reports_job("db") && !n[0].reports_job("files"));
        assert_eq!(n[1].outcomes(), [Outcome::Failure]);
        assert!(n[1].reports_drills() && n[1].reports_job("files"));
    }

    #[test]
    fn every_problem_is_named_and_no_url_is_quoted() {
        let n = parse(
            "[[notify]]\nname = \"a b\"\nkind = \"healthchecks\"\nping_url = \"ftp://SECRETHOST/uuid\"\n\
             signing_secret = \"k\"\n\
             [[notify]]\nname = \"w\"\nkind = \"webhook\"\nwebhook_url = \"not a url SECRETPATH\"\n\
             jobs = [\"nope\"]\non = []\ntimeout_secs = 0\n\
             [[notify]]\nname = \"w\"\nkind = \"slack\"\nping_url = \"https://x/SECRET\"\n",
        );
        let errors = validate_all(&n, &["db"]);
        let all = errors.join("\n");
        for key in [
            "notify[0].name:",
            "notify[0].ping_url: the scheme",
            "notify[0].signing_secret: only kind",
            "notify[0].jobs: a Healthchecks check",
            "notify[1].webhook_url: not a URL",
            "notify[1].on: empty",
            "notify[1].jobs[0]: no backup job named \"nope\"; configured jobs: db",
            "notify[1].timeout_secs:",
            "notify[2].ping_url: not used",
            "notify[2].webhook_url: missing",
            "notify[2].name: \"w\" is used by notify[1] and notify[2]",
        ] {
            assert!(all.contains(key), "{key} not in\n{all}");
        }
        assert_eq!(errors.len(), 11, "{all}");
        assert!(!all.contains("SECRET"), "{all}");
    }

    #[test]
    fn a_healthchecks_check_follows_one_job_or_the_drills() {
        let base = "[[notify]]\nname = \"hc\"\nkind = \"healthchecks\"\nping_url = \"https://hc-ping.com/x\"\n";
        for (extra, ok) in [
            ("", false),
            ("jobs = [\"a\", \"b\"]\n", false),
            ("jobs = [\"a\"]\ndrills = true\n", false),
            ("jobs = []\ndrills = true\n", true),
            ("jobs = [\"b\"]\n", true),
        ] {
            let n = parse(&format!("{base}{extra}"));
            assert_eq!(validate_all(&n, &["a", "b"]).is_empty(), ok, "{extra}");
        }
    }
}
