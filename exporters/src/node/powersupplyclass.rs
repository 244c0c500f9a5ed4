//! The powersupplyclass collector: batteries and mains adapters of
//! /sys/class/power_supply in node_exporter's units.

use std::path::Path;

use super::read::{sorted_names, AttrDir};
use super::{NameFilter, Settings};
use crate::collector::CollectError;
use crate::metrics::{Labels, MetricFamily};

pub(crate) fn powersupplyclass(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    powersupplyclass_from(&s.sys_path("class/power_supply"), &s.powersupply_ignored)
}

/// The scale of a numeric power_supply attribute: the kernel writes
/// micro-units (µA, µV, µWh, µW), tenths of a degree Celsius, or plain
/// numbers.
#[derive(Clone, Copy)]
enum Scale {
    One,
    Micro,
    Deci,
}

/// (attribute file, family suffix, scale), sorted by file name.
const POWER_SUPPLY_NUMERIC: [(&str, &str, Scale); 49] = [
    ("authentic", "authentic", Scale::One),
    ("calibrate", "calibrate", Scale::One),
    ("capacity", "capacity", Scale::One),
    ("capacity_alert_max", "capacity_alert_max", Scale::One),
    ("capacity_alert_min", "capacity_alert_min", Scale::One),
    ("charge_control_limit", "charge_control_limit", Scale::Micro),
    (
        "charge_control_limit_max",
        "charge_control_limit_max",
        Scale::Micro,
    ),
    ("charge_counter", "charge_counter", Scale::Micro),
    ("charge_empty", "charge_empty", Scale::Micro),
    ("charge_empty_design", "charge_empty_design", Scale::Micro),
    ("charge_full", "charge_full", Scale::Micro),
    ("charge_full_design", "charge_full_design", Scale::Micro),
    ("charge_now", "charge_ampere", Scale::Micro),
    ("charge_term_current", "charge_term_current", Scale::Micro),
    (
        "constant_charge_current",
        "constant_charge_current",
        Scale::Micro,
    ),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        Scale::Micro,
    ),
    (
        "constant_charge_voltage",
        "constant_charge_voltage",
        Scale::Micro,
    ),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        Scale::Micro,
    ),
    ("current_boot", "current_boot", Scale::Micro),
    ("current_max", "current_max", Scale::Micro),
    ("current_now", "current_ampere", Scale::Micro),
    ("cycle_count", "cyclecount", Scale::One),
    ("energy_empty", "energy_empty", Scale::Micro),
    ("energy_empty_design", "energy_empty_design", Scale::Micro),
    ("energy_full", "energy_full", Scale::Micro),
    ("energy_full_design", "energy_full_design", Scale::Micro),
    ("energy_now", "energy_watthour", Scale::Micro),
    ("input_current_limit", "input_current_limit", Scale::Micro),
    ("online", "online", Scale::One),
    ("power_now", "power_watt", Scale::Micro),
    ("precharge_current", "precharge_current", Scale::Micro),
    ("present", "present", Scale::One),
    ("temp", "temp_celsius", Scale::Deci),
    ("temp_alert_max", "temp_alert_max_celsius", Scale::Deci),
    ("temp_alert_min", "temp_alert_min_celsius", Scale::Deci),
    ("temp_ambient", "temp_ambient_celsius", Scale::Deci),
    ("temp_ambient_max", "temp_ambient_max_celsius", Scale::Deci),
    ("temp_ambient_min", "temp_ambient_min_celsius", Scale::Deci),
    ("temp_max", "temp_max_celsius", Scale::Deci),
    ("temp_min", "temp_min_celsius", Scale::Deci),
    ("time_to_empty_now", "time_to_empty_seconds", Scale::One),
    ("time_to_full_now", "time_to_full_seconds", Scale::One),
    ("voltage_boot", "voltage_boot", Scale::Micro),
    ("voltage_max", "voltage_max", Scale::Micro),
    ("voltage_max_design", "voltage_max_design", Scale::Micro),
    ("voltage_min", "voltage_min", Scale::Micro),
    ("voltage_min_design", "voltage_min_design", Scale::Micro),
    ("voltage_now", "voltage_volt", Scale::Micro),
    ("voltage_ocv", "voltage_ocv", Scale::Micro),
];

/// Text attributes that become labels of `node_power_supply_info`
/// (file, label), sorted by label; only those present and non-empty.
const POWER_SUPPLY_TEXT: [(&str, &str); 11] = [
    ("capacity_level", "capacity_level"),
    ("charge_type", "charge_type"),
    ("health", "health"),
    ("manufacturer", "manufacturer"),
    ("model_name", "model_name"),
    ("scope", "scope"),
    ("serial_number", "serial_number"),
    ("status", "status"),
    ("technology", "technology"),
    ("type", "type"),
    ("usb_type", "usb_type"),
];

/// Parses an integer as Go's `strconv.ParseInt(s, 0, 64)`: optional sign,
/// `0x`/`0o`/`0b` or a leading `0` (octal) choose the base.
fn go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.get(..2).map(str::to_ascii_lowercase);
    let (radix, body) = match lower.as_deref() {
        Some("0x") => (16, &digits[2..]),
        Some("0o") => (8, &digits[2..]),
        Some("0b") => (2, &digits[2..]),
        _ if digits.len() > 1 && digits.starts_with('0') => (8, &digits[1..]),
        _ => (10, digits),
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// `node_power_supply_*{power_supply}` from the attribute files of
/// /sys/class/power_supply/<supply>, in node_exporter's units, and
/// `node_power_supply_info` labelled with its non-empty text attributes.
/// Only attributes node_exporter exports are read; a value that does not
/// parse or that the driver refuses (EINVAL, EOPNOTSUPP) is left out.
pub(crate) fn powersupplyclass_from(
    dir: &Path,
    ignored: &NameFilter,
) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = sorted_names(dir)? else {
        return Ok(Vec::new());
    };
    let mut numeric: Vec<MetricFamily> = Vec::new();
    let mut info = MetricFamily::gauge(
        "node_power_supply_info",
        "Text attributes of /sys/class/power_supply/<power_supply>; value is always 1.",
    );
    for supply in &entries {
        if ignored.is_match(supply) {
            continue;
        }
        let Some(d) = AttrDir::open(&dir.join(supply)) else {
            continue;
        };
        if numeric.is_empty() {
            numeric = POWER_SUPPLY_NUMERIC
                .iter()
                .map(|(file, suffix, _)| {
                    MetricFamily::gauge(
                        format!("node_power_supply_{suffix}"),
                        format!("Value of /sys/class/power_supply/<power_supply>/{file}, in base units."),
                    )
                })
                .collect();
        }
        for ((file, _, scale), family) in POWER_SUPPLY_NUMERIC.iter().zip(numeric.iter_mut()) {
            let Some(v) = d.attr(file).and_then(|v| go_int(v.trim())) else {
                continue;
            };
            let v = match scale {
                Scale::One => v as f64,
                Scale::Micro => v as f64 / 1e6,
                Scale::Deci => v as f64 / 10.0,
            };
            family.push([("power_supply", supply.as_str())], v);
        }
        let mut labels: Labels = Vec::with_capacity(4);
        labels.push(("power_supply".into(), supply.clone()));
        for (file, label) in POWER_SUPPLY_TEXT {
            if let Some(v) = d.trimmed(file).filter(|v| !v.is_empty()) {
                labels.push((label.into(), v));
            }
        }
        info.push_owned(labels, 1.0);
    }
    numeric.push(info);
    Ok(numeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_integers_choose_their_base() {
        assert_eq!(go_int("42"), Some(42));
        assert_eq!(go_int("-7"), Some(-7));
        assert_eq!(go_int("0x1f"), Some(31));
        assert_eq!(go_int("010"), Some(8));
        assert_eq!(go_int("0"), Some(0));
        assert_eq!(go_int("0b101"), Some(5));
        assert_eq!(go_int(""), None);
        assert_eq!(go_int("12ab"), None);
        assert_eq!(go_int("-0x8000000000000000"), Some(i64::MIN));
    }
}
