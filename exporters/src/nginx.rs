//! nginx metrics from the stub_status page, with the names, types and help
//! texts of nginx-prometheus-exporter 0.11 (`nginx_up`,
//! `nginx_connections_*`, `nginx_http_requests_total`).
//!
//! The page is fetched over HTTP(S) or a unix socket (`unix:/path.sock:/uri`,
//! the exporter's syntax). The anchor has no per-target label: it runs once
//! per nginx. Steward adds `target="<name>"` to every series only when more
//! than one `[[nginx]]` target is configured, so a single-target setup is
//! byte-compatible with the anchor and several targets stay distinct.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::{Labels, MetricFamily};
use crate::probe::client::{budget, build_client, label_name_problem, read_limited, ClientTls};

/// Largest stub_status page accepted; the real one is about 100 bytes, so
/// anything bigger is not a stub_status page and is not read into memory.
const MAX_PAGE_BYTES: usize = 64 * 1024;

/// One `[[nginx]]` entry: an nginx status page to scrape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxScrapeTarget {
    /// Name of this target, used in `/health`, in logs and (with several
    /// targets) as the `target` label.
    #[serde(default = "default_name")]
    pub name: String,
    /// The stub_status page: `http://host:port/path`, `https://...`, or
    /// `unix:/path/to/socket:/path` (nginx-prometheus-exporter's
    /// `-nginx.scrape-uri` syntax).
    #[serde(default = "default_scrape_uri")]
    pub scrape_uri: String,
    /// Upper bound of one fetch; the scrape deadline may cut it shorter.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Verify the server certificate of an `https` scrape URI.
    #[serde(default = "default_true")]
    pub ssl_verify: bool,
    /// PEM CA bundle that signed the server certificate (added to the
    /// built-in web PKI roots).
    #[serde(default)]
    pub ssl_ca_cert: Option<PathBuf>,
    /// Constant labels added to every series of this target, like the
    /// exporter's `-prometheus.const-labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for NginxScrapeTarget {
    fn default() -> Self {
        NginxScrapeTarget {
            name: default_name(),
            scrape_uri: default_scrape_uri(),
            timeout_secs: default_timeout_secs(),
            ssl_verify: true,
            ssl_ca_cert: None,
            labels: BTreeMap::new(),
        }
    }
}

fn default_name() -> String {
    "nginx".into()
}
fn default_scrape_uri() -> String {
    "http://127.0.0.1:8080/stub_status".into()
}
fn default_timeout_secs() -> f64 {
    5.0
}
fn default_true() -> bool {
    true
}

impl NginxScrapeTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push("name: must not be empty; it names the target in logs and labels".into());
        }
        if let Err(e) = ScrapeUri::parse(&self.scrape_uri) {
            errors.push(format!("scrape_uri: {e}"));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        for name in self.labels.keys() {
            if let Some(problem) = label_name_problem(name) {
                errors.push(format!("labels.{name}: {problem}"));
            } else if name == "target" {
                errors.push(
                    "labels.target: reserved; Steward sets it when several nginx targets exist"
                        .into(),
                );
            }
        }
        errors
    }
}

/// Where the stub_status page is.
#[derive(Debug, Clone, PartialEq)]
enum ScrapeUri {
    Http(String),
    Unix { socket: PathBuf, path: String },
}

impl ScrapeUri {
    fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw.strip_prefix("unix:") {
            // `unix:/run/nginx.sock:/stub_status`: the socket path ends at
            // the last `:` that is followed by `/`.
            let Some(split) = rest.rfind(":/") else {
                return Err(format!(
                    "{raw:?} has no request path; write unix:/path/to/socket:/stub_status"
                ));
            };
            let (socket, path) = (&rest[..split], &rest[split + 1..]);
            if socket.is_empty() {
                return Err(format!("{raw:?} has an empty socket path"));
            }
            return Ok(ScrapeUri::Unix {
                socket: PathBuf::from(socket),
                path: path.to_string(),
            });
        }
        match reqwest::Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Ok(ScrapeUri::Http(raw.to_string()))
            }
            Ok(url) => Err(format!(
                "{raw:?} has scheme {:?}; use http://, https:// or unix:/socket:/path",
                url.scheme()
            )),
            Err(e) => Err(format!(
                "{raw:?} is not a URL ({e}); use e.g. http://127.0.0.1:8080/stub_status"
            )),
        }
    }
}

/// The numbers of one stub_status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StubStatus {
    pub active: u64,
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// Parses the stub_status text:
///
/// ```text
/// Active connections: 2
/// server accepts handled requests
///  16 16 31
/// Reading: 0 Writing: 1 Waiting: 1
/// ```
///
/// Any input is accepted without panicking; an error says which part of the
/// page is missing or malformed.
pub fn parse_stub_status(page: &[u8]) -> Result<StubStatus, String> {
    let text = std::str::from_utf8(page)
        .map_err(|_| "the page is not UTF-8 text, so it is not a stub_status page".to_string())?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut status = StubStatus::default();

    let first = lines.next().unwrap_or("");
    let active = first
        .strip_prefix("Active connections:")
        .ok_or_else(|| format!("expected \"Active connections: N\", found {}", quote(first)))?;
    status.active = number(active.trim(), "Active connections")?;

    let header = lines.next().unwrap_or("");
    if header.split_whitespace().collect::<Vec<_>>() != ["server", "accepts", "handled", "requests"]
    {
        return Err(format!(
            "expected \"server accepts handled requests\", found {}",
            quote(header)
        ));
    }
    let counts = lines.next().unwrap_or("");
    let fields: Vec<&str> = counts.split_whitespace().collect();
    if fields.len() != 3 {
        return Err(format!(
            "expected three numbers (accepts handled requests), found {}",
            quote(counts)
        ));
    }
    status.accepts = number(fields[0], "accepts")?;
    status.handled = number(fields[1], "handled")?;
    status.requests = number(fields[2], "requests")?;

    let rww = lines.next().unwrap_or("");
    let words: Vec<&str> = rww.split_whitespace().collect();
    match words.as_slice() {
        ["Reading:", r, "Writing:", w, "Waiting:", idle] => {
            status.reading = number(r, "Reading")?;
            status.writing = number(w, "Writing")?;
            status.waiting = number(idle, "Waiting")?;
        }
        _ => {
            return Err(format!(
                "expected \"Reading: N Writing: N Waiting: N\", found {}",
                quote(rww)
            ))
        }
    }
    Ok(status)
}

fn number(raw: &str, what: &str) -> Result<u64, String> {
    raw.parse()
        .map_err(|_| format!("{what} is {}, not a whole number", quote(raw)))
}

/// A short, printable excerpt of untrusted text for error messages.
fn quote(raw: &str) -> String {
    if raw.is_empty() {
        return "nothing".into();
    }
    let excerpt: String = raw.chars().take(60).collect();
    let more = if raw.chars().count() > 60 { "..." } else { "" };
    format!("{excerpt:?}{more}")
}

/// The families of one target: `nginx_up` always, the rest only when the
/// page was read and parsed (as the anchor does).
pub fn families(status: Option<&StubStatus>, labels: &Labels) -> Vec<MetricFamily> {
    let one = |name: &str, help: &str, counter: bool, value: u64| {
        let mut f = if counter {
            MetricFamily::counter(name, help)
        } else {
            MetricFamily::gauge(name, help)
        };
        f.push_owned(labels.clone(), value as f64);
        f
    };
    let mut out = vec![one(
        "nginx_up",
        "Status of the last metric scrape",
        false,
        u64::from(status.is_some()),
    )];
    if let Some(s) = status {
        out.extend([
            one(
                "nginx_connections_accepted",
                "Accepted client connections",
                true,
                s.accepts,
            ),
            one(
                "nginx_connections_active",
                "Active client connections",
                false,
                s.active,
            ),
            one(
                "nginx_connections_handled",
                "Handled client connections",
                true,
                s.handled,
            ),
            one(
                "nginx_connections_reading",
                "Connections where NGINX is reading the request header",
                false,
                s.reading,
            ),
            one(
                "nginx_connections_waiting",
                "Idle client connections",
                false,
                s.waiting,
            ),
            one(
                "nginx_connections_writing",
                "Connections where NGINX is writing the response back to the client",
                false,
                s.writing,
            ),
            one(
                "nginx_http_requests_total",
                "Total http requests",
                true,
                s.requests,
            ),
        ]);
    }
    out
}

/// Builds one collector per configured target.
pub fn collectors(targets: &[NginxScrapeTarget]) -> Vec<Arc<dyn Collector>> {
    let several = targets.len() > 1;
    targets
        .iter()
        .filter_map(|t| match NginxCollector::new(t.clone(), several) {
            Ok(c) => Some(Arc::new(c) as Arc<dyn Collector>),
            Err(e) => {
                tracing::error!(target = %t.name, "nginx target disabled: {e}");
                None
            }
        })
        .collect()
}

/// Scrapes one nginx.
pub struct NginxCollector {
    target: NginxScrapeTarget,
    uri: ScrapeUri,
    client: Option<reqwest::Client>,
    labels: Labels,
    failures: AtomicU64,
}

impl NginxCollector {
    /// `label_target`: add `target="<name>"` (several targets configured).
    pub fn new(target: NginxScrapeTarget, label_target: bool) -> Result<Self, String> {
        let uri = ScrapeUri::parse(&target.scrape_uri)?;
        let client = match &uri {
            ScrapeUri::Http(_) => Some(build_client(&ClientTls {
                verify: target.ssl_verify,
                ca_file: target.ssl_ca_cert.as_deref(),
                keep_alive: true,
                capture_tls: false,
                follow_redirects: false,
            })?),
            ScrapeUri::Unix { .. } => None,
        };
        let mut labels: Labels = Vec::new();
        if label_target {
            labels.push(("target".into(), target.name.clone()));
        }
        for (k, v) in &target.labels {
            labels.push((k.clone().into(), v.clone()));
        }
        Ok(NginxCollector {
            target,
            uri,
            client,
            labels,
            failures: AtomicU64::new(0),
        })
    }

    async fn fetch(&self, timeout: Duration) -> Result<Vec<u8>, String> {
        match &self.uri {
            ScrapeUri::Http(url) => {
                let client = self
                    .client
                    .as_ref()
                    .ok_or_else(|| "no HTTP client".to_string())?;
                let response = client.get(url).timeout(timeout).send().await.map_err(|e| {
                    format!("request failed: {}", crate::probe::client::error_chain(&e))
                })?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!(
                        "answered HTTP {status}; check that the location has `stub_status;`"
                    ));
                }
                read_limited(response, MAX_PAGE_BYTES).await
            }
            ScrapeUri::Unix { socket, path } => {
                tokio::time::timeout(timeout, get_over_unix_socket(socket, path))
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            }
        }
    }
}

/// A plain HTTP/1.0 GET over a unix socket. HTTP/1.0 makes nginx close the
/// connection after the response and never use chunked encoding, so the
/// body is simply everything after the header.
async fn get_over_unix_socket(socket: &std::path::Path, path: &str) -> Result<Vec<u8>, String> {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: steward\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take((MAX_PAGE_BYTES + 16 * 1024) as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    let (status, body) = split_http_response(&raw)?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "answered HTTP {status}; check that the location has `stub_status;`"
        ));
    }
    if body.len() > MAX_PAGE_BYTES {
        return Err(format!(
            "the page is larger than {MAX_PAGE_BYTES} bytes, so it is not a stub_status page"
        ));
    }
    Ok(body.to_vec())
}

/// Splits a raw HTTP/1.x response into status code and body.
fn split_http_response(raw: &[u8]) -> Result<(u16, &[u8]), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "the answer is not an HTTP response (no header end)".to_string())?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line: {}", quote(&head)))?;
    Ok((status, &raw[end + 4..]))
}

#[async_trait]
impl Collector for NginxCollector {
    fn name(&self) -> &str {
        "nginx"
    }

    fn instance(&self) -> Option<&str> {
        Some(&self.target.name)
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let timeout = budget(&ctx, self.target.timeout_secs);
        let result = self.fetch(timeout).await.and_then(|page| {
            parse_stub_status(&page).map_err(|e| format!("not a stub_status page: {e}"))
        });
        let (status, error) = match result {
            Ok(s) => (Some(s), None),
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                (
                    None,
                    Some(CollectError::failed(format!(
                        "nginx target {:?} ({}): {e}",
                        self.target.name, self.target.scrape_uri
                    ))),
                )
            }
        };
        let mut out = families(status.as_ref(), &self.labels);
        let mut failure_labels: Labels = vec![
            ("collector".into(), "nginx".into()),
            ("instance".into(), self.target.name.clone()),
        ];
        failure_labels.extend(self.labels.iter().filter(|(k, _)| k != "target").cloned());
        let mut failures = MetricFamily::counter(
            "steward_scrape_failures_total",
            "Scrapes of a target that failed (unreachable, error status, or a page that does not parse).",
        );
        failures.push_owned(failure_labels, self.failures.load(Ordering::Relaxed) as f64);
        out.push(failures);
        Ok(Collected {
            families: out,
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "Active connections: 2 \nserver accepts handled requests\n 16 15 31 \nReading: 0 Writing: 1 Waiting: 1 \n";

    #[test]
    fn parses_the_real_page() {
        let s = parse_stub_status(PAGE.as_bytes()).unwrap();
        assert_eq!(
            s,
            StubStatus {
                active: 2,
                accepts: 16,
                handled: 15,
                requests: 31,
                reading: 0,
                writing: 1,
                waiting: 1
            }
        );
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for (page, reason) in [
            ("", "Active connections"),
            ("<html>404</html>", "Active connections"),
            ("Active connections: x\n", "not a whole number"),
            ("Active connections: 1\nserver accepts handled requests\n 1 2\n", "three numbers"),
            (
                "Active connections: 1\nserver accepts handled requests\n 1 2 3\nReading: 0 Writing: 1\n",
                "Reading: N",
            ),
            (
                "Active connections: 1\nserver accepts handled requests\n 1 2 -3\nReading: 0 Writing: 1 Waiting: 0\n",
                "requests",
            ),
        ] {
            let err = parse_stub_status(page.as_bytes()).unwrap_err();
            assert!(err.contains(reason), "{page:?}: {err}");
        }
        assert!(parse_stub_status(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A stable-toolchain companion of the cargo-fuzz target: random
        // bytes and random mutations of a valid page, a bounded number of
        // times, from a fixed seed so failures reproduce.
        let mut rng = crate::probe::client::XorShift(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000 {
            let mut input = if i % 2 == 0 {
                PAGE.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            rng.mutate(&mut input);
            let _ = parse_stub_status(&input);
        }
    }

    #[test]
    fn up_only_when_down_and_all_families_when_up() {
        let labels: Labels = vec![("target".into(), "a".into())];
        let down = families(None, &labels);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].name, "nginx_up");
        assert_eq!(down[0].samples[0].value, 0.0);
        let s = parse_stub_status(PAGE.as_bytes()).unwrap();
        let up = families(Some(&s), &labels);
        let text = crate::exposition::encode(&up);
        assert!(text.contains("# TYPE nginx_connections_accepted counter\nnginx_connections_accepted{target=\"a\"} 16\n"), "{text}");
        assert!(text.contains("nginx_http_requests_total{target=\"a\"} 31\n"));
        assert!(text.contains("nginx_up{target=\"a\"} 1\n"));
    }

    #[test]
    fn scrape_uris() {
        assert_eq!(
            ScrapeUri::parse("unix:/run/nginx/status.sock:/stub_status").unwrap(),
            ScrapeUri::Unix {
                socket: "/run/nginx/status.sock".into(),
                path: "/stub_status".into()
            }
        );
        assert!(ScrapeUri::parse("unix:/run/nginx.sock").is_err());
        assert!(ScrapeUri::parse("ftp://x/stub_status").is_err());
        assert!(ScrapeUri::parse("127.0.0.1:8080").is_err());
        assert!(ScrapeUri::parse("https://127.0.0.1:8443/s").is_ok());
    }

    #[test]
    fn validate_reports_every_problem() {
        let t = NginxScrapeTarget {
            name: "".into(),
            scrape_uri: "nope".into(),
            timeout_secs: 0.0,
            labels: [("0bad".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        let errors = t.validate();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("name:"));
        assert!(errors[1].starts_with("scrape_uri:"));
        assert!(errors[2].starts_with("timeout_secs:"));
        assert!(errors[3].starts_with("labels.0bad:"));
        assert!(NginxScrapeTarget::default().validate().is_empty());
    }

    #[test]
    fn splits_http_responses() {
        let (status, body) = split_http_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody").unwrap();
        assert_eq!((status, body), (200, &b"body"[..]));
        assert!(split_http_response(b"garbage").is_err());
        assert!(split_http_response(b"SSH-2.0\r\n\r\n").is_err());
    }
}
