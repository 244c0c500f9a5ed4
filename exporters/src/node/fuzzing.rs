//! The node collectors' text parsers (`/proc` files and textfile `*.prom`
//! files) behind one name-keyed entry point, for the fuzz targets and the
//! seed regression test; the collectors themselves read files first.

use std::collections::BTreeMap;

use super::config::{DEFAULT_DISK_DEVICE_EXCLUDE, DEFAULT_NETDEV_DEVICE_EXCLUDE};
use super::{
    arp, conntrack, diskstats, filefd, loadavg, mdadm, meminfo, netdev, netstat, nfs, os, pressure,
    schedstat, sockstat, softnet, stat, textfile, udp_queues, vmstat, NameFilter,
};
use crate::metrics::MetricFamily;

/// A filter every name passes: the fuzzer should reach every field.
fn every_name() -> NameFilter {
    filter("")
}

fn filter(pattern: &str) -> NameFilter {
    // Only this file's constants come here, and config tests compile them.
    NameFilter::new(pattern).expect("a built-in name pattern compiles")
}

/// Runs the parser of `source` over `text`; `None` for an unknown source.
/// Errors are results like any other here: only a panic is a finding.
pub(crate) fn parse(source: &str, text: &str) -> Option<Vec<MetricFamily>> {
    let mut out = Vec::new();
    match source {
        "arp" => out = arp::arp_from(text),
        "conntrack" => out = conntrack::conntrack_stat_from(text),
        "cpu" => out = stat::cpu_from(text),
        "diskstats" => {
            let exclude = filter(DEFAULT_DISK_DEVICE_EXCLUDE);
            out = diskstats::diskstats_from(text, &exclude, |_, _| BTreeMap::new());
        }
        "filefd" => out = filefd::filefd_from(text).unwrap_or_default(),
        "loadavg" => out = loadavg::loadavg_from(text).unwrap_or_default(),
        "mdstat" => out = mdadm::mdstat_from(text),
        "meminfo" => out = meminfo::meminfo_from(text),
        "netdev" => {
            let exclude = filter(DEFAULT_NETDEV_DEVICE_EXCLUDE);
            out = netdev::netdev_from(text, &exclude, |_| Some(1.0));
        }
        "netstat" => netstat::netstat_pairs_from(text, &every_name(), &mut out),
        "nfs" => out = nfs::nfs_from(text),
        "os" => out = os::os_from(text),
        "pressure" => out = pressure::pressure_from("cpu", text),
        "schedstat" => out = schedstat::schedstat_from(text),
        "sockstat" => sockstat::sockstat_from(text, 4096.0, &mut out),
        "softnet" => out = softnet::softnet_from(text),
        "stat" => out = stat::stat_from(text),
        "textfile" => out = textfile::parse_exposition(text).unwrap_or_default(),
        "udp_queues" => {
            // Two sums; as a family so a seed's result shows.
            let (tx, rx) = udp_queues::udp_queues_from(text);
            let mut queues = MetricFamily::gauge("node_udp_queues", "Queued bytes.");
            queues
                .push([("queue", "tx")], tx)
                .push([("queue", "rx")], rx);
            out.push(queues);
        }
        "vmstat" => out = vmstat::vmstat_from(text, &every_name()),
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names `parse` knows.
    const SOURCES: [&str; 20] = [
        "arp",
        "conntrack",
        "cpu",
        "diskstats",
        "filefd",
        "loadavg",
        "mdstat",
        "meminfo",
        "netdev",
        "netstat",
        "nfs",
        "os",
        "pressure",
        "schedstat",
        "sockstat",
        "softnet",
        "stat",
        "textfile",
        "udp_queues",
        "vmstat",
    ];

    #[test]
    fn every_listed_source_has_a_parser() {
        for source in SOURCES {
            assert!(parse(source, "").is_some(), "{source}");
        }
        assert!(parse("no-such-file", "").is_none());
    }
}
