//! redis-server's log: `pid:role DD Mon YYYY HH:MM:SS.mmm L message`,
//! the role a letter (M master, S replica, C a child such as the RDB
//! writer, X sentinel) and the level a sign (`.` debug, `-` verbose,
//! `*` notice, `#` warning). Local time without a zone.

use super::time::{hms, month_number, Civil};
use super::{severity, BodyPart, Meta};
use crate::wire::{AttributeSink, Value};
use crate::zone::Zone;

/// A record starts with `pid:role date`; the lines of the ASCII-art
/// banner and of multi-line reports (a crash's stack) do not.
pub(super) const RECORD_START: &str = r"^\d+:[XCSM] \d{1,2} [A-Z][a-z]{2} \d{4} ";

/// One redis-server record.
pub(super) fn parse<S: AttributeSink>(text: &str, zone: Zone, attrs: &mut S) -> Option<Meta> {
    let (pid, rest) = text.split_once(':')?;
    let pid: i64 = pid.parse().ok()?;
    let mut chars = rest.chars();
    let role = match chars.next()? {
        'M' => "master",
        'S' => "replica",
        'C' => "child",
        'X' => "sentinel",
        _ => return None,
    };
    let rest = chars.as_str().strip_prefix(' ')?;
    let mut fields = rest.splitn(4, ' ');
    let day: u32 = fields.next()?.parse().ok()?;
    let month = month_number(fields.next()?)?;
    let year: i64 = fields.next()?.parse().ok()?;
    let (hour, minute, second, nanos, rest) = hms(fields.next()?)?;
    let rest = rest.strip_prefix(' ')?;
    let (level, message) = rest.split_at_checked(1)?;
    let (severity, severity_text) = match level {
        "." => (severity::DEBUG, "debug"),
        "-" => (severity::DEBUG + 1, "verbose"),
        "*" => (severity::NOTICE, "notice"),
        "#" => (severity::WARN, "warning"),
        _ => return None,
    };
    let message = message.strip_prefix(' ').unwrap_or(message);
    let civil = Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
    };
    attrs.attribute("process.pid", Value::Int(pid));
    attrs.attribute("redis.role", Value::Str(role));
    Some(Meta {
        time_unix_nano: civil.nanos(None, zone).unwrap_or(0),
        severity,
        severity_text,
        body: Some(BodyPart::Slice(text.len() - message.len()..text.len())),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ParserKind;
    use crate::parse::{parse_with, Options};

    #[test]
    fn redis_lines() {
        let opts = Options {
            zone: Zone::parse("+01:00").unwrap(),
        };
        let p = parse_with(
            ParserKind::Redis,
            &opts,
            "4242:M 04 Dec 2026 16:30:00.123 * Ready to accept connections tcp",
        );
        assert_eq!((p.severity, p.severity_text), (severity::NOTICE, "notice"));
        assert_eq!(p.time_unix_nano, 1_796_398_200_123_000_000);
        assert!(matches!(
            p.body.and_then(|b| b.value),
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) if s == "Ready to accept connections tcp"
        ));
        assert_eq!(p.attributes.len(), 2);
        let p = parse_with(
            ParserKind::Redis,
            &opts,
            "7:C 4 Dec 2026 16:30:00.123 # WARNING overcommit",
        );
        assert_eq!(p.severity, severity::WARN);
        for bad in [
            "4242:Q 04 Dec 2026 16:30:00.123 * x",
            "                _._",
            "1:M 04 Dec 2026 16:30:00.123 ?",
        ] {
            assert!(
                parse_with(ParserKind::Redis, &opts, bad).body.is_none(),
                "{bad}"
            );
        }
    }
}
