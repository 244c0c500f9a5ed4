//! The diskstats collector: per-device I/O counters of /proc/diskstats in
//! seconds and bytes, and `node_disk_info` labelled from udev's database.

use std::collections::BTreeMap;
use std::path::Path;

use super::read::{num, read_text};
use super::{NameFilter, Settings};
use crate::collector::CollectError;
use crate::metrics::{MetricFamily, MetricType};

/// /proc/diskstats counts 512-byte sectors whatever the device's block size.
const SECTOR_BYTES: f64 = 512.0;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::{re, text};

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
}
