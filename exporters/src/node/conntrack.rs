//! The conntrack collector: netfilter connection tracking table use and
//! limit, and its per-CPU statistics summed; nothing without netfilter.

use super::read::{hex, num, read_optional};
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn conntrack_stat_sums_columns_over_cpus() {
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
}
