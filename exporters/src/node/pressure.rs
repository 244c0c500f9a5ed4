//! The pressure collector: pressure stall information (PSI) totals of
//! /proc/pressure/{cpu,io,memory}; nothing on kernels without PSI.

use super::read::{num, read_optional};
use super::{counter, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn pressure(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let mut out = Vec::with_capacity(5);
    for resource in ["cpu", "io", "memory"] {
        let path = s.proc_path(&format!("pressure/{resource}"));
        match read_optional(&path)? {
            Some(text) => out.extend(pressure_from(resource, &text)),
            // No PSI in this kernel: nothing to export.
            None if resource == "cpu" => return Ok(Vec::new()),
            None => {}
        }
    }
    Ok(out)
}

/// `some ... total=<usec>` / `full ... total=<usec>` of one resource.
pub(crate) fn pressure_from(resource: &str, text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(2);
    for line in text.lines() {
        let kind = line.split_ascii_whitespace().next().unwrap_or("");
        let total = line
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("total="))
            .map(|v| num(v) / 1e6);
        let Some(total) = total else { continue };
        let (suffix, help) = match (resource, kind) {
            ("cpu", "some") => (
                "waiting",
                "Total time in seconds that processes have waited for CPU time",
            ),
            ("io", "some") => (
                "waiting",
                "Total time in seconds that processes have waited due to IO congestion",
            ),
            ("io", "full") => (
                "stalled",
                "Total time in seconds no process could make progress due to IO congestion",
            ),
            ("memory", "some") => (
                "waiting",
                "Total time in seconds that processes have waited for memory",
            ),
            ("memory", "full") => (
                "stalled",
                "Total time in seconds no process could make progress due to memory congestion",
            ),
            _ => continue,
        };
        out.push(counter(
            &format!("node_pressure_{resource}_{suffix}_seconds_total"),
            help,
            total,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn pressure_waiting_and_stalled_totals() {
        let out = text(&pressure_from(
            "io",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=6615232\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=6081294\n",
        ));
        assert!(
            out.contains("node_pressure_io_waiting_seconds_total 6.615232\n"),
            "{out}"
        );
        assert!(out.contains("node_pressure_io_stalled_seconds_total 6.081294\n"));
        let out = text(&pressure_from(
            "cpu",
            "some avg10=1 total=18604155\nfull avg10=0 total=5\n",
        ));
        assert!(out.contains("node_pressure_cpu_waiting_seconds_total 18.604155\n"));
        assert!(
            !out.contains("cpu_stalled"),
            "node_exporter 1.5 has no cpu full"
        );
    }
}
