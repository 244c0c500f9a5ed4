//! The netdev collector: per-interface traffic and error counters of
//! /proc/net/dev, plus `rx_nohandler`, which only sysfs has.

use super::read::{num, read_attr, read_text};
use super::{NameFilter, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn netdev(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let text = read_text(&s.proc_path("net/dev"))?;
    let sys = s.sys_path("class/net");
    Ok(netdev_from(&text, &s.netdev_exclude, |dev| {
        // /proc/net/dev has no rx_nohandler; sysfs has it (netlink too).
        read_attr(&sys.join(dev).join("statistics/rx_nohandler")).map(|v| num(&v))
    }))
}

/// `node_network_{receive,transmit}_*_total{device}` from /proc/net/dev,
/// whose columns already sum the error kinds as node_exporter's netlink
/// path does.
pub(crate) fn netdev_from(
    text: &str,
    exclude: &NameFilter,
    nohandler: impl Fn(&str) -> Option<f64>,
) -> Vec<MetricFamily> {
    const NAMES: [&str; 16] = [
        "receive_bytes",
        "receive_packets",
        "receive_errs",
        "receive_drop",
        "receive_fifo",
        "receive_frame",
        "receive_compressed",
        "receive_multicast",
        "transmit_bytes",
        "transmit_packets",
        "transmit_errs",
        "transmit_drop",
        "transmit_fifo",
        "transmit_colls",
        "transmit_carrier",
        "transmit_compressed",
    ];
    let mut families: Vec<MetricFamily> = NAMES
        .iter()
        .map(|n| {
            MetricFamily::counter(
                format!("node_network_{n}_total"),
                format!("Network device statistic {n}."),
            )
        })
        .collect();
    let mut nohandler_family = MetricFamily::counter(
        "node_network_receive_nohandler_total",
        "Network device statistic receive_nohandler.",
    );
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        if exclude.is_match(dev) {
            continue;
        }
        for (family, v) in families.iter_mut().zip(rest.split_ascii_whitespace()) {
            family.push([("device", dev)], num(v));
        }
        if let Some(v) = nohandler(dev) {
            nohandler_family.push([("device", dev)], v);
        }
    }
    families.push(nohandler_family);
    families
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::{re, text};

    #[test]
    fn netdev_columns_and_exclusion() {
        let fixture = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0: 155566500    6071    1    2    3     4          5         6   293943    3282    7    8    9     10       11          12\n";
        let out = text(&netdev_from(fixture, &re("^lo$"), |d| {
            (d == "eth0").then_some(13.0)
        }));
        assert!(
            out.contains("node_network_receive_bytes_total{device=\"eth0\"} 1.555665e+08\n"),
            "{out}"
        );
        assert!(out.contains("node_network_receive_multicast_total{device=\"eth0\"} 6\n"));
        assert!(out.contains("node_network_transmit_colls_total{device=\"eth0\"} 10\n"));
        assert!(out.contains("node_network_transmit_compressed_total{device=\"eth0\"} 12\n"));
        assert!(out.contains("node_network_receive_nohandler_total{device=\"eth0\"} 13\n"));
        assert!(!out.contains("device=\"lo\""));
    }
}
