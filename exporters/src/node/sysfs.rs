//! Collectors that walk /sys: network interface attributes (netclass),
//! hardware sensors (hwmon) and SELinux state. They take the sysfs root as a
//! path so the tests run them on a fixture tree.

use std::collections::BTreeMap;
use std::path::Path;

use super::{gauge, is_absent, read_attr, AttrDir, Settings};
use crate::collector::CollectError;
use crate::metrics::{MetricFamily, MetricType};

fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut entries: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Parses a sysfs number, decimal or `0x` hex.
fn sys_num(v: &str) -> Option<f64> {
    match v.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok().map(|n| n as f64),
        None => v.parse::<i64>().ok().map(|n| n as f64),
    }
}

// ---------------------------------------------------------------- netclass

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
    ignored: &super::NameFilter,
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

// ------------------------------------------------------------------ hwmon

pub(crate) fn hwmon(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    hwmon_from(&s.sys_path("class/hwmon"))
}

/// node_exporter's metric-name cleaning: lower case, `[^a-z0-9:_]` -> `_`.
fn clean_name(raw: &str) -> String {
    raw.trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// Splits `temp1_input` into (`temp`, `1`, `input`); `None` for files that
/// are not sensor attributes.
fn explode_sensor_file(name: &str) -> Option<(&str, &str, &str)> {
    // node_exporter's `^([^0-9]+)([0-9]*)?(_(.+))?$`: a name without digits
    // is all type (`beep_enable`, `update_interval`).
    let type_end = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    if type_end == 0 {
        return None;
    }
    let (kind, rest) = name.split_at(type_end);
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (num, rest) = rest.split_at(digits_end);
    let property = match rest {
        "" => "",
        r => r.strip_prefix('_').filter(|p| !p.is_empty())?,
    };
    Some((kind, num, property))
}

const SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// The chip label: `<bus>_<device>` from the `device` link (stable across
/// module load order), else the `name` file, else `hwmonN`.
fn chip_name(dir: &Path) -> Option<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let dev = device.file_name().map(|n| clean_name(&n.to_string_lossy()));
        let bus = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()));
        match (bus, dev) {
            (Some(b), Some(d)) if !b.is_empty() && !d.is_empty() => {
                return Some(format!("{b}_{d}"))
            }
            (_, Some(d)) if !d.is_empty() => return Some(d),
            _ => {}
        }
    }
    if let Some(name) = read_attr(&dir.join("name")).map(|n| clean_name(&n)) {
        if !name.is_empty() {
            return Some(name);
        }
    }
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| clean_name(&n.to_string_lossy())))
        .filter(|n| !n.is_empty())
}

pub(crate) fn hwmon_from(root: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let entries = match read_dir_sorted(root) {
        Ok(e) => e,
        // No sensors exposed (VMs, containers): nothing to export.
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => {
            return Err(CollectError::failed(format!(
                "cannot list {}: {e}",
                root.display()
            )))
        }
    };
    // Families by name, created on first use.
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut add =
        |name: String, help: String, kind: MetricType, labels: crate::metrics::Labels, v: f64| {
            families
                .entry(name.clone())
                .or_insert_with(|| MetricFamily::new(name, help, kind))
                .push_owned(labels, v);
        };
    for (_, dir) in entries {
        if !dir.is_dir() {
            continue;
        }
        let Some(chip) = chip_name(&dir) else {
            continue;
        };
        // sensor -> property -> raw value
        let mut sensors: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for sub in [dir.clone(), dir.join("device")] {
            let Ok(files) = read_dir_sorted(&sub) else {
                continue;
            };
            for (file, path) in files {
                let Some((kind, num, prop)) = explode_sensor_file(&file) else {
                    continue;
                };
                if !SENSOR_TYPES.contains(&kind) || path.is_dir() {
                    continue;
                }
                if let Some(v) = read_attr(&path) {
                    sensors
                        .entry(format!("{kind}{}", num.parse::<u64>().unwrap_or(0)))
                        .or_default()
                        .insert(prop.to_string(), v);
                }
            }
        }
        if let Some(human) = read_attr(&dir.join("name")).map(|n| clean_name(&n)) {
            if !human.is_empty() {
                add(
                    "node_hwmon_chip_names".into(),
                    "Annotation metric for human-readable chip names".into(),
                    MetricType::Gauge,
                    vec![("chip".into(), chip.clone()), ("chip_name".into(), human)],
                    1.0,
                );
            }
        }
        for (sensor, props) in &sensors {
            let kind = explode_sensor_file(sensor).map(|(k, ..)| k).unwrap_or("");
            let labels = || -> crate::metrics::Labels {
                vec![
                    ("chip".into(), chip.clone()),
                    ("sensor".into(), sensor.clone()),
                ]
            };
            if let Some(label) = props.get("label") {
                let mut l = labels();
                l.push(("label".into(), label.clone()));
                add(
                    "node_hwmon_sensor_label".into(),
                    "Label for given chip and sensor".into(),
                    MetricType::Gauge,
                    l,
                    1.0,
                );
            }
            let single = props.get("").and_then(|v| v.parse::<f64>().ok());
            match kind {
                "beep_enable" => {
                    let on = if props.get("").map(String::as_str) == Some("1") {
                        1.0
                    } else {
                        0.0
                    };
                    add(
                        "node_hwmon_beep_enabled".into(),
                        "Hardware beep enabled".into(),
                        MetricType::Gauge,
                        labels(),
                        on,
                    );
                    continue;
                }
                "vrm" => {
                    if let Some(v) = single {
                        add(
                            "node_hwmon_voltage_regulator_version".into(),
                            "Hardware voltage regulator".into(),
                            MetricType::Gauge,
                            labels(),
                            v,
                        );
                    }
                    continue;
                }
                "update_interval" => {
                    if let Some(v) = single {
                        add(
                            "node_hwmon_update_interval_seconds".into(),
                            "Hardware monitor update interval".into(),
                            MetricType::Gauge,
                            labels(),
                            v * 0.001,
                        );
                    }
                    continue;
                }
                _ => {}
            }
            let prefix = format!("node_hwmon_{kind}");
            for (element, raw) in props {
                if element == "label" {
                    continue;
                }
                let Ok(v) = raw.parse::<f64>() else { continue };
                let mut name = prefix.clone();
                if element == "input" {
                    if props.contains_key("") {
                        name.push_str("_input");
                    }
                } else if !element.is_empty() {
                    name.push('_');
                    name.push_str(&clean_name(element));
                }
                let el = if element.is_empty() {
                    "input"
                } else {
                    element.as_str()
                };
                let (name, help, kind_, value) = match (kind, element.as_str()) {
                    (_, "fault") | (_, "alarm") => (
                        name,
                        format!("Hardware sensor {element} status ({kind})"),
                        MetricType::Gauge,
                        v,
                    ),
                    (_, "beep") => (
                        format!("{name}_enabled"),
                        "Hardware monitor sensor has beeping enabled".into(),
                        MetricType::Gauge,
                        v,
                    ),
                    ("in", _) | ("cpu", _) => (
                        format!("{name}_volts"),
                        format!("Hardware monitor for voltage ({element})"),
                        MetricType::Gauge,
                        v * 0.001,
                    ),
                    ("temp", e) if e != "type" => (
                        format!("{name}_celsius"),
                        format!("Hardware monitor for temperature ({el})"),
                        MetricType::Gauge,
                        v * 0.001,
                    ),
                    ("curr", _) => (
                        format!("{name}_amps"),
                        format!("Hardware monitor for current ({element})"),
                        MetricType::Gauge,
                        v * 0.001,
                    ),
                    ("energy", _) => (
                        format!("{name}_joule_total"),
                        format!("Hardware monitor for joules used so far ({element})"),
                        MetricType::Counter,
                        v / 1e6,
                    ),
                    ("power", "accuracy") => (
                        name,
                        "Hardware monitor power meter accuracy, as a ratio".into(),
                        MetricType::Gauge,
                        v / 1e6,
                    ),
                    (
                        "power",
                        "average_interval" | "average_interval_min" | "average_interval_max",
                    ) => (
                        format!("{name}_seconds"),
                        format!("Hardware monitor power usage update interval ({element})"),
                        MetricType::Gauge,
                        v * 0.001,
                    ),
                    ("power", _) => (
                        format!("{name}_watt"),
                        format!("Hardware monitor for power usage in watts ({element})"),
                        MetricType::Gauge,
                        v / 1e6,
                    ),
                    ("humidity", _) => (
                        name,
                        format!("Hardware monitor for humidity, as a ratio ({element})"),
                        MetricType::Gauge,
                        v / 1e6,
                    ),
                    ("fan", "input" | "min" | "max" | "target") => (
                        format!("{name}_rpm"),
                        format!("Hardware monitor for fan revolutions per minute ({element})"),
                        MetricType::Gauge,
                        v,
                    ),
                    _ => (
                        name,
                        format!("Hardware monitor {kind} element {element}"),
                        MetricType::Gauge,
                        v,
                    ),
                };
                add(name, help, kind_, labels(), value);
            }
        }
    }
    Ok(families.into_values().collect())
}

// ---------------------------------------------------------------- selinux

pub(crate) fn selinux(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let enforce = read_attr(&s.sys_path("fs/selinux/enforce"));
    let Some(enforce) = enforce else {
        return Ok(vec![gauge(
            "node_selinux_enabled",
            "SELinux is enabled, 1 is true, 0 is false",
            0.0,
        )]);
    };
    // The configured mode is in /etc/selinux/config (SELINUX=...).
    let config_mode = std::fs::read_to_string("/etc/selinux/config")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.trim()
                    .strip_prefix("SELINUX=")
                    .map(|v| v.trim().to_string())
            })
        })
        .map(|m| match m.as_str() {
            "enforcing" => 1.0,
            "permissive" => 0.0,
            _ => -1.0,
        })
        .unwrap_or(-1.0);
    Ok(vec![
        gauge(
            "node_selinux_enabled",
            "SELinux is enabled, 1 is true, 0 is false",
            1.0,
        ),
        gauge(
            "node_selinux_current_mode",
            "SELinux is in enforcing mode, 1 is true, 0 is false",
            if enforce == "1" { 1.0 } else { 0.0 },
        ),
        gauge(
            "node_selinux_config_mode",
            "Configured SELinux enforcement mode (1 enforcing, 0 permissive, -1 disabled)",
            config_mode,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::encode;
    use std::fs;

    fn write(p: &Path, content: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

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
            write(&eth0.join(f), v);
        }
        let ifb = dir.path().join("ifb0");
        write(&ifb.join("ifindex"), "2\n");
        write(&ifb.join("operstate"), "down\n");
        write(&dir.path().join("bonding_masters"), "\n");
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

    #[test]
    fn hwmon_names_units_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("hwmon0");
        write(&h.join("name"), "coretemp\n");
        write(&h.join("temp1_input"), "45000\n");
        write(&h.join("temp1_crit"), "100000\n");
        write(&h.join("temp1_label"), "Package id 0\n");
        write(&h.join("temp1_crit_alarm"), "0\n");
        write(&h.join("fan2_input"), "1200\n");
        write(&h.join("in0_input"), "1100\n");
        write(&h.join("power1_average"), "15000000\n");
        write(&h.join("uevent"), "\n");
        let out = encode(&crate::scrape::merge_families(
            hwmon_from(dir.path()).unwrap(),
        ));
        assert!(
            out.contains("node_hwmon_temp_celsius{chip=\"coretemp\",sensor=\"temp1\"} 45\n"),
            "{out}"
        );
        assert!(
            out.contains("node_hwmon_temp_crit_celsius{chip=\"coretemp\",sensor=\"temp1\"} 100\n")
        );
        assert!(out.contains(
            "node_hwmon_temp_crit_alarm_celsius{chip=\"coretemp\",sensor=\"temp1\"} 0\n"
        ));
        assert!(out.contains("node_hwmon_sensor_label{chip=\"coretemp\",label=\"Package id 0\",sensor=\"temp1\"} 1\n") || out.contains("node_hwmon_sensor_label{chip=\"coretemp\",sensor=\"temp1\",label=\"Package id 0\"} 1\n"));
        assert!(out.contains("node_hwmon_fan_rpm{chip=\"coretemp\",sensor=\"fan2\"} 1200\n"));
        assert!(out.contains("node_hwmon_in_volts{chip=\"coretemp\",sensor=\"in0\"} 1.1\n"));
        assert!(
            out.contains("node_hwmon_power_average_watt{chip=\"coretemp\",sensor=\"power1\"} 15\n")
        );
        assert!(out.contains("node_hwmon_chip_names{chip=\"coretemp\",chip_name=\"coretemp\"} 1\n"));
        assert!(hwmon_from(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn sensor_file_names_split() {
        assert_eq!(
            explode_sensor_file("temp1_input"),
            Some(("temp", "1", "input"))
        );
        assert_eq!(explode_sensor_file("fan12_min"), Some(("fan", "12", "min")));
        assert_eq!(
            explode_sensor_file("beep_enable"),
            Some(("beep_enable", "", ""))
        );
        assert_eq!(
            explode_sensor_file("temp1_crit_alarm"),
            Some(("temp", "1", "crit_alarm"))
        );
        assert_eq!(explode_sensor_file("temp1x"), None);
    }
}
