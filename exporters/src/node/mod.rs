//! Host metrics with node_exporter's names, types and labels, read from
//! /proc, /sys and system calls. Each node_exporter collector is one
//! [`Collector`] with the same name, so `collect[]`/`exclude[]` filters and
//! `node_scrape_collector_*{collector=...}` read as with node_exporter.

mod hardware;
mod netlink;
mod procfs;
mod rtnetlink;
mod sockdiag;
mod syscalls;
mod sysfs;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::MetricFamily;

/// Every node collector Steward has, by node_exporter name. All of them run
/// unless `[node] collectors` narrows the list or `disable` removes some.
pub const COLLECTORS: &[&str] = &[
    "arp",
    "bonding",
    "conntrack",
    "cpu",
    "cpufreq",
    "diskstats",
    "dmi",
    "edac",
    "entropy",
    "filefd",
    "filesystem",
    "hwmon",
    "loadavg",
    "mdadm",
    "meminfo",
    "netclass",
    "netdev",
    "netstat",
    "nfs",
    "nvme",
    "os",
    "powersupplyclass",
    "pressure",
    "rapl",
    "schedstat",
    "selinux",
    "sockstat",
    "softnet",
    "stat",
    "textfile",
    "thermal_zone",
    "time",
    "timex",
    "udp_queues",
    "uname",
    "vmstat",
    "xfs",
];

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
fn default_statfs_timeout_secs() -> f64 {
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

/// A name filter from the config (`*_exclude`, `*_fields`, ...) that
/// remembers its answers. The names it sees (kernel fields, devices, mount
/// points, file system types) rarely change while the agent runs, yet a
/// node scrape tests some 550 of them: after the first scrape each costs a
/// hash lookup instead of a regex search (the searches were about a tenth
/// of a scrape's user CPU). The patterns compile with `regex-lite`, whose
/// programs and search state are a few KiB where `regex`'s lazy DFAs kept
/// hundreds of KiB resident for searches that now run once per name.
#[derive(Debug)]
pub(crate) struct NameFilter {
    regex: regex_lite::Regex,
    answers: Mutex<HashMap<String, bool, BuildHasherDefault<Fnv1a>>>,
}

/// Names remembered at most; a source that keeps inventing names (a
/// container host mounting and unmounting) falls back to searching for the
/// names past the cap, and memory stays bounded.
const MAX_REMEMBERED_NAMES: usize = 4096;

impl NameFilter {
    pub(crate) fn new(pattern: &str) -> Result<NameFilter, regex_lite::Error> {
        Ok(NameFilter {
            regex: regex_lite::Regex::new(pattern)?,
            answers: Mutex::new(HashMap::default()),
        })
    }

    pub(crate) fn is_match(&self, name: &str) -> bool {
        self.pass().is_match(name)
    }

    /// One pass over a file: the lock is taken once, not per name.
    pub(crate) fn pass(&self) -> NamePass<'_> {
        NamePass {
            regex: &self.regex,
            answers: self.answers.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// See [`NameFilter::pass`].
pub(crate) struct NamePass<'a> {
    regex: &'a regex_lite::Regex,
    answers: MutexGuard<'a, HashMap<String, bool, BuildHasherDefault<Fnv1a>>>,
}

impl NamePass<'_> {
    pub(crate) fn is_match(&mut self, name: &str) -> bool {
        if let Some(&hit) = self.answers.get(name) {
            return hit;
        }
        let hit = self.regex.is_match(name);
        if self.answers.len() < MAX_REMEMBERED_NAMES {
            self.answers.insert(name.to_owned(), hit);
        }
        hit
    }
}

/// FNV-1a: a few multiplications for a short name where SipHash costs
/// dozens. Collision resistance is not needed here: the table is capped,
/// so crafted names can at worst make some lookups linear in a small set.
#[derive(Default)]
pub(crate) struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// What the node collectors share: paths, compiled filters, and the mount
/// points whose statfs has not returned yet.
#[derive(Debug)]
pub(crate) struct Settings {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub rootfs: PathBuf,
    pub mount_points_exclude: NameFilter,
    pub fs_types_exclude: NameFilter,
    pub disk_exclude: NameFilter,
    pub netdev_exclude: NameFilter,
    pub netclass_ignored: NameFilter,
    pub netstat_fields: NameFilter,
    pub vmstat_fields: NameFilter,
    pub statfs_timeout: Duration,
    pub textfile_directory: PathBuf,
    pub powersupply_ignored: NameFilter,
    pub rapl_zone_label: bool,
    /// `node_dmi_info`'s labels, read on the first scrape that asks.
    pub dmi: OnceLock<Vec<(&'static str, String)>>,
    /// Mount points with a statfs still in flight: skipped until it returns.
    pub stuck_mounts: Arc<Mutex<HashSet<String>>>,
}

impl Settings {
    pub(crate) fn from_config(config: &NodeConfig) -> Settings {
        // `validate` rejects bad patterns before this runs; should one slip
        // through (a library caller that skipped validation), the anchor's
        // default keeps the collector working instead of failing the build.
        let compile = |pattern: &str, default: &str| {
            NameFilter::new(pattern).unwrap_or_else(|e| {
                tracing::warn!(pattern, error = %e, "invalid node filter; using the default");
                NameFilter::new(default).unwrap_or_else(|_| never_matching())
            })
        };
        Settings {
            proc: config.procfs_path.clone(),
            sys: config.sysfs_path.clone(),
            rootfs: config.rootfs_path.clone(),
            mount_points_exclude: compile(
                &config.filesystem_mount_points_exclude,
                DEFAULT_MOUNT_POINTS_EXCLUDE,
            ),
            fs_types_exclude: compile(
                &config.filesystem_fs_types_exclude,
                DEFAULT_FS_TYPES_EXCLUDE,
            ),
            disk_exclude: compile(
                &config.diskstats_device_exclude,
                DEFAULT_DISK_DEVICE_EXCLUDE,
            ),
            netdev_exclude: compile(&config.netdev_device_exclude, DEFAULT_NETDEV_DEVICE_EXCLUDE),
            netclass_ignored: compile(
                &config.netclass_ignored_devices,
                DEFAULT_NETCLASS_IGNORED_DEVICES,
            ),
            netstat_fields: compile(&config.netstat_fields, DEFAULT_NETSTAT_FIELDS),
            vmstat_fields: compile(&config.vmstat_fields, DEFAULT_VMSTAT_FIELDS),
            statfs_timeout: Duration::from_secs_f64(
                if config.filesystem_statfs_timeout_secs > 0.0 {
                    config.filesystem_statfs_timeout_secs.min(300.0)
                } else {
                    default_statfs_timeout_secs()
                },
            ),
            textfile_directory: config.textfile_directory.clone(),
            powersupply_ignored: compile(
                &config.powersupply_ignored_supplies,
                DEFAULT_POWERSUPPLY_IGNORED_SUPPLIES,
            ),
            rapl_zone_label: config.rapl_enable_zone_label,
            dmi: OnceLock::new(),
            stuck_mounts: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    pub(crate) fn proc_path(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    pub(crate) fn sys_path(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }
}

fn never_matching() -> NameFilter {
    // `$^` cannot match a non-empty name, and names are never empty.
    NameFilter::new("$^").expect("constant pattern compiles")
}

/// One node_exporter collector.
struct NodeCollector {
    name: &'static str,
    settings: Arc<Settings>,
}

#[async_trait]
impl Collector for NodeCollector {
    fn name(&self) -> &str {
        self.name
    }

    fn namespace(&self) -> &str {
        "node"
    }

    async fn collect(&self, ctx: CollectContext) -> Result<Collected, CollectError> {
        let s = &*self.settings;
        let families = match self.name {
            // The only one that can block for long: statfs on its own thread.
            "filesystem" => return syscalls::filesystem(Arc::clone(&self.settings), ctx).await,
            "arp" => procfs::arp(s)?,
            "bonding" => hardware::bonding(s)?,
            "conntrack" => procfs::conntrack(s)?,
            "cpu" => procfs::cpu(s)?,
            "cpufreq" => hardware::cpufreq(s)?,
            "diskstats" => procfs::diskstats(s)?,
            "dmi" => hardware::dmi(s),
            "edac" => hardware::edac(s)?,
            "entropy" => procfs::entropy(s)?,
            "filefd" => procfs::filefd(s)?,
            "hwmon" => sysfs::hwmon(s)?,
            "loadavg" => procfs::loadavg(s)?,
            "mdadm" => procfs::mdadm(s)?,
            "meminfo" => procfs::meminfo(s)?,
            "netclass" => sysfs::netclass(s)?,
            "netdev" => procfs::netdev(s)?,
            "netstat" => procfs::netstat(s)?,
            "nfs" => procfs::nfs(s)?,
            "nvme" => hardware::nvme(s)?,
            "os" => procfs::os(s)?,
            "powersupplyclass" => hardware::powersupplyclass(s)?,
            "pressure" => procfs::pressure(s)?,
            "rapl" => hardware::rapl(s)?,
            "schedstat" => procfs::schedstat(s)?,
            "selinux" => sysfs::selinux(s)?,
            "sockstat" => procfs::sockstat(s)?,
            "softnet" => procfs::softnet(s)?,
            "stat" => procfs::stat(s)?,
            "textfile" => return Ok(procfs::textfile(s)),
            "thermal_zone" => hardware::thermal_zone(s)?,
            "time" => syscalls::time(s)?,
            "timex" => syscalls::timex()?,
            "udp_queues" => procfs::udp_queues(s)?,
            "uname" => syscalls::uname()?,
            "vmstat" => procfs::vmstat(s)?,
            "xfs" => hardware::xfs(s)?,
            other => {
                return Err(CollectError::Unsupported(format!(
                    "no node collector named {other:?}"
                )))
            }
        };
        Ok(families.into())
    }
}

/// Builds the enabled node collectors.
pub fn collectors(config: &NodeConfig) -> Vec<Arc<dyn Collector>> {
    if !config.enabled {
        return Vec::new();
    }
    let settings = Arc::new(Settings::from_config(config));
    COLLECTORS
        .iter()
        .filter(|name| config.collectors.iter().any(|c| c == *name))
        .filter(|name| !config.disable.iter().any(|c| c == *name))
        .map(|name| {
            Arc::new(NodeCollector {
                name,
                settings: Arc::clone(&settings),
            }) as Arc<dyn Collector>
        })
        .collect()
}

/// Reads a whole /proc or /sys file, naming the path on failure.
pub(crate) fn read_text(path: &Path) -> Result<String, CollectError> {
    read_pseudo_file(std::fs::File::open(path), 4096)
        .map_err(|e| CollectError::failed(format!("cannot read {}: {e}", path.display())))
}

/// Reads an opened /proc or /sys file to its end. `std::fs::read_to_string`
/// asks for the file's size first, which these files report as 0 or 4096
/// whatever they hold: one wasted statx per file, hundreds per scrape.
pub(crate) fn read_pseudo_file(
    file: std::io::Result<std::fs::File>,
    capacity: usize,
) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(capacity);
    // `take` hides the size hint, so the read loop just reads.
    file?.take(u64::MAX).read_to_string(&mut text)?;
    Ok(text)
}

/// Reads a one-line sysfs/procfs attribute, trimmed; `None` when absent or
/// unreadable (sysfs answers EINVAL for attributes of a down interface).
pub(crate) fn read_attr(path: &Path) -> Option<String> {
    trim_attr(read_pseudo_file(std::fs::File::open(path), 64).ok()?)
}

fn trim_attr(mut s: String) -> Option<String> {
    let trimmed = s.trim_end_matches(['\n', ' ', '\0']).len();
    s.truncate(trimmed);
    Some(s)
}

/// A directory of attribute files (e.g. /sys/class/net/eth0) held open, so
/// each attribute is opened relative to it instead of walking the whole
/// path (and its symlinks) again: the path walk was the largest kernel cost
/// of a scrape.
pub(crate) struct AttrDir(rustix::fd::OwnedFd);

impl AttrDir {
    pub(crate) fn open(path: &Path) -> Option<AttrDir> {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .map(AttrDir)
    }

    /// Opens a file of this directory for reading.
    fn open_file(&self, name: &str) -> std::io::Result<std::fs::File> {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::openat(
            &self.0,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(std::io::Error::from)
    }

    /// [`read_attr`] for a file of this directory.
    pub(crate) fn attr(&self, name: &str) -> Option<String> {
        trim_attr(read_pseudo_file(self.open_file(name), 64).ok()?)
    }

    /// The attribute as text with invalid UTF-8 replaced (DMI strings come
    /// from firmware), trimmed at the end like [`AttrDir::attr`].
    pub(crate) fn attr_lossy(&self, name: &str) -> Option<String> {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(64);
        self.open_file(name).ok()?.read_to_end(&mut bytes).ok()?;
        trim_attr(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Whether the directory has an entry `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        rustix::fs::accessat(
            &self.0,
            name,
            rustix::fs::Access::EXISTS,
            rustix::fs::AtFlags::empty(),
        )
        .is_ok()
    }
}

/// True when the error means the source does not exist on this host (no
/// md arrays, no hwmon chips, no netfilter): such a collector exports
/// nothing and still succeeds, so `/health` stays green on a VM.
pub(crate) fn is_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    )
}

/// Shorthand for a one-sample unlabelled gauge.
pub(crate) fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    MetricFamily::gauge(name, help).value(value)
}

/// Shorthand for a one-sample unlabelled counter.
pub(crate) fn counter(name: &str, help: &str, value: f64) -> MetricFamily {
    MetricFamily::counter(name, help).value(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_build_every_collector() {
        let c = NodeConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let built = collectors(&c);
        assert_eq!(built.len(), COLLECTORS.len());
        assert!(built.iter().all(|c| c.namespace() == "node"));
    }

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

    #[test]
    fn enable_and_disable_lists_select_collectors() {
        let c = NodeConfig {
            collectors: vec!["cpu".into(), "meminfo".into(), "uname".into()],
            disable: vec!["uname".into()],
            ..NodeConfig::default()
        };
        let names: Vec<String> = collectors(&c)
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert_eq!(names, vec!["cpu", "meminfo"]);
        let off = NodeConfig {
            enabled: false,
            ..NodeConfig::default()
        };
        assert!(collectors(&off).is_empty());
    }

    #[test]
    fn name_filter_remembers_answers_and_stays_bounded() {
        let filter = NameFilter::new("^(Tcp_.*|Ip_Forwarding)$").unwrap();
        for _ in 0..2 {
            let mut pass = filter.pass();
            assert!(pass.is_match("Tcp_InErrs"));
            assert!(!pass.is_match("Udp_InErrors"));
            assert!(pass.is_match("Ip_Forwarding"));
            assert!(!pass.is_match("Ip_ForwardingX"));
        }
        let mut pass = filter.pass();
        for i in 0..MAX_REMEMBERED_NAMES {
            assert!(pass.is_match(&format!("Tcp_{i}")));
            assert!(!pass.is_match(&format!("Udp_{i}")));
        }
        assert_eq!(pass.answers.len(), MAX_REMEMBERED_NAMES);
        assert!(pass.is_match("Tcp_new"), "past the cap it still answers");
    }
}
