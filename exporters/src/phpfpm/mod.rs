//! PHP-FPM pool metrics with the names, types and labels of hipages
//! php-fpm_exporter (`phpfpm_up{pool,scrape_uri}`, ...), read by talking
//! FastCGI straight to each pool's socket: no web server in between.
//!
//! Per-process series (`phpfpm_process_*{pool,child,scrape_uri}`) are off by
//! default: they multiply with `pm.max_children` and are what users of the
//! anchor most often ask to turn off.

pub mod fastcgi;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::{Labels, MetricFamily};
use crate::probe::client::budget;

/// Largest status answer accepted. A full status lists every worker in a
/// few hundred bytes each, so this covers thousands of workers.
const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// The process states the anchor always lists for each child.
const PROCESS_STATES: [&str; 6] = [
    "Idle",
    "Running",
    "Finishing",
    "Reading headers",
    "Getting request informations",
    "Ending",
];

/// One `[[phpfpm]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhpFpmPool {
    /// Name of this pool in `/health` and logs; the `pool` label comes from
    /// the status page itself (defaults to the scrape URI when empty).
    #[serde(default)]
    pub name: String,
    /// The pool socket and status path in the anchor's syntax:
    /// `unix:///run/php/php8.2-fpm.sock;/status` or `tcp://127.0.0.1:9000/status`.
    /// The path must equal the pool's `pm.status_path`.
    #[serde(default = "default_scrape_uri")]
    pub scrape_uri: String,
    /// Upper bound of one status request; the scrape deadline may cut it shorter.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Export `phpfpm_process_*` for every worker (high cardinality).
    #[serde(default)]
    pub per_process_metrics: bool,
    /// Count idle/active/total from the process list instead of trusting the
    /// pool totals (the anchor's `--phpfpm.fix-process-count`).
    #[serde(default)]
    pub fix_process_count: bool,
}

impl Default for PhpFpmPool {
    fn default() -> Self {
        PhpFpmPool {
            name: String::new(),
            scrape_uri: default_scrape_uri(),
            timeout_secs: default_timeout_secs(),
            per_process_metrics: false,
            fix_process_count: false,
        }
    }
}

fn default_scrape_uri() -> String {
    "tcp://127.0.0.1:9000/status".into()
}
fn default_timeout_secs() -> f64 {
    5.0
}

impl PhpFpmPool {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = parse_scrape_uri(&self.scrape_uri) {
            errors.push(format!("scrape_uri: {e}"));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            errors.push(format!(
                "timeout_secs: {} is out of range; use a value in (0, 300]",
                self.timeout_secs
            ));
        }
        errors
    }

    /// The pool's name in `/health` and logs: `name`, or the scrape URI.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.scrape_uri
        } else {
            &self.name
        }
    }
}

/// Splits `unix:///sock;/status` or `tcp://host:port/status` into the
/// socket address and the status path.
pub fn parse_scrape_uri(raw: &str) -> Result<(fastcgi::Address, String), String> {
    if let Some(rest) = raw.strip_prefix("unix://") {
        let (socket, path) = rest.split_once(';').unwrap_or((rest, "/status"));
        if !socket.starts_with('/') {
            return Err(format!(
                "{raw:?}: the socket path must be absolute, e.g. unix:///run/php/php-fpm.sock;/status"
            ));
        }
        if !path.starts_with('/') {
            return Err(format!(
                "{raw:?}: the status path after ';' must start with /"
            ));
        }
        return Ok((fastcgi::Address::Unix(socket.into()), path.to_string()));
    }
    if let Some(rest) = raw.strip_prefix("tcp://") {
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/status"),
        };
        let port_ok = host_port
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!(
                "{raw:?}: write host:port after tcp://, e.g. tcp://127.0.0.1:9000/status"
            ));
        }
        return Ok((
            fastcgi::Address::Tcp(host_port.to_string()),
            path.to_string(),
        ));
    }
    Err(format!(
        "{raw:?}: use unix:///path/to/pool.sock;/status or tcp://host:port/status"
    ))
}

/// The pool-level numbers of a status page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolStatus {
    pub pool: String,
    pub start_since: f64,
    pub accepted_conn: f64,
    pub listen_queue: f64,
    pub max_listen_queue: f64,
    pub listen_queue_len: f64,
    pub idle_processes: f64,
    pub active_processes: f64,
    pub total_processes: f64,
    pub max_active_processes: f64,
    pub max_children_reached: f64,
    pub slow_requests: f64,
    pub processes: Vec<ProcessStatus>,
}

/// One worker of a `full` status page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessStatus {
    pub state: String,
    pub requests: f64,
    pub request_duration: f64,
    pub last_request_cpu: f64,
    pub last_request_memory: f64,
}

/// Parses the JSON status page (`?json&full`). Any input is accepted
/// without panicking; an error names the missing or malformed field.
pub fn parse_status(body: &[u8]) -> Result<PoolStatus, String> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(first) => {
            // PHP-FPM before 8.1 wrote request URIs into the JSON without
            // escaping them; re-escape those and try once more.
            let text = String::from_utf8_lossy(body);
            let fixed = escape_request_uris(&text);
            serde_json::from_str(&fixed)
                .map_err(|_| format!("the status page is not JSON ({first})"))?
        }
    };
    let obj = value
        .as_object()
        .ok_or("the status page is JSON but not an object; is QUERY_STRING json honoured?")?;
    let pool = obj
        .get("pool")
        .and_then(Value::as_str)
        .ok_or("the status page has no \"pool\" name; is this a PHP-FPM status page?")?
        .to_string();
    let num = |key: &str| -> Result<f64, String> {
        obj.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("the status page has no number {key:?}"))
    };
    let mut status = PoolStatus {
        pool,
        start_since: num("start since")?,
        accepted_conn: num("accepted conn")?,
        listen_queue: num("listen queue")?,
        max_listen_queue: num("max listen queue")?,
        listen_queue_len: num("listen queue len")?,
        idle_processes: num("idle processes")?,
        active_processes: num("active processes")?,
        total_processes: num("total processes")?,
        max_active_processes: num("max active processes")?,
        max_children_reached: num("max children reached")?,
        slow_requests: num("slow requests")?,
        processes: Vec::new(),
    };
    if let Some(list) = obj.get("processes") {
        let list = list.as_array().ok_or("\"processes\" is not a list")?;
        for p in list {
            // Worker fields are read leniently, as the anchor does: a
            // missing or odd value is 0 rather than a failed scrape.
            let n = |key: &str| p.get(key).and_then(Value::as_f64).unwrap_or(0.0);
            status.processes.push(ProcessStatus {
                state: p
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                requests: n("requests"),
                request_duration: n("request duration"),
                last_request_cpu: n("last request cpu"),
                last_request_memory: n("last request memory"),
            });
        }
    }
    Ok(status)
}

/// Re-escapes the value of every `"request uri":"..."` up to the
/// `","content length":` that follows it.
fn escape_request_uris(text: &str) -> String {
    const START: &str = ",\"request uri\":\"";
    const END: &str = "\",\"content length\":";
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(i) = rest.find(START) {
        let value_start = i + START.len();
        let Some(len) = rest[value_start..].find(END) else {
            break;
        };
        out.push_str(&rest[..value_start]);
        for c in rest[value_start..value_start + len].chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
    out
}

/// The anchor's rule for `fix_process_count`: Running and Reading headers
/// are active, Idle is idle, the rest (finishing, ending) count as neither.
fn count_processes(processes: &[ProcessStatus]) -> (f64, f64) {
    let mut active = 0.0;
    let mut idle = 0.0;
    for p in processes {
        match p.state.as_str() {
            "Running" | "Reading headers" => active += 1.0,
            "Idle" => idle += 1.0,
            _ => {}
        }
    }
    (active, idle)
}

/// The hipages families of one pool. `status` is `None` when the pool could
/// not be read: then only `phpfpm_up 0` and the failure counter.
pub fn families(
    status: Option<&PoolStatus>,
    pool_label: &str,
    scrape_uri: &str,
    failures: u64,
    per_process: bool,
    fix_process_count: bool,
) -> Vec<MetricFamily> {
    let labels: Labels = vec![
        ("pool".into(), pool_label.to_string()),
        ("scrape_uri".into(), scrape_uri.to_string()),
    ];
    let one = |name: &str, help: &str, counter: bool, value: f64| {
        let mut f = if counter {
            MetricFamily::counter(name, help)
        } else {
            MetricFamily::gauge(name, help)
        };
        f.push_owned(labels.clone(), value);
        f
    };
    let mut out = vec![
        one(
            "phpfpm_scrape_failures",
            "The number of failures scraping from PHP-FPM.",
            true,
            failures as f64,
        ),
        one(
            "phpfpm_up",
            "Could PHP-FPM be reached?",
            false,
            if status.is_some() { 1.0 } else { 0.0 },
        ),
    ];
    let Some(s) = status else { return out };
    let (active, idle, total) = if fix_process_count {
        let (active, idle) = count_processes(&s.processes);
        (active, idle, active + idle)
    } else {
        (s.active_processes, s.idle_processes, s.total_processes)
    };
    out.extend([
        one(
            "phpfpm_start_since",
            "The number of seconds since FPM has started.",
            true,
            s.start_since,
        ),
        one(
            "phpfpm_accepted_connections",
            "The number of requests accepted by the pool.",
            true,
            s.accepted_conn,
        ),
        one(
            "phpfpm_listen_queue",
            "The number of requests in the queue of pending connections.",
            false,
            s.listen_queue,
        ),
        one(
            "phpfpm_max_listen_queue",
            "The maximum number of requests in the queue of pending connections since FPM has started.",
            true,
            s.max_listen_queue,
        ),
        one(
            "phpfpm_listen_queue_length",
            "The size of the socket queue of pending connections.",
            false,
            s.listen_queue_len,
        ),
        one(
            "phpfpm_idle_processes",
            "The number of idle processes.",
            false,
            idle,
        ),
        one(
            "phpfpm_active_processes",
            "The number of active processes.",
            false,
            active,
        ),
        one(
            "phpfpm_total_processes",
            "The number of idle + active processes.",
            false,
            total,
        ),
        one(
            "phpfpm_max_active_processes",
            "The maximum number of active processes since FPM has started.",
            true,
            s.max_active_processes,
        ),
        one(
            "phpfpm_max_children_reached",
            "The number of times, the process limit has been reached, when pm tries to start more children (works only for pm 'dynamic' and 'ondemand').",
            true,
            s.max_children_reached,
        ),
        one(
            "phpfpm_slow_requests",
            "The number of requests that exceeded your 'request_slowlog_timeout' value.",
            true,
            s.slow_requests,
        ),
    ]);
    if per_process && !s.processes.is_empty() {
        let mut requests = MetricFamily::counter(
            "phpfpm_process_requests",
            "The number of requests the process has served.",
        );
        let mut memory = MetricFamily::gauge(
            "phpfpm_process_last_request_memory",
            "The max amount of memory the last request consumed.",
        );
        let mut cpu = MetricFamily::gauge(
            "phpfpm_process_last_request_cpu",
            "The %cpu the last request consumed.",
        );
        let mut duration = MetricFamily::gauge(
            "phpfpm_process_request_duration",
            "The duration in microseconds of the requests.",
        );
        let mut state = MetricFamily::gauge(
            "phpfpm_process_state",
            "The state of the process (Idle, Running, ...).",
        );
        for (child, p) in s.processes.iter().enumerate() {
            let child = child.to_string();
            let l: Labels = vec![
                ("pool".into(), pool_label.to_string()),
                ("child".into(), child.clone()),
                ("scrape_uri".into(), scrape_uri.to_string()),
            ];
            requests.push_owned(l.clone(), p.requests);
            memory.push_owned(l.clone(), p.last_request_memory);
            cpu.push_owned(l.clone(), p.last_request_cpu);
            duration.push_owned(l, p.request_duration);
            let mut states: Vec<&str> = PROCESS_STATES.to_vec();
            if !states.contains(&p.state.as_str()) {
                states.push(&p.state);
            }
            for name in states {
                state.push_owned(
                    vec![
                        ("pool".into(), pool_label.to_string()),
                        ("child".into(), child.clone()),
                        ("state".into(), name.to_string()),
                        ("scrape_uri".into(), scrape_uri.to_string()),
                    ],
                    if name == p.state { 1.0 } else { 0.0 },
                );
            }
        }
        out.extend([state, requests, memory, cpu, duration]);
    }
    out
}

/// Builds one collector per configured pool.
pub fn collectors(targets: &[PhpFpmPool]) -> Vec<Arc<dyn Collector>> {
    targets
        .iter()
        .filter_map(|t| match PhpFpmCollector::new(t.clone()) {
            Ok(c) => Some(Arc::new(c) as Arc<dyn Collector>),
            Err(e) => {
                tracing::error!(pool = %t.display_name(), "php-fpm pool disabled: {e}");
                None
            }
        })
        .collect()
}

/// Scrapes one pool.
pub struct PhpFpmCollector {
    pool: PhpFpmPool,
    address: fastcgi::Address,
    status_path: String,
    failures: AtomicU64,
    /// The pool name last read from the status page, so `phpfpm_up 0`
    /// keeps the labels of the series it replaces.
    last_pool_name: Mutex<Option<String>>,
}

impl PhpFpmCollector {
    pub fn new(pool: PhpFpmPool) -> Result<Self, String> {
        let (address, status_path) = parse_scrape_uri(&pool.scrape_uri)?;
        Ok(PhpFpmCollector {
            pool,
            address,
            status_path,
            failures: AtomicU64::new(0),
            last_pool_name: Mutex::new(None),
        })
    }

    async fn read_status(&self, ctx: &CollectContext) -> Result<PoolStatus, String> {
        let params: BTreeMap<&str, String> = [
            ("SCRIPT_FILENAME", self.status_path.clone()),
            ("SCRIPT_NAME", self.status_path.clone()),
            ("REQUEST_URI", format!("{}?json&full", self.status_path)),
            ("DOCUMENT_URI", self.status_path.clone()),
            ("QUERY_STRING", "json&full".to_string()),
            ("REQUEST_METHOD", "GET".to_string()),
            ("SERVER_SOFTWARE", "steward".to_string()),
            ("REMOTE_ADDR", "127.0.0.1".to_string()),
            ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
            ("SERVER_PROTOCOL", "HTTP/1.1".to_string()),
        ]
        .into();
        let timeout = budget(ctx, self.pool.timeout_secs);
        let response = fastcgi::request(&self.address, &params, timeout, MAX_ANSWER_BYTES).await?;
        let (code, body) = fastcgi::split_cgi(&response.stdout)?;
        if !(200..300).contains(&code) {
            let stderr = String::from_utf8_lossy(&response.stderr);
            let stderr = stderr.trim();
            return Err(format!(
                "status path {:?} answered {code}{}; set the pool's pm.status_path = {}",
                self.status_path,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stderr.chars().take(200).collect::<String>())
                },
                self.status_path
            ));
        }
        parse_status(body)
    }
}

#[async_trait]
impl Collector for PhpFpmCollector {
    fn name(&self) -> &str {
        "phpfpm"
    }

    fn instance(&self) -> Option<&str> {
        Some(self.pool.display_name())
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let result = self.read_status(&ctx).await;
        let mut last = self
            .last_pool_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (status, error) = match result {
            Ok(s) => {
                *last = Some(s.pool.clone());
                (Some(s), None)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                (
                    None,
                    Some(CollectError::failed(format!(
                        "php-fpm pool {:?} ({}): {e}",
                        self.pool.display_name(),
                        self.pool.scrape_uri
                    ))),
                )
            }
        };
        let pool_label = last.clone().unwrap_or_else(|| self.pool.name.clone());
        drop(last);
        Ok(Collected {
            families: families(
                status.as_ref(),
                &pool_label,
                &self.pool.scrape_uri,
                self.failures.load(Ordering::Relaxed),
                self.pool.per_process_metrics,
                self.pool.fix_process_count,
            ),
            error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const FULL: &str = r#"{"pool":"www","process manager":"static","start time":1700000000,"start since":42,"accepted conn":7,"listen queue":0,"max listen queue":1,"listen queue len":128,"idle processes":1,"active processes":1,"total processes":2,"max active processes":2,"max children reached":0,"slow requests":3, "processes":[{"pid":10,"state":"Idle","start time":1700000000,"start since":42,"requests":4,"request duration":120,"request method":"GET","request uri":"/index.php","content length":0,"user":"-","script":"/srv/index.php","last request cpu":12.5,"last request memory":2097152},{"pid":11,"state":"Running","start time":1700000000,"start since":42,"requests":3,"request duration":99,"request method":"GET","request uri":"/status?json&full","content length":0,"user":"-","script":"-","last request cpu":0.00,"last request memory":0}]}"#;

    #[test]
    fn parses_a_full_status_page() {
        let s = parse_status(FULL.as_bytes()).unwrap();
        assert_eq!(s.pool, "www");
        assert_eq!(s.accepted_conn, 7.0);
        assert_eq!(s.listen_queue_len, 128.0);
        assert_eq!(s.slow_requests, 3.0);
        assert_eq!(s.processes.len(), 2);
        assert_eq!(s.processes[0].last_request_memory, 2097152.0);
        assert_eq!(s.processes[1].state, "Running");
    }

    #[test]
    fn repairs_unescaped_request_uris() {
        let broken = FULL.replace(
            "\"request uri\":\"/index.php\"",
            "\"request uri\":\"/a\"b\\c\"",
        );
        assert!(serde_json::from_str::<Value>(&broken).is_err());
        let s = parse_status(broken.as_bytes()).unwrap();
        assert_eq!(s.processes.len(), 2);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        for (page, reason) in [
            ("File not found.\n", "not JSON"),
            ("[1,2]", "not an object"),
            ("{}", "\"pool\""),
            (r#"{"pool":"www","start since":"x"}"#, "start since"),
            (r#"{"pool":"www"}"#, "start since"),
        ] {
            let err = parse_status(page.as_bytes()).unwrap_err();
            assert!(err.contains(reason), "{page}: {err}");
        }
        let bad_list = FULL
            .replace("\"processes\":[", "\"processes\":{\"a\":[")
            .replace("]}", "]}}");
        assert!(parse_status(bad_list.as_bytes()).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::probe::client::XorShift(0x2545_f491_4f6c_dd1d);
        for i in 0..20_000 {
            let mut input = if i % 2 == 0 {
                FULL.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            rng.mutate(&mut input);
            let _ = parse_status(&input);
            let mut d = fastcgi::ResponseDecoder::new(1 << 20);
            if d.push(&input).is_ok() {
                if let Ok(r) = d.finish() {
                    let _ = fastcgi::split_cgi(&r.stdout);
                }
            }
        }
    }

    #[test]
    fn anchor_families_and_labels() {
        let s = parse_status(FULL.as_bytes()).unwrap();
        let uri = "unix:///run/php/fpm.sock;/status";
        let text = crate::exposition::encode(&families(Some(&s), "www", uri, 2, false, false));
        let l = format!("{{pool=\"www\",scrape_uri=\"{uri}\"}}");
        for line in [
            format!(
                "# TYPE phpfpm_accepted_connections counter\nphpfpm_accepted_connections{l} 7\n"
            ),
            format!("# TYPE phpfpm_up gauge\nphpfpm_up{l} 1\n"),
            format!("# TYPE phpfpm_scrape_failures counter\nphpfpm_scrape_failures{l} 2\n"),
            format!("# TYPE phpfpm_listen_queue_length gauge\nphpfpm_listen_queue_length{l} 128\n"),
            format!("# TYPE phpfpm_slow_requests counter\nphpfpm_slow_requests{l} 3\n"),
        ] {
            assert!(text.contains(&line), "{line}\nnot in\n{text}");
        }
        assert!(!text.contains("phpfpm_process_"));

        let with = crate::exposition::encode(&families(Some(&s), "www", uri, 0, true, false));
        assert!(with.contains(&format!(
            "phpfpm_process_requests{{pool=\"www\",child=\"0\",scrape_uri=\"{uri}\"}} 4\n"
        )));
        assert!(with.contains(&format!(
            "phpfpm_process_state{{pool=\"www\",child=\"1\",state=\"Running\",scrape_uri=\"{uri}\"}} 1\n"
        )));
        assert_eq!(with.matches("phpfpm_process_state{").count(), 12);

        let down = families(None, "www", uri, 1, true, false);
        assert_eq!(down.len(), 2);
    }

    #[test]
    fn fix_process_count_counts_states() {
        let s = parse_status(FULL.as_bytes()).unwrap();
        let f = families(Some(&s), "www", "u", 0, false, true);
        let total = f
            .iter()
            .find(|f| f.name == "phpfpm_total_processes")
            .unwrap();
        assert_eq!(total.samples[0].value, 2.0);
    }

    #[test]
    fn scrape_uris() {
        assert_eq!(
            parse_scrape_uri("unix:///run/php/fpm.sock;/st").unwrap(),
            (
                fastcgi::Address::Unix("/run/php/fpm.sock".into()),
                "/st".into()
            )
        );
        assert_eq!(
            parse_scrape_uri("tcp://127.0.0.1:9000/status").unwrap(),
            (
                fastcgi::Address::Tcp("127.0.0.1:9000".into()),
                "/status".into()
            )
        );
        assert_eq!(
            parse_scrape_uri("tcp://[::1]:9000").unwrap().1,
            "/status".to_string()
        );
        for bad in [
            "http://x/status",
            "tcp://127.0.0.1/status",
            "unix://rel.sock;/s",
            "unix:///s;status",
        ] {
            assert!(parse_scrape_uri(bad).is_err(), "{bad}");
        }
        let p = PhpFpmPool {
            scrape_uri: "nope".into(),
            timeout_secs: 0.0,
            ..Default::default()
        };
        let errors = p.validate();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("scrape_uri:") && errors[1].starts_with("timeout_secs:"));
    }

    #[tokio::test]
    async fn unreachable_pool_is_up_0_quickly() {
        let dir = std::env::temp_dir().join(format!("steward-fpm-test-{}", std::process::id()));
        let c = PhpFpmCollector::new(PhpFpmPool {
            name: "gone".into(),
            scrape_uri: format!("unix://{}/missing.sock;/status", dir.display()),
            ..Default::default()
        })
        .unwrap();
        let collected = c
            .collect(CollectContext::with_timeout(
                std::time::Duration::from_secs(2),
            ))
            .await
            .unwrap();
        let err = collected.error.unwrap().to_string();
        assert!(
            err.contains("gone") && err.contains("missing.sock"),
            "{err}"
        );
        let text = crate::exposition::encode(&collected.families);
        assert!(text.contains("phpfpm_up{pool=\"gone\""), "{text}");
        assert!(
            text.contains("phpfpm_scrape_failures{pool=\"gone\",scrape_uri=\"unix://"),
            "{text}"
        );
    }
}
