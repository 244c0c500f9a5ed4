//! Collectors that read /proc text files. Each has a pure `parse_*`/`*_from`
//! function over the file's text, tested on fixtures below, and a thin
//! wrapper that reads the file.

use std::collections::BTreeMap;
use std::path::Path;

use super::{counter, gauge, is_absent, read_text, NameFilter, Settings};
use crate::collector::{CollectError, Collected};
use crate::metrics::{MetricFamily, MetricType};

/// USER_HZ: the unit of /proc/stat times on every Linux architecture.
const USER_HZ: f64 = 100.0;
/// /proc/diskstats counts 512-byte sectors whatever the device's block size.
const SECTOR_BYTES: f64 = 512.0;

fn num(s: &str) -> f64 {
    s.parse::<f64>().unwrap_or(0.0)
}

fn hex(s: &str) -> f64 {
    u64::from_str_radix(s, 16).map(|v| v as f64).unwrap_or(0.0)
}

/// Reads a file that may legitimately be missing: `Ok(None)` when absent.
fn read_optional(path: &Path) -> Result<Option<String>, CollectError> {
    match super::read_pseudo_file(std::fs::File::open(path), 4096) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(CollectError::failed(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

// ---------------------------------------------------------------- cpu, stat

pub(crate) fn cpu(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(cpu_from(&read_text(&s.proc_path("stat"))?))
}

/// `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total`
/// from the per-CPU lines of /proc/stat.
pub(crate) fn cpu_from(text: &str) -> Vec<MetricFamily> {
    const MODES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut seconds = MetricFamily::counter(
        "node_cpu_seconds_total",
        "Seconds the CPUs spent in each mode.",
    );
    let mut guest = MetricFamily::counter(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
    );
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(id) = fields.next() else { continue };
        // The aggregate "cpu " line has no number.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let values: Vec<f64> = fields.map(|v| num(v) / USER_HZ).collect();
        for (mode, value) in MODES.iter().zip(values.iter()) {
            seconds.push([("cpu", id), ("mode", *mode)], *value);
        }
        if values.len() >= 10 {
            guest.push([("cpu", id), ("mode", "nice")], values[9]);
            guest.push([("cpu", id), ("mode", "user")], values[8]);
        }
    }
    vec![seconds, guest]
}

pub(crate) fn stat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(stat_from(&read_text(&s.proc_path("stat"))?))
}

/// Boot time, context switches, forks, interrupts and process states.
pub(crate) fn stat_from(text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(6);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let key = fields.next().unwrap_or("");
        let first = fields.next().map(num).unwrap_or(0.0);
        match key {
            "intr" => out.push(counter(
                "node_intr_total",
                "Total number of interrupts serviced.",
                first,
            )),
            "ctxt" => out.push(counter(
                "node_context_switches_total",
                "Total number of context switches.",
                first,
            )),
            "btime" => out.push(gauge(
                "node_boot_time_seconds",
                "Node boot time, in unixtime.",
                first,
            )),
            "processes" => out.push(counter("node_forks_total", "Total number of forks.", first)),
            "procs_running" => out.push(gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
                first,
            )),
            "procs_blocked" => out.push(gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                first,
            )),
            _ => {}
        }
    }
    out
}

// ------------------------------------------------------- loadavg, memory

pub(crate) fn loadavg(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    loadavg_from(&read_text(&s.proc_path("loadavg"))?)
}

pub(crate) fn loadavg_from(text: &str) -> Result<Vec<MetricFamily>, CollectError> {
    let mut f = text.split_ascii_whitespace();
    let mut next = || {
        f.next()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| CollectError::failed(format!("unexpected /proc/loadavg: {text:?}")))
    };
    let (l1, l5, l15) = (next()?, next()?, next()?);
    Ok(vec![
        gauge("node_load1", "1m load average.", l1),
        gauge("node_load5", "5m load average.", l5),
        gauge("node_load15", "15m load average.", l15),
    ])
}

pub(crate) fn meminfo(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(meminfo_from(&read_text(&s.proc_path("meminfo"))?))
}

/// One gauge per /proc/meminfo field: `Active(anon)` becomes
/// `node_memory_Active_anon_bytes`; fields without `kB` (HugePages_Total)
/// keep their count and get no `_bytes`.
pub(crate) fn meminfo_from(text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut parts = rest.split_ascii_whitespace();
        let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let mut name = String::with_capacity(key.len() + 20);
        name.push_str("node_memory_");
        for c in key.chars() {
            match c {
                '(' => name.push('_'),
                ')' => {}
                c => name.push(c),
            }
        }
        let (value, help) = if parts.next() == Some("kB") {
            name.push_str("_bytes");
            (value * 1024.0, "Memory information field, in bytes.")
        } else {
            (value, "Memory information field.")
        };
        out.push(MetricFamily::gauge(name, help).value(value));
    }
    out
}

pub(crate) fn vmstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(vmstat_from(
        &read_text(&s.proc_path("vmstat"))?,
        &s.vmstat_fields,
    ))
}

/// Untyped `node_vmstat_<field>` for the fields the regex selects.
pub(crate) fn vmstat_from(text: &str, fields: &NameFilter) -> Vec<MetricFamily> {
    let mut fields = fields.pass();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(k, _)| fields.is_match(k))
        .map(|(k, v)| {
            MetricFamily::untyped(
                format!("node_vmstat_{k}"),
                "/proc/vmstat information field.",
            )
            .value(num(v.trim()))
        })
        .collect()
}

// ---------------------------------------------------------------- disks

pub(crate) fn diskstats(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let text = read_text(&s.proc_path("diskstats"))?;
    // udev's database gives the model/serial labels of node_disk_info; it
    // lives under /run, not /proc, exactly where node_exporter reads it.
    let udev = Path::new("/run/udev/data");
    Ok(diskstats_from(&text, &s.disk_exclude, |major, minor| {
        read_udev(&udev.join(format!("b{major}:{minor}")))
    }))
}

/// Properties of one block device from the udev database (`E:KEY=value`).
fn read_udev(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn diskstats_from(
    text: &str,
    exclude: &NameFilter,
    udev: impl Fn(&str, &str) -> BTreeMap<String, String>,
) -> Vec<MetricFamily> {
    // (column after the device name, family, help, kind, scale)
    const COLUMNS: [(usize, &str, &str, MetricType, f64); 17] = [
        (
            0,
            "node_disk_reads_completed_total",
            "The total number of reads completed successfully.",
            MetricType::Counter,
            1.0,
        ),
        (
            1,
            "node_disk_reads_merged_total",
            "The total number of reads merged.",
            MetricType::Counter,
            1.0,
        ),
        (
            2,
            "node_disk_read_bytes_total",
            "The total number of bytes read successfully.",
            MetricType::Counter,
            SECTOR_BYTES,
        ),
        (
            3,
            "node_disk_read_time_seconds_total",
            "The total number of seconds spent by all reads.",
            MetricType::Counter,
            0.001,
        ),
        (
            4,
            "node_disk_writes_completed_total",
            "The total number of writes completed successfully.",
            MetricType::Counter,
            1.0,
        ),
        (
            5,
            "node_disk_writes_merged_total",
            "The number of writes merged.",
            MetricType::Counter,
            1.0,
        ),
        (
            6,
            "node_disk_written_bytes_total",
            "The total number of bytes written successfully.",
            MetricType::Counter,
            SECTOR_BYTES,
        ),
        (
            7,
            "node_disk_write_time_seconds_total",
            "This is the total number of seconds spent by all writes.",
            MetricType::Counter,
            0.001,
        ),
        (
            8,
            "node_disk_io_now",
            "The number of I/Os currently in progress.",
            MetricType::Gauge,
            1.0,
        ),
        (
            9,
            "node_disk_io_time_seconds_total",
            "Total seconds spent doing I/Os.",
            MetricType::Counter,
            0.001,
        ),
        (
            10,
            "node_disk_io_time_weighted_seconds_total",
            "The weighted number of seconds spent doing I/Os.",
            MetricType::Counter,
            0.001,
        ),
        (
            11,
            "node_disk_discards_completed_total",
            "The total number of discards completed successfully.",
            MetricType::Counter,
            1.0,
        ),
        (
            12,
            "node_disk_discards_merged_total",
            "The total number of discards merged.",
            MetricType::Counter,
            1.0,
        ),
        (
            13,
            "node_disk_discarded_sectors_total",
            "The total number of sectors discarded successfully.",
            MetricType::Counter,
            1.0,
        ),
        (
            14,
            "node_disk_discard_time_seconds_total",
            "This is the total number of seconds spent by all discards.",
            MetricType::Counter,
            0.001,
        ),
        (
            15,
            "node_disk_flush_requests_total",
            "The total number of flush requests completed successfully.",
            MetricType::Counter,
            1.0,
        ),
        (
            16,
            "node_disk_flush_requests_time_seconds_total",
            "This is the total number of seconds spent by all flush requests.",
            MetricType::Counter,
            0.001,
        ),
    ];
    let mut families: Vec<MetricFamily> = COLUMNS
        .iter()
        .map(|(_, name, help, kind, _)| MetricFamily::new(*name, *help, *kind))
        .collect();
    let mut info = MetricFamily::gauge("node_disk_info", "Info of /sys/block/<block_device>.");
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 14 {
            continue;
        }
        let (major, minor, device) = (fields[0], fields[1], fields[2]);
        if exclude.is_match(device) {
            continue;
        }
        let values = &fields[3..];
        for ((column, ..), family) in COLUMNS.iter().zip(families.iter_mut()) {
            if let Some(v) = values.get(*column) {
                let scale = COLUMNS[*column].4;
                family.push([("device", device)], num(v) * scale);
            }
        }
        let props = udev(major, minor);
        let prop = |k: &str| props.get(k).cloned().unwrap_or_default();
        let serial = props
            .get("ID_SERIAL_SHORT")
            .or_else(|| props.get("ID_SERIAL"))
            .cloned()
            .unwrap_or_default();
        info.push(
            [
                ("device", device.to_string()),
                ("major", major.to_string()),
                ("minor", minor.to_string()),
                ("model", prop("ID_MODEL")),
                ("path", prop("ID_PATH")),
                ("revision", prop("ID_REVISION")),
                ("serial", serial),
                ("wwn", prop("ID_WWN")),
            ],
            1.0,
        );
    }
    families.push(info);
    families
}

pub(crate) fn mdadm(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(match read_optional(&s.proc_path("mdstat"))? {
        Some(text) => mdstat_from(&text),
        None => Vec::new(),
    })
}

/// md arrays from /proc/mdstat: disks by state, array state, blocks.
pub(crate) fn mdstat_from(text: &str) -> Vec<MetricFamily> {
    let mut disks = MetricFamily::gauge(
        "node_md_disks",
        "Number of active/failed/spare disks of device.",
    );
    let mut required =
        MetricFamily::gauge("node_md_disks_required", "Total number of disks of device.");
    let mut state = MetricFamily::gauge("node_md_state", "Indicates the state of md-device.");
    let mut blocks = MetricFamily::gauge("node_md_blocks", "Total number of blocks on device.");
    let mut synced = MetricFamily::gauge(
        "node_md_blocks_synced",
        "Number of blocks synced on device.",
    );
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some((name, rest)) = line.split_once(" : ") else {
            continue;
        };
        let name = name.trim();
        if name == "Personalities" || name.contains(' ') {
            continue;
        }
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        let mut activity = words.first().copied().unwrap_or("").to_string();
        let members = words.iter().filter(|w| w.contains('['));
        let (mut failed, mut spare, mut listed) = (0.0, 0.0, 0.0);
        for m in members {
            listed += 1.0;
            if m.ends_with("(F)") {
                failed += 1.0;
            } else if m.ends_with("(S)") {
                spare += 1.0;
            }
        }
        let status = lines.get(i + 1).copied().unwrap_or("");
        let total_blocks = status
            .split_ascii_whitespace()
            .next()
            .map(num)
            .unwrap_or(0.0);
        // "[2/1]": disks the array needs / disks that are up.
        let (mut total, mut active) = (listed - spare, listed - spare - failed);
        if let Some(counts) = status
            .split_ascii_whitespace()
            .find(|w| w.starts_with('[') && w.contains('/'))
        {
            let inner = counts.trim_matches(|c| c == '[' || c == ']');
            if let Some((t, a)) = inner.split_once('/') {
                total = num(t);
                active = num(a);
            }
        }
        let mut blocks_synced = total_blocks;
        if activity == "active" {
            // A progress line follows the status line while syncing.
            let progress = lines.get(i + 2).copied().unwrap_or("");
            for (word, new_state) in [
                ("recovery", "recovering"),
                ("resync", "resyncing"),
                ("check", "checking"),
            ] {
                if progress.contains(&format!("{word} =")) {
                    activity = new_state.to_string();
                    if let Some(frac) = progress.split('(').nth(1).and_then(|p| p.split(')').next())
                    {
                        if let Some((done, _)) = frac.split_once('/') {
                            blocks_synced = num(done);
                        }
                    }
                }
            }
        } else {
            blocks_synced = 0.0;
        }
        let pairs = [("active", active), ("failed", failed), ("spare", spare)];
        for (st, v) in pairs {
            disks.push([("device", name), ("state", st)], v);
        }
        required.push([("device", name)], total);
        for (st, key) in [
            ("active", "active"),
            ("inactive", "inactive"),
            ("recovering", "recovering"),
            ("resync", "resyncing"),
            ("check", "checking"),
        ] {
            let v = if activity == key { 1.0 } else { 0.0 };
            state.push([("device", name), ("state", st)], v);
        }
        blocks.push([("device", name)], total_blocks);
        synced.push([("device", name)], blocks_synced);
    }
    vec![disks, required, state, blocks, synced]
}

// -------------------------------------------------------------- network

pub(crate) fn netdev(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let text = read_text(&s.proc_path("net/dev"))?;
    let sys = s.sys_path("class/net");
    Ok(netdev_from(&text, &s.netdev_exclude, |dev| {
        // /proc/net/dev has no rx_nohandler; sysfs has it (netlink too).
        super::read_attr(&sys.join(dev).join("statistics/rx_nohandler")).map(|v| num(&v))
    }))
}

/// `node_network_{receive,transmit}_*_total{device}` from /proc/net/dev,
/// whose columns already sum the error kinds as node_exporter's netlink
/// path does.
pub(crate) fn netdev_from(
    text: &str,
    exclude: &NameFilter,
    nohandler: impl Fn(&str) -> Option<f64>,
) -> Vec<MetricFamily> {
    const NAMES: [&str; 16] = [
        "receive_bytes",
        "receive_packets",
        "receive_errs",
        "receive_drop",
        "receive_fifo",
        "receive_frame",
        "receive_compressed",
        "receive_multicast",
        "transmit_bytes",
        "transmit_packets",
        "transmit_errs",
        "transmit_drop",
        "transmit_fifo",
        "transmit_colls",
        "transmit_carrier",
        "transmit_compressed",
    ];
    let mut families: Vec<MetricFamily> = NAMES
        .iter()
        .map(|n| {
            MetricFamily::counter(
                format!("node_network_{n}_total"),
                format!("Network device statistic {n}."),
            )
        })
        .collect();
    let mut nohandler_family = MetricFamily::counter(
        "node_network_receive_nohandler_total",
        "Network device statistic receive_nohandler.",
    );
    for line in text.lines().skip(2) {
        let Some((dev, rest)) = line.split_once(':') else {
            continue;
        };
        let dev = dev.trim();
        if exclude.is_match(dev) {
            continue;
        }
        for (family, v) in families.iter_mut().zip(rest.split_ascii_whitespace()) {
            family.push([("device", dev)], num(v));
        }
        if let Some(v) = nohandler(dev) {
            nohandler_family.push([("device", dev)], v);
        }
    }
    families.push(nohandler_family);
    families
}

pub(crate) fn netstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let mut out = Vec::with_capacity(64);
    for file in ["net/netstat", "net/snmp"] {
        let text = read_text(&s.proc_path(file))?;
        netstat_pairs_from(&text, &s.netstat_fields, &mut out);
    }
    if let Some(text) = read_optional(&s.proc_path("net/snmp6"))? {
        snmp6_from(&text, &s.netstat_fields, &mut out);
    }
    Ok(out)
}

fn netstat_family(proto: &str, field: &str, value: &str) -> MetricFamily {
    MetricFamily::untyped(
        format!("node_netstat_{proto}_{field}"),
        format!("Statistic {proto}{field}."),
    )
    .value(num(value))
}

/// /proc/net/{netstat,snmp}: a header line of names then a line of values
/// per protocol.
pub(crate) fn netstat_pairs_from(text: &str, fields: &NameFilter, out: &mut Vec<MetricFamily>) {
    let mut fields = fields.pass();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        let mut key = String::with_capacity(48);
        for (name, value) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            key.clear();
            key.push_str(proto);
            key.push('_');
            key.push_str(name);
            if fields.is_match(&key) {
                out.push(netstat_family(proto, name, value));
            }
        }
    }
}

/// /proc/net/snmp6: `Ip6InOctets 128` lines; the protocol ends at the `6`.
pub(crate) fn snmp6_from(text: &str, fields: &NameFilter, out: &mut Vec<MetricFamily>) {
    let mut fields = fields.pass();
    let mut key = String::with_capacity(48);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(six) = name.find('6') else { continue };
        let (proto, field) = name.split_at(six + 1);
        key.clear();
        key.push_str(proto);
        key.push('_');
        key.push_str(field);
        if fields.is_match(&key) {
            out.push(netstat_family(proto, field, value));
        }
    }
}

pub(crate) fn sockstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let page = rustix::param::page_size() as f64;
    let mut out = Vec::with_capacity(24);
    if let Some(text) = read_optional(&s.proc_path("net/sockstat"))? {
        sockstat_from(&text, page, &mut out);
    }
    if let Some(text) = read_optional(&s.proc_path("net/sockstat6"))? {
        sockstat_from(&text, page, &mut out);
    }
    Ok(out)
}

/// `TCP: inuse 6 orphan 0 ... mem 335` becomes `node_sockstat_TCP_inuse`
/// etc.; `mem` (pages) also as `_mem_bytes`.
pub(crate) fn sockstat_from(text: &str, page_size: f64, out: &mut Vec<MetricFamily>) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        for pair in words.chunks(2) {
            let [key, value] = pair else { continue };
            let value = num(value);
            if proto == "sockets" {
                if *key == "used" {
                    out.push(gauge(
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                        value,
                    ));
                }
                continue;
            }
            out.push(gauge(
                &format!("node_sockstat_{proto}_{key}"),
                &format!("Number of {proto} sockets in state {key}."),
                value,
            ));
            if *key == "mem" {
                out.push(gauge(
                    &format!("node_sockstat_{proto}_mem_bytes"),
                    &format!("Memory of {proto} sockets, in bytes."),
                    value * page_size,
                ));
            }
        }
    }
}

pub(crate) fn softnet(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(softnet_from(&read_text(&s.proc_path("net/softnet_stat"))?))
}

/// /proc/net/softnet_stat: one hex line per CPU.
pub(crate) fn softnet_from(text: &str) -> Vec<MetricFamily> {
    let mut processed = MetricFamily::counter(
        "node_softnet_processed_total",
        "Number of processed packets.",
    );
    let mut dropped =
        MetricFamily::counter("node_softnet_dropped_total", "Number of dropped packets.");
    let mut squeezed = MetricFamily::counter(
        "node_softnet_times_squeezed_total",
        "Number of times processing packets ran out of quota.",
    );
    for (cpu, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let cpu = cpu.to_string();
        processed.push([("cpu", cpu.as_str())], hex(f[0]));
        dropped.push([("cpu", cpu.as_str())], hex(f[1]));
        squeezed.push([("cpu", cpu.as_str())], hex(f[2]));
    }
    vec![dropped, processed, squeezed]
}

pub(crate) fn arp(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(arp_from(&read_text(&s.proc_path("net/arp"))?))
}

/// ARP entries per device.
pub(crate) fn arp_from(text: &str) -> Vec<MetricFamily> {
    let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
    for line in text.lines().skip(1) {
        if let Some(dev) = line.split_ascii_whitespace().nth(5) {
            *counts.entry(dev).or_default() += 1.0;
        }
    }
    let mut f = MetricFamily::gauge("node_arp_entries", "ARP entries by device");
    for (dev, n) in counts {
        f.push([("device", dev)], n);
    }
    vec![f]
}

pub(crate) fn udp_queues(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let mut f = MetricFamily::gauge(
        "node_udp_queues",
        "Number of allocated memory in the kernel for UDP datagrams in bytes.",
    );
    use super::sockdiag::{udp_queue_totals, Family};
    // sock_diag answers for this process's network namespace, procfs for
    // the one it was mounted in: the dump is only used with the host's own
    // /proc, for a family whose file exists (no IPv6, no v6 series, as
    // node_exporter), and the file is read when the dump fails.
    let host_proc = s.proc == Path::new("/proc");
    for (file, ip, family) in [
        ("net/udp", "v4", Family::V4),
        ("net/udp6", "v6", Family::V6),
    ] {
        let path = s.proc_path(file);
        let dumped = if host_proc && path.exists() {
            udp_queue_totals(family)
                .map_err(|e| tracing::debug!(error = %e, "sock_diag dump failed; reading {file}"))
                .ok()
        } else {
            None
        };
        let totals = match dumped {
            Some(totals) => Some(totals),
            None => read_optional(&path)?.map(|text| udp_queues_from(&text)),
        };
        if let Some((tx, rx)) = totals {
            f.push([("ip", ip), ("queue", "rx")], rx);
            f.push([("ip", ip), ("queue", "tx")], tx);
        }
    }
    Ok(vec![f])
}

/// Sums the `tx_queue:rx_queue` column of /proc/net/udp{,6}.
pub(crate) fn udp_queues_from(text: &str) -> (f64, f64) {
    let (mut tx, mut rx) = (0.0, 0.0);
    for line in text.lines().skip(1) {
        if let Some((t, r)) = line
            .split_ascii_whitespace()
            .nth(4)
            .and_then(|q| q.split_once(':'))
        {
            tx += hex(t);
            rx += hex(r);
        }
    }
    (tx, rx)
}

pub(crate) fn conntrack(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let count = read_optional(&s.proc_path("sys/net/netfilter/nf_conntrack_count"))?;
    let max = read_optional(&s.proc_path("sys/net/netfilter/nf_conntrack_max"))?;
    let mut out = Vec::with_capacity(10);
    if let (Some(count), Some(max)) = (count, max) {
        out.push(gauge(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            num(count.trim()),
        ));
        out.push(gauge(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            num(max.trim()),
        ));
    }
    if let Some(text) = read_optional(&s.proc_path("net/stat/nf_conntrack"))? {
        out.extend(conntrack_stat_from(&text));
    }
    Ok(out)
}

/// Sums the per-CPU hex table of /proc/net/stat/nf_conntrack by column name.
pub(crate) fn conntrack_stat_from(text: &str) -> Vec<MetricFamily> {
    const WANTED: [&str; 8] = [
        "found",
        "invalid",
        "ignore",
        "insert",
        "insert_failed",
        "drop",
        "early_drop",
        "search_restart",
    ];
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split_ascii_whitespace().collect();
    let mut sums = vec![0.0; names.len()];
    for line in lines {
        for (i, v) in line.split_ascii_whitespace().enumerate() {
            if let Some(s) = sums.get_mut(i) {
                *s += hex(v);
            }
        }
    }
    WANTED
        .iter()
        .filter_map(|w| {
            let i = names.iter().position(|n| n == w)?;
            Some(gauge(
                &format!("node_nf_conntrack_stat_{w}"),
                &format!("Conntrack statistic {w}, summed over CPUs."),
                sums[i],
            ))
        })
        .collect()
}

// ------------------------------------------------------------ kernel misc

pub(crate) fn filefd(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    filefd_from(&read_text(&s.proc_path("sys/fs/file-nr"))?)
}

pub(crate) fn filefd_from(text: &str) -> Result<Vec<MetricFamily>, CollectError> {
    let f: Vec<&str> = text.split_ascii_whitespace().collect();
    if f.len() < 3 {
        return Err(CollectError::failed(format!(
            "unexpected /proc/sys/fs/file-nr: {text:?}"
        )));
    }
    Ok(vec![
        gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            num(f[0]),
        ),
        gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            num(f[2]),
        ),
    ])
}

pub(crate) fn entropy(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let avail = read_text(&s.proc_path("sys/kernel/random/entropy_avail"))?;
    let pool = read_text(&s.proc_path("sys/kernel/random/poolsize"))?;
    Ok(vec![
        gauge(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            num(avail.trim()),
        ),
        gauge(
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            num(pool.trim()),
        ),
    ])
}

pub(crate) fn pressure(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let mut out = Vec::with_capacity(5);
    for resource in ["cpu", "io", "memory"] {
        let path = s.proc_path(&format!("pressure/{resource}"));
        match read_optional(&path)? {
            Some(text) => out.extend(pressure_from(resource, &text)),
            // No PSI in this kernel: nothing to export.
            None if resource == "cpu" => return Ok(Vec::new()),
            None => {}
        }
    }
    Ok(out)
}

/// `some ... total=<usec>` / `full ... total=<usec>` of one resource.
pub(crate) fn pressure_from(resource: &str, text: &str) -> Vec<MetricFamily> {
    let mut out = Vec::with_capacity(2);
    for line in text.lines() {
        let kind = line.split_ascii_whitespace().next().unwrap_or("");
        let total = line
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("total="))
            .map(|v| num(v) / 1e6);
        let Some(total) = total else { continue };
        let (suffix, help) = match (resource, kind) {
            ("cpu", "some") => (
                "waiting",
                "Total time in seconds that processes have waited for CPU time",
            ),
            ("io", "some") => (
                "waiting",
                "Total time in seconds that processes have waited due to IO congestion",
            ),
            ("io", "full") => (
                "stalled",
                "Total time in seconds no process could make progress due to IO congestion",
            ),
            ("memory", "some") => (
                "waiting",
                "Total time in seconds that processes have waited for memory",
            ),
            ("memory", "full") => (
                "stalled",
                "Total time in seconds no process could make progress due to memory congestion",
            ),
            _ => continue,
        };
        out.push(counter(
            &format!("node_pressure_{resource}_{suffix}_seconds_total"),
            help,
            total,
        ));
    }
    out
}

/// /proc/net/rpc/nfs exists once the NFS client module is loaded.
pub(crate) fn nfs(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(match read_optional(&s.proc_path("net/rpc/nfs"))? {
        Some(text) => nfs_from(&text),
        None => Vec::new(),
    })
}

/// Procedure names of the `proc2`, `proc3` and `proc4` lines, in the
/// kernel's order, as node_exporter spells them in `method`.
const NFS_V2_PROCEDURES: [&str; 18] = [
    "Null", "GetAttr", "SetAttr", "Root", "Lookup", "ReadLink", "Read", "WrCache", "Write",
    "Create", "Remove", "Rename", "Link", "SymLink", "MkDir", "RmDir", "ReadDir", "FsStat",
];
const NFS_V3_PROCEDURES: [&str; 22] = [
    "Null",
    "GetAttr",
    "SetAttr",
    "Lookup",
    "Access",
    "ReadLink",
    "Read",
    "Write",
    "Create",
    "MkDir",
    "SymLink",
    "MkNod",
    "Remove",
    "RmDir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadDirPlus",
    "FsStat",
    "FsInfo",
    "PathConf",
    "Commit",
];
const NFS_V4_CLIENT_PROCEDURES: [&str; 59] = [
    "Null",
    "Read",
    "Write",
    "Commit",
    "Open",
    "OpenConfirm",
    "OpenNoattr",
    "OpenDowngrade",
    "Close",
    "Setattr",
    "FsInfo",
    "Renew",
    "SetClientID",
    "SetClientIDConfirm",
    "Lock",
    "Lockt",
    "Locku",
    "Access",
    "Getattr",
    "Lookup",
    "LookupRoot",
    "Remove",
    "Rename",
    "Link",
    "Symlink",
    "Create",
    "Pathconf",
    "StatFs",
    "ReadLink",
    "ReadDir",
    "ServerCaps",
    "DelegReturn",
    "GetACL",
    "SetACL",
    "FsLocations",
    "ReleaseLockowner",
    "Secinfo",
    "FsidPresent",
    "ExchangeID",
    "CreateSession",
    "DestroySession",
    "Sequence",
    "GetLeaseTime",
    "ReclaimComplete",
    "LayoutGet",
    "GetDeviceInfo",
    "LayoutCommit",
    "LayoutReturn",
    "SecinfoNoName",
    "TestStateID",
    "FreeStateID",
    "GetDeviceList",
    "BindConnToSession",
    "DestroyClientID",
    "Seek",
    "Allocate",
    "DeAllocate",
    "LayoutStats",
    "Clone",
];

/// NFS client counters from /proc/net/rpc/nfs: `net` (packets by
/// transport, TCP connections), `rpc` (calls, retransmissions, credential
/// refreshes) and `procN` (a count, then one number per procedure). As
/// with node_exporter, a line the file lacks counts as zeros (every
/// procedure of every version is exported); a malformed line is left out.
pub(crate) fn nfs_from(text: &str) -> Vec<MetricFamily> {
    let mut lines: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(key) = words.next() else { continue };
        let values: Option<Vec<u64>> = words.map(|w| w.parse().ok()).collect();
        match values {
            Some(v) if !v.is_empty() => {
                lines.insert(key, v);
            }
            _ => tracing::debug!(line, "malformed /proc/net/rpc/nfs line"),
        }
    }
    // The numbers of a line with exactly `n` of them, zeros when absent.
    let fixed = |key: &str, n: usize| -> Option<Vec<u64>> {
        match lines.get(key) {
            None => Some(vec![0; n]),
            Some(v) if v.len() == n => Some(v.clone()),
            Some(_) => None,
        }
    };
    // A procN line: its count, then that many numbers; `min` procedures at
    // least, except NFSv4 whose older kernels list fewer (the rest are 0).
    let procedures = |key: &str, names: &[&str], min: usize| -> Option<Vec<u64>> {
        let Some(v) = lines.get(key) else {
            return Some(vec![0; names.len()]);
        };
        let count = usize::try_from(v[0]).ok()?;
        if v.len() - 1 != count || count < min {
            return None;
        }
        let mut out: Vec<u64> = v[1..].iter().copied().take(names.len()).collect();
        out.resize(names.len(), 0);
        Some(out)
    };
    let mut families = Vec::with_capacity(6);
    if let Some(net) = fixed("net", 4) {
        families.push(
            MetricFamily::counter(
                "node_nfs_packets_total",
                "NFS client network packets sent and received, by transport.",
            )
            .with([("protocol", "udp")], net[1] as f64)
            .with([("protocol", "tcp")], net[2] as f64),
        );
        families.push(counter(
            "node_nfs_connections_total",
            "TCP connections the NFS client made.",
            net[3] as f64,
        ));
    }
    if let Some(rpc) = fixed("rpc", 3) {
        families.push(counter(
            "node_nfs_rpcs_total",
            "RPC calls the NFS client made.",
            rpc[0] as f64,
        ));
        families.push(counter(
            "node_nfs_rpc_retransmissions_total",
            "RPC calls the NFS client retransmitted.",
            rpc[1] as f64,
        ));
        families.push(counter(
            "node_nfs_rpc_authentication_refreshes_total",
            "RPC credential refreshes of the NFS client.",
            rpc[2] as f64,
        ));
    }
    let mut requests = MetricFamily::counter(
        "node_nfs_requests_total",
        "NFS procedures the client called, by protocol version and procedure.",
    );
    for (key, proto, names, min) in [
        ("proc2", "2", &NFS_V2_PROCEDURES[..], 18),
        ("proc3", "3", &NFS_V3_PROCEDURES[..], 22),
        ("proc4", "4", &NFS_V4_CLIENT_PROCEDURES[..], 0),
    ] {
        let Some(values) = procedures(key, names, min) else {
            tracing::debug!(key, "malformed /proc/net/rpc/nfs procedure line");
            continue;
        };
        for (method, v) in names.iter().zip(values) {
            requests.push([("proto", proto), ("method", method)], v as f64);
        }
    }
    families.push(requests);
    families
}

/// /proc/schedstat is only there with CONFIG_SCHEDSTATS; nothing when not.
pub(crate) fn schedstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(match read_optional(&s.proc_path("schedstat"))? {
        Some(text) => schedstat_from(&text),
        None => Vec::new(),
    })
}

/// `node_schedstat_{running,waiting}_seconds_total{cpu}` and
/// `node_schedstat_timeslices_total{cpu}` from the `cpuN` lines of
/// /proc/schedstat, whose 7th to 9th numbers are the nanoseconds tasks ran
/// and waited on that CPU and the timeslices it ran (version 15 layout).
pub(crate) fn schedstat_from(text: &str) -> Vec<MetricFamily> {
    let mut running = MetricFamily::counter(
        "node_schedstat_running_seconds_total",
        "Seconds tasks ran on the CPU.",
    );
    let mut waiting = MetricFamily::counter(
        "node_schedstat_waiting_seconds_total",
        "Seconds runnable tasks waited for the CPU.",
    );
    let mut slices =
        MetricFamily::counter("node_schedstat_timeslices_total", "Timeslices the CPU ran.");
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(cpu) = words.next().and_then(|w| w.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut fields = [0u64; 9];
        let mut complete = true;
        for field in fields.iter_mut() {
            match words.next().and_then(|w| w.parse().ok()) {
                Some(v) => *field = v,
                None => complete = false,
            }
        }
        if !complete {
            continue;
        }
        running.push([("cpu", cpu)], fields[6] as f64 / 1e9);
        waiting.push([("cpu", cpu)], fields[7] as f64 / 1e9);
        slices.push([("cpu", cpu)], fields[8] as f64);
    }
    vec![running, waiting, slices]
}

pub(crate) fn os(_s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    // os-release lives in /etc, not /proc: node_exporter reads it there too.
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(os_from(&text));
        }
    }
    Err(CollectError::failed(
        "cannot read /etc/os-release or /usr/lib/os-release",
    ))
}

/// Parses os-release (shell-like `KEY="value"` lines).
pub(crate) fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let value = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            let inner = &v[1..v.len() - 1];
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else {
            v.to_string()
        };
        out.insert(k.trim().to_string(), value);
    }
    out
}

pub(crate) fn os_from(text: &str) -> Vec<MetricFamily> {
    let kv = parse_os_release(text);
    let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
    let info = MetricFamily::gauge(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
    )
    .with(
        [
            ("build_id", get("BUILD_ID")),
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("image_id", get("IMAGE_ID")),
            ("image_version", get("IMAGE_VERSION")),
            ("name", get("NAME")),
            ("pretty_name", get("PRETTY_NAME")),
            ("variant", get("VARIANT")),
            ("variant_id", get("VARIANT_ID")),
            ("version", get("VERSION")),
            ("version_codename", get("VERSION_CODENAME")),
            ("version_id", get("VERSION_ID")),
        ],
        1.0,
    );
    // The leading number of VERSION_ID ("22.04", "12"): 0 when there is none.
    let vid = get("VERSION_ID");
    let end = vid
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*c == '.' && *i > 0)))
        .map(|(i, _)| i)
        .unwrap_or(vid.len());
    let mut numeric = &vid[..end];
    // Keep one dot at most ("1.2.3" -> "1.2").
    if let Some(second) = numeric.match_indices('.').nth(1).map(|(i, _)| i) {
        numeric = &numeric[..second];
    }
    let version = numeric.trim_end_matches('.').parse::<f64>().unwrap_or(0.0);
    let version_family = MetricFamily::gauge(
        "node_os_version",
        "Metric containing the major.minor part of the OS version.",
    )
    .with(
        [
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("name", get("NAME")),
        ],
        version,
    );
    vec![info, version_family]
}

// ---------------------------------------------------------------- textfile

/// node_exporter's textfile collector: the metrics of `*.prom` files in a
/// directory, `node_textfile_mtime_seconds{file}` and
/// `node_textfile_scrape_error`.
pub(crate) fn textfile(s: &Settings) -> Collected {
    let dir = &s.textfile_directory;
    let mut families = Vec::new();
    let mut mtimes = MetricFamily::gauge(
        "node_textfile_mtime_seconds",
        "Unixtime mtime of textfiles successfully read.",
    );
    let mut problems: Vec<String> = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "prom"))
                .collect();
            paths.sort();
            for path in paths {
                let parsed = std::fs::read_to_string(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|text| parse_exposition(&text));
                match parsed {
                    Ok(mut f) => {
                        families.append(&mut f);
                        let mtime = std::fs::metadata(&path)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_secs() as f64)
                            .unwrap_or(0.0);
                        mtimes.push([("file", path.display().to_string())], mtime);
                    }
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                }
            }
        }
        // No directory: nothing to add, like node_exporter.
        Err(e) if is_absent(&e) => {}
        Err(e) => problems.push(format!("cannot read directory {}: {e}", dir.display())),
    }
    families.push(mtimes);
    families.push(gauge(
        "node_textfile_scrape_error",
        "1 if there was an error opening or reading a file, 0 otherwise",
        if problems.is_empty() { 0.0 } else { 1.0 },
    ));
    if !problems.is_empty() {
        tracing::warn!(problems = %problems.join("; "), "textfile collector skipped files");
    }
    // Like node_exporter, a bad file is reported by the error metric, not by
    // failing the collector.
    families.into()
}

/// A small parser of the text exposition format for textfile `*.prom`
/// files: `# HELP`, `# TYPE`, and `name{labels} value [timestamp]` lines.
pub(crate) fn parse_exposition(text: &str) -> Result<Vec<MetricFamily>, String> {
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut types: BTreeMap<String, MetricType> = BTreeMap::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    helps.insert(
                        name.to_string(),
                        help.unwrap_or("")
                            .replace("\\n", "\n")
                            .replace("\\\\", "\\"),
                    );
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = match kind.trim() {
                        "counter" => MetricType::Counter,
                        "gauge" => MetricType::Gauge,
                        "untyped" => MetricType::Untyped,
                        other => {
                            return Err(format!(
                                "line {}: type {other:?} is not supported in text files (use counter, gauge or untyped)",
                                lineno + 1
                            ))
                        }
                    };
                    types.insert(name.to_string(), kind);
                }
                _ => {}
            }
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}: {line:?}", lineno + 1);
        let name_end = line.find(['{', ' ', '\t']).ok_or_else(|| bad("no value"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(bad("invalid metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (parsed, remaining) = parse_labels(after).ok_or_else(|| bad("malformed labels"))?;
            labels = parsed;
            rest = remaining;
        }
        let value_text = rest
            .split_ascii_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| bad("invalid value"))?,
        };
        let kind = types.get(name).copied().unwrap_or(MetricType::Untyped);
        let idx = match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                let help = helps
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| format!("Metric read from a text file ({name})."));
                families.push(MetricFamily::new(name, help, kind));
                families.len() - 1
            }
        };
        families[idx].push_owned(labels, value);
    }
    Ok(families)
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Parses `a="x",b="y"}` (after the `{`); returns the labels and the text
/// after the `}`.
fn parse_labels(mut s: &str) -> Option<(crate::metrics::Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((std::borrow::Cow::Owned(key), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::encode;

    fn text(families: &[MetricFamily]) -> String {
        encode(&crate::scrape::merge_families(families.to_vec()))
    }

    fn re(p: &str) -> NameFilter {
        NameFilter::new(p).unwrap()
    }

    #[test]
    fn nfs_client_lines_and_zero_defaults() {
        let out = text(&nfs_from(
            "net 18628 0 18628 6\nrpc 4329785 7 4338291\nproc3 22 1 4084749 29200 94754 32580 186 47747 7840 4572 5 0 0 0 3 0 0 0 0 12 2 2 0\nproc4 4 5 6 7 8\n",
        ));
        assert!(
            out.contains("node_nfs_packets_total{protocol=\"tcp\"} 18628\n"),
            "{out}"
        );
        assert!(out.contains("node_nfs_connections_total 6\n"));
        assert!(out.contains("node_nfs_rpc_retransmissions_total 7\n"));
        assert!(
            out.contains("node_nfs_requests_total{proto=\"3\",method=\"GetAttr\"} 4.084749e+06\n")
        );
        assert!(
            out.contains("node_nfs_requests_total{proto=\"2\",method=\"FsStat\"} 0\n"),
            "absent proc2 is zeros"
        );
        assert!(
            out.contains("node_nfs_requests_total{proto=\"4\",method=\"Commit\"} 8\n"),
            "{out}"
        );
        assert!(out.contains("node_nfs_requests_total{proto=\"4\",method=\"Clone\"} 0\n"));
        let bad = text(&nfs_from("net 1 2 3\nproc3 5 1 2\n"));
        assert!(!bad.contains("node_nfs_packets_total"), "{bad}");
        assert!(!bad.contains("proto=\"3\""), "{bad}");
        assert!(bad.contains("proto=\"2\""), "{bad}");
    }

    #[test]
    fn schedstat_cpu_lines() {
        let out = text(&schedstat_from(
            "version 15\ntimestamp 4297299139\ncpu0 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306\ndomain0 00000000,00000003 212499247 210112015 1861015 1860405436 536440 369895 32599 210079416 25368550 24241256 384652 927363878 807233 6366 1647 24375 0 0 0 0 0 0 0 0 0 2 0 0 0 0 1\ncpu1 0 0 0 0 0 0 1 2\n",
        ));
        assert!(
            out.contains("node_schedstat_running_seconds_total{cpu=\"0\"} 2.045936778163039e+06\n"),
            "{out}"
        );
        assert!(
            out.contains("node_schedstat_waiting_seconds_total{cpu=\"0\"} 343796.328169361\n"),
            "{out}"
        );
        assert!(
            out.contains("node_schedstat_timeslices_total{cpu=\"0\"} 4.767485306e+09\n"),
            "{out}"
        );
        assert!(!out.contains("cpu=\"1\""), "a short line is skipped: {out}");
    }

    #[test]
    fn cpu_and_stat_from_proc_stat() {
        let fixture = "cpu  100 2 30 4000 5 0 6 7 0 0\n\
cpu0 9354 0 3004 46673 101 0 45 99 11 3\n\
cpu1 50 1 20 3000 2 0 3 4\n\
intr 342609 0 9 0\nctxt 484929\nbtime 1795459536\nprocesses 19334\nprocs_running 5\nprocs_blocked 1\nsoftirq 1 2 3\n";
        let out = text(&cpu_from(fixture));
        assert!(
            out.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 93.54\n"),
            "{out}"
        );
        assert!(out.contains("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 466.73\n"));
        assert!(out.contains("node_cpu_seconds_total{cpu=\"1\",mode=\"steal\"} 0.04\n"));
        assert!(out.contains("node_cpu_guest_seconds_total{cpu=\"0\",mode=\"user\"} 0.11\n"));
        assert!(out.contains("node_cpu_guest_seconds_total{cpu=\"0\",mode=\"nice\"} 0.03\n"));
        assert!(!out.contains("cpu=\"\""));
        assert!(out.contains("# TYPE node_cpu_seconds_total counter"));
        let out = text(&stat_from(fixture));
        for want in [
            "node_boot_time_seconds 1.795459536e+09\n",
            "node_context_switches_total 484929\n",
            "node_forks_total 19334\n",
            "node_intr_total 342609\n",
            "node_procs_running 5\n",
            "node_procs_blocked 1\n",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        let out = text(&loadavg_from("0.29 0.50 0.29 1/234 5678\n").unwrap());
        assert!(out.contains("node_load1 0.29\nnode_load15") || out.contains("node_load1 0.29\n"));
        assert!(out.contains("node_load5 0.5\n"));
        assert!(loadavg_from("garbage").is_err());
    }

    #[test]
    fn meminfo_names_units_and_parentheses() {
        let fixture = "MemTotal:       24683656 kB\nActive(anon):       1604 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n";
        let out = text(&meminfo_from(fixture));
        assert!(
            out.contains("node_memory_MemTotal_bytes 2.5276063744e+10\n"),
            "{out}"
        );
        assert!(out.contains("node_memory_Active_anon_bytes 1.642496e+06\n"));
        assert!(out.contains("node_memory_HugePages_Total 0\n"));
        assert!(out.contains("node_memory_Hugepagesize_bytes 2.097152e+06\n"));
        assert!(out.contains("# TYPE node_memory_MemTotal_bytes gauge"));
    }

    #[test]
    fn vmstat_keeps_default_fields_untyped() {
        let fixture = "nr_free_pages 5\npgpgin 2178977\npgfault 8162838\npgmajfault 1815\noom_kill 0\npswpin 0\nworkingset 1\n";
        let out = text(&vmstat_from(
            fixture,
            &re(crate::node::DEFAULT_VMSTAT_FIELDS),
        ));
        assert!(
            out.contains("# TYPE node_vmstat_pgpgin untyped\nnode_vmstat_pgpgin 2.178977e+06\n"),
            "{out}"
        );
        assert!(out.contains("node_vmstat_pgmajfault 1815"));
        assert!(out.contains("node_vmstat_oom_kill 0"));
        assert!(!out.contains("nr_free_pages"));
        assert!(!out.contains("workingset"));
    }

    #[test]
    fn diskstats_units_exclusions_and_info() {
        let fixture = " 254       0 vda 42479 7507 4358associated 31467 22381 20129 4285384 33034 0 12304 68216 7981 64 562120 1897 3549 1817\n\
 254       1 vda1 1 2 3 4 5 6 7 8 9 10 11\n\
   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11\n\
 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0\n";
        // A corrupt number reads as 0 rather than failing the collector.
        let out = text(&diskstats_from(
            fixture,
            &re(crate::node::DEFAULT_DISK_DEVICE_EXCLUDE),
            |maj, _| {
                let mut m = BTreeMap::new();
                if maj == "254" {
                    m.insert("ID_MODEL".to_string(), "QEMU disk".to_string());
                }
                m
            },
        ));
        assert!(
            out.contains("node_disk_reads_completed_total{device=\"vda\"} 42479\n"),
            "{out}"
        );
        assert!(out.contains("node_disk_read_bytes_total{device=\"vda\"} 0\n"));
        assert!(out.contains("node_disk_written_bytes_total{device=\"vda\"} 2.194116608e+09\n"));
        assert!(out.contains(
            "node_disk_io_time_weighted_seconds_total{device=\"vda\"} 68.21600000000001\n"
        ));
        assert!(out.contains("node_disk_flush_requests_time_seconds_total{device=\"vda\"} 1.817\n"));
        assert!(out.contains("# TYPE node_disk_io_now gauge"));
        assert!(!out.contains("vda1"));
        assert!(!out.contains("loop0"));
        assert!(out.contains("node_disk_info{device=\"vda\",major=\"254\",minor=\"0\",model=\"QEMU disk\",path=\"\",revision=\"\",serial=\"\",wwn=\"\"} 1"));
        assert!(out.contains("node_disk_discards_completed_total{device=\"vda\"} 7981"));
        assert!(
            !out.contains("node_disk_discards_completed_total{device=\"zram0\"}"),
            "old kernels have 11 columns"
        );
    }

    #[test]
    fn mdstat_states_and_sync_progress() {
        let fixture = "Personalities : [raid1] [raid6]\n\
md0 : active raid1 sdb1[1] sda1[0]\n      1046528 blocks super 1.2 [2/2] [UU]\n\n\
md1 : active raid1 sdd1[2](F) sdc1[0] sde1[3](S)\n      2000 blocks [2/1] [U_]\n      [==>..]  recovery = 12.6% (252/2000) finish=1.0min speed=1K/sec\n\n\
md2 : inactive sdf1[0](S)\n      3000 blocks\n\nunused devices: <none>\n";
        let out = text(&mdstat_from(fixture));
        assert!(
            out.contains("node_md_disks{device=\"md0\",state=\"active\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("node_md_disks{device=\"md1\",state=\"failed\"} 1\n"));
        assert!(out.contains("node_md_disks{device=\"md1\",state=\"spare\"} 1\n"));
        assert!(out.contains("node_md_disks{device=\"md1\",state=\"active\"} 1\n"));
        assert!(out.contains("node_md_disks_required{device=\"md1\"} 2\n"));
        assert!(out.contains("node_md_state{device=\"md0\",state=\"active\"} 1\n"));
        assert!(out.contains("node_md_state{device=\"md1\",state=\"recovering\"} 1\n"));
        assert!(out.contains("node_md_state{device=\"md1\",state=\"active\"} 0\n"));
        assert!(out.contains("node_md_state{device=\"md2\",state=\"inactive\"} 1\n"));
        assert!(out.contains("node_md_blocks{device=\"md0\"} 1.046528e+06\n"));
        assert!(out.contains("node_md_blocks_synced{device=\"md0\"} 1.046528e+06\n"));
        assert!(out.contains("node_md_blocks_synced{device=\"md1\"} 252\n"));
    }

    #[test]
    fn netdev_columns_and_exclusion() {
        let fixture = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0: 155566500    6071    1    2    3     4          5         6   293943    3282    7    8    9     10       11          12\n";
        let out = text(&netdev_from(fixture, &re("^lo$"), |d| {
            (d == "eth0").then_some(13.0)
        }));
        assert!(
            out.contains("node_network_receive_bytes_total{device=\"eth0\"} 1.555665e+08\n"),
            "{out}"
        );
        assert!(out.contains("node_network_receive_multicast_total{device=\"eth0\"} 6\n"));
        assert!(out.contains("node_network_transmit_colls_total{device=\"eth0\"} 10\n"));
        assert!(out.contains("node_network_transmit_compressed_total{device=\"eth0\"} 12\n"));
        assert!(out.contains("node_network_receive_nohandler_total{device=\"eth0\"} 13\n"));
        assert!(!out.contains("device=\"lo\""));
    }

    #[test]
    fn netstat_snmp_and_snmp6_with_default_fields() {
        let netstat = "TcpExt: SyncookiesSent ListenDrops TCPTimeouts PruneCalled\nTcpExt: 0 3 2 9\nIpExt: InOctets OutOctets InMcastPkts\nIpExt: 155496767 261840 4\n";
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 100\nTcp: RtoMin ActiveOpens CurrEstab InErrs\nTcp: 200 34 4 0\nUdpLite: InDatagrams InErrors\nUdpLite: 0 0\n";
        let snmp6 = "Ip6InReceives                   \t1\nIp6InOctets 128\nIcmp6InMsgs 1\nUdpLite6InErrors 0\nUdp6NoPorts 0\n";
        let fields = re(crate::node::DEFAULT_NETSTAT_FIELDS);
        let mut fams = Vec::new();
        netstat_pairs_from(netstat, &fields, &mut fams);
        netstat_pairs_from(snmp, &fields, &mut fams);
        snmp6_from(snmp6, &fields, &mut fams);
        let out = text(&fams);
        for want in [
            "node_netstat_TcpExt_SyncookiesSent 0\n",
            "node_netstat_TcpExt_ListenDrops 3\n",
            "node_netstat_TcpExt_TCPTimeouts 2\n",
            "node_netstat_IpExt_InOctets 1.55496767e+08\n",
            "node_netstat_Ip_Forwarding 2\n",
            "node_netstat_Tcp_ActiveOpens 34\n",
            "node_netstat_Tcp_CurrEstab 4\n",
            "node_netstat_Tcp_InErrs 0\n",
            "node_netstat_UdpLite_InErrors 0\n",
            "node_netstat_Ip6_InOctets 128\n",
            "node_netstat_Icmp6_InMsgs 1\n",
            "node_netstat_UdpLite6_InErrors 0\n",
            "node_netstat_Udp6_NoPorts 0\n",
            "# TYPE node_netstat_Tcp_InErrs untyped\n",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
        assert!(!out.contains("PruneCalled"));
        assert!(!out.contains("DefaultTTL"));
        assert!(!out.contains("Ip6_InReceives"));
        assert!(!out.contains("InMcastPkts"));
    }

    #[test]
    fn sockstat_fields_and_mem_bytes() {
        let fixture = "sockets: used 24\nTCP: inuse 6 orphan 0 tw 1 alloc 6 mem 335\nUDP: inuse 0 mem 0\nFRAG: inuse 0 memory 0\nTCP6: inuse 2\n";
        let mut fams = Vec::new();
        sockstat_from(fixture, 4096.0, &mut fams);
        let out = text(&fams);
        for want in [
            "node_sockstat_sockets_used 24\n",
            "node_sockstat_TCP_inuse 6\n",
            "node_sockstat_TCP_tw 1\n",
            "node_sockstat_TCP_mem 335\n",
            "node_sockstat_TCP_mem_bytes 1.37216e+06\n",
            "node_sockstat_UDP_mem_bytes 0\n",
            "node_sockstat_FRAG_memory 0\n",
            "node_sockstat_TCP6_inuse 2\n",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
    }

    #[test]
    fn softnet_arp_udp_conntrack() {
        let out = text(&softnet_from(
            "0000006e 00000001 00000002 0 0\n000017dd 00000000 00000000 0 0\n",
        ));
        assert!(
            out.contains("node_softnet_processed_total{cpu=\"0\"} 110\n"),
            "{out}"
        );
        assert!(out.contains("node_softnet_processed_total{cpu=\"1\"} 6109\n"));
        assert!(out.contains("node_softnet_dropped_total{cpu=\"0\"} 1\n"));
        assert!(out.contains("node_softnet_times_squeezed_total{cpu=\"0\"} 2\n"));

        let arp = "IP address       HW type     Flags       HW address            Mask     Device\n192.0.2.1 0x1 0x2 02:fc:00:00:00:05 * eth0\n192.0.2.2 0x1 0x2 02:fc:00:00:00:06 * eth0\n10.0.0.1 0x1 0x2 02:fc:00:00:00:07 * eth1\n";
        let out = text(&arp_from(arp));
        assert!(out.contains("node_arp_entries{device=\"eth0\"} 2\n"));
        assert!(out.contains("node_arp_entries{device=\"eth1\"} 1\n"));

        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000:0044 00000000:0000 07 00000010:00000100 00:00000000 00000000     0        0 1 2 0 0\n  2: 00000000:0045 00000000:0000 07 00000001:00000001 00:00000000 00000000     0        0 1 2 0 0\n";
        assert_eq!(udp_queues_from(udp), (17.0, 257.0));

        let ct = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
00000005  00000000 00000001 00000000 00000002 00000000 00000000 00000000 00000000 00000000 00000003 00000000 00000000  00000000 00000000 00000000 0000000a\n\
00000005  00000000 00000001 00000000 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000001\n";
        let out = text(&conntrack_stat_from(ct));
        assert!(out.contains("node_nf_conntrack_stat_found 2\n"), "{out}");
        assert!(out.contains("node_nf_conntrack_stat_invalid 4\n"));
        assert!(out.contains("node_nf_conntrack_stat_drop 3\n"));
        assert!(out.contains("node_nf_conntrack_stat_search_restart 11\n"));
        assert!(out.contains("node_nf_conntrack_stat_early_drop 0\n"));
    }

    #[test]
    fn filefd_pressure_os() {
        let out = text(&filefd_from("589\t0\t2466174\n").unwrap());
        assert!(out.contains("node_filefd_allocated 589\n"));
        assert!(out.contains("node_filefd_maximum 2.466174e+06\n"));
        assert!(filefd_from("1").is_err());

        let out = text(&pressure_from(
            "io",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=6615232\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=6081294\n",
        ));
        assert!(
            out.contains("node_pressure_io_waiting_seconds_total 6.615232\n"),
            "{out}"
        );
        assert!(out.contains("node_pressure_io_stalled_seconds_total 6.081294\n"));
        let out = text(&pressure_from(
            "cpu",
            "some avg10=1 total=18604155\nfull avg10=0 total=5\n",
        ));
        assert!(out.contains("node_pressure_cpu_waiting_seconds_total 18.604155\n"));
        assert!(
            !out.contains("cpu_stalled"),
            "node_exporter 1.5 has no cpu full"
        );

        let fixture = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\n";
        let out = text(&os_from(fixture));
        assert!(out.contains("node_os_info{build_id=\"\",id=\"debian\",id_like=\"\",image_id=\"\",image_version=\"\",name=\"Debian GNU/Linux\",pretty_name=\"Debian GNU/Linux 12 (bookworm)\",variant=\"\",variant_id=\"\",version=\"12 (bookworm)\",version_codename=\"bookworm\",version_id=\"12\"} 1\n"), "{out}");
        assert!(out.contains(
            "node_os_version{id=\"debian\",id_like=\"\",name=\"Debian GNU/Linux\"} 12\n"
        ));
        let out = text(&os_from("ID=ubuntu\nVERSION_ID=\"22.04\"\n"));
        assert!(out.contains("} 22.04\n"), "{out}");
        let out = text(&os_from("ID=arch\n"));
        assert!(
            out.contains("node_os_version{id=\"arch\",id_like=\"\",name=\"\"} 0\n"),
            "{out}"
        );
    }

    #[test]
    fn exposition_parser_for_text_files() {
        let fixture = "# HELP backup_last_success_seconds Last good backup.\n# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\",note=\"a \\\"q\\\"\"} 1.7e9\nplain_metric 3 1700000000000\n";
        let fams = parse_exposition(fixture).unwrap();
        let out = text(&fams);
        assert!(out.contains("# TYPE backup_last_success_seconds gauge\nbackup_last_success_seconds{job=\"db\",note=\"a \\\"q\\\"\"} 1.7e+09\n"), "{out}");
        assert!(out.contains("# TYPE plain_metric untyped\nplain_metric 3\n"));
        assert!(parse_exposition("bad-name 1\n").is_err());
        assert!(parse_exposition("m{a=\"x\" 1\n").is_err());
        assert!(parse_exposition("m abc\n").is_err());
    }
}
