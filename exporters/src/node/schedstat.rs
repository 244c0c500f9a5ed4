//! The schedstat collector: per-CPU run and wait time of /proc/schedstat;
//! nothing on kernels built without CONFIG_SCHEDSTATS.

use super::read::read_optional;
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

/// /proc/schedstat is only there with CONFIG_SCHEDSTATS; nothing when not.
pub(crate) fn schedstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(match read_optional(&s.proc_path("schedstat"))? {
        Some(text) => schedstat_from(&text),
        None => Vec::new(),
    })
}

/// `node_schedstat_{running,waiting}_seconds_total{cpu}` and
/// `node_schedstat_timeslices_total{cpu}` from the `cpuN` lines of
/// /proc/schedstat, whose 7th to 9th numbers are the nanoseconds tasks ran
/// and waited on that CPU and the timeslices it ran (version 15 layout).
pub(crate) fn schedstat_from(text: &str) -> Vec<MetricFamily> {
    let mut running = MetricFamily::counter(
        "node_schedstat_running_seconds_total",
        "Seconds tasks ran on the CPU.",
    );
    let mut waiting = MetricFamily::counter(
        "node_schedstat_waiting_seconds_total",
        "Seconds runnable tasks waited for the CPU.",
    );
    let mut slices =
        MetricFamily::counter("node_schedstat_timeslices_total", "Timeslices the CPU ran.");
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(cpu) = words.next().and_then(|w| w.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut fields = [0u64; 9];
        let mut complete = true;
        for field in fields.iter_mut() {
            match words.next().and_then(|w| w.parse().ok()) {
                Some(v) => *field = v,
                None => complete = false,
            }
        }
        if !complete {
            continue;
        }
        running.push([("cpu", cpu)], fields[6] as f64 / 1e9);
        waiting.push([("cpu", cpu)], fields[7] as f64 / 1e9);
        slices.push([("cpu", cpu)], fields[8] as f64);
    }
    vec![running, waiting, slices]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn schedstat_cpu_lines() {
        let out = text(&schedstat_from(
            "version 15\ntimestamp 4297299139\ncpu0 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306\ndomain0 00000000,00000003 212499247 210112015 1861015 1860405436 536440 369895 32599 210079416 25368550 24241256 384652 927363878 807233 6366 1647 24375 0 0 0 0 0 0 0 0 0 2 0 0 0 0 1\ncpu1 0 0 0 0 0 0 1 2\n",
        ));
        assert!(
            out.contains("node_schedstat_running_seconds_total{cpu=\"0\"} 2.045936778163039e+06\n"),
            "{out}"
        );
        assert!(
            out.contains("node_schedstat_waiting_seconds_total{cpu=\"0\"} 343796.328169361\n"),
            "{out}"
        );
        assert!(
            out.contains("node_schedstat_timeslices_total{cpu=\"0\"} 4.767485306e+09\n"),
            "{out}"
        );
        assert!(!out.contains("cpu=\"1\""), "a short line is skipped: {out}");
    }
}
