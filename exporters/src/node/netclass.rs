//! The netclass collector: interface attributes of /sys/class/net
//! (speed, MTU, carrier, addresses...), most of them from one rtnetlink dump
//! instead of a dozen sysfs files per interface.

use std::path::Path;

use super::read::AttrDir;
use super::{NameFilter, Settings};
use crate::collector::CollectError;
use crate::metrics::{MetricFamily, MetricType};

/// Parses a sysfs number, decimal or `0x` hex.
fn sys_num(v: &str) -> Option<f64> {
    match v.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok().map(|n| n as f64),
        None => v.parse::<i64>().ok().map(|n| n as f64),
    }
}

pub(crate) fn netclass(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    // rtnetlink answers for this process's network namespace, sysfs for the
    // one it was mounted in: the dump is only used with the host's own
    // /sys, and only when it lists the same interfaces (netclass_from).
    let links = if s.sys == Path::new("/sys") {
        super::rtnetlink::links()
            .map_err(|e| tracing::debug!(error = %e, "rtnetlink dump failed; reading sysfs only"))
            .ok()
    } else {
        None
    };
    netclass_from(&s.sys_path("class/net"), &s.netclass_ignored, links)
}

/// `node_network_*{device}` gauges and counters from the attribute files of
/// /sys/class/net/<iface>. An attribute the kernel refuses to read (a down
/// interface answers EINVAL for `carrier`) is left out, as node_exporter does.
///
/// `links` (an rtnetlink dump) supplies the attributes link messages carry
/// with the text sysfs would print, so only six files per interface are
/// read (flags, speed, duplex, dev_id, addr_assign_type, name_assign_type);
/// it is ignored unless it names exactly the interfaces of `dir`.
pub(crate) fn netclass_from(
    dir: &Path,
    ignored: &NameFilter,
    links: Option<Vec<super::rtnetlink::Link>>,
) -> Result<Vec<MetricFamily>, CollectError> {
    // (attribute file, family suffix, type)
    const NUMERIC: [(&str, &str, MetricType); 16] = [
        ("addr_assign_type", "address_assign_type", MetricType::Gauge),
        ("carrier", "carrier", MetricType::Gauge),
        (
            "carrier_changes",
            "carrier_changes_total",
            MetricType::Counter,
        ),
        (
            "carrier_up_count",
            "carrier_up_changes_total",
            MetricType::Counter,
        ),
        (
            "carrier_down_count",
            "carrier_down_changes_total",
            MetricType::Counter,
        ),
        ("dev_id", "device_id", MetricType::Gauge),
        ("dormant", "dormant", MetricType::Gauge),
        ("flags", "flags", MetricType::Gauge),
        ("ifindex", "iface_id", MetricType::Gauge),
        ("iflink", "iface_link", MetricType::Gauge),
        ("link_mode", "iface_link_mode", MetricType::Gauge),
        ("mtu", "mtu_bytes", MetricType::Gauge),
        ("name_assign_type", "name_assign_type", MetricType::Gauge),
        ("netdev_group", "net_dev_group", MetricType::Gauge),
        ("tx_queue_len", "transmit_queue_length", MetricType::Gauge),
        ("type", "protocol_type", MetricType::Gauge),
    ];
    let cannot_list =
        |e: std::io::Error| CollectError::failed(format!("cannot list {}: {e}", dir.display()));
    // (name, path, is a symlink): interfaces are the symlinks of class/net
    // (`bonding_masters` is a file); the type comes with the listing.
    let mut entries: Vec<(String, std::path::PathBuf, bool)> = std::fs::read_dir(dir)
        .map_err(cannot_list)?
        .filter_map(Result::ok)
        .map(|e| {
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
                is_link,
            )
        })
        .collect();
    entries.sort();
    let mut families: Vec<MetricFamily> = NUMERIC
        .iter()
        .map(|(attr, suffix, kind)| {
            MetricFamily::new(
                format!("node_network_{suffix}"),
                format!("Network device property {attr} from /sys/class/net/<iface>/{attr}."),
                *kind,
            )
        })
        .collect();
    let mut up = MetricFamily::gauge(
        "node_network_up",
        "Value is 1 if operstate is 'up', 0 otherwise.",
    );
    let mut info = MetricFamily::gauge(
        "node_network_info",
        "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
    );
    let mut speed = MetricFamily::gauge(
        "node_network_speed_bytes",
        "Network device link speed in bytes per second (-125000 when unknown).",
    );
    let links: std::collections::HashMap<String, super::rtnetlink::Link> = links
        .map(|links| links.into_iter().map(|l| (l.name.clone(), l)).collect())
        .unwrap_or_default();
    let same_interfaces = !links.is_empty()
        && links.len() == entries.iter().filter(|(.., is_link)| *is_link).count()
        && entries
            .iter()
            .all(|(n, _, is_link)| !is_link || links.contains_key(n));
    for (name, path, _) in entries {
        if ignored.is_match(&name) {
            continue;
        }
        let Some(dir) = AttrDir::open(&path) else {
            continue;
        };
        let link = links.get(&name).filter(|_| same_interfaces);
        if link.is_none() && !dir.has("ifindex") {
            continue;
        }
        let attr = |a: &str| match link.and_then(|l| l.sysfs_attr(a)) {
            Some(value) => value,
            None => dir.attr(a),
        };
        let operstate = attr("operstate").unwrap_or_default();
        up.push(
            [("device", name.as_str())],
            if operstate == "up" { 1.0 } else { 0.0 },
        );
        info.push(
            [
                ("address", attr("address").unwrap_or_default()),
                ("broadcast", attr("broadcast").unwrap_or_default()),
                ("device", name.clone()),
                ("duplex", attr("duplex").unwrap_or_default()),
                ("ifalias", attr("ifalias").unwrap_or_default()),
                ("operstate", operstate),
            ],
            1.0,
        );
        for ((file, ..), family) in NUMERIC.iter().zip(families.iter_mut()) {
            if let Some(v) = attr(file).as_deref().and_then(sys_num) {
                family.push([("device", name.as_str())], v);
            }
        }
        if let Some(mbps) = attr("speed").as_deref().and_then(sys_num) {
            speed.push(
                [("device", name.as_str())],
                (mbps * 1000.0 * 1000.0 / 8.0).trunc(),
            );
        }
    }
    families.push(up);
    families.push(info);
    families.push(speed);
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::encode;
    use crate::node::test_support::write_file;

    #[test]
    fn netclass_reads_attributes_and_skips_unreadable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let eth0 = dir.path().join("eth0");
        for (f, v) in [
            ("ifindex", "4\n"),
            ("iflink", "4\n"),
            ("operstate", "up\n"),
            ("address", "02:fc:00:00:00:01\n"),
            ("broadcast", "ff:ff:ff:ff:ff:ff\n"),
            ("duplex", "unknown\n"),
            ("ifalias", "\n"),
            ("carrier", "1\n"),
            ("carrier_changes", "2\n"),
            ("flags", "0x1003\n"),
            ("dev_id", "0x0\n"),
            ("mtu", "1400\n"),
            ("speed", "-1\n"),
            ("tx_queue_len", "1000\n"),
            ("type", "1\n"),
        ] {
            write_file(&eth0.join(f), v);
        }
        let ifb = dir.path().join("ifb0");
        write_file(&ifb.join("ifindex"), "2\n");
        write_file(&ifb.join("operstate"), "down\n");
        write_file(&dir.path().join("bonding_masters"), "\n");
        let families = netclass_from(
            dir.path(),
            &crate::node::NameFilter::new("^$").unwrap(),
            None,
        )
        .unwrap();
        let out = encode(&crate::scrape::merge_families(families));
        assert!(
            out.contains("node_network_up{device=\"eth0\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("node_network_up{device=\"ifb0\"} 0\n"));
        assert!(out.contains("node_network_info{address=\"02:fc:00:00:00:01\",broadcast=\"ff:ff:ff:ff:ff:ff\",device=\"eth0\",duplex=\"unknown\",ifalias=\"\",operstate=\"up\"} 1\n"));
        assert!(out.contains("node_network_flags{device=\"eth0\"} 4099\n"));
        assert!(out.contains("node_network_device_id{device=\"eth0\"} 0\n"));
        assert!(out.contains("node_network_speed_bytes{device=\"eth0\"} -125000\n"));
        assert!(out.contains("node_network_mtu_bytes{device=\"eth0\"} 1400\n"));
        assert!(out.contains("# TYPE node_network_carrier_changes_total counter\n"));
        assert!(!out.contains("node_network_carrier{device=\"ifb0\"}"));
        assert!(!out.contains("bonding_masters"));
    }
}
