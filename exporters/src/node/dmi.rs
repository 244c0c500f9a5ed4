//! The dmi collector: `node_dmi_info`, the machine's firmware identity,
//! read once since DMI tables do not change while the machine runs.

use std::path::Path;

use super::read::AttrDir;
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

/// `(label, value)` pairs of `node_dmi_info`, read once: DMI tables do not
/// change while the machine runs (node_exporter also reads them at start).
pub(crate) fn dmi_labels(sys: &Path) -> Vec<(&'static str, String)> {
    // (file, label), sorted by label.
    const FILES: [(&str, &str); 20] = [
        ("bios_date", "bios_date"),
        ("bios_release", "bios_release"),
        ("bios_vendor", "bios_vendor"),
        ("bios_version", "bios_version"),
        ("board_asset_tag", "board_asset_tag"),
        ("board_name", "board_name"),
        ("board_serial", "board_serial"),
        ("board_vendor", "board_vendor"),
        ("board_version", "board_version"),
        ("chassis_asset_tag", "chassis_asset_tag"),
        ("chassis_serial", "chassis_serial"),
        ("chassis_vendor", "chassis_vendor"),
        ("chassis_version", "chassis_version"),
        ("product_family", "product_family"),
        ("product_name", "product_name"),
        ("product_serial", "product_serial"),
        ("product_sku", "product_sku"),
        ("product_uuid", "product_uuid"),
        ("product_version", "product_version"),
        ("sys_vendor", "system_vendor"),
    ];
    let Some(d) = AttrDir::open(&sys.join("class/dmi/id")) else {
        return Vec::new();
    };
    // Serial numbers and the UUID are root-only: unreadable ones are left
    // out, as node_exporter does when it is not root.
    FILES
        .iter()
        .filter_map(|(file, label)| Some((*label, d.attr_lossy(file)?.trim().to_string())))
        .collect()
}

/// Never fails: a machine without readable DMI tables (most VMs, a
/// container without /sys) exports nothing.
pub(crate) fn dmi(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let labels = s.dmi.get_or_init(|| dmi_labels(&s.sys));
    if labels.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![MetricFamily::gauge(
        "node_dmi_info",
        "Desktop Management Interface (DMI) identity of the machine; value is always 1.",
    )
    .with(labels.iter().cloned(), 1.0)])
}
