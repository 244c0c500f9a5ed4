//! The cpufreq collector: current, minimum and maximum CPU frequencies
//! from /sys/devices/system/cpu/cpuN/cpufreq; nothing without a cpufreq
//! driver (most VMs).

use std::path::Path;

use super::read::{is_absent, numbered, AttrDir};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn cpufreq(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    cpufreq_from(&s.sys_path("devices/system/cpu"))
}

/// `node_cpu_{,scaling_}frequency{,_min,_max}_hertz{cpu}` from each
/// `cpuN/cpufreq/*_freq` (kHz). CPUs without a cpufreq directory (no
/// driver, as in most VMs) and unreadable files are left out.
pub(crate) fn cpufreq_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    // (file, family, help)
    const FILES: [(&str, &str, &str); 6] = [
        (
            "cpuinfo_cur_freq",
            "node_cpu_frequency_hertz",
            "Current CPU thread frequency in hertz, as the hardware reports it.",
        ),
        (
            "cpuinfo_min_freq",
            "node_cpu_frequency_min_hertz",
            "Lowest CPU thread frequency the hardware supports, in hertz.",
        ),
        (
            "cpuinfo_max_freq",
            "node_cpu_frequency_max_hertz",
            "Highest CPU thread frequency the hardware supports, in hertz.",
        ),
        (
            "scaling_cur_freq",
            "node_cpu_scaling_frequency_hertz",
            "Current CPU thread frequency in hertz, as the cpufreq governor sees it.",
        ),
        (
            "scaling_min_freq",
            "node_cpu_scaling_frequency_min_hertz",
            "Lowest CPU thread frequency the cpufreq governor may choose, in hertz.",
        ),
        (
            "scaling_max_freq",
            "node_cpu_scaling_frequency_max_hertz",
            "Highest CPU thread frequency the cpufreq governor may choose, in hertz.",
        ),
    ];
    // Not `names`: this directory always exists and has a dozen entries
    // that are not CPUs, so only `cpuN` names are kept, unsorted (series
    // order does not matter), and a host without cpufreq pays one listing
    // and one failed open per CPU.
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => {
            return Err(CollectError::failed(format!(
                "cannot list {}: {e}",
                dir.display()
            )))
        }
    };
    let mut families: Option<Vec<MetricFamily>> = None;
    let mut path = dir.to_path_buf();
    for entry in listing.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(cpu) = name.to_str().and_then(|n| numbered(n, "cpu")) else {
            continue;
        };
        path.push(&name);
        path.push("cpufreq");
        let d = AttrDir::open(&path);
        path.pop();
        path.pop();
        let Some(d) = d else { continue };
        let families = families.get_or_insert_with(|| {
            FILES
                .iter()
                .map(|(_, family, help)| MetricFamily::gauge(*family, *help))
                .collect()
        });
        for ((file, ..), family) in FILES.iter().zip(families.iter_mut()) {
            if let Some(khz) = d.uint(file) {
                family.push([("cpu", cpu)], khz as f64 * 1000.0);
            }
        }
    }
    Ok(families.unwrap_or_default())
}
