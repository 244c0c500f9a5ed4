//! PHP-FPM's error and slow logs and PHP's own error_log.

use super::time::{month_number, unix_nanos};
use super::{kv_str, level_severity, severity, Parsed};

/// PHP-FPM (`[23-Nov-2026 18:55:10] WARNING: [pool www] ...`), PHP's
/// error_log (`[23-Nov-2026 18:55:10 UTC] PHP Fatal error: ...`) and slow
/// log records (multiline).
pub(super) fn php(text: &str) -> Option<Parsed> {
    let rest = text.strip_prefix('[')?;
    let close = rest.find(']')?;
    let stamp = &rest[..close];
    let after = rest[close + 1..].trim_start();
    let mut time_unix_nano = 0;
    // Only a stamp with an explicit UTC zone can be placed in time.
    if let Some(s) = stamp.strip_suffix(" UTC") {
        time_unix_nano = parse_php_stamp(s).unwrap_or(0);
    }
    let mut attrs = Vec::new();
    let (severity, severity_text) = if let Some(msg) = after.strip_prefix("PHP ") {
        let kind = msg.split(':').next().unwrap_or("");
        attrs.push(kv_str("php.error.type", kind));
        match kind {
            k if k.contains("Fatal") || k.contains("Parse") => (severity::FATAL, "FATAL"),
            k if k.contains("Warning") || k.contains("Deprecated") => (severity::WARN, "WARN"),
            k if k.contains("Notice") => (severity::NOTICE, "NOTICE"),
            _ => (severity::ERROR, "ERROR"),
        }
    } else if let Some((level, _)) = after.split_once(": ") {
        level_severity(level).unwrap_or((severity::INFO, "INFO"))
    } else {
        (severity::INFO, "INFO")
    };
    if let Some(i) = after.find("[pool ") {
        let pool = &after[i + 6..];
        if let Some(end) = pool.find(']') {
            attrs.push(kv_str("php_fpm.pool", &pool[..end]));
        }
    }
    if text.contains("\nscript_filename = ") {
        attrs.push(kv_str("php_fpm.log", "slow"));
    }
    Some(Parsed {
        time_unix_nano,
        severity,
        severity_text,
        body: None,
        attributes: attrs,
        access: None,
        ..Default::default()
    })
}

/// `23-Nov-2026 18:55:10`.
pub(super) fn parse_php_stamp(s: &str) -> Option<u64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-');
    let day: u32 = d.next()?.parse().ok()?;
    let mo = month_number(d.next()?)?;
    let y: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':');
    let h: u32 = t.next()?.parse().ok()?;
    let mi: u32 = t.next()?.parse().ok()?;
    let sec: u32 = t.next()?.parse().ok()?;
    unix_nanos(y, mo, day, h, mi, sec, 0)
}
