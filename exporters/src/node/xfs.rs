//! The xfs collector: per-filesystem XFS counters of
//! `/sys/fs/xfs/<device>/stats/stats`.

use std::path::Path;

use super::read::{read_pseudo_file, sorted_names};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

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
    let Some(entries) = sorted_names(dir)? else {
        return Ok(Vec::new());
    };
    let mut families: Vec<MetricFamily> = Vec::new();
    for device in &entries {
        let path = dir.join(device).join("stats/stats");
        let Ok(text) = read_pseudo_file(std::fs::File::open(&path), 2048) else {
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
    use crate::node::test_support::{text_of, write};

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
}
