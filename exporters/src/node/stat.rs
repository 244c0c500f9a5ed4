//! The cpu and stat collectors: both read /proc/stat, the kernel's
//! system-wide counters (CPU time per mode, context switches, forks,
//! interrupts, boot time), so they share a module and a fixture.

use super::read::{num, read_text};
use super::{counter, gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

/// USER_HZ: the unit of /proc/stat times on every Linux architecture.
const USER_HZ: f64 = 100.0;

pub(crate) fn cpu(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(cpu_from(&read_text(&s.proc_path("stat"))?))
}

/// `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total`
/// from the per-CPU lines of /proc/stat.
pub(crate) fn cpu_from(text: &str) -> Vec<MetricFamily> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut seconds = MetricFamily::counter(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    );
    let mut guest = MetricFamily::counter(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    );
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(id) = fields.next() else { continue };
        // The aggregate "cpu " line has no number.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let values: Vec<f64> = fields.map(|v| num(v) / USER_HZ).collect();
        for (mode, value) in MODES.iter().zip(values.iter()) {
            seconds.push([("cpu", id), ("mode", *mode)], *value);
        }
        if values.len() >= 10 {
            guest.push([("cpu", id), ("mode", "nice")], values[9]);
            guest.push([("cpu", id), ("mode", "user")], values[8]);
        }
    }
    vec![seconds, guest]
}

pub(crate) fn stat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(stat_from(&read_text(&s.proc_path("stat"))?))
}

/// Boot time, context switches, forks, interrupts and process states.
pub(crate) fn stat_from(text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(6);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let key = fields.next().unwrap_or("");
        let first = fields.next().map(num).unwrap_or(0.0);
        match key {
            "intr" => out.push(counter(
                "node_intr_total",
                "Total number of interrupts serviced.",
                first,
            )),
            "ctxt" => out.push(counter(
                "node_context_switches_total",
                "Total number of context switches.",
                first,
            )),
            "btime" => out.push(gauge(
                "node_boot_time_seconds",
                "Node boot time, in unixtime.",
                first,
            )),
            "processes" => out.push(counter("node_forks_total", "Total number of forks.", first)),
            "procs_running" => out.push(gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
                first,
            )),
            "procs_blocked" => out.push(gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                first,
            )),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn cpu_and_stat_from_proc_stat() {
        let fixture = "cpu  100 2 30 4000 5 0 6 7 0 0\n\
cpu0 9354 0 3004 46673 101 0 45 99 11 3\n\
cpu1 50 1 20 3000 2 0 3 4\n\
intr 342609 0 9 0\nctxt 484929\nbtime 1795459536\nprocesses 19334\nprocs_running 5\nprocs_blocked 1\nsoftirq 1 2 3\n";
        let out = text(&cpu_from(fixture));
        assert!(
            out.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 93.54\n"),
            "{out}"
        );
        assert!(out.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 466.73\n"));
        assert!(out.contains("node_cpu_seconds_total{cpu=\"1\",mode=\"steal\"} 0.04\n"));
        assert!(out.contains("node_cpu_guest_seconds_total{cpu=\"0\",mode=\"user\"} 0.11\n"));
        assert!(out.contains("node_cpu_guest_seconds_total{cpu=\"0\",mode=\"nice\"} 0.03\n"));
        assert!(!out.contains("cpu=\"\""));
        assert!(out.contains("# TYPE node_cpu_seconds_total counter"));
        let out = text(&stat_from(fixture));
        for want in [
            "node_boot_time_seconds 1.795459536e+09\n",
            "node_context_switches_total 484929\n",
            "node_forks_total 19334\n",
            "node_intr_total 342609\n",
            "node_procs_running 5\n",
            "node_procs_blocked 1\n",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
    }
}
