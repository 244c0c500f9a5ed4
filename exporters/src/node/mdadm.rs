//! The mdadm collector: software RAID arrays from /proc/mdstat (member
//! disks by state, array state, sync progress); nothing when md is not loaded.

use super::read::{num, read_optional};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

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
}
