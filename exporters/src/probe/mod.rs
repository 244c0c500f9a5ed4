//! HTTP(S) probes of an application's endpoints (`/livez`, `/readyz`,
//! `/health`) and of its TLS certificate, exported with blackbox_exporter's
//! http prober names (`probe_success`, `probe_http_status_code`,
//! `probe_duration_seconds`, `probe_http_duration_seconds{phase}`,
//! `probe_ssl_earliest_cert_expiry`, `probe_tls_version_info`, ...).
//!
//! blackbox_exporter answers one probe per request and Prometheus adds the
//! target label by relabelling. Steward runs every configured probe in the
//! one `/metrics` scrape, so each series carries `probe="<name>"` and
//! `target="<url>"` instead.

pub(crate) mod client;
mod http;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::{Labels, MetricFamily};
use client::budget;

/// Redirects followed before a probe fails, like blackbox's default.
const MAX_REDIRECTS: u32 = 10;

/// One `[[probe]]` entry: a URL probed at each scrape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeScrapeTarget {
    /// Name of this probe: the `probe` label and its name in `/health`.
    #[serde(default)]
    pub name: String,
    /// What to request, `http://` or `https://`.
    #[serde(default)]
    pub url: String,
    /// `GET` or `HEAD`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Status codes that count as success; empty means any 2xx.
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// Follow up to 10 redirects (`probe_http_redirects` counts them).
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// Upper bound of the whole probe; the scrape deadline may cut it shorter.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Extra request headers (e.g. `Host`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A body larger than this fails the probe (blackbox's `body_size_limit`).
    #[serde(default = "default_body_size_limit_bytes")]
    pub body_size_limit_bytes: u64,
    /// Accept any server certificate. The expiry is still reported; use it
    /// for self-signed or internal certificates only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM CA bundle trusted in addition to the web PKI roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Fail when the body matches any of these regular expressions
    /// (`probe_failed_due_to_regex` says why).
    #[serde(default)]
    pub fail_if_body_matches_regexp: Vec<String>,
    /// Fail when the body does not match all of these.
    #[serde(default)]
    pub fail_if_body_not_matches_regexp: Vec<String>,
}

impl Default for ProbeScrapeTarget {
    fn default() -> Self {
        ProbeScrapeTarget {
            name: String::new(),
            url: String::new(),
            method: default_method(),
            valid_status_codes: Vec::new(),
            follow_redirects: true,
            timeout_secs: default_timeout_secs(),
            headers: BTreeMap::new(),
            body_size_limit_bytes: default_body_size_limit_bytes(),
            insecure_skip_verify: false,
            ca_file: None,
            fail_if_body_matches_regexp: Vec::new(),
            fail_if_body_not_matches_regexp: Vec::new(),
        }
    }
}

fn default_method() -> String {
    "GET".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout_secs() -> f64 {
    5.0
}
fn default_body_size_limit_bytes() -> u64 {
    1024 * 1024
}

impl ProbeScrapeTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must not be empty; it is the probe label".into());
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            Ok(u) => errors.push(format!(
                "url: {:?} has scheme {:?}; probes speak http:// and https://",
                without_userinfo(&self.url),
                u.scheme()
            )),
            Err(e) => errors.push(format!(
                "url: {:?} is not a URL ({e}); write e.g. https://app.example/livez",
                without_userinfo(&self.url)
            )),
        }
        if !matches!(self.method.as_str(), "GET" | "HEAD") {
            errors.push(format!(
                "method: {:?} is not supported; use \"GET\" or \"HEAD\"",
                self.method
            ));
        }
        for code in &self.valid_status_codes {
            if !(100..=599).contains(code) {
                errors.push(format!(
                    "valid_status_codes: {code} is not an HTTP status code (100-599)"
                ));
            }
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(format!("headers.{name}: not a valid HTTP header name"));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                errors.push(format!(
                    "headers.{name}: the value has characters HTTP headers cannot carry"
                ));
            }
        }
        if self.body_size_limit_bytes == 0 {
            errors.push("body_size_limit_bytes: must be at least 1".into());
        }
        for (key, list) in [
            (
                "fail_if_body_matches_regexp",
                &self.fail_if_body_matches_regexp,
            ),
            (
                "fail_if_body_not_matches_regexp",
                &self.fail_if_body_not_matches_regexp,
            ),
        ] {
            for pattern in list {
                if let Err(e) = regex::bytes::Regex::new(pattern) {
                    let first = e.to_string().lines().last().unwrap_or("").to_string();
                    errors.push(format!(
                        "{key}: {pattern:?} is not a regular expression ({first})"
                    ));
                }
            }
        }
        errors
    }
}

/// `text` with the userinfo of every URL in it removed
/// (`http://user:pass@host/` -> `http://host/`): what labels, logs and
/// failure reasons show. A URL may carry credentials for the probed site;
/// `/metrics` and the logs are read by far more people than the config.
pub fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        out.push_str(match authority.rfind('@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        });
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Builds one collector per configured probe.
pub fn collectors(targets: &[ProbeScrapeTarget]) -> Vec<Arc<dyn Collector>> {
    targets
        .iter()
        .filter_map(|t| match ProbeCollector::new(t.clone()) {
            Ok(c) => Some(Arc::new(c) as Arc<dyn Collector>),
            Err(e) => {
                tracing::error!(probe = %t.name, "probe disabled: {e}");
                None
            }
        })
        .collect()
}

/// What one probe observed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProbeResult {
    pub success: bool,
    pub duration: Duration,
    /// 0 when no response arrived.
    pub status_code: u16,
    /// `Content-Length` of the final response, -1 when absent.
    pub content_length: i64,
    pub body_length: u64,
    pub redirects: u32,
    /// The final response came over TLS.
    pub ssl: bool,
    /// `1.1`, `2`, ...; 0 when no response arrived.
    pub http_version: f64,
    /// Per-phase seconds, summed over redirects.
    pub phases: http::Phases,
    /// The address of the first hop and how long resolving it took.
    pub peer: Option<http::Peer>,
    /// TLS facts of the final hop, when it was HTTPS.
    pub tls: Option<http::TlsState>,
    /// A body regular expression failed the probe.
    pub failed_due_to_regex: bool,
    /// Why the probe failed (for logs and `/health`; never a secret).
    pub failure: Option<String>,
}

/// Runs one probe.
pub struct ProbeCollector {
    target: ProbeScrapeTarget,
    tls: http::Tls,
    headers: reqwest::header::HeaderMap,
    must_not_match: Vec<regex::bytes::Regex>,
    must_match: Vec<regex::bytes::Regex>,
    labels: Labels,
    last_success: AtomicBool,
}

impl ProbeCollector {
    pub fn new(target: ProbeScrapeTarget) -> Result<Self, String> {
        let tls = http::Tls::new(!target.insecure_skip_verify, target.ca_file.as_deref())?;
        let compile = |list: &[String]| {
            list.iter()
                .map(|p| {
                    regex::bytes::Regex::new(p)
                        .map_err(|e| format!("{p:?} is not a regular expression: {e}"))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let must_not_match = compile(&target.fail_if_body_matches_regexp)?;
        let must_match = compile(&target.fail_if_body_not_matches_regexp)?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &target.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header {k:?} is not a valid name"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("header {k:?} has an invalid value"))?;
            headers.insert(name, value);
        }
        let labels: Labels = vec![
            ("probe".into(), target.name.clone()),
            ("target".into(), without_userinfo(&target.url)),
        ];
        Ok(ProbeCollector {
            target,
            tls,
            headers,
            must_not_match,
            must_match,
            labels,
            last_success: AtomicBool::new(true),
        })
    }

    /// Requests the URL, following redirects by hand so they can be counted
    /// and the final hop's TLS state is known.
    pub async fn probe(&self, timeout: Duration) -> ProbeResult {
        let started = Instant::now();
        let mut result = ProbeResult {
            content_length: -1,
            ..Default::default()
        };
        let outcome = tokio::time::timeout(timeout, self.run(&mut result)).await;
        result.duration = started.elapsed();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => result.failure = Some(without_userinfo(&reason)),
            Err(_) => result.failure = Some(format!("no complete answer within {timeout:?}")),
        }
        result.success = result.failure.is_none();
        result
    }

    async fn run(&self, result: &mut ProbeResult) -> Result<(), String> {
        let method = if self.target.method == "HEAD" {
            reqwest::Method::HEAD
        } else {
            reqwest::Method::GET
        };
        let mut url = reqwest::Url::parse(&self.target.url)
            .map_err(|e| format!("bad URL {:?}: {e}", self.target.url))?;
        let mut exchange = loop {
            let request = self.request(&method, &url)?;
            // Only the first hop's address is exported, like blackbox,
            // whose later hops go through Go's own dialer.
            let mut peer = None;
            let exchange =
                http::exchange(&url, request, &self.tls, &mut result.phases, &mut peer).await;
            if result.peer.is_none() {
                result.peer = peer;
            }
            let exchange = exchange.map_err(|e| format!("{url}: {e}"))?;
            let response = &exchange.response;
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(str::to_string);
            match location {
                Some(location)
                    if self.target.follow_redirects && response.status().is_redirection() =>
                {
                    if result.redirects >= MAX_REDIRECTS {
                        return Err(format!("more than {MAX_REDIRECTS} redirects"));
                    }
                    result.redirects += 1;
                    url = url.join(&location).map_err(|e| {
                        format!("redirect to {location:?} from {url} is not a URL: {e}")
                    })?;
                    if !matches!(url.scheme(), "http" | "https") {
                        return Err(format!("redirect to {url}, which is not http(s)"));
                    }
                }
                _ => break exchange,
            }
        };

        let response = &exchange.response;
        result.status_code = response.status().as_u16();
        result.ssl = exchange.tls.is_some();
        result.http_version = match response.version() {
            reqwest::Version::HTTP_09 => 0.9,
            reqwest::Version::HTTP_10 => 1.0,
            reqwest::Version::HTTP_11 => 1.1,
            reqwest::Version::HTTP_2 => 2.0,
            reqwest::Version::HTTP_3 => 3.0,
            _ => 0.0,
        };
        result.content_length = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1);
        result.tls = exchange.tls.clone();
        let status_ok = if self.target.valid_status_codes.is_empty() {
            response.status().is_success()
        } else {
            self.target.valid_status_codes.contains(&result.status_code)
        };
        let limit = usize::try_from(self.target.body_size_limit_bytes).unwrap_or(usize::MAX);
        let body = http::read_body(exchange.response.body_mut(), limit).await?;
        result.phases.transfer += exchange.head_at.elapsed().as_secs_f64();
        result.body_length = body.len() as u64;
        if !status_ok {
            return Err(format!(
                "status {} is not an accepted status ({})",
                result.status_code,
                if self.target.valid_status_codes.is_empty() {
                    "2xx".to_string()
                } else {
                    format!("{:?}", self.target.valid_status_codes)
                }
            ));
        }
        if let Some(re) = self.must_not_match.iter().find(|re| re.is_match(&body)) {
            result.failed_due_to_regex = true;
            return Err(format!("the body matches {:?}", re.as_str()));
        }
        if let Some(re) = self.must_match.iter().find(|re| !re.is_match(&body)) {
            result.failed_due_to_regex = true;
            return Err(format!("the body does not match {:?}", re.as_str()));
        }
        Ok(())
    }

    /// The request of one hop: origin-form target, `Host` and `User-Agent`
    /// unless the configuration sets them.
    fn request(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
    ) -> Result<hyper::Request<http_body_util::Empty<hyper::body::Bytes>>, String> {
        let mut target = url.path().to_string();
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(&target)
            .header(reqwest::header::HOST, &host)
            .header(
                reqwest::header::USER_AGENT,
                concat!("steward/", env!("CARGO_PKG_VERSION")),
            )
            .body(http_body_util::Empty::new())
            .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name, value.clone());
        }
        Ok(request)
    }
}

/// The blackbox families of one probe result.
pub fn families(result: &ProbeResult, labels: &Labels) -> Vec<MetricFamily> {
    let gauge = |name: &str, help: &str, value: f64| {
        let mut f = MetricFamily::gauge(name, help);
        f.push_owned(labels.clone(), value);
        f
    };
    let mut out = vec![
        gauge(
            "probe_success",
            "Displays whether or not the probe was a success",
            if result.success { 1.0 } else { 0.0 },
        ),
        gauge(
            "probe_duration_seconds",
            "Returns how long the probe took to complete in seconds",
            result.duration.as_secs_f64(),
        ),
        gauge(
            "probe_http_status_code",
            "Response HTTP status code",
            f64::from(result.status_code),
        ),
        gauge(
            "probe_http_content_length",
            "Length of http content response",
            result.content_length as f64,
        ),
        gauge(
            "probe_http_uncompressed_body_length",
            "Length of uncompressed response body",
            result.body_length as f64,
        ),
        gauge(
            "probe_http_redirects",
            "The number of redirects",
            f64::from(result.redirects),
        ),
        gauge(
            "probe_http_ssl",
            "Indicates if SSL was used for the final redirect",
            if result.ssl { 1.0 } else { 0.0 },
        ),
        gauge(
            "probe_http_version",
            "Returns the version of HTTP of the probe response",
            result.http_version,
        ),
    ];
    let mut phases = MetricFamily::gauge(
        "probe_http_duration_seconds",
        "Duration of http request by phase, summed over all redirects",
    );
    let p = &result.phases;
    for (phase, secs) in [
        ("resolve", p.resolve),
        ("connect", p.connect),
        ("tls", p.tls),
        ("processing", p.processing),
        ("transfer", p.transfer),
    ] {
        let mut l = labels.clone();
        l.push(("phase".into(), phase.to_string()));
        phases.push_owned(l, secs);
    }
    out.push(phases);
    out.push(gauge(
        "probe_failed_due_to_regex",
        "Indicates if probe failed due to regex",
        if result.failed_due_to_regex { 1.0 } else { 0.0 },
    ));
    // blackbox registers these as soon as it resolves, 0 until known.
    let peer = result.peer.as_ref();
    out.push(gauge(
        "probe_dns_lookup_time_seconds",
        "Returns the time taken for probe dns lookup in seconds",
        peer.map_or(0.0, |p| p.lookup_secs),
    ));
    out.push(gauge(
        "probe_ip_protocol",
        "Specifies whether probe ip protocol is IP4 or IP6",
        match peer.map(|p| p.ip) {
            Some(std::net::IpAddr::V4(_)) => 4.0,
            Some(std::net::IpAddr::V6(_)) => 6.0,
            None => 0.0,
        },
    ));
    out.push(gauge(
        "probe_ip_addr_hash",
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        peer.map_or(0.0, |p| http::ip_hash(p.ip)),
    ));
    if let Some(tls) = &result.tls {
        if let Some(not_after) = tls.earliest_expiry {
            out.push(gauge(
                "probe_ssl_earliest_cert_expiry",
                "Returns last SSL chain expiry in unixtime",
                not_after as f64,
            ));
        }
        // Only a verified chain has a last-chain expiry (blackbox would
        // export year 1 for an unverified one, which helps nobody).
        if let Some(not_after) = tls.last_chain_expiry {
            out.push(gauge(
                "probe_ssl_last_chain_expiry_timestamp_seconds",
                "Returns last SSL chain expiry in timestamp",
                not_after as f64,
            ));
        }
        let mut version = MetricFamily::gauge(
            "probe_tls_version_info",
            "Returns the TLS version used or NaN when unknown",
        );
        let mut l = labels.clone();
        l.push(("version".into(), tls.version.clone()));
        version.push_owned(l, 1.0);
        out.push(version);
    }
    out
}

#[async_trait]
impl Collector for ProbeCollector {
    fn name(&self) -> &str {
        "probe"
    }

    fn instance(&self) -> Option<&str> {
        Some(&self.target.name)
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let result = self.probe(budget(&ctx, self.target.timeout_secs)).await;
        // A failing probe is a measurement, not a collector error: log the
        // reason when the state changes, not on every scrape.
        let was_ok = self.last_success.swap(result.success, Ordering::Relaxed);
        match (&result.failure, was_ok) {
            (Some(reason), true) => {
                tracing::warn!(probe = %self.target.name, target = %without_userinfo(&self.target.url), "probe failed: {reason}")
            }
            (Some(reason), false) => {
                tracing::debug!(probe = %self.target.name, target = %without_userinfo(&self.target.url), "probe still failing: {reason}")
            }
            (None, false) => {
                tracing::info!(probe = %self.target.name, target = %without_userinfo(&self.target.url), "probe succeeds again")
            }
            (None, true) => {}
        }
        Ok(families(&result, &self.labels).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(url: &str) -> ProbeScrapeTarget {
        ProbeScrapeTarget {
            name: "app".into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut t = probe("ftp://x/");
        t.name = String::new();
        t.method = "DELETE".into();
        t.valid_status_codes = vec![42];
        t.timeout_secs = -1.0;
        t.headers.insert("bad header".into(), "v".into());
        let errors = t.validate();
        let keys: Vec<&str> = errors
            .iter()
            .map(|e| e.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "url",
                "method",
                "valid_status_codes",
                "timeout_secs",
                "headers.bad header"
            ],
            "{errors:?}"
        );
        assert!(probe("https://example.invalid/livez").validate().is_empty());
    }

    #[tokio::test]
    async fn refused_connection_is_a_quick_failed_probe() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let c = ProbeCollector::new(probe(&format!("http://127.0.0.1:{port}/livez"))).unwrap();
        let r = c.probe(Duration::from_secs(2)).await;
        assert!(!r.success);
        assert_eq!(r.status_code, 0);
        assert!(r.failure.as_deref().unwrap().contains("refused"), "{r:?}");
        let text = crate::exposition::encode(&families(&r, &c.labels));
        assert!(text.contains(&format!(
            "probe_success{{probe=\"app\",target=\"http://127.0.0.1:{port}/livez\"}} 0\n"
        )));
        assert!(!text.contains("probe_ssl_earliest_cert_expiry"));
    }

    #[tokio::test]
    async fn credentials_in_the_url_stay_out_of_labels_and_reasons() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let c = ProbeCollector::new(probe(&format!(
            "http://admin:hunter2@127.0.0.1:{port}/livez"
        )))
        .unwrap();
        let r = c.probe(Duration::from_secs(2)).await;
        let text = crate::exposition::encode(&families(&r, &c.labels));
        assert!(
            text.contains(&format!("target=\"http://127.0.0.1:{port}/livez\"")),
            "{text}"
        );
        let reason = r.failure.unwrap_or_default();
        for shown in [&text, &reason] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("admin"),
                "{shown}"
            );
        }
        let errors = probe("ftp://u:pw@h/").validate();
        assert!(!errors.concat().contains("pw@"), "{errors:?}");
    }

    #[test]
    fn userinfo_is_cut_from_every_url_in_a_text() {
        for (text, shown) in [
            ("http://u:p@h:1/x?y#z", "http://h:1/x?y#z"),
            ("https://u@h", "https://h"),
            (
                "\"http://u:p@h\" then https://a:b@c/d",
                "\"http://h\" then https://c/d",
            ),
            ("http://h/p@q", "http://h/p@q"),
            ("no url at all", "no url at all"),
            ("http://u:p@", "http://"),
        ] {
            assert_eq!(without_userinfo(text), shown, "{text}");
        }
    }

    #[test]
    fn garbage_certificate_is_skipped() {
        assert!(http::Parsed::new(b"\x30\x03\x02\x01\x00").is_none());
        assert!(http::Parsed::new(&[]).is_none());
    }
}
