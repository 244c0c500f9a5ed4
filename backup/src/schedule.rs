//! Cron schedules in a time zone: the next run, and the runs missed while
//! the agent was down (so they are reported, never silently skipped).
//! Standard 5-field crontab syntax (`min hour day month weekday`, 0 or 7 =
//! Sunday), or 6 fields with seconds first.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Longest single sleep of a scheduler waiting for a due time: sleeps run
/// on the monotonic clock, so a wall-clock jump (NTP fixing a wrong clock,
/// a VM resumed) is noticed within this and the wait recomputed.
pub const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// How far the wall clock may step back before the schedule is recomputed
/// (small NTP corrections are not worth a warning).
pub const CLOCK_BACK_TOLERANCE_SECS: i64 = 120;

/// What a scheduler waiting for `next` should do at wall-clock `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The due time has come: run.
    Due,
    /// Sleep this long (at most [`MAX_SLEEP`]), then ask again.
    Sleep(std::time::Duration),
    /// The wall clock is now before `handled` (the time the schedule was
    /// computed from): it was wrong and has been corrected backwards.
    /// Recompute the next run from `now` instead of waiting for a time
    /// that only the wrong clock reached.
    ClockWentBack,
}

/// One step of waiting: `handled` is the wall time the schedule was
/// advanced to, `next` the run computed from it. A pure function of the
/// wall clock, re-asked at least every [`MAX_SLEEP`], so the wait survives
/// jumps both ways.
pub fn wait_step(handled: DateTime<Utc>, next: DateTime<Utc>, now: DateTime<Utc>) -> Wait {
    if now + chrono::Duration::seconds(CLOCK_BACK_TOLERANCE_SECS) < handled {
        return Wait::ClockWentBack;
    }
    match (next - now).to_std() {
        Ok(left) if !left.is_zero() => Wait::Sleep(left.min(MAX_SLEEP)),
        _ => Wait::Due,
    }
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
    expression: String,
}

impl Schedule {
    /// Parses `expression` in time zone `timezone` (IANA name).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let tz = Tz::from_str(timezone)
            .map_err(|_| format!("unknown time zone {timezone:?}; use an IANA name such as UTC"))?;
        let cron = croner::Cron::from_str(expression.trim()).map_err(|e| {
            format!(
                "{expression:?} is not a cron expression ({e}); use 5 fields `min hour day month weekday`, e.g. \"0 */6 * * *\""
            )
        })?;
        Ok(Schedule {
            cron,
            tz,
            expression: expression.trim().to_string(),
        })
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Runs due in `(since, until]`: their count (capped at `cap`) and the
    /// latest of them.
    pub fn due_between(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cap: usize,
    ) -> (usize, Option<DateTime<Utc>>) {
        let mut count = 0;
        let mut last = None;
        let mut t = since;
        while count < cap {
            match self.next_after(t) {
                Some(n) if n <= until => {
                    count += 1;
                    last = Some(n);
                    t = n;
                }
                _ => break,
            }
        }
        (count, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn every_six_hours_utc() {
        let s = Schedule::parse("0 */6 * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T05:59:00Z")),
            Some(at("2026-01-01T06:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-01-01T06:00:00Z")),
            Some(at("2026-01-01T12:00:00Z"))
        );
    }

    #[test]
    fn weekday_is_crontab_style_and_timezone_applies() {
        // 2026-01-05 is a Monday; 02:00 in Paris is 01:00 UTC in winter.
        let s = Schedule::parse("0 2 * * 1", "Europe/Paris").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-05T01:00:00Z"))
        );
    }

    #[test]
    fn missed_runs_are_counted() {
        let s = Schedule::parse("0 3 * * *", "UTC").unwrap();
        let (n, last) = s.due_between(at("2026-01-01T04:00:00Z"), at("2026-01-04T12:00:00Z"), 100);
        assert_eq!(n, 3);
        assert_eq!(last, Some(at("2026-01-04T03:00:00Z")));
        let (n, _) = s.due_between(at("2026-01-01T04:00:00Z"), at("2026-01-02T02:00:00Z"), 100);
        assert_eq!(n, 0);
    }

    /// The clock ran a year ahead during the last run (handled = 2027);
    /// NTP put it back. The scheduler must not wait for 2027.
    #[test]
    fn clock_stepping_back_recomputes() {
        let handled = at("2027-01-01T00:05:00Z");
        let next = at("2027-01-01T06:00:00Z");
        assert_eq!(
            wait_step(handled, next, at("2026-01-01T00:10:00Z")),
            Wait::ClockWentBack
        );
        // A small correction is just a slightly longer wait.
        assert_eq!(
            wait_step(handled, next, at("2027-01-01T00:04:00Z")),
            Wait::Sleep(MAX_SLEEP)
        );
    }

    /// Sleeps are bounded, so a clock stepping forward past the due time
    /// runs the job within one slice, not after the old sleep.
    #[test]
    fn waits_are_sliced_and_due_is_due() {
        let handled = at("2026-01-01T00:00:00Z");
        let next = at("2026-01-01T06:00:00Z");
        assert_eq!(
            wait_step(handled, next, at("2026-01-01T00:00:01Z")),
            Wait::Sleep(MAX_SLEEP)
        );
        assert_eq!(
            wait_step(handled, next, at("2026-01-01T05:59:30Z")),
            Wait::Sleep(std::time::Duration::from_secs(30))
        );
        assert_eq!(wait_step(handled, next, next), Wait::Due);
        assert_eq!(
            wait_step(handled, next, at("2026-01-02T00:00:00Z")),
            Wait::Due
        );
    }

    #[test]
    fn garbage_is_explained() {
        let e = Schedule::parse("every hour", "UTC").unwrap_err();
        assert!(e.contains("not a cron expression"), "{e}");
        assert!(Schedule::parse("0 * * * *", "Mars/Base").is_err());
    }
}
