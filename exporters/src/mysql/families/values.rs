//! mysqld_exporter's parsing of status and variable values: booleans
//! spelled as words, Go's float syntax, and the two date formats MySQL
//! prints, so every value reads as the anchor reads it.

/// mysqld_exporter's value parser: Yes/ON/Primary are 1, No/OFF/Disabled/
/// Connecting/non-Primary/Disconnected are 0, two date formats become unix
/// seconds, anything else must be a float. `None` means "skip silently".
pub fn parse_status(raw: &str) -> Option<f64> {
    match raw.to_ascii_lowercase().as_str() {
        "yes" | "on" | "primary" => return Some(1.0),
        "no" | "off" | "disabled" | "connecting" | "non-primary" | "disconnected" => {
            return Some(0.0)
        }
        _ => {}
    }
    if let Some(ts) = parse_ssl_date(raw).or_else(|| parse_sql_datetime(raw)) {
        return Some(ts);
    }
    parse_go_float(raw)
}

/// Go's `strconv.ParseFloat` accepts what Rust's parser accepts for the
/// values MySQL prints (decimal, exponent, inf/nan words); both refuse the
/// empty string and trailing garbage.
pub(super) fn parse_go_float(raw: &str) -> Option<f64> {
    if raw.is_empty() || raw.trim() != raw {
        return None;
    }
    raw.parse::<f64>().ok()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Jan 02 15:04:05 2006 MST` (the `Ssl_server_not_after` format); the zone
/// abbreviation counts as UTC, as Go does for zones it does not know.
fn parse_ssl_date(raw: &str) -> Option<f64> {
    let parts: Vec<&str> = raw.split(' ').collect();
    if parts.len() != 5 {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == parts[0])? as u32 + 1;
    let day = two_digits(parts[1])?;
    let (h, mi, s) = hms(parts[2])?;
    if parts[3].len() != 4 {
        return None;
    }
    let year: i64 = parts[3].parse().ok()?;
    let zone = parts[4];
    if zone.len() < 3 || !zone.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    unix_seconds(year, month, day, h, mi, s)
}

/// `2006-01-02 15:04:05`, as UTC.
fn parse_sql_datetime(raw: &str) -> Option<f64> {
    let (date, time) = raw.split_once(' ')?;
    let mut d = date.split('-');
    let year = d.next()?;
    let month = two_digits(d.next()?)?;
    let day = two_digits(d.next()?)?;
    if d.next().is_some() || year.len() != 4 {
        return None;
    }
    let (h, mi, s) = hms(time)?;
    unix_seconds(year.parse().ok()?, month, day, h, mi, s)
}

fn two_digits(s: &str) -> Option<u32> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn hms(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split(':');
    let h = two_digits(it.next()?)?;
    let m = two_digits(it.next()?)?;
    let sec = two_digits(it.next()?)?;
    if it.next().is_some() || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some((h, m, sec))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn unix_seconds(year: i64, month: u32, day: u32, h: u32, mi: u32, s: u32) -> Option<f64> {
    if !(1..=12).contains(&month) || day == 0 || day > 31 {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_like_the_anchor() {
        assert_eq!(parse_status("ON"), Some(1.0));
        assert_eq!(parse_status("Yes"), Some(1.0));
        assert_eq!(parse_status("Connecting"), Some(0.0));
        assert_eq!(parse_status("DISABLED"), Some(0.0));
        assert_eq!(parse_status("Primary"), Some(1.0));
        assert_eq!(parse_status("42"), Some(42.0));
        assert_eq!(parse_status("0.5"), Some(0.5));
        assert_eq!(parse_status("mysql-bin.000123"), None);
        assert_eq!(parse_status("10.11.6-MariaDB"), None);
        assert_eq!(parse_status(""), None);
        assert_eq!(parse_status("1970-01-02 00:00:01"), Some(86_401.0));
        assert_eq!(
            parse_status("Nov 23 18:57:44 2036 GMT"),
            Some(2_111_079_464.0)
        );
        assert_eq!(parse_status("2000-03-01 00:00:00"), Some(951_868_800.0));
    }
}
