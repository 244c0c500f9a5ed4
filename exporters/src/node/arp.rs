//! The arp collector: ARP (neighbour) entries per interface, from
//! /proc/net/arp.

use std::collections::BTreeMap;

use super::read::read_text;
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn arp(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(arp_from(&read_text(&s.proc_path("net/arp"))?))
}

/// ARP entries per device.
pub(crate) fn arp_from(text: &str) -> Vec<MetricFamily> {
    let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
    for line in text.lines().skip(1) {
        if let Some(dev) = line.split_ascii_whitespace().nth(5) {
            *counts.entry(dev).or_default() += 1.0;
        }
    }
    let mut f = MetricFamily::gauge("node_arp_entries", "ARP entries by device");
    for (dev, n) in counts {
        f.push([("device", dev)], n);
    }
    vec![f]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn arp_entries_per_device() {
        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n192.0.2.1 0x1 0x2 02:fc:00:00:00:05 * eth0\n192.0.2.2 0x1 0x2 02:fc:00:00:00:06 * eth0\n10.0.0.1 0x1 0x2 02:fc:00:00:00:07 * eth1\n";
        let out = text(&arp_from(arp));
        assert!(out.contains("node_arp_entries{device=\"eth0\"} 2\n"));
        assert!(out.contains("node_arp_entries{device=\"eth1\"} 1\n"));
    }
}
