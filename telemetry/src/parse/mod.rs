//! Parsers: one text record in, body + severity + timestamp + attributes
//! out, named after the OpenTelemetry semantic conventions
//! (`http.request.method`, `url.path`, ...). A parser never fails: what it
//! cannot understand is kept as the body, unparsed.

mod json;
mod monolog;
mod mysql;
mod nginx;
mod php;
mod postgres;
mod redis;
mod syslog;
mod time;

/// What the parsers' unit tests read back from a record.
#[cfg(test)]
pub(crate) mod test_support {
    use super::Parsed;
    use opentelemetry_proto::tonic::common::v1::any_value;

    /// An attribute's value as text (numbers formatted).
    pub(crate) fn attr(p: &Parsed, key: &str) -> Option<String> {
        p.attributes.iter().find(|k| k.key == key).map(|k| {
            match k.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            }
        })
    }

    /// The record's body, which must be a string.
    pub(crate) fn body(p: &Parsed) -> &str {
        match p.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("body {other:?}"),
        }
    }
}

use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use crate::config::ParserKind;
use crate::wire::{AttributeSink, EncodedAttributes};

use json::json_app;
use nginx::{nginx_combined, nginx_error, nginx_json};
use php::php;
pub use syslog::supervisor_file_tags;
pub use time::Zone;

/// OTLP severity numbers (DEBUG 5, INFO 9, NOTICE 10, WARN 13, ERROR 17,
/// CRIT 18, ALERT 19, EMERG/FATAL 21).
pub mod severity {
    pub const DEBUG: i32 = 5;
    pub const INFO: i32 = 9;
    pub const NOTICE: i32 = 10;
    pub const WARN: i32 = 13;
    pub const ERROR: i32 = 17;
    pub const CRIT: i32 = 18;
    pub const ALERT: i32 = 19;
    pub const FATAL: i32 = 21;
}

/// What a request line of an access log says, for the request metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessInfo {
    pub method: &'static str,
    pub status: u16,
    pub bytes: u64,
    /// `$request_time` in seconds.
    pub duration: Option<f64>,
    /// Sum of `$upstream_response_time` values in seconds.
    pub upstream: Option<f64>,
}

/// What a slow-query record says, for the slow-query histograms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowQuery {
    /// Seconds the statement ran.
    pub duration: f64,
    /// Rows the server examined (MySQL/MariaDB only).
    pub rows_examined: Option<u64>,
}

/// A record's body when it is not the record's whole text.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyPart {
    /// This byte range of the text (the message without its prefix).
    Slice(Range<usize>),
    Any(AnyValue),
}

/// One parsed record.
#[derive(Debug, Default)]
pub struct Parsed {
    /// 0 when unknown (the record then carries only its observed time).
    pub time_unix_nano: u64,
    pub severity: i32,
    pub severity_text: &'static str,
    /// `None`: the record's text is the body.
    pub body: Option<AnyValue>,
    pub attributes: Vec<KeyValue>,
    pub access: Option<AccessInfo>,
    pub slow_query: Option<SlowQuery>,
    /// The trace the record belongs to (`trace_id`/`span_id` in its context).
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
}

/// What a parser needs besides the text: the zone of timestamps written
/// without one (a source's `time_zone`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    pub zone: Zone,
}

/// Parses `text` (one record, without its trailing newline); times without
/// a zone are UTC.
pub fn parse(kind: ParserKind, text: &str) -> Parsed {
    parse_with(kind, &Options::default(), text)
}

/// Parses `text` as a source with `options` does.
pub fn parse_with(kind: ParserKind, options: &Options, text: &str) -> Parsed {
    let parsed = match kind {
        ParserKind::Plain => None,
        ParserKind::NginxJson => nginx_json(text),
        ParserKind::NginxError => nginx_error(text),
        ParserKind::PhpFpm => php(text),
        ParserKind::Json => json_app(text),
        _ => {
            let mut attributes = Vec::with_capacity(14);
            sink_parser(kind, options, text, &mut attributes).map(|m| Parsed {
                time_unix_nano: m.time_unix_nano,
                severity: m.severity,
                severity_text: m.severity_text,
                body: match m.body {
                    None => None,
                    Some(BodyPart::Slice(r)) => Some(string_value(text.get(r).unwrap_or(text))),
                    Some(BodyPart::Any(a)) => Some(a),
                },
                attributes,
                access: m.access,
                slow_query: m.slow_query,
                trace_id: m.trace_id,
                span_id: m.span_id,
            })
        }
    };
    parsed.unwrap_or(Parsed {
        severity: 0,
        ..Default::default()
    })
}

/// The parsers that write their attributes into any [`AttributeSink`]
/// (no message built per attribute on the tailer's path); `None` for a
/// record the parser does not recognise (then `attrs` is untouched) and
/// for the parsers that build messages.
fn sink_parser<S: AttributeSink>(
    kind: ParserKind,
    options: &Options,
    text: &str,
    attrs: &mut S,
) -> Option<Meta> {
    let zone = options.zone;
    match kind {
        ParserKind::NginxCombined => nginx_combined(text, attrs),
        ParserKind::Monolog => monolog::parse(text, zone, attrs),
        ParserKind::MysqlError => mysql::error_log(text, zone, attrs),
        ParserKind::MysqlSlow => mysql::slow_log(text, zone, attrs),
        ParserKind::Postgresql => postgres::parse(text, zone, attrs),
        ParserKind::Redis => redis::parse(text, zone, attrs),
        ParserKind::Syslog => syslog::parse(text, zone, attrs),
        ParserKind::Supervisor => syslog::supervisor(text, zone, attrs),
        ParserKind::Plain
        | ParserKind::NginxJson
        | ParserKind::NginxError
        | ParserKind::PhpFpm
        | ParserKind::Json => None,
    }
}

/// The multiline start regex of a parser whose records span lines by
/// default (stack traces, slow-log entries, DETAIL lines), for sources
/// that set none.
pub fn default_multiline_start(kind: ParserKind) -> Option<&'static str> {
    match kind {
        // PHP-FPM and PHP error_log records start with `[23-Nov-2026 10:00:00`;
        // stack-trace and slow-log continuation lines do not.
        ParserKind::PhpFpm => Some(r"^\[\d{2}-[A-Za-z]{3}-\d{4} "),
        ParserKind::Monolog => Some(monolog::RECORD_START),
        ParserKind::MysqlError => Some(mysql::ERROR_RECORD_START),
        ParserKind::MysqlSlow => Some(mysql::SLOW_RECORD_START),
        ParserKind::Postgresql => Some(postgres::RECORD_START),
        ParserKind::Redis => Some(redis::RECORD_START),
        _ => None,
    }
}

pub fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

pub(super) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(super) fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

pub(super) fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

pub(super) fn kv_f64(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

/// The HTTP methods the metrics label by name; anything else is `_OTHER`
/// (as the semantic conventions say), so labels stay bounded.
pub fn normalize_method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}

pub(super) fn status_severity(status: u16) -> (i32, &'static str) {
    match status {
        500..=599 => (severity::ERROR, "ERROR"),
        400..=499 => (severity::WARN, "WARN"),
        _ => (severity::INFO, "INFO"),
    }
}

/// What a parser found besides the attributes.
#[derive(Debug, Default)]
pub struct Meta {
    /// 0 when unknown.
    pub time_unix_nano: u64,
    pub severity: i32,
    pub severity_text: &'static str,
    pub access: Option<AccessInfo>,
    pub slow_query: Option<SlowQuery>,
    /// `None`: the record's text is the body.
    pub body: Option<BodyPart>,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
}

/// Parses `text` like [`parse_with`], writing the attributes encoded into
/// `attrs` (cleared first) instead of building messages: the tailer's
/// path.
pub fn parse_encoded(
    kind: ParserKind,
    options: &Options,
    text: &str,
    attrs: &mut EncodedAttributes,
) -> Meta {
    attrs.clear();
    match kind {
        ParserKind::Plain => Meta::default(),
        ParserKind::NginxJson | ParserKind::NginxError | ParserKind::PhpFpm | ParserKind::Json => {
            let p = parse_with(kind, options, text);
            for kv in &p.attributes {
                attrs.push_message(kv);
            }
            Meta {
                time_unix_nano: p.time_unix_nano,
                severity: p.severity,
                severity_text: p.severity_text,
                access: p.access,
                slow_query: p.slow_query,
                body: p.body.map(BodyPart::Any),
                trace_id: p.trace_id,
                span_id: p.span_id,
            }
        }
        _ => sink_parser(kind, options, text, attrs).unwrap_or_default(),
    }
}

pub(super) fn level_severity(level: &str) -> Option<(i32, &'static str)> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" => (1, "TRACE"),
        "debug" => (severity::DEBUG, "DEBUG"),
        "info" | "information" => (severity::INFO, "INFO"),
        "notice" => (severity::NOTICE, "NOTICE"),
        "warn" | "warning" | "deprecated" => (severity::WARN, "WARN"),
        "error" | "err" => (severity::ERROR, "ERROR"),
        "crit" | "critical" => (severity::CRIT, "CRITICAL"),
        "alert" => (severity::ALERT, "ALERT"),
        "emerg" | "emergency" | "fatal" => (severity::FATAL, "EMERGENCY"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::php::parse_php_stamp;
    use super::time::parse_time_local;
    use super::*;

    fn attr<'a>(p: &'a Parsed, key: &str) -> Option<&'a any_value::Value> {
        p.attributes
            .iter()
            .find(|k| k.key == key)
            .and_then(|k| k.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn s(v: Option<&any_value::Value>) -> &str {
        match v {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn combined_with_timings() {
        let line = r#"10.1.2.3 - alice [23/Nov/2026:18:55:10 +0100] "POST /api/items?x=1&y=2 HTTP/1.1" 503 1234 "https://ref/" "curl/8.5 (x)" 0.250 0.100, 0.050 : 0.010"#;
        let p = parse(ParserKind::NginxCombined, line);
        assert_eq!(s(attr(&p, "client.address")), "10.1.2.3");
        assert_eq!(s(attr(&p, "enduser.id")), "alice");
        assert_eq!(s(attr(&p, "http.request.method")), "POST");
        assert_eq!(s(attr(&p, "url.path")), "/api/items");
        assert_eq!(s(attr(&p, "url.query")), "x=1&y=2");
        assert_eq!(s(attr(&p, "user_agent.original")), "curl/8.5 (x)");
        assert_eq!(p.severity, severity::ERROR);
        let a = p.access.unwrap();
        assert_eq!((a.method, a.status, a.bytes), ("POST", 503, 1234));
        assert_eq!(a.duration, Some(0.25));
        assert!((a.upstream.unwrap() - 0.16).abs() < 1e-9);
        // 2026-11-23T17:55:10Z
        assert_eq!(p.time_unix_nano, 1_795_456_510 * 1_000_000_000);
    }

    #[test]
    fn plain_combined_and_garbage() {
        let p = parse(
            ParserKind::NginxCombined,
            r#"::1 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/2.0" 200 5 "-" "-""#,
        );
        let a = p.access.unwrap();
        assert_eq!((a.status, a.duration), (200, None));
        let g = parse(ParserKind::NginxCombined, "not an access log \u{fffd}");
        assert!(g.access.is_none() && g.attributes.is_empty());
        let weird = parse(
            ParserKind::NginxCombined,
            r#"1 - - [x] "\x16\x03" 400 0 "-" "-""#,
        );
        assert_eq!(weird.access.unwrap().method, "_OTHER");
    }

    #[test]
    fn nginx_json_format() {
        let line = r#"{"time_iso8601":"2026-11-23T18:55:10+00:00","remote_addr":"127.0.0.1","request_method":"GET","request_uri":"/a?b=1","status":"404","body_bytes_sent":"10","request_time":"0.003","upstream_response_time":"","http_user_agent":"ua","request_id":"abc"}"#;
        let p = parse(ParserKind::NginxJson, line);
        assert_eq!(s(attr(&p, "url.path")), "/a");
        assert_eq!(s(attr(&p, "nginx.request_id")), "abc");
        let a = p.access.unwrap();
        assert_eq!(
            (a.method, a.status, a.duration, a.upstream),
            ("GET", 404, Some(0.003), None)
        );
        assert_eq!(p.time_unix_nano, 1_795_460_110 * 1_000_000_000);
    }

    #[test]
    fn error_and_php_levels() {
        let e = parse(
            ParserKind::NginxError,
            r#"2026/11/23 18:55:10 [crit] 12#13: *5 open() "/x" failed, client: 10.0.0.9, server: web, request: "GET /x HTTP/1.1""#,
        );
        assert_eq!(e.severity, severity::CRIT);
        assert_eq!(s(attr(&e, "client.address")), "10.0.0.9");
        let f = parse(
            ParserKind::PhpFpm,
            "[23-Nov-2026 18:55:10] WARNING: [pool www] server reached pm.max_children",
        );
        assert_eq!(f.severity, severity::WARN);
        assert_eq!(s(attr(&f, "php_fpm.pool")), "www");
        let fatal = parse(
            ParserKind::PhpFpm,
            "[23-Nov-2026 18:55:10 UTC] PHP Fatal error:  Uncaught Exception: boom in /app/x.php:3\nStack trace:\n#0 {main}",
        );
        assert_eq!(fatal.severity, severity::FATAL);
        assert_eq!(fatal.time_unix_nano, 1_795_460_110 * 1_000_000_000);
    }

    #[test]
    fn monolog_json() {
        let line = r#"{"message":"User logged in","context":{"user_id":42,"ip":"1.2.3.4"},"level":200,"level_name":"INFO","channel":"production","datetime":"2026-11-23T18:55:10.123456+00:00","extra":{}}"#;
        let p = parse(ParserKind::Json, line);
        assert_eq!(p.severity, severity::INFO);
        assert!(matches!(
            p.body.as_ref().and_then(|b| b.value.as_ref()),
            Some(any_value::Value::StringValue(m)) if m == "User logged in"
        ));
        assert!(matches!(
            attr(&p, "context.user_id"),
            Some(any_value::Value::IntValue(42))
        ));
        assert_eq!(s(attr(&p, "channel")), "production");
        assert_eq!(p.time_unix_nano, 1_795_460_110_123_456_000);
        let bad = parse(ParserKind::Json, "{not json");
        assert!(bad.body.is_none());
    }

    #[test]
    fn far_out_years_give_no_timestamp_instead_of_overflowing() {
        // Past mid-2554 the nanoseconds no longer fit a u64; larger years
        // overflow the seconds and the day count, the smallest the era.
        for year in [
            "3000",
            "600000000000",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            let stamp = format!("23/Nov/{year}:18:55:10 +0000");
            assert_eq!(parse_time_local(&stamp), None, "{stamp}");
            let php = format!("23-Nov-{year} 18:55:10");
            assert_eq!(parse_php_stamp(&php), None, "{php}");
        }
        // Through a parser: the record is kept, without a timestamp.
        let line =
            r#"1.2.3.4 - - [23/Nov/9223372036854775807:18:55:10 +0000] "GET / HTTP/1.1" 200 5"#;
        let p = parse(ParserKind::NginxCombined, line);
        assert_eq!(p.time_unix_nano, 0);
        assert_eq!(p.access.map(|a| a.status), Some(200));
        // The range that fits still parses.
        assert_eq!(parse_time_local("01/Jan/1970:00:00:00 +0000"), Some(0));
        assert!(parse_time_local("01/Jan/2554:00:00:00 +0000").is_some());
    }

    #[test]
    fn huge_sizes_are_clamped_and_non_finite_or_negative_times_dropped() {
        let line = r#"1.2.3.4 - - [23/Nov/2026:18:55:10 +0000] "GET / HTTP/1.1" 200 18446744073709551615 "-" "-" NaN inf"#;
        let p = parse(ParserKind::NginxCombined, line);
        assert!(matches!(
            attr(&p, "http.response.body.size"),
            Some(any_value::Value::IntValue(i64::MAX))
        ));
        assert!(attr(&p, "nginx.request_time").is_none());
        let a = p.access.unwrap();
        assert_eq!(a.bytes, u64::MAX);
        assert_eq!((a.duration, a.upstream), (None, None));
        let line = r#"1.2.3.4 - - [23/Nov/2026:18:55:10 +0000] "GET / HTTP/1.1" 200 5 "-" "-" -1 -0.5, 0.2"#;
        let a = parse(ParserKind::NginxCombined, line).access.unwrap();
        assert_eq!(a.duration, None);
        assert_eq!(a.upstream, Some(0.2));
        let json = r#"{"status":200,"body_bytes_sent":1e30,"request_time":"NaN","upstream_response_time":"inf"}"#;
        let p = parse(ParserKind::NginxJson, json);
        assert!(matches!(
            attr(&p, "http.response.body.size"),
            Some(any_value::Value::IntValue(i64::MAX))
        ));
        let a = p.access.unwrap();
        assert_eq!((a.duration, a.upstream), (None, None));
    }
}
