//! Timestamps of log lines: civil dates to Unix nanoseconds without the
//! overflows a forged year could cause, zones, RFC 3339.

pub use crate::zone::{Civil, Zone};

/// Days since 1970-01-01 of a civil date (proleptic Gregorian); `None`
/// for a year so far out (the line's text decides) that it overflows.
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = if y >= 0 { y } else { y.checked_sub(399)? } / 400;
    // 0..=399, and the terms below stay small: only `era` can be huge.
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146097)?.checked_add(doe - 719468)
}

pub(super) fn month_number(name: &str) -> Option<u32> {
    Some(match name {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    })
}

pub(super) fn unix_nanos(
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    offset_secs: i64,
) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d)?
        .checked_mul(86400)?
        .checked_add((h * 3600 + mi * 60 + s) as i64)?
        .checked_sub(offset_secs)?;
    // Nanoseconds in a u64 end in 2554.
    u64::try_from(secs).ok()?.checked_mul(1_000_000_000)
}

/// `23/Nov/2026:18:55:10 +0000` (nginx `$time_local`).
pub(super) fn parse_time_local(t: &str) -> Option<u64> {
    let (date, zone) = t.split_once(' ')?;
    let mut parts = date.splitn(4, [':', '/']);
    let d: u32 = parts.next()?.parse().ok()?;
    let mo = month_number(parts.next()?)?;
    let y: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u32 = hms.next()?.parse().ok()?;
    let mi: u32 = hms.next()?.parse().ok()?;
    let s: u32 = hms.next()?.parse().ok()?;
    let offset = parse_zone(zone)?;
    unix_nanos(y, mo, d, h, mi, s, offset)
}

/// `+0100` → 3600.
pub(super) fn parse_zone(z: &str) -> Option<i64> {
    let (sign, digits) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    // `+0100` or `+01:00`, without allocating (this runs per line).
    let (hh, mm) = match digits.len() {
        4 => (digits.get(..2)?, digits.get(2..)?),
        5 if digits.as_bytes()[2] == b':' => (digits.get(..2)?, digits.get(3..)?),
        _ => return None,
    };
    let h: i64 = hh.parse().ok()?;
    let m: i64 = mm.parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

/// RFC 3339 timestamps (`$time_iso8601`, Monolog `datetime`).
pub(super) fn parse_rfc3339(t: &str) -> Option<u64> {
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(dt.unix_timestamp_nanos()).ok()
}
impl Civil {
    /// Unix nanoseconds: at `offset` seconds east of UTC when the line
    /// gave one, else in `zone`.
    pub fn nanos(&self, offset: Option<i64>, zone: Zone) -> Option<u64> {
        let offset = match offset {
            Some(o) => o,
            None => zone.offset_of(self)?,
        };
        unix_nanos(
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            offset,
        )?
        .checked_add(self.nanos as u64)
    }
}

fn digits<const N: usize>(s: &str) -> Option<(u32, &str)> {
    let head = s.get(..N)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &s[N..]))
}

/// `.123` / `,123456` after the seconds: nanoseconds and the rest.
fn fraction(s: &str) -> (u32, &str) {
    let Some(rest) = s.strip_prefix(['.', ',']) else {
        return (0, s);
    };
    let n = rest.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return (0, s);
    }
    let mut nanos = 0u32;
    for (i, b) in rest
        .bytes()
        .take(9)
        .take_while(u8::is_ascii_digit)
        .enumerate()
    {
        nanos += (b - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    (nanos, &rest[n..])
}

/// `2026-12-04 15:30:00`, `2026-12-04T15:30:00.123456` at the start of
/// `s` (any fraction, `.` or `,`): the time and the rest (a zone may
/// follow).
pub(super) fn iso_datetime(s: &str) -> Option<(Civil, &str)> {
    let (year, s) = digits::<4>(s)?;
    let (month, s) = digits::<2>(s.strip_prefix('-')?)?;
    let (day, s) = digits::<2>(s.strip_prefix('-')?)?;
    let s = s.strip_prefix(['T', ' '])?;
    let (hour, s) = digits::<2>(s)?;
    let (minute, s) = digits::<2>(s.strip_prefix(':')?)?;
    let (second, s) = digits::<2>(s.strip_prefix(':')?)?;
    let (nanos, s) = fraction(s);
    Some((
        Civil {
            year: year as i64,
            month,
            day,
            hour,
            minute,
            second,
            nanos,
        },
        s,
    ))
}

/// `Z`, `+01:00`, `+0100` or `+01` at the start of `s`: seconds east of
/// UTC and the rest.
pub(super) fn parse_offset(s: &str) -> Option<(i64, &str)> {
    if let Some(rest) = s.strip_prefix('Z') {
        return Some((0, rest));
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, rest) = digits::<2>(&s[1..])?;
    let (m, rest) = match rest.strip_prefix(':') {
        Some(r) => digits::<2>(r)?,
        None => digits::<2>(rest).unwrap_or((0, rest)),
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some((sign * (h as i64 * 3600 + m as i64 * 60), rest))
}

/// `04 Dec 2026 15:30:00.123` (Redis) / `Dec  4 15:30:00` (syslog): the
/// parts after the month name.
pub(super) fn hms(s: &str) -> Option<(u32, u32, u32, u32, &str)> {
    let (h, s) = digits::<2>(s)?;
    let (mi, s) = digits::<2>(s.strip_prefix(':')?)?;
    let (sec, s) = digits::<2>(s.strip_prefix(':')?)?;
    let (nanos, s) = fraction(s);
    Some((h, mi, sec, nanos, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str, zone: Zone) -> Option<u64> {
        let (c, rest) = iso_datetime(s)?;
        let offset = parse_offset(rest).map(|(o, _)| o);
        c.nanos(offset, zone)
    }

    #[test]
    fn zones_and_offsets() {
        let utc = 1_796_398_200 * 1_000_000_000u64; // 2026-12-04T15:30:00Z
        assert_eq!(at("2026-12-04 15:30:00", Zone::Utc), Some(utc));
        assert_eq!(at("2026-12-04T16:30:00+01:00", Zone::Utc), Some(utc));
        assert_eq!(at("2026-12-04T16:30:00+0100", Zone::Utc), Some(utc));
        assert_eq!(at("2026-12-04T15:30:00Z", Zone::Fixed(3600)), Some(utc));
        assert_eq!(at("2026-12-04 16:30:00", Zone::Fixed(3600)), Some(utc));
        assert_eq!(
            at("2026-12-04 15:30:00.250", Zone::Utc),
            Some(utc + 250_000_000)
        );
        let paris = Zone::parse("Europe/Paris").unwrap();
        assert_eq!(at("2026-12-04 16:30:00", paris), Some(utc));
        // Summer time: +02:00.
        let july = at("2026-07-01 12:00:00", Zone::Utc).unwrap();
        assert_eq!(at("2026-07-01 14:00:00", paris), Some(july));
        // The autumn change (2026-10-25 03:00 CEST -> 02:00 CET): 02:30
        // happens twice, the first (CEST) is taken; 03:30 is CET.
        let change = at("2026-10-25T01:00:00Z", Zone::Utc).unwrap();
        let s = 1_000_000_000;
        assert_eq!(at("2026-10-25 02:30:00", paris), Some(change - 1800 * s));
        assert_eq!(
            at("2026-10-25 03:30:00", paris),
            Some(change + 3600 * s + 1800 * s)
        );
        // The spring change (2026-03-29 02:00 CET -> 03:00 CEST): 02:30
        // does not exist; read with the offset before (CET).
        let spring = at("2026-03-29T01:00:00Z", Zone::Utc).unwrap();
        assert_eq!(at("2026-03-29 02:30:00", paris), Some(spring + 1800 * s));
        assert_eq!(Zone::parse("+05:30"), Ok(Zone::Fixed(19800)));
        assert_eq!(Zone::parse("UTC"), Ok(Zone::Utc));
        assert!(Zone::parse("Mars/Olympus").unwrap_err().contains("IANA"));
        assert!(Zone::parse("+25:00").is_err());
    }

    #[test]
    fn bad_dates_are_no_time() {
        assert_eq!(at("2026-13-04 15:30:00", Zone::Utc), None);
        assert_eq!(
            at("2026-02-30 15:30:00", Zone::parse("Europe/Paris").unwrap()),
            None
        );
        assert!(iso_datetime("2026-1-04 15:30:00").is_none());
        assert!(iso_datetime("２０２６-12-04 15:30:00").is_none());
    }
}
