//! The softnet collector: per-CPU packet processing counters of
//! /proc/net/softnet_stat (processed, dropped, out of quota).

use super::read::{hex, read_text};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn softnet(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(softnet_from(&read_text(&s.proc_path("net/softnet_stat"))?))
}

/// /proc/net/softnet_stat: one hex line per CPU.
pub(crate) fn softnet_from(text: &str) -> Vec<MetricFamily> {
    let mut processed = MetricFamily::counter(
        "node_softnet_processed_total",
        "Number of processed packets.",
    );
    let mut dropped =
        MetricFamily::counter("node_softnet_dropped_total", "Number of dropped packets.");
    let mut squeezed = MetricFamily::counter(
        "node_softnet_times_squeezed_total",
        "Number of times processing packets ran out of quota.",
    );
    for (cpu, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let cpu = cpu.to_string();
        processed.push([("cpu", cpu.as_str())], hex(f[0]));
        dropped.push([("cpu", cpu.as_str())], hex(f[1]));
        squeezed.push([("cpu", cpu.as_str())], hex(f[2]));
    }
    vec![dropped, processed, squeezed]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn softnet_hex_columns_per_cpu() {
        let out = text(&softnet_from(
            "0000006e 00000001 00000002 0 0\n000017dd 00000000 00000000 0 0\n",
        ));
        assert!(
            out.contains("node_softnet_processed_total{cpu=\"0\"} 110\n"),
            "{out}"
        );
        assert!(out.contains("node_softnet_processed_total{cpu=\"1\"} 6109\n"));
        assert!(out.contains("node_softnet_dropped_total{cpu=\"0\"} 1\n"));
        assert!(out.contains("node_softnet_times_squeezed_total{cpu=\"0\"} 2\n"));
    }
}
