//! The time collector: the system time and the local time zone's name and
//! offset, read from the TZif file of `$TZ` or /etc/localtime (UTC when
//! there is none), as Go's time package finds it for node_exporter.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::read::read_attr;
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn time(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CollectError::failed(format!("system clock before 1970: {e}")))?;
    let mut out = vec![gauge(
        "node_time_seconds",
        "System time in seconds since epoch (1970).",
        now.as_secs_f64(),
    )];
    let (zone, offset) = local_zone(now.as_secs() as i64);
    out.push(
        MetricFamily::gauge(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
        )
        .with([("time_zone", zone)], offset as f64),
    );
    let mut available = MetricFamily::gauge(
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
    );
    let mut current = MetricFamily::gauge(
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
    );
    if let Ok(entries) = std::fs::read_dir(s.sys_path("devices/system/clocksource")) {
        let mut dirs: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = name.strip_prefix("clocksource")?.to_string();
                id.bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| (id, e.path()))
            })
            .collect();
        dirs.sort();
        for (id, dir) in dirs {
            if let Some(list) = read_attr(&dir.join("available_clocksource")) {
                for cs in list.split_ascii_whitespace() {
                    available.push([("clocksource", cs), ("device", id.as_str())], 1.0);
                }
            }
            if let Some(cs) = read_attr(&dir.join("current_clocksource")) {
                current.push([("clocksource", cs.as_str()), ("device", id.as_str())], 1.0);
            }
        }
    }
    out.push(available);
    out.push(current);
    Ok(out)
}

/// The local time zone's abbreviation and UTC offset at `now`, from `TZ`
/// or /etc/localtime (a TZif file), like Go's `time.Local`. Falls back to
/// UTC when neither can be read.
fn local_zone(now: i64) -> (String, i64) {
    let utc = ("UTC".to_string(), 0);
    let path = match std::env::var("TZ") {
        Ok(tz) if tz.is_empty() || tz == "UTC" || tz == ":UTC" => return utc,
        Ok(tz) => {
            let name = tz.trim_start_matches(':');
            if name.starts_with('/') {
                PathBuf::from(name)
            } else {
                Path::new("/usr/share/zoneinfo").join(name)
            }
        }
        Err(_) => PathBuf::from("/etc/localtime"),
    };
    std::fs::read(&path)
        .ok()
        .and_then(|data| tzif_zone_at(&data, now))
        .unwrap_or(utc)
}

/// Looks up the zone in effect at `now` in TZif data: the type of the last
/// transition at or before `now` (the 64-bit block when present).
pub(crate) fn tzif_zone_at(data: &[u8], now: i64) -> Option<(String, i64)> {
    fn be32(d: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
    }
    fn counts(d: &[u8], at: usize) -> Option<[usize; 6]> {
        if d.get(at..at + 4)? != b"TZif" {
            return None;
        }
        let mut c = [0usize; 6];
        for (i, slot) in c.iter_mut().enumerate() {
            *slot = be32(d, at + 20 + 4 * i)? as usize;
        }
        Some(c)
    }
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts(data, 0)?;
    let version = *data.get(4)?;
    let (base, time_size, c) = if version >= b'2' {
        let v1_len = timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
        let at = 44 + v1_len;
        (at + 44, 8, counts(data, at)?)
    } else {
        (44, 4, [isut, isstd, leap, timecnt, typecnt, charcnt])
    };
    let [_, _, _, timecnt, typecnt, charcnt] = c;
    let times_at = base;
    let idx_at = times_at + timecnt * time_size;
    let types_at = idx_at + timecnt;
    let chars_at = types_at + typecnt * 6;
    let chars = data.get(chars_at..chars_at + charcnt)?;
    let mut type_index = 0usize;
    for i in 0..timecnt {
        let t = if time_size == 8 {
            i64::from_be_bytes(
                data.get(times_at + 8 * i..times_at + 8 * i + 8)?
                    .try_into()
                    .ok()?,
            )
        } else {
            be32(data, times_at + 4 * i)? as i32 as i64
        };
        if t > now {
            break;
        }
        type_index = *data.get(idx_at + i)? as usize;
    }
    let ttinfo = data.get(types_at + type_index * 6..types_at + type_index * 6 + 6)?;
    let offset = i32::from_be_bytes(ttinfo[0..4].try_into().ok()?) as i64;
    let abbr_at = ttinfo[5] as usize;
    let abbr_bytes = chars.get(abbr_at..)?;
    let end = abbr_bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(abbr_bytes.len());
    Some((
        String::from_utf8_lossy(&abbr_bytes[..end]).into_owned(),
        offset,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_tzif_is_read() {
        // A minimal v1 TZif: no transitions, one type (offset 3600, "CET").
        let mut d = b"TZif".to_vec();
        d.push(0);
        d.extend([0u8; 15]);
        for c in [0u32, 0, 0, 0, 1, 4] {
            d.extend(c.to_be_bytes());
        }
        d.extend(3600i32.to_be_bytes());
        d.extend([0u8, 0u8]);
        d.extend(b"CET\0");
        assert_eq!(tzif_zone_at(&d, 1_700_000_000), Some(("CET".into(), 3600)));
        assert_eq!(tzif_zone_at(b"nope", 0), None);
        if let Ok(real) = std::fs::read("/usr/share/zoneinfo/Etc/UTC") {
            assert_eq!(tzif_zone_at(&real, 1_700_000_000), Some(("UTC".into(), 0)));
        }
    }
}
