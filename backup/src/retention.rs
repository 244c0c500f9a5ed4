//! Retention: which snapshots of one job on one target to keep. A pure
//! function from (snapshots, policy, now) to a keep/remove decision with
//! the reasons for each, so `prune --dry-run` can print them and tests can
//! check them as tables. Only complete snapshots (with a manifest) are ever
//! considered, the newest one is always kept, and so is the one the run
//! just wrote.
//!
//! Every rule counts from the newest snapshot or from `now`, so a wrong
//! clock turns retention against the backups: a snapshot dated in the
//! future (written while the clock was ahead) would stay "newest" and push
//! every real one out. When the newest snapshot is later than `now` (beyond
//! [`FUTURE_TOLERANCE_SECS`]), nothing is removed and the refusal says
//! which snapshot and when, until someone checks the clock.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Rules in restic's vocabulary; a snapshot is kept when any rule keeps it.
/// With no rule set, everything is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// The n newest snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// The newest snapshot of each of the last n hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// ... of each of the last n days (UTC) that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// ... of each of the last n ISO weeks that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Every snapshot younger than this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_days: Option<u32>,
}

impl RetentionPolicy {
    /// True when no rule is set: nothing is ever removed.
    pub fn keeps_everything(&self) -> bool {
        *self == RetentionPolicy::default()
    }

    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (key, v) in [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
            ("keep_within_days", self.keep_within_days),
        ] {
            if v == Some(0) {
                errors.push(format!(
                    "{key}: 0 keeps nothing by this rule; leave it out instead"
                ));
            }
        }
        errors
    }
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
}

/// Skew tolerated between writers' clocks before a snapshot counts as
/// dated in the future (NTP corrections are seconds; five minutes is
/// clearly a wrong clock, not jitter).
pub const FUTURE_TOLERANCE_SECS: i64 = 300;

/// Why retention must not remove anything: the newest snapshot is dated
/// after `now`, so either it or this clock is wrong. One line naming the
/// snapshot and both times; `None` when the clock and the snapshots agree.
pub fn clock_refusal(snapshots: &[Candidate], now: DateTime<Utc>) -> Option<String> {
    let newest = snapshots.iter().max_by_key(|c| c.time)?;
    (newest.time > now + Duration::seconds(FUTURE_TOLERANCE_SECS)).then(|| {
        format!(
            "pruning refused: snapshot {} is dated {}, after this host's clock ({}); check the clock (timedatectl) and remove the future-dated snapshot by hand once it is understood",
            newest.id,
            newest.time.to_rfc3339(),
            now.to_rfc3339()
        )
    })
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why it is kept (one entry per rule that keeps it), or why it goes.
    pub reasons: Vec<String>,
    /// Not kept by the policy but still there: under Object Lock until
    /// the date given (an expected outcome, not an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<String>,
    /// Not kept by the policy, but deleting it failed (the snapshot is
    /// either whole, or without its manifest and removed by the next run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Decision {
    /// Policy said remove, and it is gone.
    pub fn removed(&self) -> bool {
        !self.keep && self.locked.is_none() && self.error.is_none()
    }
}

/// Applies `policy` to `snapshots` (any order); returns one decision per
/// snapshot, newest first. `just_written` (the snapshot this run
/// committed) is kept whatever its date: a run never undoes itself.
pub fn decide(
    snapshots: &[Candidate],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    just_written: Option<&str>,
) -> Vec<Decision> {
    let mut sorted: Vec<&Candidate> = snapshots.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut decisions: Vec<Decision> = sorted
        .iter()
        .map(|c| Decision {
            id: c.id.clone(),
            time: c.time,
            keep: false,
            reasons: Vec::new(),
            locked: None,
            error: None,
        })
        .collect();
    if policy.keeps_everything() {
        for d in &mut decisions {
            d.keep = true;
            d.reasons
                .push("no retention rule set: everything is kept".into());
        }
        return decisions;
    }
    if let Some(refusal) = clock_refusal(snapshots, now) {
        for d in &mut decisions {
            d.keep = true;
            d.reasons.push(refusal.clone());
        }
        return decisions;
    }

    if let Some(d) = decisions
        .iter_mut()
        .find(|d| Some(d.id.as_str()) == just_written)
    {
        d.keep = true;
        d.reasons.push("written by this run (always kept)".into());
    }
    if let Some(first) = decisions.first_mut() {
        first.keep = true;
        first.reasons.push("newest snapshot (always kept)".into());
    }
    if let Some(n) = policy.keep_last {
        for (i, d) in decisions.iter_mut().take(n as usize).enumerate() {
            d.keep = true;
            d.reasons.push(format!("keep_last {n} (#{})", i + 1));
        }
    }
    if let Some(days) = policy.keep_within_days {
        let since = now - Duration::days(i64::from(days));
        for d in decisions.iter_mut().filter(|d| d.time >= since) {
            d.keep = true;
            d.reasons.push(format!("keep_within_days {days}"));
        }
    }
    type Bucket = fn(&DateTime<Utc>) -> String;
    let rules: [(&str, Option<u32>, Bucket); 5] = [
        ("keep_hourly", policy.keep_hourly, |t| {
            t.format("%Y-%m-%d %H:00").to_string()
        }),
        ("keep_daily", policy.keep_daily, |t| {
            t.format("%Y-%m-%d").to_string()
        }),
        ("keep_weekly", policy.keep_weekly, |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }),
        ("keep_monthly", policy.keep_monthly, |t| {
            t.format("%Y-%m").to_string()
        }),
        ("keep_yearly", policy.keep_yearly, |t| {
            t.format("%Y").to_string()
        }),
    ];
    for (rule, count, bucket_of) in rules {
        let Some(n) = count else { continue };
        let mut left = n;
        let mut last_bucket: Option<String> = None;
        for d in decisions.iter_mut() {
            if left == 0 {
                break;
            }
            let bucket = bucket_of(&d.time);
            if last_bucket.as_deref() == Some(bucket.as_str()) {
                continue;
            }
            d.keep = true;
            d.reasons.push(format!("{rule} {n} ({bucket})"));
            last_bucket = Some(bucket);
            left -= 1;
        }
    }
    for d in decisions.iter_mut().filter(|d| !d.keep) {
        d.reasons.push("matches no keep rule".into());
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        format!("{s}Z").parse().unwrap()
    }

    fn snaps(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("s{i}"),
                time: at(t),
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        let mut k: Vec<String> = d.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect();
        k.sort();
        k
    }

    /// (case, snapshot times, policy, now, ids expected to be kept)
    #[test]
    fn case_table() {
        let times = [
            "2026-01-01T01:00:00", // s0
            "2026-01-01T13:00:00", // s1
            "2026-01-02T01:00:00", // s2
            "2026-01-02T07:00:00", // s3
            "2026-01-09T01:00:00", // s4
            "2026-02-01T01:00:00", // s5
            "2026-02-01T01:30:00", // s6
        ];
        let p = |f: fn(&mut RetentionPolicy)| {
            let mut p = RetentionPolicy::default();
            f(&mut p);
            p
        };
        let now = at("2026-02-01T02:00:00");
        let cases: Vec<(&str, RetentionPolicy, Vec<&str>)> = vec![
            (
                "no rule keeps all",
                p(|_| {}),
                vec!["s0", "s1", "s2", "s3", "s4", "s5", "s6"],
            ),
            (
                "keep_last 2",
                p(|p| p.keep_last = Some(2)),
                vec!["s5", "s6"],
            ),
            ("keep_last 1", p(|p| p.keep_last = Some(1)), vec!["s6"]),
            (
                "keep_hourly 2",
                p(|p| p.keep_hourly = Some(2)),
                vec!["s4", "s6"],
            ),
            (
                "keep_daily 3",
                p(|p| p.keep_daily = Some(3)),
                vec!["s3", "s4", "s6"],
            ),
            (
                "keep_weekly 2",
                p(|p| p.keep_weekly = Some(2)),
                vec!["s4", "s6"],
            ),
            (
                "keep_monthly 5",
                p(|p| p.keep_monthly = Some(5)),
                vec!["s4", "s6"],
            ),
            ("keep_yearly 1", p(|p| p.keep_yearly = Some(1)), vec!["s6"]),
            (
                "keep_within_days 24",
                p(|p| p.keep_within_days = Some(24)),
                vec!["s4", "s5", "s6"],
            ),
            (
                "within nothing keeps newest",
                p(|p| p.keep_within_days = Some(1)),
                vec!["s5", "s6"],
            ),
            (
                "rules combine",
                p(|p| {
                    p.keep_last = Some(1);
                    p.keep_monthly = Some(2);
                }),
                vec!["s4", "s6"],
            ),
        ];
        for (name, policy, expected) in cases {
            let d = decide(&snaps(&times), &policy, now, None);
            assert_eq!(d.len(), times.len(), "{name}");
            assert_eq!(kept(&d), expected, "{name}");
            for decision in &d {
                assert!(
                    !decision.reasons.is_empty(),
                    "{name}: {decision:?} has no reason"
                );
            }
        }
    }

    #[test]
    fn newest_is_kept_even_when_old() {
        let d = decide(
            &snaps(&["2020-01-01T00:00:00", "2020-01-02T00:00:00"]),
            &RetentionPolicy {
                keep_within_days: Some(7),
                ..Default::default()
            },
            at("2026-01-01T00:00:00"),
            None,
        );
        assert_eq!(kept(&d), vec!["s1"]);
        assert!(d[0].reasons[0].contains("newest"));
        assert_eq!(d[1].reasons, vec!["matches no keep rule"]);
    }

    #[test]
    fn empty_input() {
        assert!(decide(&[], &RetentionPolicy::default(), Utc::now(), None).is_empty());
    }

    fn keep_last_one() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        }
    }

    /// The clock was a year ahead when s1 was written; it is now right and
    /// this run wrote s0. Nothing goes, and every decision says why.
    #[test]
    fn future_dated_newest_refuses_pruning() {
        let now = at("2026-01-10T00:00:00");
        let snapshots = snaps(&[
            "2026-01-10T00:00:00",
            "2027-01-10T00:00:00",
            "2026-01-09T00:00:00",
        ]);
        let d = decide(&snapshots, &keep_last_one(), now, Some("s0"));
        assert_eq!(kept(&d), vec!["s0", "s1", "s2"]);
        let refusal = clock_refusal(&snapshots, now).unwrap();
        assert!(refusal.contains("s1"), "{refusal}");
        assert!(refusal.contains("2027-01-10T00:00:00"), "{refusal}");
        for decision in &d {
            assert_eq!(decision.reasons, vec![refusal.clone()]);
        }
    }

    /// A few seconds of skew between writers is not a wrong clock.
    #[test]
    fn small_skew_is_tolerated() {
        let now = at("2026-01-10T00:00:00");
        let snapshots = snaps(&["2026-01-10T00:01:00", "2026-01-09T00:00:00"]);
        assert_eq!(clock_refusal(&snapshots, now), None);
        let d = decide(&snapshots, &keep_last_one(), now, None);
        assert_eq!(kept(&d), vec!["s0"]);
        assert_eq!(clock_refusal(&[], now), None);
    }

    /// With the clock behind (older than an existing snapshot but not
    /// refused), the run's own snapshot is still never removed.
    #[test]
    fn just_written_is_always_kept() {
        let now = at("2026-01-10T00:00:00");
        let snapshots = snaps(&["2026-01-09T00:00:00", "2026-01-10T00:04:00"]);
        let d = decide(&snapshots, &keep_last_one(), now, Some("s0"));
        assert_eq!(kept(&d), vec!["s0", "s1"]);
        let own = d.iter().find(|d| d.id == "s0").unwrap();
        assert!(own.reasons[0].contains("this run"), "{own:?}");
    }

    #[test]
    fn zero_is_rejected() {
        let p = RetentionPolicy {
            keep_daily: Some(0),
            ..Default::default()
        };
        assert!(p.validate()[0].starts_with("keep_daily:"));
    }
}
