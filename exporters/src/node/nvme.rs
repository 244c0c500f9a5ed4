//! The nvme collector: `node_nvme_info` for each NVMe controller of
//! /sys/class/nvme.

use std::path::Path;

use super::read::{sorted_names, AttrDir};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn nvme(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    nvme_from(&s.sys_path("class/nvme"))
}

/// `node_nvme_info{device,firmware_revision,model,serial,state}` for each
/// controller of /sys/class/nvme.
pub(crate) fn nvme_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = sorted_names(dir)? else {
        return Ok(Vec::new());
    };
    let mut info = MetricFamily::gauge(
        "node_nvme_info",
        "Identity and state of an NVMe controller from /sys/class/nvme/<device>; value is always 1.",
    );
    for device in &entries {
        let Some(d) = AttrDir::open(&dir.join(device)) else {
            continue;
        };
        let (Some(firmware), Some(model), Some(serial), Some(state)) = (
            d.trimmed("firmware_rev"),
            d.trimmed("model"),
            d.trimmed("serial"),
            d.trimmed("state"),
        ) else {
            continue;
        };
        info.push(
            [
                ("device", device.clone()),
                ("firmware_revision", firmware),
                ("model", model),
                ("serial", serial),
                ("state", state),
            ],
            1.0,
        );
    }
    Ok(vec![info])
}
