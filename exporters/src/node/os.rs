//! The os collector: `node_os_info` and `node_os_version` from os-release,
//! read from /etc like node_exporter does (it is not under /proc).

use std::collections::BTreeMap;

use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn os(_s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    // os-release lives in /etc, not /proc: node_exporter reads it there too.
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(os_from(&text));
        }
    }
    Err(CollectError::failed(
        "cannot read /etc/os-release or /usr/lib/os-release",
    ))
}

/// Parses os-release (shell-like `KEY="value"` lines).
pub(crate) fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let value = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else {
            v.to_string()
        };
        out.insert(k.trim().to_string(), value);
    }
    out
}

pub(crate) fn os_from(text: &str) -> Vec<MetricFamily> {
    let kv = parse_os_release(text);
    let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
    let info = MetricFamily::gauge(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
    )
    .with(
        [
            ("build_id", get("BUILD_ID")),
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("image_id", get("IMAGE_ID")),
            ("image_version", get("IMAGE_VERSION")),
            ("name", get("NAME")),
            ("pretty_name", get("PRETTY_NAME")),
            ("variant", get("VARIANT")),
            ("variant_id", get("VARIANT_ID")),
            ("version", get("VERSION")),
            ("version_codename", get("VERSION_CODENAME")),
            ("version_id", get("VERSION_ID")),
        ],
        1.0,
    );
    // The leading number of VERSION_ID ("22.04", "12"): 0 when there is none.
    let vid = get("VERSION_ID");
    let end = vid
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*c == '.' && *i > 0)))
        .map(|(i, _)| i)
        .unwrap_or(vid.len());
    let mut numeric = &vid[..end];
    // Keep one dot at most ("1.2.3" -> "1.2").
    if let Some(second) = numeric.match_indices('.').nth(1).map(|(i, _)| i) {
        numeric = &numeric[..second];
    }
    let version = numeric.trim_end_matches('.').parse::<f64>().unwrap_or(0.0);
    let version_family = MetricFamily::gauge(
        "node_os_version",
        "Metric containing the major.minor part of the OS version.",
    )
    .with(
        [
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("name", get("NAME")),
        ],
        version,
    );
    vec![info, version_family]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn os_release_info_and_numeric_version() {
        let fixture = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\n";
        let out = text(&os_from(fixture));
        assert!(out.contains("node_os_info{build_id=\"\",id=\"debian\",id_like=\"\",image_id=\"\",image_version=\"\",name=\"Debian GNU/Linux\",pretty_name=\"Debian GNU/Linux 12 (bookworm)\",variant=\"\",variant_id=\"\",version=\"12 (bookworm)\",version_codename=\"bookworm\",version_id=\"12\"} 1\n"), "{out}");
        assert!(out.contains(
            "node_os_version{id=\"debian\",id_like=\"\",name=\"Debian GNU/Linux\"} 12\n"
        ));
        let out = text(&os_from("ID=ubuntu\nVERSION_ID=\"22.04\"\n"));
        assert!(out.contains("} 22.04\n"), "{out}");
        let out = text(&os_from("ID=arch\n"));
        assert!(
            out.contains("node_os_version{id=\"arch\",id_like=\"\",name=\"\"} 0\n"),
            "{out}"
        );
    }
}
