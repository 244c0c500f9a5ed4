//! dashboards/ (and the PromQL of alerts/): the JSON follows the
//! conventions (datasource/job/instance variables, `$__rate_interval`,
//! units, descriptions, deployment annotations), every expression parses
//! (promtool), names only metrics listed in alerts/METRICS.txt that
//! Steward's code exports, and a real Prometheus scraping a running
//! `steward agent` gets data for every query on what that agent exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::grafana_api::{GrafanaApi, Role};
use steward_tests::mariadb::Mariadb;
use steward_tests::nginx::Nginx;
use steward_tests::otlp_sink::OtlpSink;
use steward_tests::phpfpm::PhpFpm;
use steward_tests::postgres::Postgres;
use steward_tests::redis::Redis;
use steward_tests::{free_port, http_get, wait_for_http, ChildGuard, StewardAgent};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dashboards/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 7,
        "expected the 7+ dashboards, found {}",
        out.len()
    );
    out
}

/// (where, expr) for every panel target of every dashboard.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    format!("{file}: {}", p["title"].as_str().unwrap_or("?")),
                    t["expr"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

/// (where, selector) of every `label_values(<selector>, label)` variable.
fn variable_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for v in d["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["query"]["query"].as_str() {
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|s| s.rsplit_once(','))
                    .map(|s| s.0)
                    .unwrap_or(q);
                out.push((format!("{file}: variable {}", v["name"]), inner.to_string()));
            }
        }
    }
    out
}

/// (where, expr) of every rule in alerts/*.rules.yml.
fn rule_exprs() -> Vec<(String, String)> {
    let dir = root().join("alerts");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    paths.sort();
    for path in paths {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for g in doc["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                out.push((
                    format!(
                        "{}: {}",
                        path.file_name().unwrap().to_string_lossy(),
                        r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?")
                    ),
                    r["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// Grafana's variables replaced the way Grafana would for a query.
fn interpolate(expr: &str, job: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$job", job)
        .replace("$instance", ".+")
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset", "inf", "nan"];
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names in a PromQL expression: identifiers that are not
/// functions, aggregations, keywords, label names or inside strings,
/// matchers `{...}` or ranges `[...]`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                while i < b.len() && b[i] != close {
                    if b[i] == b'"' {
                        i += 1;
                        while i < b.len() && b[i] != b'"' {
                            if b[i] == b'\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let rest = expr[i..].trim_start();
                if LABEL_LISTS.contains(&word) && rest.starts_with('(') {
                    i = expr[i..].find(')').map(|p| i + p + 1).unwrap_or(b.len());
                    continue;
                }
                if AGGREGATIONS.contains(&word)
                    || KEYWORDS.contains(&word)
                    || LABEL_LISTS.contains(&word)
                    || rest.starts_with('(')
                {
                    continue;
                }
                out.insert(word.to_string());
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn metric_name_extraction() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (instance, le) (rate(a_bucket{job=~"$job", x="{b}"}[5m]))) / on (job) group_left(y) c offset 5m > bool 1e3 and d"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["a_bucket", "c", "d"]
    );
}

#[test]
fn generated_json_is_up_to_date() {
    let out = Command::new("python3")
        .arg(root().join("dashboards/generate.py"))
        .arg("--check")
        .output()
        .expect("cannot run python3 (install the Debian package python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboards_follow_the_conventions() {
    let mut uids = BTreeSet::new();
    for (file, d) in dashboards() {
        let uid = d["uid"].as_str().unwrap_or("");
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{file}: duplicate uid {uid}");
        for key in ["title", "description"] {
            assert!(
                d[key].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: {key}"
            );
        }
        assert!(
            d.get("__inputs").is_none(),
            "{file}: ${{DS_...}} inputs break provisioning"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        let var = |name: &str| vars.iter().find(|v| v["name"] == name);
        let ds = var("datasource").unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{file}");
        assert_eq!(ds["query"], "prometheus", "{file}");
        for name in ["job", "instance"] {
            let v = var(name).unwrap_or_else(|| panic!("{file}: no {name} variable"));
            assert_eq!(v["type"], "query", "{file}: {name}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: {name}");
        }
        let deploys = d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| {
                a["datasource"]["uid"] == "-- Grafana --"
                    && a["target"]["type"] == "tags"
                    && a["target"]["tags"]
                        .as_array()
                        .is_some_and(|t| t.contains(&Value::from("deploy")))
            });
        assert!(deploys, "{file}: no deployment annotations by tag");

        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or("?");
            if p["type"] == "row" {
                continue;
            }
            let what = format!("{file}: panel {title:?}");
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{what}: no description"
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{what}: no unit"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{what}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{what}: no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{what}");
                let expr = t["expr"].as_str().unwrap();
                check_selectors(&what, expr);
            }
        }
    }
}

/// Every metric selector carries the job and instance matchers, and every
/// range in rate()/increase()/... is `$__rate_interval`.
fn check_selectors(what: &str, expr: &str) {
    for name in metric_names(expr) {
        let mut rest = expr;
        while let Some(pos) = rest.find(name.as_str()) {
            let after = &rest[pos + name.len()..];
            let boundary_before = rest[..pos]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let boundary_after = after
                .chars()
                .next()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            if boundary_before && boundary_after {
                let matchers = after
                    .strip_prefix('{')
                    .and_then(|m| m.split_once('}'))
                    .map(|m| m.0)
                    .unwrap_or("");
                assert!(
                    matchers.contains(r#"job=~"$job""#)
                        && matchers.contains(r#"instance=~"$instance""#),
                    "{what}: {name} without job/instance matchers in {expr}"
                );
            }
            rest = after;
        }
    }
    for (pos, _) in expr.match_indices('[') {
        let range = &expr[pos + 1..expr[pos..].find(']').map(|e| pos + e).unwrap_or(expr.len())];
        assert_eq!(
            range, "$__rate_interval",
            "{what}: range [{range}] in {expr}"
        );
    }
}

/// Writes `exprs` as recording rules and runs `promtool check rules`.
fn promtool_parses(exprs: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exprs.rules.yml");
    let mut text = String::from("groups:\n  - name: exprs\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        let e = interpolate(e, ".+", "5m");
        text.push_str(&format!(
            "      - record: expr_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    std::fs::write(&path, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("cannot run promtool: install the Debian package prometheus");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{all}\n(expr_N is the Nth of {exprs:#?})"
    );
    assert!(
        all.contains(&format!("{} rules found", exprs.len())),
        "{all}"
    );
}

#[test]
fn every_dashboard_and_rule_expression_parses() {
    let mut exprs = dashboard_exprs();
    exprs.extend(rule_exprs());
    exprs.extend(variable_exprs());
    assert!(exprs.len() > 100, "{}", exprs.len());
    promtool_parses(&exprs);
}

/// One line of alerts/METRICS.txt.
#[derive(Debug)]
struct Listed {
    fragment: Option<String>,
    pending: Option<String>,
}

fn listed() -> BTreeMap<String, Listed> {
    let text = std::fs::read_to_string(root().join("alerts/METRICS.txt")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split("  ").map(str::trim).filter(|p| !p.is_empty());
        let name = parts.next().unwrap().to_string();
        let mut l = Listed {
            fragment: None,
            pending: None,
        };
        for p in parts {
            if let Some(f) = p.strip_prefix("fragment=") {
                l.fragment = Some(f.to_string());
            } else if let Some(f) = p.strip_prefix("pending=") {
                l.pending = Some(f.to_string());
            } else {
                panic!("METRICS.txt: unknown column {p:?} for {name}");
            }
        }
        assert!(
            out.insert(name.clone(), l).is_none(),
            "METRICS.txt lists {name} twice"
        );
    }
    out
}

/// All Rust source of the crates that export metrics.
fn exporting_source() -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    for krate in ["agent", "exporters", "backup", "telemetry"] {
        walk(&root().join(krate).join("src"), &mut out);
    }
    out
}

#[test]
fn metrics_used_are_listed_and_exported() {
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let mut exprs = dashboard_exprs();
    exprs.extend(rule_exprs());
    exprs.extend(variable_exprs());
    for (what, e) in &exprs {
        for n in metric_names(e) {
            used.entry(n).or_insert_with(|| what.clone());
        }
    }
    used.remove("up"); // Prometheus' own.
    let listed = listed();
    let unlisted: Vec<String> = used
        .iter()
        .filter(|(n, _)| !listed.contains_key(*n))
        .map(|(n, w)| format!("{n} (used by {w})"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "add to alerts/METRICS.txt: {unlisted:#?}"
    );
    let unused: Vec<&String> = listed.keys().filter(|n| !used.contains_key(*n)).collect();
    assert!(
        unused.is_empty(),
        "METRICS.txt lists unused names: {unused:?}"
    );

    let source = exporting_source();
    let mut missing = Vec::new();
    let mut pending = Vec::new();
    for (name, l) in &listed {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        let found = source.contains(&format!("\"{name}\""))
            || source.contains(&format!("\"{base}\""))
            || l.fragment
                .as_ref()
                .is_some_and(|f| source.contains(f.as_str()));
        match (found, &l.pending) {
            (true, _) => {}
            (false, Some(issue)) => pending.push(format!("{name} ({issue})")),
            (false, None) => missing.push(name.clone()),
        }
    }
    if !pending.is_empty() {
        eprintln!(
            "not exported yet, waiting for their collector to land:\n  {}",
            pending.join("\n  ")
        );
    }
    assert!(
        missing.is_empty(),
        "used by rules/dashboards but not exported by Steward's code: {missing:#?}"
    );
}

/// A Prometheus server on a free port with its own data directory.
struct Prometheus {
    _guard: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_port: u16, job: &str, rule_files: &[PathBuf]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let rules: String = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let guard = ChildGuard::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .expect("cannot start prometheus: install the Debian package prometheus");
        if let Err(e) = wait_for_http(port, "/-/ready", Duration::from_secs(60)) {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("prometheus did not start: {e}\n{log}");
        }
        Prometheus {
            _guard: guard,
            port,
            _dir: dir,
        }
    }

    fn api(&self, path: &str) -> Value {
        let (status, _, body) = http_get(self.port, path, &[]).unwrap();
        let json: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
        assert_eq!(status, 200, "{path}: {json}");
        json
    }

    /// Result of an instant query.
    fn query(&self, expr: &str) -> Vec<Value> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Queries that may legitimately be empty on a healthy single host, with
/// the reason.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "pg_replication_lag_seconds",
        "only replicas report replication lag",
    ),
    ("mysql_slave_status_", "only replicas have slave status"),
];

/// Appends access-log lines in the `nginx_combined` format (combined +
/// `$request_time $upstream_response_time`) until `stop` is set: a mix of
/// statuses and durations so error ratio and quantiles have data.
fn write_access_log(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::Write;
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        else {
            return;
        };
        for _ in 0..20 {
            n += 1;
            let (status, method) = match n % 10 {
                0 => (502, "GET"),
                1 => (404, "GET"),
                2 => (302, "POST"),
                _ => (200, "GET"),
            };
            let t = 0.002 * (n % 50) as f64;
            let _ = writeln!(
                f,
                "127.0.0.1 - - [23/Nov/2026:20:00:00 +0000] \"{method} /item/{n} HTTP/1.1\" {status} {} \"-\" \"load/1.0\" {t:.3} {:.3}",
                100 + n % 900,
                t * 0.8
            );
        }
        drop(f);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The real thing: Prometheus scrapes a running Steward configured for
/// real nginx, PHP-FPM, MariaDB and PostgreSQL, HTTP(S) probes, an access
/// log and an OTLP upstream; it loads every rule file, and every dashboard
/// query whose metrics that Steward exports returns data. Queries on
/// metrics not exported here (backups and drills need configured jobs) are
/// listed.
#[test]
fn prometheus_scraping_steward_gets_data_for_every_dashboard_query() {
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let dir = tempfile::tempdir().unwrap();
    let grafana = GrafanaApi::start().unwrap();
    grafana.add_token("t", Role::Editor);
    let fpm = PhpFpm::start().expect("start php-fpm");
    let nginx = Nginx::start_with_fpm(Some(&fpm.www_socket)).expect("start nginx");
    let db = Mariadb::start().expect("start mariadb");
    db.mysql(
        "CREATE USER 'steward'@'127.0.0.1' IDENTIFIED BY 'mon-pass'; \
         GRANT PROCESS, REPLICATION CLIENT, SLAVE MONITOR, SELECT ON *.* TO 'steward'@'127.0.0.1';",
    )
    .expect("create the monitoring user");
    let pg = Postgres::start().expect("start postgresql");
    // Redis as a Laravel app uses it: jobs ready, delayed and reserved in
    // two queues, and cache lookups that hit and miss.
    let redis = Redis::start().expect("start redis");
    for cmd in [
        &["RPUSH", "laravel_database_queues:default", "j1", "j2", "j3"][..],
        &[
            "ZADD",
            "laravel_database_queues:default:delayed",
            "4102444800",
            "j4",
        ],
        &[
            "ZADD",
            "laravel_database_queues:default:reserved",
            "4102444800",
            "j5",
        ],
        &["RPUSH", "laravel_database_queues:emails", "e1"],
        &["SET", "laravel_cache:page", "html"],
        &["GET", "laravel_cache:page"],
        &["GET", "laravel_cache:absent"],
    ] {
        redis.cli(cmd).expect("fill redis");
    }
    let sink = OtlpSink::start().expect("start the OTLP sink");
    let access = dir.path().join("access.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (access.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || write_access_log(path, stop))
    };
    std::fs::write(dir.path().join("mysql.pw"), "mon-pass\n").unwrap();
    std::fs::write(dir.path().join("pg.pw"), format!("{}\n", pg.password)).unwrap();
    let config = format!(
        r#"[node]
enabled = true
[grafana]
url = "{grafana}"
token = "t"
[[probe]]
name = "grafana-health"
url = "{grafana}/api/health"
[[probe]]
name = "shop-health"
url = "{tls_health}"
ca_file = "{ca}"
[[nginx]]
name = "web"
scrape_uri = "{stub}"
[[phpfpm]]
name = "www"
scrape_uri = "{fpm}"
[[mysql]]
name = "db"
host = "127.0.0.1"
port = {mysql_port}
user = "steward"
password_file = "{mysql_pw}"
[[postgres]]
name = "pg"
host = "127.0.0.1"
port = {pg_port}
user = "{pg_user}"
password_file = "{pg_pw}"
[[redis]]
name = "cache"
addr = "{redis}"
queues = ["default", "emails"]
prefix = "laravel_database_"
[telemetry]
poll_interval_ms = 100
[telemetry.exporter]
endpoint = "{otlp}"
batch_timeout_ms = 200
[telemetry.receiver]
enabled = false
[[telemetry.sources]]
name = "nginx"
paths = ["{access}"]
parser = "nginx_combined"
"#,
        grafana = grafana.url(),
        tls_health = nginx.tls_url("/health"),
        ca = nginx.ca_path.display(),
        stub = nginx.url("/stub_status"),
        fpm = fpm.www_scrape_uri(),
        mysql_port = db.port,
        mysql_pw = dir.path().join("mysql.pw").display(),
        pg_port = pg.port,
        pg_user = pg.superuser,
        pg_pw = dir.path().join("pg.pw").display(),
        redis = redis.url(),
        otlp = sink.grpc_endpoint(),
        access = access.display(),
    );
    phase("services started");
    let agent = StewardAgent::start(&config, "").expect("start steward");
    phase("steward started");
    let rule_files: Vec<PathBuf> = std::fs::read_dir(root().join("alerts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rules.yml"))
        .collect();
    let job = "steward-under-test";
    let prom = Prometheus::start(agent.port, job, &rule_files);

    phase("prometheus started");
    // Wait for a few scrapes so rate() over the interval has samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query(&format!("count_over_time(up{{job=\"{job}\"}}[1m])"));
        let n = up
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if n >= 6.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped Steward only {n} times in 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    phase("scraped");
    let up = prom.query(&format!("up{{job=\"{job}\"}}"));
    assert_eq!(
        up[0]["value"][1],
        "1",
        "Prometheus cannot scrape Steward: {up:?}\n{}",
        agent.log()
    );

    // Every rule file loaded and evaluated without error.
    let rules = prom.api("/api/v1/rules");
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), rule_files.len(), "{rules}");
    for g in groups {
        for r in g["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "rule {} : {}", r["name"], r["lastError"]);
        }
    }

    // What this Steward exports, by metric name (series as stored).
    let exported: BTreeSet<String> = prom.api(&format!(
        "/api/v1/label/__name__/values?match[]={}",
        encode(&format!("{{job=\"{job}\"}}"))
    ))["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    // The names the node/self/annotation queries rely on must be there.
    let listed = listed();
    let must: Vec<&String> = listed
        .keys()
        .filter(|n| {
            [
                "node_",
                "process_",
                "steward_build_info",
                "steward_scrape_collector_",
                "steward_grafana_",
                "probe_success",
                "probe_duration_seconds",
                "redis_",
                "steward_queue_jobs",
            ]
            .iter()
            .any(|p| n.starts_with(p))
                // Only a replica has a link to a master.
                && n.as_str() != "redis_master_link_up"
        })
        .collect();
    let absent: Vec<&&String> = must.iter().filter(|n| !exported.contains(**n)).collect();
    assert!(
        absent.is_empty(),
        "a running Steward does not export {absent:?}"
    );

    let mut checked = 0;
    let mut empty = Vec::new();
    let mut skipped = BTreeSet::new();
    for (what, expr) in dashboard_exprs() {
        let names = metric_names(&expr);
        if let Some(n) = names.iter().find(|n| !exported.contains(*n)) {
            skipped.insert(n.clone());
            continue;
        }
        if MAY_BE_EMPTY
            .iter()
            .any(|(p, _)| names.iter().any(|n| n.starts_with(p)))
        {
            continue;
        }
        let q = interpolate(&expr, job, "10s");
        checked += 1;
        let started = Instant::now();
        let result = prom.query(&q);
        if started.elapsed() > Duration::from_secs(2) {
            eprintln!("slow query ({:?}): {q}", started.elapsed());
        }
        if result.is_empty() {
            empty.push(format!("{what}: {q}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    assert!(checked >= 90, "only {checked} queries checked");
    eprintln!(
        "{checked} dashboard queries returned data; skipped those on metrics not exported by this agent: {skipped:?}"
    );
    // The variables' queries find this job and instance.
    let jobs = prom.api(&format!(
        "/api/v1/label/job/values?match[]={}",
        encode("node_uname_info")
    ));
    assert!(
        jobs["data"].as_array().unwrap().contains(&Value::from(job)),
        "{jobs}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = writer.join();
}
