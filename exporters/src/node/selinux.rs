//! The selinux collector: whether SELinux is enabled, and its current and
//! configured modes.

use super::read::read_attr;
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

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
