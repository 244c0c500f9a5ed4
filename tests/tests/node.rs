//! Host metrics side by side with Debian's prometheus-node-exporter 1.5 on
//! the same machine: the same families with the same types and label names,
//! the same series, equal static values and close counters; promtool finds
//! nothing new; a real Prometheus scrapes Steward; collect[]/exclude[] work
//! with node_exporter's collector names.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use steward_tests::node_exporter::NodeExporter;
use steward_tests::promtext::{promtool_problems, Prometheus, Scrape, Series};
use steward_tests::{http_get, StewardAgent};

/// Families node_exporter exposes that Steward deliberately does not, each
/// with its reason. Everything else node_exporter exposes must match.
const EXCEPTIONS: &[(&str, &str)] = &[
    // The Go runtime of the node_exporter process itself; Steward is not Go.
    ("go_", "Go runtime metrics of node_exporter's own process"),
    // node_exporter's HTTP handler self-metrics.
    ("promhttp_", "client_golang HTTP handler metrics"),
    // Self metrics of the exporter process: Steward exports its own
    // process_* (different process), compared separately by the agent tests.
    ("process_", "the exporter's own process, not the host"),
    (
        "node_exporter_build_info",
        "Steward has steward_build_info instead",
    ),
];

/// node_exporter's name for a collector that Steward exports under the
/// same collector name (the scrape self-metrics must list them all).
const NODE_COLLECTORS_WITH_DATA: &[&str] = &[
    "arp",
    "conntrack",
    "cpu",
    "diskstats",
    "entropy",
    "filefd",
    "filesystem",
    "loadavg",
    "meminfo",
    "netclass",
    "netdev",
    "netstat",
    "os",
    "pressure",
    "selinux",
    "sockstat",
    "softnet",
    "stat",
    "textfile",
    "time",
    "timex",
    "udp_queues",
    "uname",
    "vmstat",
];

fn excepted(family: &str) -> bool {
    EXCEPTIONS
        .iter()
        .any(|(prefix, _)| family.starts_with(prefix))
}

fn steward() -> StewardAgent {
    // Defaults only: node metrics are on with node_exporter's defaults.
    StewardAgent::start("", "").expect("steward agent starts")
}

fn get(port: u16, path: &str) -> String {
    let (status, _, body) = http_get(port, path, &[]).expect("GET");
    assert_eq!(status, 200, "GET {path}");
    String::from_utf8(body).expect("utf-8")
}

/// Both scrapes, node_exporter's first so Steward's counters are the later
/// reading.
fn scrapes(ne: &NodeExporter, st: &StewardAgent) -> (String, String) {
    let a = ne.scrape();
    let b = st.scrape().expect("steward scrape");
    (a, b)
}

#[test]
fn families_types_and_labels_match_node_exporter() {
    let ne = NodeExporter::start(&[]);
    let st = steward();
    let (ne_text, st_text) = scrapes(&ne, &st);
    let (ne_scrape, st_scrape) = (Scrape::parse(&ne_text), Scrape::parse(&st_text));
    let (ne_shapes, st_shapes) = (ne_scrape.shapes(), st_scrape.shapes());
    let mut problems = Vec::new();
    for (family, (kind, label_sets)) in &ne_shapes {
        if excepted(family) {
            continue;
        }
        match st_shapes.get(family) {
            None => problems.push(format!("missing family {family} ({kind})")),
            Some((st_kind, st_sets)) => {
                if st_kind != kind {
                    problems.push(format!(
                        "{family}: type {st_kind}, node_exporter has {kind}"
                    ));
                }
                for set in label_sets {
                    if !st_sets.contains(set) {
                        problems.push(format!(
                            "{family}: no series with labels {set:?} (steward has {st_sets:?})"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        ne_shapes.len() > 200,
        "node_exporter exposed only {} families",
        ne_shapes.len()
    );

    // Every node collector that has data here reports success.
    for name in NODE_COLLECTORS_WITH_DATA {
        let series = Series {
            name: "node_scrape_collector_success".into(),
            labels: vec![("collector".into(), name.to_string())],
        };
        assert_eq!(
            st_scrape.samples.get(&series),
            Some(&1.0),
            "collector {name} did not succeed; /health: {}",
            get(st.port, "/health")
        );
    }
}

#[test]
fn series_and_values_agree_with_node_exporter() {
    let ne = NodeExporter::start(&[]);
    let st = steward();
    let (ne_text, st_text) = scrapes(&ne, &st);
    let (ne_s, st_s) = (Scrape::parse(&ne_text), Scrape::parse(&st_text));

    // Families whose series vary between two reads a moment apart
    // (self-timing, sockets of the scrapes themselves, clocks).
    let volatile = |name: &str| {
        name.starts_with("node_scrape_collector_")
            || name.starts_with("node_sockstat_")
            || name.starts_with("node_arp_")
            || name == "node_textfile_mtime_seconds"
    };
    let mut problems = Vec::new();
    // The same series: every labelled node_exporter series exists in Steward.
    for series in ne_s.samples.keys() {
        let family = ne_s.family_of(&series.name);
        if excepted(&family) || volatile(&family) {
            continue;
        }
        if !st_s.samples.contains_key(series) {
            problems.push(format!("missing series {series}"));
        }
    }

    // Exact: sizes and static information.
    let exact_families = [
        "node_memory_MemTotal_bytes",
        "node_memory_SwapTotal_bytes",
        "node_memory_Hugepagesize_bytes",
        "node_filesystem_size_bytes",
        "node_filesystem_files",
        "node_filesystem_readonly",
        "node_filesystem_device_error",
        "node_boot_time_seconds",
        "node_uname_info",
        "node_os_info",
        "node_os_version",
        "node_network_info",
        "node_network_mtu_bytes",
        "node_network_speed_bytes",
        "node_network_flags",
        "node_network_iface_id",
        "node_network_protocol_type",
        "node_network_transmit_queue_length",
        "node_network_up",
        "node_disk_info",
        "node_entropy_pool_size_bits",
        "node_filefd_maximum",
        "node_nf_conntrack_entries_limit",
        "node_time_clocksource_available_info",
        "node_time_clocksource_current_info",
        "node_time_zone_offset_seconds",
        "node_timex_tick_seconds",
        "node_timex_status",
        "node_timex_sync_status",
        "node_selinux_enabled",
        "node_netstat_Ip_Forwarding",
    ];
    for family in exact_families {
        let mut seen = 0;
        for (series, value) in ne_s.series_of(family) {
            seen += 1;
            match st_s.samples.get(series) {
                Some(v) if *v == value => {}
                Some(v) => problems.push(format!("{series}: steward {v}, node_exporter {value}")),
                None => problems.push(format!("{series}: missing in steward")),
            }
        }
        if seen == 0 && family != "node_network_speed_bytes" {
            problems.push(format!(
                "{family}: node_exporter has no series (test host changed?)"
            ));
        }
    }
    // The dashboard's host variable comes from nodename.
    let nodename = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        st_s.series_of("node_uname_info")
            .any(|(s, _)| s.label("nodename") == Some(nodename.trim())),
        "node_uname_info without nodename={nodename}"
    );

    // Counters read later by Steward: not below node_exporter's reading and
    // within a small margin above it.
    let counters = [
        ("node_cpu_seconds_total", 0.05, 10.0),
        ("node_context_switches_total", 0.05, 50_000.0),
        ("node_intr_total", 0.05, 50_000.0),
        ("node_forks_total", 0.05, 500.0),
        ("node_disk_reads_completed_total", 0.05, 1000.0),
        ("node_disk_written_bytes_total", 0.05, 64e6),
        ("node_network_receive_bytes_total", 0.05, 10e6),
        ("node_network_transmit_packets_total", 0.05, 10_000.0),
        ("node_netstat_Tcp_ActiveOpens", 0.05, 500.0),
        ("node_vmstat_pgfault", 0.05, 5e6),
        ("node_pressure_cpu_waiting_seconds_total", 0.05, 10.0),
        ("node_softnet_processed_total", 0.05, 10_000.0),
    ];
    for (family, rel, abs) in counters {
        for (series, value) in ne_s.series_of(family) {
            let Some(v) = st_s.samples.get(series) else {
                problems.push(format!("{series}: missing in steward"));
                continue;
            };
            if *v + 1e-9 < value || *v > value * (1.0 + rel) + abs {
                problems.push(format!(
                    "{series}: steward {v} vs node_exporter {value} (a moment earlier)"
                ));
            }
        }
    }
    // Gauges that move a little between reads.
    let gauges = [
        ("node_memory_MemAvailable_bytes", 0.05),
        ("node_memory_Cached_bytes", 0.10),
        ("node_filesystem_avail_bytes", 0.01),
        ("node_filesystem_free_bytes", 0.01),
        ("node_filefd_allocated", 0.5),
    ];
    for (family, rel) in gauges {
        for (series, value) in ne_s.series_of(family) {
            match st_s.samples.get(series) {
                Some(v) if (v - value).abs() <= value.abs() * rel + 1.0 => {}
                Some(v) => problems.push(format!("{series}: steward {v} vs node_exporter {value}")),
                None => problems.push(format!("{series}: missing in steward")),
            }
        }
    }
    let (t_ne, t_st) = (
        ne_s.value("node_time_seconds").unwrap(),
        st_s.value("node_time_seconds").unwrap(),
    );
    assert!(
        (0.0..10.0).contains(&(t_st - t_ne)),
        "node_time_seconds {t_ne} vs {t_st}"
    );
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn promtool_finds_nothing_new_and_prometheus_scrapes_steward() {
    let ne = NodeExporter::start(&[]);
    let st = steward();
    let (ne_text, st_text) = scrapes(&ne, &st);
    let ne_problems = promtool_problems(&ne_text).expect("promtool on node_exporter's scrape");
    let st_problems = promtool_problems(&st_text).expect("promtool on steward's scrape");
    let new: BTreeSet<&String> = st_problems.difference(&ne_problems).collect();
    assert!(
        new.is_empty(),
        "promtool reports for steward but not for node_exporter:\n{new:#?}"
    );
    drop(ne);

    let prom = Prometheus::start(&[format!("127.0.0.1:{}", st.port)]).expect("prometheus starts");
    let targets = prom
        .wait_targets_up(Duration::from_secs(60))
        .expect("steward target up");
    assert_eq!(
        targets["data"]["activeTargets"][0]["scrapePool"], "steward",
        "{targets}"
    );
    // The samples landed: query a node metric through Prometheus.
    let mut found = serde_json::Value::Null;
    for _ in 0..40 {
        let v = prom
            .api("/api/v1/query?query=node_uname_info")
            .expect("query");
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            found = v;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let nodename = found["data"]["result"][0]["metric"]["nodename"].as_str();
    assert!(
        nodename.is_some_and(|n| !n.is_empty()),
        "query result: {found}"
    );
    let up = prom.api("/api/v1/query?query=up").expect("query up");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    // Prometheus scrapes with gzip and its timeout header: every node
    // collector still succeeds under its deadline.
    let failed = prom
        .api("/api/v1/query?query=node_scrape_collector_success%3D%3D0")
        .expect("query");
    assert_eq!(
        failed["data"]["result"].as_array().map(Vec::len),
        Some(0),
        "failing collectors: {failed}"
    );
}

#[test]
fn collect_and_exclude_use_node_collector_names() {
    let st = steward();
    let only = Scrape::parse(&get(st.port, "/metrics?collect[]=cpu&collect[]=meminfo"));
    let families: BTreeSet<String> = only.types.keys().cloned().collect();
    assert!(families.contains("node_cpu_seconds_total"), "{families:?}");
    assert!(families.contains("node_memory_MemTotal_bytes"));
    assert!(!families.contains("node_load1"));
    assert!(!families.contains("node_filesystem_size_bytes"));
    let collectors: BTreeSet<&str> = only
        .series_of("node_scrape_collector_success")
        .filter_map(|(s, _)| s.label("collector"))
        .collect();
    assert_eq!(collectors, BTreeSet::from(["cpu", "meminfo"]));

    let without = Scrape::parse(&get(st.port, "/metrics?exclude[]=cpu&exclude[]=filesystem"));
    assert!(!without.types.contains_key("node_cpu_seconds_total"));
    assert!(!without.types.contains_key("node_filesystem_size_bytes"));
    assert!(without.types.contains_key("node_load1"));
    assert!(without.types.contains_key("node_memory_MemTotal_bytes"));
}

#[test]
fn node_config_selects_collectors_and_filters() {
    // Only two collectors, and a filesystem filter that drops every mount.
    let st = StewardAgent::start(
        "[node]\ncollectors = [\"filesystem\", \"loadavg\", \"uname\"]\ndisable = [\"uname\"]\nfilesystem_mount_points_exclude = \".*\"\n",
        "",
    )
    .expect("steward starts");
    let s = Scrape::parse(&st.scrape().unwrap());
    let collectors: BTreeSet<&str> = s
        .series_of("node_scrape_collector_success")
        .filter_map(|(s, _)| s.label("collector"))
        .collect();
    assert_eq!(collectors, BTreeSet::from(["filesystem", "loadavg"]));
    assert!(s.types.contains_key("node_load1"));
    assert_eq!(s.series_of("node_filesystem_size_bytes").count(), 0);
    assert!(!s.types.contains_key("node_uname_info"));

    // A bad node section is reported with its keys.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[node]\ncollectors = [\"cpu\", \"nope\"]\nnetstat_fields = \"(\"\n",
    )
    .unwrap();
    let out = Command::new(steward_tests::steward_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node.collectors[1]"), "{err}");
    assert!(err.contains("node.netstat_fields"), "{err}");
}
