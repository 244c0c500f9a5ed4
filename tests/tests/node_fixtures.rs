//! Node collectors for hardware this machine lacks (thermal zones, cpufreq,
//! schedstat, power supplies, NVMe, EDAC, RAPL, DMI, bonding, XFS, the NFS
//! client), checked
//! against Debian's prometheus-node-exporter 1.5: both read the same
//! fixture /proc and /sys trees written here in the kernel's formats, and
//! every series of those collectors must have the same type, labels and
//! value in both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use steward_tests::node_exporter::NodeExporter;
use steward_tests::promtext::{promtool_problems, Scrape, Series};
use steward_tests::{http_get, StewardAgent};

/// The collectors under test, by node_exporter name.
const COLLECTORS: &[&str] = &[
    "bonding",
    "cpufreq",
    "dmi",
    "edac",
    "nfs",
    "nvme",
    "powersupplyclass",
    "rapl",
    "schedstat",
    "thermal_zone",
    "xfs",
];

fn put(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A /proc and /sys with one or more instances of each piece of hardware,
/// including the awkward cases: optional files missing, CPUs without
/// cpufreq, a negative cooling state, repeated RAPL zone names, DMI text
/// that is not UTF-8, and slaves under both of the kernel's link names.
fn hardware_tree(root: &Path) {
    let sys = root.join("sys");
    let proc = root.join("proc");

    // thermal_zone
    for (zone, kind, temp) in [
        ("thermal_zone0", "acpitz", "27800"),
        ("thermal_zone1", "x86_pkg_temp", "-4500"),
        ("thermal_zone10", "iwlwifi_1", "41000"),
    ] {
        put(
            &sys,
            &format!("class/thermal/{zone}/type"),
            format!("{kind}\n"),
        );
        put(
            &sys,
            &format!("class/thermal/{zone}/temp"),
            format!("{temp}\n"),
        );
        put(&sys, &format!("class/thermal/{zone}/policy"), "step_wise\n");
    }
    put(&sys, "class/thermal/thermal_zone0/mode", "enabled\n");
    put(&sys, "class/thermal/thermal_zone0/passive", "0\n");
    for (dev, kind, max, cur) in [
        ("cooling_device0", "Processor", "10", "0"),
        ("cooling_device1", "intel_powerclamp", "50", "-1"),
        ("cooling_device2", "TCC Offset", "63", "7"),
    ] {
        put(
            &sys,
            &format!("class/thermal/{dev}/type"),
            format!("{kind}\n"),
        );
        put(
            &sys,
            &format!("class/thermal/{dev}/max_state"),
            format!("{max}\n"),
        );
        put(
            &sys,
            &format!("class/thermal/{dev}/cur_state"),
            format!("{cur}\n"),
        );
    }

    // cpufreq: cpu0 complete, cpu1 without the root-only cpuinfo_cur_freq,
    // cpu2 without a driver; `cpufreq` and `cpuidle` are not CPUs.
    let cpu = "devices/system/cpu";
    for (n, files) in [
        (
            "cpu0",
            &[
                ("cpuinfo_cur_freq", "1800000"),
                ("cpuinfo_min_freq", "800000"),
                ("cpuinfo_max_freq", "4200000"),
                ("cpuinfo_transition_latency", "0"),
                ("scaling_cur_freq", "1799998"),
                ("scaling_min_freq", "800000"),
                ("scaling_max_freq", "4200000"),
            ][..],
        ),
        (
            "cpu1",
            &[
                ("cpuinfo_min_freq", "400000"),
                ("cpuinfo_max_freq", "3900000"),
                ("cpuinfo_transition_latency", "4294967295"),
                ("scaling_cur_freq", "2400123"),
                ("scaling_min_freq", "400000"),
                ("scaling_max_freq", "3900000"),
            ][..],
        ),
    ] {
        for (file, value) in files {
            put(
                &sys,
                &format!("{cpu}/{n}/cpufreq/{file}"),
                format!("{value}\n"),
            );
        }
        for (file, value) in [
            ("scaling_available_governors", "performance powersave"),
            ("scaling_driver", "intel_pstate"),
            ("scaling_governor", "powersave"),
            ("related_cpus", &n[3..]),
            ("scaling_setspeed", "<unsupported>"),
        ] {
            put(
                &sys,
                &format!("{cpu}/{n}/cpufreq/{file}"),
                format!("{value}\n"),
            );
        }
    }
    put(&sys, &format!("{cpu}/cpu2/online"), "1\n");
    put(&sys, &format!("{cpu}/cpufreq/boost"), "1\n");
    put(
        &sys,
        &format!("{cpu}/cpuidle/current_driver"),
        "intel_idle\n",
    );

    // schedstat (version 15): cpu lines between domain lines.
    put(
        &proc,
        "schedstat",
        "version 15\ntimestamp 4297299139\n\
         cpu0 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306\n\
         domain0 00000000,00000003 212499247 210112015 1861015 1860405436 536440 369895 32599 210079416 25368550 24241256 384652 927363878 807233 6366 1647 24375 0 0 0 0 0 0 0 0 0 2 0 0 0 0 1\n\
         cpu1 0 0 0 0 0 0 2054227341373230 337924566013911 4801329108\n\
         domain0 00000000,00000003 210799105 208356660 1837349 1823380052 588893 379148 27839 208334108 27234040 26190017 480113 991838283 562910 8037 6101 16001 0 0 0 0 0 0 0 0 0 2 0 0 0 0 2\n",
    );

    // powersupplyclass: a battery with most attributes, a mains adapter, a
    // USB supply; `uevent` and averages are read by nobody.
    let bat = "class/power_supply/BAT0";
    for (file, value) in [
        ("alarm", "2369000"),
        ("capacity", "98"),
        ("capacity_level", "Normal"),
        ("charge_start_threshold", "95"),
        ("cycle_count", "0"),
        ("energy_full", "50060000"),
        ("energy_full_design", "47520000"),
        ("energy_now", "49450000"),
        ("manufacturer", "LGC"),
        ("model_name", "LNV-45N1"),
        ("power_now", "4830000"),
        ("present", "1"),
        ("serial_number", "38109"),
        ("status", "Discharging"),
        ("technology", "Li-ion"),
        ("type", "Battery"),
        ("voltage_min_design", "10800000"),
        ("voltage_now", "12229000"),
        ("current_now", "-395000"),
        ("charge_now", "0x1f4"),
        ("temp", "285"),
        ("temp_alert_max", "550"),
        ("time_to_empty_now", "36000"),
        ("power_avg", "4100000"),
        (
            "uevent",
            "POWER_SUPPLY_NAME=BAT0\nPOWER_SUPPLY_STATUS=Discharging",
        ),
    ] {
        put(&sys, &format!("{bat}/{file}"), format!("{value}\n"));
    }
    put(&sys, "class/power_supply/AC/online", "0\n");
    put(&sys, "class/power_supply/AC/type", "Mains\n");
    put(
        &sys,
        "class/power_supply/ucsi-source-psy-USBC000:001/online",
        "1\n",
    );
    put(
        &sys,
        "class/power_supply/ucsi-source-psy-USBC000:001/type",
        "USB\n",
    );
    put(
        &sys,
        "class/power_supply/ucsi-source-psy-USBC000:001/usb_type",
        "C [PD] PD_PPS\n",
    );
    put(
        &sys,
        "class/power_supply/ucsi-source-psy-USBC000:001/scope",
        "\n",
    );
    put(
        &sys,
        "class/power_supply/ucsi-source-psy-USBC000:001/voltage_max",
        "20000000\n",
    );

    // nvme: the model is space-padded as the controller reports it.
    for (dev, fw, model, serial, state) in [
        (
            "nvme0",
            "1B2QEXM7",
            "Samsung SSD 970 EVO 1TB                 ",
            "S467NX0M123456",
            "live",
        ),
        (
            "nvme1",
            "EDA7602Q",
            "SAMSUNG MZVLB512HAJQ-000L7",
            "S3W8NX0M654321",
            "resetting",
        ),
    ] {
        let d = format!("class/nvme/{dev}");
        put(&sys, &format!("{d}/firmware_rev"), format!("{fw}\n"));
        put(&sys, &format!("{d}/model"), format!("{model}\n"));
        put(&sys, &format!("{d}/serial"), format!("{serial}\n"));
        put(&sys, &format!("{d}/state"), format!("{state}\n"));
        put(&sys, &format!("{d}/cntlid"), "0\n");
    }

    // edac: two controllers, rows with and without errors.
    let mc = "devices/system/edac/mc";
    for (ctl, ce, ce_noinfo, ue, ue_noinfo) in [("mc0", 7, 1, 0, 0), ("mc1", 12, 0, 2, 1)] {
        put(&sys, &format!("{mc}/{ctl}/ce_count"), format!("{ce}\n"));
        put(
            &sys,
            &format!("{mc}/{ctl}/ce_noinfo_count"),
            format!("{ce_noinfo}\n"),
        );
        put(&sys, &format!("{mc}/{ctl}/ue_count"), format!("{ue}\n"));
        put(
            &sys,
            &format!("{mc}/{ctl}/ue_noinfo_count"),
            format!("{ue_noinfo}\n"),
        );
        put(
            &sys,
            &format!("{mc}/{ctl}/mc_name"),
            "Skylake Socket#0 IMC#0\n",
        );
        for (row, rce, rue) in [("csrow0", ce - ce_noinfo, ue), ("csrow1", 0, 0)] {
            put(
                &sys,
                &format!("{mc}/{ctl}/{row}/ce_count"),
                format!("{rce}\n"),
            );
            put(
                &sys,
                &format!("{mc}/{ctl}/{row}/ue_count"),
                format!("{rue}\n"),
            );
        }
    }
    put(&sys, &format!("{mc}/power/autosuspend_delay_ms"), "\n");

    // rapl: numbered packages, repeated unnumbered sub-zones, and the
    // control directory without a name.
    put(&sys, "class/powercap/intel-rapl/enabled", "1\n");
    for (zone, name, uj) in [
        ("intel-rapl:0", "package-0", "174290566491"),
        ("intel-rapl:0:0", "core", "40237116375"),
        ("intel-rapl:0:1", "uncore", "2043112"),
        ("intel-rapl:0:2", "dram", "20541962345"),
        ("intel-rapl:1", "package-1", "165912384721"),
        ("intel-rapl:1:0", "core", "38120011456"),
        ("intel-rapl:1:1", "dram", "19711000000"),
        ("intel-rapl-mmio:0", "package-0", "5000000"),
    ] {
        put(
            &sys,
            &format!("class/powercap/{zone}/name"),
            format!("{name}\n"),
        );
        put(
            &sys,
            &format!("class/powercap/{zone}/energy_uj"),
            format!("{uj}\n"),
        );
        put(
            &sys,
            &format!("class/powercap/{zone}/max_energy_range_uj"),
            "262143328850\n",
        );
    }

    // dmi: an empty asset tag, a vendor string that is not UTF-8, and the
    // files node_exporter skips.
    let id = "class/dmi/id";
    for (file, value) in [
        ("bios_date", &b"04/12/2021"[..]),
        ("bios_release", b"1.23"),
        ("bios_vendor", b"Dell Inc."),
        ("bios_version", b"2.11.2"),
        ("board_asset_tag", b""),
        ("board_name", b"0H3YKG"),
        ("board_serial", b".7XYZ123.CNFCW0012345."),
        ("board_vendor", b"Dell Inc."),
        ("board_version", b"A02"),
        ("chassis_asset_tag", b"Not Specified"),
        ("chassis_serial", b"7XYZ123"),
        ("chassis_type", b"23"),
        ("chassis_vendor", b"Dell Inc."),
        ("chassis_version", b"                "),
        ("product_family", b"PowerEdge"),
        ("product_name", b"PowerEdge R640"),
        ("product_serial", b"7XYZ123"),
        ("product_sku", b"SKU=NotProvided;ModelName=PowerEdge R640"),
        ("product_uuid", b"4c4c4544-0058-5910-8037-b7c04f313233"),
        ("product_version", b"Caf\xe9 1"),
        ("sys_vendor", b"Dell Inc."),
        ("modalias", b"dmi:bvnDellInc.:bvr2.11.2:"),
        ("uevent", b"MODALIAS=dmi:bvnDellInc."),
    ] {
        let mut v = value.to_vec();
        v.push(b'\n');
        put(&sys, &format!("{id}/{file}"), v);
    }

    // bonding: bond0 with lower_ links, one slave down; bond1 with the
    // older slave_ link name; a bond without slaves.
    put(&sys, "class/net/bonding_masters", "bond0 bond1 bond2\n");
    put(&sys, "class/net/bond0/bonding/slaves", "eth0 eth1\n");
    put(
        &sys,
        "class/net/bond0/lower_eth0/bonding_slave/mii_status",
        "up\n",
    );
    put(
        &sys,
        "class/net/bond0/lower_eth1/bonding_slave/mii_status",
        "down\n",
    );
    put(&sys, "class/net/bond1/bonding/slaves", "eth2\n");
    put(
        &sys,
        "class/net/bond1/slave_eth2/bonding_slave/mii_status",
        "up\n",
    );
    put(&sys, "class/net/bond2/bonding/slaves", "\n");

    // nfs: a 5.x client without NFSv2 (its procedures count as zeros) and
    // with more NFSv4 procedures than node_exporter names.
    put(
        &proc,
        "net/rpc/nfs",
        "net 18628 0 18628 6\n\
         rpc 4329785 3 4338291\n\
         proc3 22 1 4084749 29200 94754 32580 186 47747 7840 4572 5 0 0 0 3 0 0 0 0 12 2 2 0\n\
         proc4 69 0 37 74 111 148 185 222 259 296 333 370 407 444 481 518 555 592 629 666 703 740 777 814 851 888 925 962 999 36 73 110 147 184 221 258 295 332 369 406 443 480 517 554 591 628 665 702 739 776 813 850 887 924 961 998 35 72 109 146 183 220 257 294 331 368 405 442 479 516\n",
    );

    // xfs: the global stats directory (not a filesystem), a filesystem
    // with every line of a 5.x kernel, and an older one without `vnodes`'
    // 8th number nor the v2 B-tree lines.
    put(&sys, "fs/xfs/stats/stats", "extent_alloc 1 2 3 4\n");
    put(
        &sys,
        "fs/xfs/sda1/stats/stats",
        "extent_alloc 92447 97589 92448 93751\n\
         abt 0 0 0 0\n\
         blk_map 1767055 188820 184891 92447 92448 2140766 0\n\
         bmbt 0 0 0 0\n\
         dir 185039 92447 92444 136422\n\
         trans 706 944304 0\n\
         ig 185045 58807 0 126238 0 33637 22\n\
         log 2883 113448 9 17360 739\n\
         push_ail 945014 0 134260 15483 0 3940 464 159985 0 40\n\
         xstrat 92447 0\n\
         rw 107739 94045\n\
         attr 4 0 0 0\n\
         icluster 8677 7849 135802\n\
         vnodes 92601 0 0 0 92444 92444 92444 0\n\
         buf 2666287 7122 2659202 3599 2 7085 0 10297 7085\n\
         abtb2 184 227 13 12 0 0 0 0 0 0 0 0 0 0 2\n\
         abtc2 345 295 67 66 0 0 0 0 0 0 0 0 0 0 3\n\
         bmbt2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
         ibt2 343 304 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
         fibt2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
         rmapbt 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
         refcntbt 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
         qm 0 0 0 0 0 0 0 0\n\
         xpc 399724544 92823103 86219234\n\
         debug 0\n",
    );
    put(
        &sys,
        "fs/xfs/dm-0/stats/stats",
        "extent_alloc 1 2 3 4\n\
         abt 5 6 7 8\n\
         blk_map 9 10 11 12 13 14 4294967295\n\
         dir 15 16 17 18\n\
         ig 19 20 21 22 23 24 25\n\
         rw 26 27\n\
         vnodes 28 29 30 31 32 33 34\n",
    );
}

/// node_exporter with only `collectors` on, reading the fixture tree.
fn node_exporter(root: &Path, collectors: &[&str], extra: &[&str]) -> NodeExporter {
    let mut args = vec![
        format!("--path.procfs={}", root.join("proc").display()),
        format!("--path.sysfs={}", root.join("sys").display()),
        "--collector.disable-defaults".to_string(),
    ];
    args.extend(collectors.iter().map(|c| format!("--collector.{c}")));
    args.extend(extra.iter().map(|a| a.to_string()));
    NodeExporter::start(&args)
}

fn steward(root: &Path, collectors: &[&str], extra: &str) -> StewardAgent {
    let list: Vec<String> = collectors.iter().map(|c| format!("{c:?}")).collect();
    StewardAgent::start(
        &format!(
            "[node]\ncollectors = [{}]\nprocfs_path = {:?}\nsysfs_path = {:?}\n{extra}",
            list.join(", "),
            root.join("proc"),
            root.join("sys"),
        ),
        "",
    )
    .expect("steward agent starts")
}

/// The host families of a scrape: `node_*` less the scrape self-metrics
/// and node_exporter's build info.
fn host_series(s: &Scrape) -> BTreeMap<&Series, f64> {
    s.samples
        .iter()
        .filter(|(k, _)| {
            k.name.starts_with("node_")
                && !k.name.starts_with("node_scrape_")
                && !k.name.starts_with("node_exporter_")
        })
        .map(|(k, v)| (k, *v))
        .collect()
}

/// Every difference between the two scrapes' host series: types, series
/// present in one only, and values.
fn differences(ne: &Scrape, st: &Scrape) -> Vec<String> {
    let (a, b) = (host_series(ne), host_series(st));
    let mut problems = Vec::new();
    for (series, value) in &a {
        let family = ne.family_of(&series.name);
        let (ne_type, st_type) = (ne.types.get(&family), st.types.get(&family));
        if ne_type != st_type {
            problems.push(format!(
                "{family}: type {st_type:?}, node_exporter {ne_type:?}"
            ));
        }
        match b.get(series) {
            None => problems.push(format!("missing in steward: {series} {value}")),
            Some(v) if v != value => {
                problems.push(format!("{series}: steward {v}, node_exporter {value}"))
            }
            Some(_) => {}
        }
    }
    for (series, value) in &b {
        if !a.contains_key(series) {
            problems.push(format!("only in steward: {series} {value}"));
        }
    }
    problems.dedup();
    problems
}

fn success(s: &Scrape, collector: &str) -> Option<f64> {
    s.samples
        .get(&Series {
            name: "node_scrape_collector_success".into(),
            labels: vec![("collector".into(), collector.into())],
        })
        .copied()
}

fn families_with_prefix<'a>(s: &'a Scrape, prefix: &str) -> BTreeSet<&'a str> {
    s.types
        .keys()
        .filter(|f| f.starts_with(prefix))
        .map(String::as_str)
        .collect()
}

#[test]
fn hardware_collectors_match_node_exporter_on_a_fixture_tree() {
    let dir = tempfile::tempdir().unwrap();
    hardware_tree(dir.path());
    let ne = node_exporter(dir.path(), COLLECTORS, &[]);
    let st = steward(dir.path(), COLLECTORS, "");
    let (ne_text, st_text) = (ne.scrape(), st.scrape().unwrap());
    let (ne_s, st_s) = (Scrape::parse(&ne_text), Scrape::parse(&st_text));

    // Nothing promtool would flag that it does not flag for node_exporter.
    let ne_lint = promtool_problems(&ne_text).expect("promtool on node_exporter's scrape");
    let st_lint = promtool_problems(&st_text).expect("promtool on steward's scrape");
    let new: Vec<&String> = st_lint.difference(&ne_lint).collect();
    assert!(new.is_empty(), "promtool, steward only: {new:#?}");

    let problems = differences(&ne_s, &st_s);
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The fixture exercised every collector: each has series in both, and
    // both report success.
    for (collector, family) in [
        ("bonding", "node_bonding_active"),
        ("cpufreq", "node_cpu_scaling_frequency_hertz"),
        ("dmi", "node_dmi_info"),
        ("edac", "node_edac_csrow_correctable_errors_total"),
        ("nfs", "node_nfs_requests_total"),
        ("nvme", "node_nvme_info"),
        ("powersupplyclass", "node_power_supply_info"),
        ("rapl", "node_rapl_package_joules_total"),
        ("schedstat", "node_schedstat_timeslices_total"),
        ("thermal_zone", "node_cooling_device_cur_state"),
        ("xfs", "node_xfs_read_calls_total"),
    ] {
        assert!(
            ne_s.series_of(family).count() >= 2 || family == "node_dmi_info",
            "node_exporter has too few {family} series: the fixture is not read"
        );
        assert_eq!(
            success(&ne_s, collector),
            Some(1.0),
            "node_exporter {collector}"
        );
        assert_eq!(success(&st_s, collector), Some(1.0), "steward {collector}");
    }
    assert_eq!(families_with_prefix(&st_s, "node_power_supply_").len(), 17);
    assert_eq!(families_with_prefix(&st_s, "node_rapl_").len(), 4);
    assert_eq!(families_with_prefix(&st_s, "node_xfs_").len(), 39);
}

#[test]
fn options_match_node_exporter_flags() {
    let dir = tempfile::tempdir().unwrap();
    hardware_tree(dir.path());
    let collectors = ["powersupplyclass", "rapl"];
    let ne = node_exporter(
        dir.path(),
        &collectors,
        &[
            "--collector.rapl.enable-zone-label",
            "--collector.powersupply.ignored-supplies=^(AC|ucsi-.*)$",
        ],
    );
    let st = steward(
        dir.path(),
        &collectors,
        "rapl_enable_zone_label = true\npowersupply_ignored_supplies = \"^(AC|ucsi-.*)$\"\n",
    );
    let (ne_s, st_s) = (
        Scrape::parse(&ne.scrape()),
        Scrape::parse(&st.scrape().unwrap()),
    );
    let problems = differences(&ne_s, &st_s);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(st_s.series_of("node_rapl_joules_total").count(), 8);
    assert_eq!(st_s.series_of("node_power_supply_info").count(), 1);
}

#[test]
fn absent_hardware_exports_nothing_and_succeeds() {
    // An empty /proc and /sys: every collector has nothing to read.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::create_dir_all(dir.path().join("sys")).unwrap();
    let st = steward(dir.path(), COLLECTORS, "");
    let s = Scrape::parse(&st.scrape().unwrap());
    assert!(host_series(&s).is_empty(), "{:?}", host_series(&s));
    for collector in COLLECTORS {
        assert_eq!(
            success(&s, collector),
            Some(1.0),
            "{collector}: {}",
            st.log()
        );
    }
}

#[test]
fn each_collector_is_selectable_by_name() {
    let dir = tempfile::tempdir().unwrap();
    hardware_tree(dir.path());
    let st = steward(dir.path(), COLLECTORS, "");
    let get = |query: &str| {
        let (status, _, body) = http_get(st.port, &format!("/metrics?{query}"), &[]).unwrap();
        assert_eq!(status, 200);
        Scrape::parse(&String::from_utf8(body).unwrap())
    };
    let only = get("collect[]=thermal_zone&collect[]=rapl");
    let ran: BTreeSet<&str> = only
        .series_of("node_scrape_collector_success")
        .filter_map(|(s, _)| s.label("collector"))
        .collect();
    assert_eq!(ran, BTreeSet::from(["rapl", "thermal_zone"]));
    assert!(only.types.contains_key("node_thermal_zone_temp"));
    assert!(!only.types.contains_key("node_nvme_info"));

    let without = get("exclude[]=dmi&exclude[]=cpufreq");
    assert!(!without.types.contains_key("node_dmi_info"));
    assert!(!without.types.contains_key("node_cpu_frequency_hertz"));
    assert!(without
        .types
        .contains_key("node_edac_correctable_errors_total"));
    assert!(without.types.contains_key("node_bonding_slaves"));
}
