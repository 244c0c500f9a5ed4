//! The WAL a base backup needs: every segment from its start to the newest
//! archived one, without a gap (replay stops silently at the first missing
//! segment), and the rule for pruning the archive (what no kept base backup
//! needs). Pure functions over archive listings.
//!
//! Timelines: a segment position is covered by a segment of the base
//! backup's timeline or of any later one (after a promotion the new
//! timeline continues from the switch point, and restore follows
//! `recovery_target_timeline = latest`).

use std::collections::BTreeSet;

use serde::Serialize;

use crate::manifest::PgBaseInfo;
use crate::wal::names::{segment_name, WalKind, WalName};

/// What the archive holds for one base backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// The base backup's first segment.
    pub first: String,
    /// The newest archived segment it leads to (on its timeline or later).
    pub newest: Option<String>,
    /// Segments present from `first` on, up to the first gap.
    pub segments: u64,
    /// The first segment missing between `first` and `newest` (or before
    /// the backup's own stop segment, which consistency needs).
    pub missing: Option<String>,
}

/// Checks the chain from `base`'s start segment to the newest archived
/// segment on its timeline or a later one.
pub fn check(base: &PgBaseInfo, archive: &[WalName]) -> Chain {
    let seg = base.wal_segment_bytes;
    let start = position_of(&base.start_wal, seg);
    let stop = position_of(&base.stop_wal, seg);
    let mut present: BTreeSet<u64> = BTreeSet::new();
    let mut newest: Option<(u64, u32)> = None;
    for w in archive {
        if !matches!(w.kind, WalKind::Segment | WalKind::Partial) || w.timeline < base.timeline {
            continue;
        }
        let p = w.position(seg);
        if w.kind == WalKind::Segment {
            present.insert(p);
        }
        if w.kind == WalKind::Segment && newest.is_none_or(|(np, nt)| (p, w.timeline) > (np, nt)) {
            newest = Some((p, w.timeline));
        }
    }
    let end = newest.map(|(p, _)| p).unwrap_or(start).max(stop);
    let mut segments = 0;
    let mut missing = None;
    for p in start..=end {
        if present.contains(&p) {
            segments += 1;
        } else {
            missing = Some(segment_name(base.timeline, p, seg));
            break;
        }
    }
    Chain {
        first: base.start_wal.clone(),
        newest: newest.map(|(p, tl)| segment_name(tl, p, seg)),
        segments,
        missing,
    }
}

fn position_of(name: &str, segment_bytes: u64) -> u64 {
    WalName::parse(name)
        .map(|w| w.position(segment_bytes))
        .unwrap_or(0)
}

/// Archived files no kept base backup needs: segments, partials and
/// backup labels before the oldest kept backup's start segment. Timeline
/// history files are always kept (tiny, and needed to follow timelines).
/// With no kept base backup nothing is removed: the WAL is all there is.
pub fn prunable<'a>(kept: &[PgBaseInfo], archive: &'a [WalName]) -> Vec<&'a WalName> {
    let Some(oldest) = kept
        .iter()
        .map(|b| position_of(&b.start_wal, b.wal_segment_bytes))
        .min()
    else {
        return Vec::new();
    };
    let seg = kept[0].wal_segment_bytes;
    archive
        .iter()
        .filter(|w| w.kind != WalKind::History && w.position(seg) < oldest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::names::DEFAULT_SEGMENT_BYTES;

    fn base(start: &str, stop: &str) -> PgBaseInfo {
        PgBaseInfo {
            label: "l".into(),
            timeline: 1,
            start_lsn: String::new(),
            stop_lsn: String::new(),
            start_wal: start.into(),
            stop_wal: stop.into(),
            wal_segment_bytes: DEFAULT_SEGMENT_BYTES,
            server_version_num: 150000,
            system_identifier: "1".into(),
        }
    }

    fn names(list: &[&str]) -> Vec<WalName> {
        list.iter().map(|n| WalName::parse(n).unwrap()).collect()
    }

    #[test]
    fn a_whole_chain_reaches_the_newest_segment_across_timelines() {
        let archive = names(&[
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000010000000000000004.partial",
            "00000002.history",
            "000000020000000000000004",
            "000000020000000000000005",
        ]);
        let c = check(
            &base("000000010000000000000002", "000000010000000000000002"),
            &archive,
        );
        assert_eq!(c.missing, None);
        assert_eq!(c.segments, 4);
        assert_eq!(c.newest.as_deref(), Some("000000020000000000000005"));
    }

    #[test]
    fn the_first_gap_is_named() {
        let archive = names(&[
            "000000010000000000000002",
            "000000010000000000000004",
            "000000010000000000000005",
        ]);
        let c = check(
            &base("000000010000000000000002", "000000010000000000000002"),
            &archive,
        );
        assert_eq!(c.missing.as_deref(), Some("000000010000000000000003"));
        assert_eq!(c.segments, 1);
        // A backup whose own end is not archived cannot become consistent.
        let c = check(
            &base("000000010000000000000005", "000000010000000000000006"),
            &archive,
        );
        assert_eq!(c.missing.as_deref(), Some("000000010000000000000006"));
    }

    #[test]
    fn pruning_keeps_what_the_oldest_kept_backup_needs() {
        let archive = names(&[
            "00000001.history",
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
        ]);
        let kept = [
            base("000000010000000000000003", "000000010000000000000003"),
            base("000000010000000000000002", "000000010000000000000002"),
        ];
        let gone: Vec<&str> = prunable(&kept[1..], &archive)
            .iter()
            .map(|w| w.as_str())
            .collect();
        assert_eq!(gone, ["000000010000000000000001"]);
        let gone: Vec<&str> = prunable(&kept[..1], &archive)
            .iter()
            .map(|w| w.as_str())
            .collect();
        assert_eq!(
            gone,
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup"
            ]
        );
        assert!(prunable(&[], &archive).is_empty());
    }
}
