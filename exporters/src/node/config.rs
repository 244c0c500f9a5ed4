//! `[node]`: which node collectors run, where /proc, /sys and the root file
//! system are, and the name filters, with node_exporter 1.5's defaults so
//! an empty section exports what a stock node_exporter would.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::COLLECTORS;

/// node_exporter 1.5's `--collector.filesystem.mount-points-exclude`.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5's `--collector.filesystem.fs-types-exclude`.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// node_exporter 1.5's `--collector.diskstats.device-exclude`.
pub const DEFAULT_DISK_DEVICE_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// Debian's node_exporter 1.5 default for `--collector.netdev.device-exclude`.
pub const DEFAULT_NETDEV_DEVICE_EXCLUDE: &str = "^lo$";
/// node_exporter 1.5's `--collector.netclass.ignored-devices`.
pub const DEFAULT_NETCLASS_IGNORED_DEVICES: &str = "^$";
/// node_exporter 1.5's `--collector.netstat.fields`.
pub const DEFAULT_NETSTAT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";
/// node_exporter 1.5's `--collector.vmstat.fields`.
pub const DEFAULT_VMSTAT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";
/// node_exporter 1.5's `--collector.powersupply.ignored-supplies`.
pub const DEFAULT_POWERSUPPLY_IGNORED_SUPPLIES: &str = "^$";
/// Debian's default `--collector.textfile.directory`.
pub const DEFAULT_TEXTFILE_DIRECTORY: &str = "/var/lib/prometheus/node-exporter";

/// `[node]`: host metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Export host metrics at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Collectors to run, by node_exporter name (default: all of
    /// [`COLLECTORS`]).
    #[serde(default = "default_collectors")]
    pub collectors: Vec<String>,
    /// Collectors not to run (node_exporter's `--no-collector.<name>`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Where procfs is mounted (`--path.procfs`); e.g. `/host/proc` in a
    /// container.
    #[serde(default = "default_procfs")]
    pub procfs_path: PathBuf,
    /// Where sysfs is mounted (`--path.sysfs`).
    #[serde(default = "default_sysfs")]
    pub sysfs_path: PathBuf,
    /// Prefix of mount points for statfs (`--path.rootfs`).
    #[serde(default = "default_rootfs")]
    pub rootfs_path: PathBuf,
    /// Mount points (regex) the filesystem collector skips.
    #[serde(default = "default_mount_points_exclude")]
    pub filesystem_mount_points_exclude: String,
    /// Filesystem types (regex) the filesystem collector skips.
    #[serde(default = "default_fs_types_exclude")]
    pub filesystem_fs_types_exclude: String,
    /// How long one statfs may take before its mount point is reported
    /// with `node_filesystem_device_error 1` and left alone until it
    /// answers (a stale NFS or FUSE mount hangs statfs).
    #[serde(default = "default_statfs_timeout_secs")]
    pub filesystem_statfs_timeout_secs: f64,
    /// Block devices (regex) the diskstats collector skips.
    #[serde(default = "default_disk_device_exclude")]
    pub diskstats_device_exclude: String,
    /// Network devices (regex) the netdev collector skips.
    #[serde(default = "default_netdev_device_exclude")]
    pub netdev_device_exclude: String,
    /// Network devices (regex) the netclass collector skips.
    #[serde(default = "default_netclass_ignored_devices")]
    pub netclass_ignored_devices: String,
    /// `Protocol_Field` names (regex) of /proc/net/{netstat,snmp,snmp6} to export.
    #[serde(default = "default_netstat_fields")]
    pub netstat_fields: String,
    /// /proc/vmstat field names (regex) to export.
    #[serde(default = "default_vmstat_fields")]
    pub vmstat_fields: String,
    /// Directory of `*.prom` files whose metrics are added to the scrape
    /// (node_exporter's textfile collector).
    #[serde(default = "default_textfile_directory")]
    pub textfile_directory: PathBuf,
    /// Power supplies (regex on the /sys/class/power_supply name) the
    /// powersupplyclass collector skips.
    #[serde(default = "default_powersupply_ignored_supplies")]
    pub powersupply_ignored_supplies: String,
    /// One `node_rapl_joules_total{rapl_zone=...}` family instead of one
    /// `node_rapl_<zone>_joules_total` per zone
    /// (`--collector.rapl.enable-zone-label`).
    #[serde(default)]
    pub rapl_enable_zone_label: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            enabled: true,
            collectors: default_collectors(),
            disable: Vec::new(),
            procfs_path: default_procfs(),
            sysfs_path: default_sysfs(),
            rootfs_path: default_rootfs(),
            filesystem_mount_points_exclude: default_mount_points_exclude(),
            filesystem_fs_types_exclude: default_fs_types_exclude(),
            filesystem_statfs_timeout_secs: default_statfs_timeout_secs(),
            diskstats_device_exclude: default_disk_device_exclude(),
            netdev_device_exclude: default_netdev_device_exclude(),
            netclass_ignored_devices: default_netclass_ignored_devices(),
            netstat_fields: default_netstat_fields(),
            vmstat_fields: default_vmstat_fields(),
            textfile_directory: default_textfile_directory(),
            powersupply_ignored_supplies: default_powersupply_ignored_supplies(),
            rapl_enable_zone_label: false,
        }
    }
}

impl NodeConfig {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, list) in [("collectors", &self.collectors), ("disable", &self.disable)] {
            for (i, name) in list.iter().enumerate() {
                if !COLLECTORS.contains(&name.as_str()) {
                    errors.push(format!(
                        "{key}[{i}]: unknown node collector {name:?}; known: {}",
                        COLLECTORS.join(", ")
                    ));
                }
            }
        }
        for (key, pattern) in self.patterns() {
            if let Err(e) = regex_lite::Regex::new(pattern) {
                let first = e.to_string();
                let first = first.lines().last().unwrap_or("").trim().to_string();
                errors.push(format!("{key}: invalid regular expression: {first}"));
            }
        }
        if !(self.filesystem_statfs_timeout_secs > 0.0
            && self.filesystem_statfs_timeout_secs <= 300.0)
        {
            errors.push(format!(
                "filesystem_statfs_timeout_secs: {} is out of range; use a value in (0, 300]",
                self.filesystem_statfs_timeout_secs
            ));
        }
        errors
    }

    fn patterns(&self) -> [(&'static str, &str); 8] {
        [
            (
                "filesystem_mount_points_exclude",
                &self.filesystem_mount_points_exclude,
            ),
            (
                "filesystem_fs_types_exclude",
                &self.filesystem_fs_types_exclude,
            ),
            ("diskstats_device_exclude", &self.diskstats_device_exclude),
            ("netdev_device_exclude", &self.netdev_device_exclude),
            ("netclass_ignored_devices", &self.netclass_ignored_devices),
            ("netstat_fields", &self.netstat_fields),
            ("vmstat_fields", &self.vmstat_fields),
            (
                "powersupply_ignored_supplies",
                &self.powersupply_ignored_supplies,
            ),
        ]
    }
}

fn default_true() -> bool {
    true
}
fn default_collectors() -> Vec<String> {
    COLLECTORS.iter().map(|s| s.to_string()).collect()
}
fn default_procfs() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}
fn default_rootfs() -> PathBuf {
    PathBuf::from("/")
}
fn default_mount_points_exclude() -> String {
    DEFAULT_MOUNT_POINTS_EXCLUDE.into()
}
fn default_fs_types_exclude() -> String {
    DEFAULT_FS_TYPES_EXCLUDE.into()
}
pub(super) fn default_statfs_timeout_secs() -> f64 {
    5.0
}
fn default_disk_device_exclude() -> String {
    DEFAULT_DISK_DEVICE_EXCLUDE.into()
}
fn default_netdev_device_exclude() -> String {
    DEFAULT_NETDEV_DEVICE_EXCLUDE.into()
}
fn default_netclass_ignored_devices() -> String {
    DEFAULT_NETCLASS_IGNORED_DEVICES.into()
}
fn default_netstat_fields() -> String {
    DEFAULT_NETSTAT_FIELDS.into()
}
fn default_vmstat_fields() -> String {
    DEFAULT_VMSTAT_FIELDS.into()
}
fn default_powersupply_ignored_supplies() -> String {
    DEFAULT_POWERSUPPLY_IGNORED_SUPPLIES.into()
}
fn default_textfile_directory() -> PathBuf {
    PathBuf::from(DEFAULT_TEXTFILE_DIRECTORY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_reports_every_problem_with_its_key() {
        let c = NodeConfig {
            collectors: vec!["cpu".into(), "bogus".into()],
            disable: vec!["nope".into()],
            netstat_fields: "(".into(),
            filesystem_statfs_timeout_secs: 0.0,
            ..NodeConfig::default()
        };
        let errors = c.validate();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("collectors[1]: unknown node collector \"bogus\""));
        assert!(errors[1].starts_with("disable[0]:"));
        assert!(errors[2].starts_with("netstat_fields: invalid regular expression"));
        assert!(errors[3].starts_with("filesystem_statfs_timeout_secs:"));
    }
}
