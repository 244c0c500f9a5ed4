//! Cron schedules in a time zone: the next run, and the runs missed while
//! the agent was down (so they are reported, never silently skipped).
//! Standard 5-field crontab syntax (`min hour day month weekday`, 0 or 7 =
//! Sunday), or 6 fields with seconds first.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

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

    #[test]
    fn garbage_is_explained() {
        let e = Schedule::parse("every hour", "UTC").unwrap_err();
        assert!(e.contains("not a cron expression"), "{e}");
        assert!(Schedule::parse("0 * * * *", "Mars/Base").is_err());
    }
}
