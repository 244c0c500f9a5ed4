//! The zone of timestamps written without one (a source's `time_zone`),
//! and the wall-clock time such a line gives.

/// The zone of timestamps written without one (MariaDB, Redis, Laravel's
/// `Y-m-d H:i:s`, syslog): a source's `time_zone`. A named zone follows
/// its daylight-saving changes, so an hour of the autumn change is
/// ambiguous (the earlier instant is taken) and a spring one is skipped
/// (read with the offset before the change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    #[default]
    Utc,
    /// Seconds east of UTC.
    Fixed(i32),
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `UTC`, `local` (the host's zone: `TZ`, else `/etc/localtime`),
    /// `+01:00` / `-0530`, or an IANA name such as `Europe/Paris`.
    pub fn parse(name: &str) -> Result<Zone, String> {
        let name = name.trim();
        match name {
            "UTC" | "utc" | "Z" | "GMT" | "Etc/UTC" => return Ok(Zone::Utc),
            "local" => return Ok(Zone::local()),
            _ => {}
        }
        if name.starts_with(['+', '-']) {
            return match fixed_offset(name) {
                Some(offset) => Ok(Zone::Fixed(offset)),
                _ => Err(format!("{name:?} is not an offset; write +01:00 or -0530")),
            };
        }
        name.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
            format!("{name:?} is not a time zone; use UTC, local, an offset such as +01:00 or an IANA name such as Europe/Paris")
        })
    }

    /// The host's zone: `TZ` (a name, not a POSIX rule), else the target
    /// of the `/etc/localtime` link below `zoneinfo/`; UTC when neither
    /// names a zone.
    pub fn local() -> Zone {
        let from_tz = std::env::var("TZ")
            .ok()
            .map(|v| v.trim_start_matches(':').to_string());
        let from_link = || {
            std::fs::read_link("/etc/localtime").ok().and_then(|p| {
                let p = p.to_string_lossy().into_owned();
                p.split_once("zoneinfo/").map(|(_, n)| n.to_string())
            })
        };
        let from_file = || {
            std::fs::read_to_string("/etc/timezone")
                .ok()
                .map(|s| s.trim().to_string())
        };
        for name in [from_tz, from_link(), from_file()].into_iter().flatten() {
            if name.is_empty() || name == "local" {
                continue;
            }
            if let Ok(zone) = Zone::parse(&name) {
                return zone;
            }
        }
        Zone::Utc
    }

    /// Seconds east of UTC of a wall-clock time in this zone.
    pub fn offset_of(self, c: &Civil) -> Option<i64> {
        match self {
            Zone::Utc => Some(0),
            Zone::Fixed(s) => Some(s as i64),
            Zone::Named(tz) => {
                use chrono::{NaiveDate, Offset, TimeZone};
                let date = NaiveDate::from_ymd_opt(i32::try_from(c.year).ok()?, c.month, c.day)?;
                let local = date.and_hms_opt(c.hour, c.minute, c.second.min(59))?;
                let offset = match tz.offset_from_local_datetime(&local) {
                    chrono::LocalResult::Single(o) => o,
                    chrono::LocalResult::Ambiguous(earlier, _) => earlier,
                    // A wall-clock time the change skipped: the offset
                    // an hour before still applied to the writer's clock.
                    chrono::LocalResult::None => {
                        tz.offset_from_utc_datetime(&(local - chrono::Duration::hours(3)))
                    }
                };
                Some(offset.fix().local_minus_utc() as i64)
            }
        }
    }
}

/// `+01:00`, `-0530`, `+01`: seconds east of UTC.
fn fixed_offset(s: &str) -> Option<i32> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let rest = s[1..].replace(':', "");
    if !(rest.len() == 2 || rest.len() == 4) || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = rest[..2].parse().ok()?;
    let m: i32 = rest
        .get(2..)
        .filter(|m| !m.is_empty())
        .map_or(Ok(0), str::parse)
        .ok()?;
    (h <= 23 && m <= 59).then_some(sign * (h * 3600 + m * 60))
}

/// A wall-clock date and time as a line writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}
