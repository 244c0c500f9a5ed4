//! Host metrics with node_exporter's names, types and labels, read from
//! /proc, /sys and system calls. Each node_exporter collector is one
//! [`Collector`] with the same name, so `collect[]`/`exclude[]` filters and
//! `node_scrape_collector_*{collector=...}` read as with node_exporter.
//!
//! Each collector lives in its own module (one per source family: `stat`
//! holds cpu and stat, which both read /proc/stat) and is registered by one
//! line of `REGISTRY`, as node_exporter's `registerCollector` does. Most
//! are a plain read function over `Settings`; the modules keep the
//! parsing in pure `*_from` functions tested on fixtures.

// What the collectors share: configuration, name filters, file reading,
// and the netlink readers (rtnetlink for netclass, sock_diag for udp_queues).
mod config;
mod filter;
mod netlink;
mod read;
mod rtnetlink;
mod sockdiag;

// The collectors, one module per source family.
mod arp;
mod bonding;
mod conntrack;
mod cpufreq;
mod diskstats;
mod dmi;
mod edac;
mod entropy;
mod filefd;
mod filesystem;
mod hwmon;
mod loadavg;
mod mdadm;
mod meminfo;
mod netclass;
mod netdev;
mod netstat;
mod nfs;
mod nvme;
mod os;
mod powersupplyclass;
mod pressure;
mod rapl;
mod schedstat;
mod selinux;
mod sockstat;
mod softnet;
mod stat;
mod textfile;
mod thermal_zone;
mod time;
mod timex;
mod udp_queues;
mod uname;
mod vmstat;
mod xfs;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzzing;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::collector::{CollectContext, CollectError, Collected, Collector};
use crate::metrics::MetricFamily;

pub use config::{
    NodeConfig, DEFAULT_DISK_DEVICE_EXCLUDE, DEFAULT_FS_TYPES_EXCLUDE,
    DEFAULT_MOUNT_POINTS_EXCLUDE, DEFAULT_NETCLASS_IGNORED_DEVICES, DEFAULT_NETDEV_DEVICE_EXCLUDE,
    DEFAULT_NETSTAT_FIELDS, DEFAULT_POWERSUPPLY_IGNORED_SUPPLIES, DEFAULT_TEXTFILE_DIRECTORY,
    DEFAULT_VMSTAT_FIELDS,
};
pub(crate) use filter::NameFilter;

/// How a registered node collector produces its families.
#[derive(Clone, Copy)]
enum Kind {
    /// A function that reads /proc or /sys or asks the kernel, quickly: it
    /// runs on the scrape task, one plain call per scrape.
    Read(fn(&Settings) -> Result<Vec<MetricFamily>, CollectError>),
    /// A collector with a [`Collector`] implementation of its own, for work
    /// a plain call cannot do (filesystem awaits statfs on blocking
    /// threads); built once from its name and the shared settings.
    Own(fn(&'static str, Arc<Settings>) -> Arc<dyn Collector>),
}

/// Every node collector, by node_exporter name, in alphabetical order (the
/// order of [`COLLECTORS`] and of the scrape). Adding one is its module plus
/// one line here (kept one line each, hence the rustfmt skip).
#[rustfmt::skip]
const REGISTRY: &[(&str, Kind)] = &[
    ("arp", Kind::Read(arp::arp)),
    ("bonding", Kind::Read(bonding::bonding)),
    ("conntrack", Kind::Read(conntrack::conntrack)),
    ("cpu", Kind::Read(stat::cpu)),
    ("cpufreq", Kind::Read(cpufreq::cpufreq)),
    ("diskstats", Kind::Read(diskstats::diskstats)),
    ("dmi", Kind::Read(dmi::dmi)),
    ("edac", Kind::Read(edac::edac)),
    ("entropy", Kind::Read(entropy::entropy)),
    ("filefd", Kind::Read(filefd::filefd)),
    ("filesystem", Kind::Own(filesystem::collector)),
    ("hwmon", Kind::Read(hwmon::hwmon)),
    ("loadavg", Kind::Read(loadavg::loadavg)),
    ("mdadm", Kind::Read(mdadm::mdadm)),
    ("meminfo", Kind::Read(meminfo::meminfo)),
    ("netclass", Kind::Read(netclass::netclass)),
    ("netdev", Kind::Read(netdev::netdev)),
    ("netstat", Kind::Read(netstat::netstat)),
    ("nfs", Kind::Read(nfs::nfs)),
    ("nvme", Kind::Read(nvme::nvme)),
    ("os", Kind::Read(os::os)),
    ("powersupplyclass", Kind::Read(powersupplyclass::powersupplyclass)),
    ("pressure", Kind::Read(pressure::pressure)),
    ("rapl", Kind::Read(rapl::rapl)),
    ("schedstat", Kind::Read(schedstat::schedstat)),
    ("selinux", Kind::Read(selinux::selinux)),
    ("sockstat", Kind::Read(sockstat::sockstat)),
    ("softnet", Kind::Read(softnet::softnet)),
    ("stat", Kind::Read(stat::stat)),
    ("textfile", Kind::Read(textfile::textfile)),
    ("thermal_zone", Kind::Read(thermal_zone::thermal_zone)),
    ("time", Kind::Read(time::time)),
    ("timex", Kind::Read(timex::timex)),
    ("udp_queues", Kind::Read(udp_queues::udp_queues)),
    ("uname", Kind::Read(uname::uname)),
    ("vmstat", Kind::Read(vmstat::vmstat)),
    ("xfs", Kind::Read(xfs::xfs)),
];

/// Every node collector Steward has, by node_exporter name. All of them run
/// unless `[node] collectors` narrows the list or `disable` removes some.
pub const COLLECTORS: &[&str] = &registered_names::<{ REGISTRY.len() }>();

/// The names of `REGISTRY`, at compile time, so the two never disagree.
const fn registered_names<const N: usize>() -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = REGISTRY[i].0;
        i += 1;
    }
    names
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
                    config::default_statfs_timeout_secs()
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

/// A node collector that is a read function (see [`Kind::Read`]).
struct NodeCollector {
    name: &'static str,
    read: fn(&Settings) -> Result<Vec<MetricFamily>, CollectError>,
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

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        Ok((self.read)(&self.settings)?.into())
    }
}

/// Builds the enabled node collectors.
pub fn collectors(config: &NodeConfig) -> Vec<Arc<dyn Collector>> {
    if !config.enabled {
        return Vec::new();
    }
    let settings = Arc::new(Settings::from_config(config));
    REGISTRY
        .iter()
        .filter(|(name, _)| config.collectors.iter().any(|c| c == name))
        .filter(|(name, _)| !config.disable.iter().any(|c| c == name))
        .map(|&(name, kind)| match kind {
            Kind::Read(read) => Arc::new(NodeCollector {
                name,
                read,
                settings: Arc::clone(&settings),
            }) as Arc<dyn Collector>,
            Kind::Own(build) => build(name, Arc::clone(&settings)),
        })
        .collect()
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
    fn registry_is_sorted_unique_and_builds_what_it_names() {
        assert!(
            COLLECTORS.windows(2).all(|w| w[0] < w[1]),
            "REGISTRY must stay sorted and free of duplicates: {COLLECTORS:?}"
        );
        let built: Vec<String> = collectors(&NodeConfig::default())
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        assert_eq!(built, COLLECTORS);
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
    fn hardware_collectors_export_nothing_when_their_sysfs_directory_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        let never = NameFilter::new("^$").unwrap();
        assert!(thermal_zone::thermal_zone_from(&none).unwrap().is_empty());
        assert!(cpufreq::cpufreq_from(&none).unwrap().is_empty());
        assert!(powersupplyclass::powersupplyclass_from(&none, &never)
            .unwrap()
            .is_empty());
        assert!(nvme::nvme_from(&none).unwrap().is_empty());
        assert!(edac::edac_from(&none).unwrap().is_empty());
        assert!(rapl::rapl_from(&none, false).unwrap().is_empty());
        assert!(dmi::dmi_labels(&none).is_empty());
        assert!(bonding::bonding_from(&none).unwrap().is_empty());
        assert!(xfs::xfs_from(&none).unwrap().is_empty());
    }
}

/// What the collectors' fixture tests share: rendering families as
/// exposition text, compiling a filter, writing a fixture file.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use super::NameFilter;
    use crate::metrics::MetricFamily;

    /// The families as a scrape would serve them (merged, encoded).
    pub(crate) fn text(families: &[MetricFamily]) -> String {
        text_of(families.to_vec())
    }

    pub(crate) fn text_of(families: Vec<MetricFamily>) -> String {
        crate::exposition::encode(&crate::scrape::merge_families(families))
    }

    pub(crate) fn re(pattern: &str) -> NameFilter {
        NameFilter::new(pattern).unwrap()
    }

    /// Writes `content` to `root/rel`, creating the directories between.
    pub(crate) fn write(root: &Path, rel: &str, content: &str) {
        write_file(&root.join(rel), content);
    }

    pub(crate) fn write_file(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}
