//! The textfile collector: metrics other programs write as `*.prom` files
//! (a cron job's last success, a backup's age) added to the scrape, with a
//! small parser of the text exposition format. A bad file is reported by
//! `node_textfile_scrape_error`, never by failing the scrape.

use std::collections::BTreeMap;

use super::read::is_absent;
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::{MetricFamily, MetricType};

/// node_exporter's textfile collector: the metrics of `*.prom` files in a
/// directory, `node_textfile_mtime_seconds{file}` and
/// `node_textfile_scrape_error`.
pub(crate) fn textfile(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let dir = &s.textfile_directory;
    let mut families = Vec::new();
    let mut mtimes = MetricFamily::gauge(
        "node_textfile_mtime_seconds",
        "Unixtime mtime of textfiles successfully read.",
    );
    let mut problems: Vec<String> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "prom"))
                .collect();
            paths.sort();
            for path in paths {
                let parsed = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| parse_exposition(&text));
                match parsed {
                    Ok(mut f) => {
                        families.append(&mut f);
                        let mtime = std::fs::metadata(&path)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_secs() as f64)
                            .unwrap_or(0.0);
                        mtimes.push([("file", path.display().to_string())], mtime);
                    }
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                }
            }
        }
        // No directory: nothing to add, like node_exporter.
        Err(e) if is_absent(&e) => {}
        Err(e) => problems.push(format!("cannot read directory {}: {e}", dir.display())),
    }
    families.push(mtimes);
    families.push(gauge(
        "node_textfile_scrape_error",
        "1 if there was an error opening or reading a file, 0 otherwise",
        if problems.is_empty() { 0.0 } else { 1.0 },
    ));
    if !problems.is_empty() {
        tracing::warn!(problems = %problems.join("; "), "textfile collector skipped files");
    }
    // Like node_exporter, a bad file is reported by the error metric, not by
    // failing the collector.
    Ok(families)
}

/// A small parser of the text exposition format for textfile `*.prom`
/// files: `# HELP`, `# TYPE`, and `name{labels} value [timestamp]` lines.
pub(crate) fn parse_exposition(text: &str) -> Result<Vec<MetricFamily>, String> {
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut types: BTreeMap<String, MetricType> = BTreeMap::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    helps.insert(
                        name.to_string(),
                        help.unwrap_or("")
                            .replace("\\n", "\n")
                            .replace("\\\\", "\\"),
                    );
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = match kind.trim() {
                        "counter" => MetricType::Counter,
                        "gauge" => MetricType::Gauge,
                        "untyped" => MetricType::Untyped,
                        other => {
                            return Err(format!(
                                "line {}: type {other:?} is not supported in text files (use counter, gauge or untyped)",
                                lineno + 1
                            ))
                        }
                    };
                    types.insert(name.to_string(), kind);
                }
                _ => {}
            }
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line:?}", lineno + 1);
        let name_end = line.find(['{', ' ', '\t']).ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(bad("invalid metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (parsed, remaining) = parse_labels(after).ok_or_else(|| bad("malformed labels"))?;
            labels = parsed;
            rest = remaining;
        }
        let value_text = rest
            .split_ascii_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| bad("invalid value"))?,
        };
        let kind = types.get(name).copied().unwrap_or(MetricType::Untyped);
        let idx = match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                let help = helps
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("Metric read from a text file ({name})."));
                families.push(MetricFamily::new(name, help, kind));
                families.len() - 1
            }
        };
        families[idx].push_owned(labels, value);
    }
    Ok(families)
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Parses `a="x",b="y"}` (after the `{`); returns the labels and the text
/// after the `}`.
fn parse_labels(mut s: &str) -> Option<(crate::metrics::Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((std::borrow::Cow::Owned(key), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn exposition_parser_for_text_files() {
        let fixture = "# HELP backup_last_success_seconds Last good backup.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\",note=\"a \\\"q\\\"\"} 1.7e9\nplain_metric 3 1700000000000\n";
        let fams = parse_exposition(fixture).unwrap();
        let out = text(&fams);
        assert!(out.contains("# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\",note=\"a \\\"q\\\"\"} 1.7e+09\n"), "{out}");
        assert!(out.contains("# TYPE plain_metric untyped\nplain_metric 3\n"));
        assert!(parse_exposition("bad-name 1\n").is_err());
        assert!(parse_exposition("m{a=\"x\" 1\n").is_err());
        assert!(parse_exposition("m abc\n").is_err());
    }
}
