//! The bonding collector: enslaved and up interfaces of each bonding
//! master listed in /sys/class/net/bonding_masters.

use std::path::Path;

use super::read::{is_absent, read_pseudo_file, AttrDir};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn bonding(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    bonding_from(&s.sys_path("class/net"))
}

/// `node_bonding_slaves{master}` and `node_bonding_active{master}` (slaves
/// whose MII status is up) for each master listed in `bonding_masters`.
pub(crate) fn bonding_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let path = dir.join("bonding_masters");
    let masters = match read_pseudo_file(std::fs::File::open(&path), 64) {
        Ok(m) => m,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => {
            return Err(CollectError::failed(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut slaves = MetricFamily::gauge(
        "node_bonding_slaves",
        "Interfaces enslaved to the bonding master.",
    );
    let mut active = MetricFamily::gauge(
        "node_bonding_active",
        "Interfaces enslaved to the bonding master whose MII status is up.",
    );
    for master in masters.split_ascii_whitespace() {
        let Some(m) = AttrDir::open(&dir.join(master)) else {
            continue;
        };
        let Some(list) = m.attr("bonding/slaves") else {
            continue;
        };
        let (mut configured, mut up) = (0u32, 0u32);
        for slave in list.split_ascii_whitespace() {
            // `lower_<if>` since Linux 4.x, `slave_<if>` before.
            let status = m
                .attr(&format!("lower_{slave}/bonding_slave/mii_status"))
                .or_else(|| m.attr(&format!("slave_{slave}/bonding_slave/mii_status")));
            let Some(status) = status else { continue };
            configured += 1;
            if status.trim() == "up" {
                up += 1;
            }
        }
        slaves.push([("master", master)], configured.into());
        active.push([("master", master)], up.into());
    }
    Ok(vec![slaves, active])
}
