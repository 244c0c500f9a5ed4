//! The thermal_zone collector: temperatures of /sys/class/thermal zones
//! and the state of its cooling devices.

use std::path::Path;

use super::read::{numbered, sorted_names, AttrDir};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn thermal_zone(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    thermal_zone_from(&s.sys_path("class/thermal"))
}

/// `node_thermal_zone_temp{zone,type}` (Celsius) from each
/// `thermal_zoneN/{type,temp}`, and `node_cooling_device_{cur,max}_state`
/// from each `cooling_deviceN`. A zone whose sensor cannot be read (the
/// kernel answers ENODATA while it is not ready) is left out.
pub(crate) fn thermal_zone_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = sorted_names(dir)? else {
        return Ok(Vec::new());
    };
    let mut temp = MetricFamily::gauge(
        "node_thermal_zone_temp",
        "Thermal zone temperature in degrees Celsius.",
    );
    let mut cur = MetricFamily::gauge(
        "node_cooling_device_cur_state",
        "Current throttle state of the cooling device.",
    );
    let mut max = MetricFamily::gauge(
        "node_cooling_device_max_state",
        "Highest throttle state the cooling device supports.",
    );
    for name in &entries {
        if let Some(zone) = numbered(name, "thermal_zone") {
            let Some(d) = AttrDir::open(&dir.join(name)) else {
                continue;
            };
            if let (Some(kind), Some(t)) = (d.trimmed("type"), d.int("temp")) {
                temp.push([("zone", zone), ("type", kind.as_str())], t as f64 / 1000.0);
            }
        } else if let Some(device) = numbered(name, "cooling_device") {
            let Some(d) = AttrDir::open(&dir.join(name)) else {
                continue;
            };
            // cur_state may be -1 (intel_powerclamp when idle).
            if let (Some(kind), Some(m), Some(c)) =
                (d.trimmed("type"), d.int("max_state"), d.int("cur_state"))
            {
                cur.push([("name", device), ("type", kind.as_str())], c as f64);
                max.push([("name", device), ("type", kind.as_str())], m as f64);
            }
        }
    }
    Ok(vec![temp, cur, max])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::{text_of, write};

    #[test]
    fn thermal_zones_and_cooling_devices() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "thermal_zone0/type", "x86_pkg_temp\n");
        write(d, "thermal_zone0/temp", "51500\n");
        write(d, "thermal_zone1/type", "acpitz\n");
        write(d, "cooling_device0/type", "Processor\n");
        write(d, "cooling_device0/max_state", "3\n");
        write(d, "cooling_device0/cur_state", "-1\n");
        let out = text_of(thermal_zone_from(d).unwrap());
        assert!(
            out.contains("node_thermal_zone_temp{zone=\"0\",type=\"x86_pkg_temp\"} 51.5\n"),
            "{out}"
        );
        assert!(
            !out.contains("acpitz"),
            "a zone without temp is left out: {out}"
        );
        assert!(out.contains("node_cooling_device_cur_state{name=\"0\",type=\"Processor\"} -1\n"));
        assert!(out.contains("node_cooling_device_max_state{name=\"0\",type=\"Processor\"} 3\n"));
    }
}
