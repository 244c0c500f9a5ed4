//! Collectors for hardware that VMs rarely have: thermal zones, CPU
//! frequency scaling, power supplies, NVMe controllers, EDAC memory
//! controllers, RAPL energy counters, DMI tables, bonded interfaces, and
//! the per-filesystem counters of XFS. Each lists one sysfs directory first and returns nothing, successfully,
//! when it is absent, so a host without the hardware pays one failed open.

use std::path::Path;

use super::{is_absent, AttrDir, Settings};
use crate::collector::CollectError;
use crate::metrics::{Labels, MetricFamily};

/// Names in `dir`, sorted bytewise (Go's `os.ReadDir` and `filepath.Glob`
/// order, which decides RAPL's `index` label); `Ok(None)` when the
/// directory does not exist.
fn names(dir: &Path) -> Result<Option<Vec<String>>, CollectError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => {
            return Err(CollectError::failed(format!(
                "cannot list {}: {e}",
                dir.display()
            )))
        }
    };
    let mut out: Vec<String> = listing
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort_unstable();
    Ok(Some(out))
}

/// The part of `name` after `prefix` when it starts with a digit: the
/// glob `<prefix>[0-9]*` node_exporter uses for numbered entries.
fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// An attribute with surrounding white space removed (Go's TrimSpace).
fn text(dir: &AttrDir, name: &str) -> Option<String> {
    let v = dir.attr(name)?;
    let t = v.trim();
    Some(if t.len() == v.len() { v } else { t.to_string() })
}

fn int(dir: &AttrDir, name: &str) -> Option<i64> {
    dir.attr(name)?.trim().parse().ok()
}

fn uint(dir: &AttrDir, name: &str) -> Option<u64> {
    dir.attr(name)?.trim().parse().ok()
}

// ----------------------------------------------------------- thermal_zone

pub(crate) fn thermal_zone(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    thermal_zone_from(&s.sys_path("class/thermal"))
}

/// `node_thermal_zone_temp{zone,type}` (Celsius) from each
/// `thermal_zoneN/{type,temp}`, and `node_cooling_device_{cur,max}_state`
/// from each `cooling_deviceN`. A zone whose sensor cannot be read (the
/// kernel answers ENODATA while it is not ready) is left out.
pub(crate) fn thermal_zone_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = names(dir)? else {
        return Ok(Vec::new());
    };
    let mut temp = MetricFamily::gauge(
        "node_thermal_zone_temp",
        "Thermal zone temperature in degrees Celsius.",
    );
    let mut cur = MetricFamily::gauge(
        "node_cooling_device_cur_state",
        "Current throttle state of the cooling device.",
    );
    let mut max = MetricFamily::gauge(
        "node_cooling_device_max_state",
        "Highest throttle state the cooling device supports.",
    );
    for name in &entries {
        if let Some(zone) = numbered(name, "thermal_zone") {
            let Some(d) = AttrDir::open(&dir.join(name)) else {
                continue;
            };
            if let (Some(kind), Some(t)) = (text(&d, "type"), int(&d, "temp")) {
                temp.push([("zone", zone), ("type", kind.as_str())], t as f64 / 1000.0);
            }
        } else if let Some(device) = numbered(name, "cooling_device") {
            let Some(d) = AttrDir::open(&dir.join(name)) else {
                continue;
            };
            // cur_state may be -1 (intel_powerclamp when idle).
            if let (Some(kind), Some(m), Some(c)) =
                (text(&d, "type"), int(&d, "max_state"), int(&d, "cur_state"))
            {
                cur.push([("name", device), ("type", kind.as_str())], c as f64);
                max.push([("name", device), ("type", kind.as_str())], m as f64);
            }
        }
    }
    Ok(vec![temp, cur, max])
}

// ---------------------------------------------------------------- cpufreq

pub(crate) fn cpufreq(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    cpufreq_from(&s.sys_path("devices/system/cpu"))
}

/// `node_cpu_{,scaling_}frequency{,_min,_max}_hertz{cpu}` from each
/// `cpuN/cpufreq/*_freq` (kHz). CPUs without a cpufreq directory (no
/// driver, as in most VMs) and unreadable files are left out.
pub(crate) fn cpufreq_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    // (file, family, help)
    const FILES: [(&str, &str, &str); 6] = [
        (
            "cpuinfo_cur_freq",
            "node_cpu_frequency_hertz",
            "Current CPU thread frequency in hertz, as the hardware reports it.",
        ),
        (
            "cpuinfo_min_freq",
            "node_cpu_frequency_min_hertz",
            "Lowest CPU thread frequency the hardware supports, in hertz.",
        ),
        (
            "cpuinfo_max_freq",
            "node_cpu_frequency_max_hertz",
            "Highest CPU thread frequency the hardware supports, in hertz.",
        ),
        (
            "scaling_cur_freq",
            "node_cpu_scaling_frequency_hertz",
            "Current CPU thread frequency in hertz, as the cpufreq governor sees it.",
        ),
        (
            "scaling_min_freq",
            "node_cpu_scaling_frequency_min_hertz",
            "Lowest CPU thread frequency the cpufreq governor may choose, in hertz.",
        ),
        (
            "scaling_max_freq",
            "node_cpu_scaling_frequency_max_hertz",
            "Highest CPU thread frequency the cpufreq governor may choose, in hertz.",
        ),
    ];
    // Not `names`: this directory always exists and has a dozen entries
    // that are not CPUs, so only `cpuN` names are kept, unsorted (series
    // order does not matter), and a host without cpufreq pays one listing
    // and one failed open per CPU.
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => {
            return Err(CollectError::failed(format!(
                "cannot list {}: {e}",
                dir.display()
            )))
        }
    };
    let mut families: Option<Vec<MetricFamily>> = None;
    let mut path = dir.to_path_buf();
    for entry in listing.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(cpu) = name.to_str().and_then(|n| numbered(n, "cpu")) else {
            continue;
        };
        path.push(&name);
        path.push("cpufreq");
        let d = AttrDir::open(&path);
        path.pop();
        path.pop();
        let Some(d) = d else { continue };
        let families = families.get_or_insert_with(|| {
            FILES
                .iter()
                .map(|(_, family, help)| MetricFamily::gauge(*family, *help))
                .collect()
        });
        for ((file, ..), family) in FILES.iter().zip(families.iter_mut()) {
            if let Some(khz) = uint(&d, file) {
                family.push([("cpu", cpu)], khz as f64 * 1000.0);
            }
        }
    }
    Ok(families.unwrap_or_default())
}

// ------------------------------------------------------- powersupplyclass

pub(crate) fn powersupplyclass(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    powersupplyclass_from(&s.sys_path("class/power_supply"), &s.powersupply_ignored)
}

/// The scale of a numeric power_supply attribute: the kernel writes
/// micro-units (µA, µV, µWh, µW), tenths of a degree Celsius, or plain
/// numbers.
#[derive(Clone, Copy)]
enum Scale {
    One,
    Micro,
    Deci,
}

/// (attribute file, family suffix, scale), sorted by file name.
const POWER_SUPPLY_NUMERIC: [(&str, &str, Scale); 49] = [
    ("authentic", "authentic", Scale::One),
    ("calibrate", "calibrate", Scale::One),
    ("capacity", "capacity", Scale::One),
    ("capacity_alert_max", "capacity_alert_max", Scale::One),
    ("capacity_alert_min", "capacity_alert_min", Scale::One),
    ("charge_control_limit", "charge_control_limit", Scale::Micro),
    (
        "charge_control_limit_max",
        "charge_control_limit_max",
        Scale::Micro,
    ),
    ("charge_counter", "charge_counter", Scale::Micro),
    ("charge_empty", "charge_empty", Scale::Micro),
    ("charge_empty_design", "charge_empty_design", Scale::Micro),
    ("charge_full", "charge_full", Scale::Micro),
    ("charge_full_design", "charge_full_design", Scale::Micro),
    ("charge_now", "charge_ampere", Scale::Micro),
    ("charge_term_current", "charge_term_current", Scale::Micro),
    (
        "constant_charge_current",
        "constant_charge_current",
        Scale::Micro,
    ),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        Scale::Micro,
    ),
    (
        "constant_charge_voltage",
        "constant_charge_voltage",
        Scale::Micro,
    ),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        Scale::Micro,
    ),
    ("current_boot", "current_boot", Scale::Micro),
    ("current_max", "current_max", Scale::Micro),
    ("current_now", "current_ampere", Scale::Micro),
    ("cycle_count", "cyclecount", Scale::One),
    ("energy_empty", "energy_empty", Scale::Micro),
    ("energy_empty_design", "energy_empty_design", Scale::Micro),
    ("energy_full", "energy_full", Scale::Micro),
    ("energy_full_design", "energy_full_design", Scale::Micro),
    ("energy_now", "energy_watthour", Scale::Micro),
    ("input_current_limit", "input_current_limit", Scale::Micro),
    ("online", "online", Scale::One),
    ("power_now", "power_watt", Scale::Micro),
    ("precharge_current", "precharge_current", Scale::Micro),
    ("present", "present", Scale::One),
    ("temp", "temp_celsius", Scale::Deci),
    ("temp_alert_max", "temp_alert_max_celsius", Scale::Deci),
    ("temp_alert_min", "temp_alert_min_celsius", Scale::Deci),
    ("temp_ambient", "temp_ambient_celsius", Scale::Deci),
    ("temp_ambient_max", "temp_ambient_max_celsius", Scale::Deci),
    ("temp_ambient_min", "temp_ambient_min_celsius", Scale::Deci),
    ("temp_max", "temp_max_celsius", Scale::Deci),
    ("temp_min", "temp_min_celsius", Scale::Deci),
    ("time_to_empty_now", "time_to_empty_seconds", Scale::One),
    ("time_to_full_now", "time_to_full_seconds", Scale::One),
    ("voltage_boot", "voltage_boot", Scale::Micro),
    ("voltage_max", "voltage_max", Scale::Micro),
    ("voltage_max_design", "voltage_max_design", Scale::Micro),
    ("voltage_min", "voltage_min", Scale::Micro),
    ("voltage_min_design", "voltage_min_design", Scale::Micro),
    ("voltage_now", "voltage_volt", Scale::Micro),
    ("voltage_ocv", "voltage_ocv", Scale::Micro),
];

/// Text attributes that become labels of `node_power_supply_info`
/// (file, label), sorted by label; only those present and non-empty.
const POWER_SUPPLY_TEXT: [(&str, &str); 11] = [
    ("capacity_level", "capacity_level"),
    ("charge_type", "charge_type"),
    ("health", "health"),
    ("manufacturer", "manufacturer"),
    ("model_name", "model_name"),
    ("scope", "scope"),
    ("serial_number", "serial_number"),
    ("status", "status"),
    ("technology", "technology"),
    ("type", "type"),
    ("usb_type", "usb_type"),
];

/// Parses an integer as Go's `strconv.ParseInt(s, 0, 64)`: optional sign,
/// `0x`/`0o`/`0b` or a leading `0` (octal) choose the base.
fn go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = digits.get(..2).map(str::to_ascii_lowercase);
    let (radix, body) = match lower.as_deref() {
        Some("0x") => (16, &digits[2..]),
        Some("0o") => (8, &digits[2..]),
        Some("0b") => (2, &digits[2..]),
        _ if digits.len() > 1 && digits.starts_with('0') => (8, &digits[1..]),
        _ => (10, digits),
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// `node_power_supply_*{power_supply}` from the attribute files of
/// /sys/class/power_supply/<supply>, in node_exporter's units, and
/// `node_power_supply_info` labelled with its non-empty text attributes.
/// Only attributes node_exporter exports are read; a value that does not
/// parse or that the driver refuses (EINVAL, EOPNOTSUPP) is left out.
pub(crate) fn powersupplyclass_from(
    dir: &Path,
    ignored: &super::NameFilter,
) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = names(dir)? else {
        return Ok(Vec::new());
    };
    let mut numeric: Vec<MetricFamily> = Vec::new();
    let mut info = MetricFamily::gauge(
        "node_power_supply_info",
        "Text attributes of /sys/class/power_supply/<power_supply>; value is always 1.",
    );
    for supply in &entries {
        if ignored.is_match(supply) {
            continue;
        }
        let Some(d) = AttrDir::open(&dir.join(supply)) else {
            continue;
        };
        if numeric.is_empty() {
            numeric = POWER_SUPPLY_NUMERIC
                .iter()
                .map(|(file, suffix, _)| {
                    MetricFamily::gauge(
                        format!("node_power_supply_{suffix}"),
                        format!("Value of /sys/class/power_supply/<power_supply>/{file}, in base units."),
                    )
                })
                .collect();
        }
        for ((file, _, scale), family) in POWER_SUPPLY_NUMERIC.iter().zip(numeric.iter_mut()) {
            let Some(v) = d.attr(file).and_then(|v| go_int(v.trim())) else {
                continue;
            };
            let v = match scale {
                Scale::One => v as f64,
                Scale::Micro => v as f64 / 1e6,
                Scale::Deci => v as f64 / 10.0,
            };
            family.push([("power_supply", supply.as_str())], v);
        }
        let mut labels: Labels = Vec::with_capacity(4);
        labels.push(("power_supply".into(), supply.clone()));
        for (file, label) in POWER_SUPPLY_TEXT {
            if let Some(v) = text(&d, file).filter(|v| !v.is_empty()) {
                labels.push((label.into(), v));
            }
        }
        info.push_owned(labels, 1.0);
    }
    numeric.push(info);
    Ok(numeric)
}

// ------------------------------------------------------------------- nvme

pub(crate) fn nvme(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    nvme_from(&s.sys_path("class/nvme"))
}

/// `node_nvme_info{device,firmware_revision,model,serial,state}` for each
/// controller of /sys/class/nvme.
pub(crate) fn nvme_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = names(dir)? else {
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
            text(&d, "firmware_rev"),
            text(&d, "model"),
            text(&d, "serial"),
            text(&d, "state"),
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

// ------------------------------------------------------------------- edac

pub(crate) fn edac(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    edac_from(&s.sys_path("devices/system/edac/mc"))
}

/// Leading decimal digits of `s` (the controller or csrow number).
fn leading_digits(s: &str) -> &str {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    &s[..end]
}

/// Memory error counters of each EDAC controller `mcN` and its chip-select
/// rows `csrowM`; errors the driver could not attribute to a row are the
/// `csrow="unknown"` series.
pub(crate) fn edac_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = names(dir)? else {
        return Ok(Vec::new());
    };
    let mut ce = MetricFamily::counter(
        "node_edac_correctable_errors_total",
        "Correctable memory errors of the controller.",
    );
    let mut ue = MetricFamily::counter(
        "node_edac_uncorrectable_errors_total",
        "Uncorrectable memory errors of the controller.",
    );
    let mut row_ce = MetricFamily::counter(
        "node_edac_csrow_correctable_errors_total",
        "Correctable memory errors of the chip-select row.",
    );
    let mut row_ue = MetricFamily::counter(
        "node_edac_csrow_uncorrectable_errors_total",
        "Uncorrectable memory errors of the chip-select row.",
    );
    for name in &entries {
        let Some(rest) = numbered(name, "mc") else {
            continue;
        };
        let controller = leading_digits(rest);
        let path = dir.join(name);
        let Some(d) = AttrDir::open(&path) else {
            continue;
        };
        let series = |csrow: &str| {
            [
                ("controller", controller.to_string()),
                ("csrow", csrow.into()),
            ]
        };
        if let Some(v) = uint(&d, "ce_count") {
            ce.push([("controller", controller)], v as f64);
        }
        if let Some(v) = uint(&d, "ce_noinfo_count") {
            row_ce.push(series("unknown"), v as f64);
        }
        if let Some(v) = uint(&d, "ue_count") {
            ue.push([("controller", controller)], v as f64);
        }
        if let Some(v) = uint(&d, "ue_noinfo_count") {
            row_ue.push(series("unknown"), v as f64);
        }
        for row in names(&path)?.unwrap_or_default() {
            let Some(rest) = numbered(&row, "csrow") else {
                continue;
            };
            let Some(r) = AttrDir::open(&path.join(&row)) else {
                continue;
            };
            let csrow = leading_digits(rest);
            if let Some(v) = uint(&r, "ce_count") {
                row_ce.push(series(csrow), v as f64);
            }
            if let Some(v) = uint(&r, "ue_count") {
                row_ue.push(series(csrow), v as f64);
            }
        }
    }
    Ok(vec![ce, ue, row_ce, row_ue])
}

// ------------------------------------------------------------------- rapl

pub(crate) fn rapl(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    rapl_from(&s.sys_path("class/powercap"), s.rapl_zone_label)
}

/// node_exporter's metric-name sanitising: each run of characters outside
/// `[0-9A-Za-z_]`, with the underscores around it, becomes one `_`.
fn sanitize_metric_name(raw: &str) -> String {
    let b = raw.as_bytes();
    let valid = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip = |mut i: usize, pred: &dyn Fn(u8) -> bool| {
        while i < b.len() && pred(b[i]) {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        let after_underscores = skip(i, &|c| c == b'_');
        if after_underscores < b.len() && !valid(b[after_underscores]) {
            let after_invalid = skip(after_underscores, &|c| !valid(c));
            out.push('_');
            i = skip(after_invalid, &|c| c == b'_');
        } else if after_underscores > i {
            out.push_str(&raw[i..after_underscores]);
            i = after_underscores;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Energy counters of the powercap zones: `node_rapl_<zone>_joules_total
/// {index,path}` (or one `node_rapl_joules_total{index,path,rapl_zone}`
/// with `zone_label`). A zone named `package-1` is `package` with index 1;
/// zones repeating a name without a number are indexed in listing order.
pub(crate) fn rapl_from(dir: &Path, zone_label: bool) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = names(dir)? else {
        return Ok(Vec::new());
    };
    let mut uses: Vec<(String, i64)> = Vec::new();
    let mut families: Vec<MetricFamily> = Vec::new();
    for entry in &entries {
        let path = dir.join(entry);
        let Some(d) = AttrDir::open(&path) else {
            continue;
        };
        let Some(raw) = text(&d, "name") else {
            continue;
        };
        // The range is not exported, but a zone without it is not a RAPL
        // energy zone node_exporter would report.
        if uint(&d, "max_energy_range_uj").is_none() {
            continue;
        }
        // Permission denied: energy_uj is root-only since CVE-2020-8694.
        let Some(uj) = uint(&d, "energy_uj") else {
            continue;
        };
        let numbered = raw
            .split_once('-')
            .filter(|(_, n)| !n.contains('-'))
            .and_then(|(base, n)| Some((base, n.parse::<i64>().ok()?)));
        let (name, index) = match numbered {
            Some((base, n)) => (base.to_string(), n),
            None => {
                let used = uses.iter().find(|(n, _)| *n == raw).map_or(0, |(_, c)| *c);
                (raw, used)
            }
        };
        match uses.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count = index + 1,
            None => uses.push((name.clone(), index + 1)),
        }
        let labels = [
            ("index", index.to_string()),
            ("path", path.to_string_lossy().into_owned()),
        ];
        let joules = uj as f64 / 1e6;
        if zone_label {
            if families.is_empty() {
                families.push(MetricFamily::counter(
                    "node_rapl_joules_total",
                    "Energy used by the RAPL zone, in joules.",
                ));
            }
            let mut l: Vec<(&'static str, String)> = labels.to_vec();
            l.push(("rapl_zone", name));
            families[0].push(l, joules);
        } else {
            families.push(
                MetricFamily::counter(
                    format!("node_rapl_{}_joules_total", sanitize_metric_name(&name)),
                    format!("Energy used by the RAPL {name} zone, in joules."),
                )
                .with(labels, joules),
            );
        }
    }
    Ok(families)
}

// -------------------------------------------------------------------- dmi

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

pub(crate) fn dmi(s: &Settings) -> Vec<MetricFamily> {
    let labels = s.dmi.get_or_init(|| dmi_labels(&s.sys));
    if labels.is_empty() {
        return Vec::new();
    }
    vec![MetricFamily::gauge(
        "node_dmi_info",
        "Desktop Management Interface (DMI) identity of the machine; value is always 1.",
    )
    .with(labels.iter().cloned(), 1.0)]
}

// ---------------------------------------------------------------- bonding

pub(crate) fn bonding(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    bonding_from(&s.sys_path("class/net"))
}

/// `node_bonding_slaves{master}` and `node_bonding_active{master}` (slaves
/// whose MII status is up) for each master listed in `bonding_masters`.
pub(crate) fn bonding_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let path = dir.join("bonding_masters");
    let masters = match super::read_pseudo_file(std::fs::File::open(&path), 64) {
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

// -------------------------------------------------------------------- xfs

pub(crate) fn xfs(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    xfs_from(&s.sys_path("fs/xfs"))
}

/// node_exporter's XFS families: (stats line, position on it, family
/// suffix after `node_xfs_`). `rw` prints write calls before read calls.
const XFS_COUNTERS: [(&str, usize, &str); 39] = [
    (
        "extent_alloc",
        0,
        "extent_allocation_extents_allocated_total",
    ),
    (
        "extent_alloc",
        1,
        "extent_allocation_blocks_allocated_total",
    ),
    ("extent_alloc", 2, "extent_allocation_extents_freed_total"),
    ("extent_alloc", 3, "extent_allocation_blocks_freed_total"),
    ("abt", 0, "allocation_btree_lookups_total"),
    ("abt", 1, "allocation_btree_compares_total"),
    ("abt", 2, "allocation_btree_records_inserted_total"),
    ("abt", 3, "allocation_btree_records_deleted_total"),
    ("blk_map", 0, "block_mapping_reads_total"),
    ("blk_map", 1, "block_mapping_writes_total"),
    ("blk_map", 2, "block_mapping_unmaps_total"),
    ("blk_map", 3, "block_mapping_extent_list_insertions_total"),
    ("blk_map", 4, "block_mapping_extent_list_deletions_total"),
    ("blk_map", 5, "block_mapping_extent_list_lookups_total"),
    ("blk_map", 6, "block_mapping_extent_list_compares_total"),
    ("bmbt", 0, "block_map_btree_lookups_total"),
    ("bmbt", 1, "block_map_btree_compares_total"),
    ("bmbt", 2, "block_map_btree_records_inserted_total"),
    ("bmbt", 3, "block_map_btree_records_deleted_total"),
    ("dir", 0, "directory_operation_lookup_total"),
    ("dir", 1, "directory_operation_create_total"),
    ("dir", 2, "directory_operation_remove_total"),
    ("dir", 3, "directory_operation_getdents_total"),
    ("ig", 0, "inode_operation_attempts_total"),
    ("ig", 1, "inode_operation_found_total"),
    ("ig", 2, "inode_operation_recycled_total"),
    ("ig", 3, "inode_operation_missed_total"),
    ("ig", 4, "inode_operation_duplicates_total"),
    ("ig", 5, "inode_operation_reclaims_total"),
    ("ig", 6, "inode_operation_attribute_changes_total"),
    ("rw", 1, "read_calls_total"),
    ("rw", 0, "write_calls_total"),
    ("vnodes", 0, "vnode_active_total"),
    ("vnodes", 1, "vnode_allocate_total"),
    ("vnodes", 2, "vnode_get_total"),
    ("vnodes", 3, "vnode_hold_total"),
    ("vnodes", 4, "vnode_release_total"),
    ("vnodes", 5, "vnode_reclaim_total"),
    ("vnodes", 6, "vnode_remove_total"),
];

/// How many numbers each stats line the families read must have (the
/// kernel's layout; `vnodes` gained an 8th, `free`, that is not exported).
fn xfs_line_ok(label: &str, n: usize) -> bool {
    match label {
        "extent_alloc" | "abt" | "bmbt" | "dir" => n == 4,
        "blk_map" | "ig" => n == 7,
        "rw" => n == 2,
        "vnodes" => n == 7 || n == 8,
        _ => true,
    }
}

/// The counters of one /sys/fs/xfs/<device>/stats/stats, in
/// [`XFS_COUNTERS`] order; a line the file lacks counts as zeros, as in
/// node_exporter. `None` when a line the families read is malformed.
pub(crate) fn xfs_stats(text: &str) -> Option<[u64; 39]> {
    let mut out = [0u64; 39];
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(label) = words.next() else { continue };
        if !XFS_COUNTERS.iter().any(|(l, ..)| *l == label) {
            continue;
        }
        let mut values = [0u64; 8];
        let mut n = 0;
        for w in words {
            let v = w.parse().ok()?;
            if n < values.len() {
                values[n] = v;
            }
            n += 1;
        }
        if !xfs_line_ok(label, n) {
            return None;
        }
        for (slot, (l, i, _)) in out.iter_mut().zip(XFS_COUNTERS.iter()) {
            if *l == label && *i < n {
                *slot = values[*i];
            }
        }
    }
    Some(out)
}

/// `node_xfs_*_total{device}` for each mounted XFS filesystem.
pub(crate) fn xfs_from(dir: &Path) -> Result<Vec<MetricFamily>, CollectError> {
    let Some(entries) = names(dir)? else {
        return Ok(Vec::new());
    };
    let mut families: Vec<MetricFamily> = Vec::new();
    for device in &entries {
        let path = dir.join(device).join("stats/stats");
        let Ok(text) = super::read_pseudo_file(std::fs::File::open(&path), 2048) else {
            continue;
        };
        let Some(values) = xfs_stats(&text) else {
            tracing::debug!(path = %path.display(), "malformed XFS stats; skipped");
            continue;
        };
        if families.is_empty() {
            families = XFS_COUNTERS
                .iter()
                .map(|(line, i, suffix)| {
                    MetricFamily::counter(
                        format!("node_xfs_{suffix}"),
                        format!("XFS statistic {line}[{i}] of the filesystem."),
                    )
                })
                .collect();
        }
        for (family, v) in families.iter_mut().zip(values) {
            family.push([("device", device.as_str())], v as f64);
        }
    }
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::encode;
    use std::fs;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn text_of(families: Vec<MetricFamily>) -> String {
        encode(&crate::scrape::merge_families(families))
    }

    #[test]
    fn xfs_reads_known_lines_and_rejects_malformed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "stats/stats", "extent_alloc 1 2 3 4\n");
        write(
            d,
            "sda1/stats/stats",
            "extent_alloc 92447 97589 92448 93751\nabt 0 0 0 0\nblk_map 1767055 188820 184891 92447 92448 2140766 0\nrw 107 94\nvnodes 92601 0 0 0 92444 92444 92444 0\nxpc 399724544 92823103 86219234\n",
        );
        write(d, "sdb1/stats/stats", "rw 1 2 3\n");
        let out = text_of(xfs_from(d).unwrap());
        assert!(
            out.contains("node_xfs_read_calls_total{device=\"sda1\"} 94\n"),
            "{out}"
        );
        assert!(out.contains("node_xfs_write_calls_total{device=\"sda1\"} 107\n"));
        assert!(out.contains(
            "node_xfs_block_mapping_extent_list_lookups_total{device=\"sda1\"} 2.140766e+06\n"
        ));
        assert!(
            out.contains("node_xfs_inode_operation_found_total{device=\"sda1\"} 0\n"),
            "a missing line is zeros"
        );
        assert!(!out.contains("sdb1"), "malformed rw line: {out}");
        assert!(!out.contains("device=\"stats\""), "{out}");
    }

    #[test]
    fn absent_sources_export_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        let never = crate::node::NameFilter::new("^$").unwrap();
        assert!(thermal_zone_from(&none).unwrap().is_empty());
        assert!(cpufreq_from(&none).unwrap().is_empty());
        assert!(powersupplyclass_from(&none, &never).unwrap().is_empty());
        assert!(nvme_from(&none).unwrap().is_empty());
        assert!(edac_from(&none).unwrap().is_empty());
        assert!(rapl_from(&none, false).unwrap().is_empty());
        assert!(dmi_labels(&none).is_empty());
        assert!(bonding_from(&none).unwrap().is_empty());
        assert!(xfs_from(&none).unwrap().is_empty());
    }

    #[test]
    fn thermal_zones_and_cooling_devices() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "thermal_zone0/type", "x86_pkg_temp\n");
        write(d, "thermal_zone0/temp", "51500\n");
        write(d, "thermal_zone1/type", "acpitz\n");
        write(d, "cooling_device0/type", "Processor\n");
        write(d, "cooling_device0/max_state", "3\n");
        write(d, "cooling_device0/cur_state", "-1\n");
        let out = text_of(thermal_zone_from(d).unwrap());
        assert!(
            out.contains("node_thermal_zone_temp{zone=\"0\",type=\"x86_pkg_temp\"} 51.5\n"),
            "{out}"
        );
        assert!(
            !out.contains("acpitz"),
            "a zone without temp is left out: {out}"
        );
        assert!(out.contains("node_cooling_device_cur_state{name=\"0\",type=\"Processor\"} -1\n"));
        assert!(out.contains("node_cooling_device_max_state{name=\"0\",type=\"Processor\"} 3\n"));
    }

    #[test]
    fn go_integers_choose_their_base() {
        assert_eq!(go_int("42"), Some(42));
        assert_eq!(go_int("-7"), Some(-7));
        assert_eq!(go_int("0x1f"), Some(31));
        assert_eq!(go_int("010"), Some(8));
        assert_eq!(go_int("0"), Some(0));
        assert_eq!(go_int("0b101"), Some(5));
        assert_eq!(go_int(""), None);
        assert_eq!(go_int("12ab"), None);
        assert_eq!(go_int("-0x8000000000000000"), Some(i64::MIN));
    }

    #[test]
    fn metric_names_are_sanitised_like_node_exporter() {
        assert_eq!(sanitize_metric_name("package"), "package");
        assert_eq!(sanitize_metric_name("a.b"), "a_b");
        assert_eq!(sanitize_metric_name("a_.-_b"), "a_b");
        assert_eq!(sanitize_metric_name("a__b"), "a__b");
        assert_eq!(sanitize_metric_name("x-"), "x_");
    }

    #[test]
    fn rapl_indexes_repeated_names_in_listing_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (zone, name, uj) in [
            ("intel-rapl:0", "package-0", "1500000"),
            ("intel-rapl:0:0", "core", "250000"),
            ("intel-rapl:1", "package-1", "3000000"),
            ("intel-rapl:1:0", "core", "500000"),
        ] {
            write(d, &format!("{zone}/name"), &format!("{name}\n"));
            write(d, &format!("{zone}/energy_uj"), &format!("{uj}\n"));
            write(d, &format!("{zone}/max_energy_range_uj"), "262143328850\n");
        }
        let out = text_of(rapl_from(d, false).unwrap());
        let p = d.display();
        assert!(
            out.contains(&format!(
                "node_rapl_package_joules_total{{index=\"1\",path=\"{p}/intel-rapl:1\"}} 3\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "node_rapl_core_joules_total{{index=\"1\",path=\"{p}/intel-rapl:1:0\"}} 0.5\n"
            )),
            "{out}"
        );
        let out = text_of(rapl_from(d, true).unwrap());
        assert!(out.contains(&format!("node_rapl_joules_total{{index=\"0\",path=\"{p}/intel-rapl:0:0\",rapl_zone=\"core\"}} 0.25\n")), "{out}");
    }
}
