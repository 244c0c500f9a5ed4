//! The rapl collector: energy counters of the powercap (RAPL) zones,
//! named and indexed as node_exporter does.

use std::path::Path;

use super::read::{sorted_names, AttrDir};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn rapl(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    rapl_from(&s.sys_path("class/powercap"), s.rapl_zone_label)
}

/// node_exporter's metric-name sanitising: each run of characters outside
/// `[0-9A-Za-z_]`, with the underscores around it, becomes one `_`.
fn sanitize_metric_name(raw: &str) -> String {
    let b = raw.as_bytes();
    let valid = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip = |mut i: usize, pred: &dyn Fn(u8) -> bool| {
        while i < b.len() && pred(b[i]) {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        let after_underscores = skip(i, &|c| c == b'_');
        if after_underscores < b.len() && !valid(b[after_underscores]) {
            let after_invalid = skip(after_underscores, &|c| !valid(c));
            out.push('_');
            i = skip(after_invalid, &|c| c == b'_');
        } else if after_underscores > i {
            out.push_str(&raw[i..after_underscores]);
            i = after_underscores;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Energy counters of the powercap zones: `node_rapl_<zone>_joules_total
/// {index,path}` (or one `node_rapl_joules_total{index,path,rapl_zone}`
/// with `zone_label`). A zone named `package-1` is `package` with index 1;
/// zones repeating a name without a number are indexed in listing order.
pub(crate) fn rapl_from(dir: &Path, zone_label: bool) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = sorted_names(dir)? else {
        return Ok(Vec::new());
    };
    let mut uses: Vec<(String, i64)> = Vec::new();
    let mut families: Vec<MetricFamily> = Vec::new();
    for entry in &entries {
        let path = dir.join(entry);
        let Some(d) = AttrDir::open(&path) else {
            continue;
        };
        let Some(raw) = d.trimmed("name") else {
            continue;
        };
        // The range is not exported, but a zone without it is not a RAPL
        // energy zone node_exporter would report.
        if d.uint("max_energy_range_uj").is_none() {
            continue;
        }
        // Permission denied: energy_uj is root-only since CVE-2020-8694.
        let Some(uj) = d.uint("energy_uj") else {
            continue;
        };
        let numbered = raw
            .split_once('-')
            .filter(|(_, n)| !n.contains('-'))
            .and_then(|(base, n)| Some((base, n.parse::<i64>().ok()?)));
        let (name, index) = match numbered {
            Some((base, n)) => (base.to_string(), n),
            None => {
                let used = uses.iter().find(|(n, _)| *n == raw).map_or(0, |(_, c)| *c);
                (raw, used)
            }
        };
        match uses.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count = index + 1,
            None => uses.push((name.clone(), index + 1)),
        }
        let labels = [
            ("index", index.to_string()),
            ("path", path.to_string_lossy().into_owned()),
        ];
        let joules = uj as f64 / 1e6;
        if zone_label {
            if families.is_empty() {
                families.push(MetricFamily::counter(
                    "node_rapl_joules_total",
                    "Energy used by the RAPL zone, in joules.",
                ));
            }
            let mut l: Vec<(&'static str, String)> = labels.to_vec();
            l.push(("rapl_zone", name));
            families[0].push(l, joules);
        } else {
            families.push(
                MetricFamily::counter(
                    format!("node_rapl_{}_joules_total", sanitize_metric_name(&name)),
                    format!("Energy used by the RAPL {name} zone, in joules."),
                )
                .with(labels, joules),
            );
        }
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::{text_of, write};

    #[test]
    fn metric_names_are_sanitised_like_node_exporter() {
        assert_eq!(sanitize_metric_name("package"), "package");
        assert_eq!(sanitize_metric_name("a.b"), "a_b");
        assert_eq!(sanitize_metric_name("a_.-_b"), "a_b");
        assert_eq!(sanitize_metric_name("a__b"), "a__b");
        assert_eq!(sanitize_metric_name("x-"), "x_");
    }

    #[test]
    fn rapl_indexes_repeated_names_in_listing_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (zone, name, uj) in [
            ("intel-rapl:0", "package-0", "1500000"),
            ("intel-rapl:0:0", "core", "250000"),
            ("intel-rapl:1", "package-1", "3000000"),
            ("intel-rapl:1:0", "core", "500000"),
        ] {
            write(d, &format!("{zone}/name"), &format!("{name}\n"));
            write(d, &format!("{zone}/energy_uj"), &format!("{uj}\n"));
            write(d, &format!("{zone}/max_energy_range_uj"), "262143328850\n");
        }
        let out = text_of(rapl_from(d, false).unwrap());
        let p = d.display();
        assert!(
            out.contains(&format!(
                "node_rapl_package_joules_total{{index=\"1\",path=\"{p}/intel-rapl:1\"}} 3\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "node_rapl_core_joules_total{{index=\"1\",path=\"{p}/intel-rapl:1:0\"}} 0.5\n"
            )),
            "{out}"
        );
        let out = text_of(rapl_from(d, true).unwrap());
        assert!(out.contains(&format!("node_rapl_joules_total{{index=\"0\",path=\"{p}/intel-rapl:0:0\",rapl_zone=\"core\"}} 0.25\n")), "{out}");
    }
}
