//! The meminfo collector: every field of /proc/meminfo as a gauge, named
//! the way node_exporter names it.

use super::read::read_text;
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn meminfo(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(meminfo_from(&read_text(&s.proc_path("meminfo"))?))
}

/// One gauge per /proc/meminfo field: `Active(anon)` becomes
/// `node_memory_Active_anon_bytes`; fields without `kB` (HugePages_Total)
/// keep their count and get no `_bytes`.
pub(crate) fn meminfo_from(text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let mut name = String::with_capacity(key.len() + 20);
        name.push_str("node_memory_");
        for c in key.chars() {
            match c {
                '(' => name.push('_'),
                ')' => {}
                c => name.push(c),
            }
        }
        let (value, help) = if parts.next() == Some("kB") {
            name.push_str("_bytes");
            (value * 1024.0, "Memory information field, in bytes.")
        } else {
            (value, "Memory information field.")
        };
        out.push(MetricFamily::gauge(name, help).value(value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn meminfo_names_units_and_parentheses() {
        let fixture = "MemTotal:       24683656 kB\nActive(anon):       1604 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";
        let out = text(&meminfo_from(fixture));
        assert!(
            out.contains("node_memory_MemTotal_bytes 2.5276063744e+10\n"),
            "{out}"
        );
        assert!(out.contains("node_memory_Active_anon_bytes 1.642496e+06\n"));
        assert!(out.contains("node_memory_HugePages_Total 0\n"));
        assert!(out.contains("node_memory_Hugepagesize_bytes 2.097152e+06\n"));
        assert!(out.contains("# TYPE node_memory_MemTotal_bytes gauge"));
    }
}
