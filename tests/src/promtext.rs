//! Reading scrapes for side-by-side comparisons with the anchor exporters:
//! a parser of the text format 0.0.4, `promtool check metrics`, and a real
//! Prometheus server scraping a target.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, http_get, wait_for_http, ChildGuard};

/// A scrape parsed into families (type, help) and samples keyed by series.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    /// Family name -> `# TYPE` (untyped when absent).
    pub types: BTreeMap<String, String>,
    /// Series (name + sorted labels) -> value.
    pub samples: BTreeMap<Series, f64>,
}

/// One series: metric name and its labels sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Series {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Display for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.labels.is_empty() {
            let l: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            write!(f, "{{{}}}", l.join(","))?;
        }
        Ok(())
    }
}

impl Scrape {
    /// Parses text format 0.0.4; panics with the offending line on
    /// anything malformed, since a malformed scrape is a test failure.
    pub fn parse(text: &str) -> Scrape {
        let mut out = Scrape::default();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                out.types.insert(name.to_string(), kind.trim().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) =
                parse_sample(line).unwrap_or_else(|| panic!("malformed exposition line: {line:?}"));
            assert!(
                out.samples.insert(series.clone(), value).is_none(),
                "duplicate series {series}"
            );
        }
        out
    }

    /// The family a sample belongs to (histogram/summary suffixes folded).
    pub fn family_of(&self, name: &str) -> String {
        if self.types.contains_key(name) {
            return name.to_string();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if self.types.contains_key(base) {
                    return base.to_string();
                }
            }
        }
        name.to_string()
    }

    /// Family -> (type, set of label-name sets of its samples).
    pub fn shapes(&self) -> BTreeMap<String, (String, BTreeSet<Vec<String>>)> {
        let mut out: BTreeMap<String, (String, BTreeSet<Vec<String>>)> = BTreeMap::new();
        for series in self.samples.keys() {
            let family = self.family_of(&series.name);
            let kind = self
                .types
                .get(&family)
                .cloned()
                .unwrap_or_else(|| "untyped".into());
            let names: Vec<String> = series
                .labels
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| k != "le" && k != "quantile")
                .collect();
            out.entry(family)
                .or_insert_with(|| (kind, BTreeSet::new()))
                .1
                .insert(names);
        }
        out
    }

    /// Samples of one metric name.
    pub fn series_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Series, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(s, _)| s.name == name)
            .map(|(s, v)| (s, *v))
    }

    /// The value of an unlabelled metric.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples
            .get(&Series {
                name: name.to_string(),
                labels: Vec::new(),
            })
            .copied()
    }
}

fn parse_sample(line: &str) -> Option<(Series, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut s = after;
        loop {
            if let Some(r) = s.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = s.find('=')?;
            let key = s[..eq].to_string();
            s = s[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = s.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            s = &s[end + 1..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }
    let mut parts = rest.split_ascii_whitespace();
    let value = match parts.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    labels.sort();
    Some((Series { name, labels }, value))
}

/// Runs `promtool check metrics` on a scrape; returns its problem lines.
/// Fails when promtool is missing (CI installs the `prometheus` package).
pub fn promtool_problems(text: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot run promtool ({e}); install the Debian package `prometheus`")
        })?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("promtool stdin"))?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(all
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// A Prometheus server in a temp dir on a free port, scraping the given
/// `host:port` targets every second under job `steward`.
#[derive(Debug)]
pub struct Prometheus {
    pub guard: ChildGuard,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[String]) -> anyhow::Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: steward\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path: PathBuf = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let guard = ChildGuard::spawn("prometheus", &mut cmd)
            .map_err(|e| anyhow::anyhow!("{e}; install the Debian package `prometheus`"))?;
        let p = Prometheus { guard, port, dir };
        if let Err(e) = wait_for_http(port, "/-/ready", Duration::from_secs(60)) {
            anyhow::bail!("prometheus did not start: {e}\nlog:\n{}", p.log());
        }
        Ok(p)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path and parse the JSON.
    pub fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, _, body) = http_get(self.port, path, &[])?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}");
        Ok(serde_json::from_slice(&body)?)
    }

    /// Waits until every active target reports health "up"; returns the
    /// last `/api/v1/targets` answer on failure for the message.
    pub fn wait_targets_up(&self, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            if let Ok(v) = self.api("/api/v1/targets") {
                let active = v["data"]["activeTargets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !active.is_empty() && active.iter().all(|t| t["health"] == "up") {
                    return Ok(v);
                }
                last = v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        anyhow::bail!(
            "targets not up after {timeout:?}: {last}\nlog:\n{}",
            self.log()
        )
    }
}
