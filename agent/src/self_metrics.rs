//! Steward's own metrics: `process_*` as client_golang names them, and
//! `steward_build_info`.

use async_trait::async_trait;
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};

/// The git revision baked in at build time (see build.rs).
pub const REVISION: &str = env!("STEWARD_REVISION_OR_UNKNOWN");

/// `process_*` and `steward_build_info`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

#[async_trait]
impl Collector for ProcessCollector {
    fn name(&self) -> &str {
        "process"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let mut families = vec![MetricFamily::gauge(
            "steward_build_info",
            "A metric with a constant '1' value labeled by version and revision of steward.",
        )
        .with(
            [
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", REVISION),
            ],
            1.0,
        )];
        families.extend(process_families()?);
        Ok(families.into())
    }
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture Steward targets.
    100.0
}

fn page_size() -> f64 {
    4096.0
}

/// Reads /proc/self like client_golang's process collector.
fn process_families() -> Result<Vec<MetricFamily>, CollectError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| CollectError::failed("unexpected /proc/self/stat format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // Indexes are 0-based after the ')' (field 3, state, is index 0).
    let utime = field(11);
    let stime = field(12);
    let starttime = field(19);
    let vsize = field(20);
    let rss_pages = field(21);

    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("btime ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as f64)
        .unwrap_or(0.0);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<f64>().ok())
                })
        })
        .unwrap_or(0.0);

    Ok(vec![
        MetricFamily::counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )
        .value((utime + stime) / clock_ticks()),
        MetricFamily::gauge("process_open_fds", "Number of open file descriptors.").value(open_fds),
        MetricFamily::gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )
        .value(max_fds),
        MetricFamily::gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .value(rss_pages * page_size()),
        MetricFamily::gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )
        .value(vsize),
        MetricFamily::gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )
        .value(boot_time + starttime / clock_ticks()),
    ])
}
