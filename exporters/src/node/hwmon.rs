//! The hwmon collector: hardware sensors (temperatures, fans, voltages,
//! power) of /sys/class/hwmon, with node_exporter's names and units.

use std::collections::BTreeMap;
use std::path::Path;

use super::read::{is_absent, read_attr};
use super::Settings;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::encode;
    use crate::node::test_support::write_file;

    #[test]
    fn hwmon_names_units_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("hwmon0");
        write_file(&h.join("name"), "coretemp\n");
        write_file(&h.join("temp1_input"), "45000\n");
        write_file(&h.join("temp1_crit"), "100000\n");
        write_file(&h.join("temp1_label"), "Package id 0\n");
        write_file(&h.join("temp1_crit_alarm"), "0\n");
        write_file(&h.join("fan2_input"), "1200\n");
        write_file(&h.join("in0_input"), "1100\n");
        write_file(&h.join("power1_average"), "15000000\n");
        write_file(&h.join("uevent"), "\n");
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
