//! Parsers: one text record in, body + severity + timestamp + attributes
//! out, named after the OpenTelemetry semantic conventions
//! (`http.request.method`, `url.path`, ...). A parser never fails: what it
//! cannot understand is kept as the body, unparsed.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use crate::config::ParserKind;
use crate::wire::{AttributeSink, EncodedAttributes, Value};

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
}

/// Parses `text` (one record, without its trailing newline).
pub fn parse(kind: ParserKind, text: &str) -> Parsed {
    let parsed = match kind {
        ParserKind::Plain => None,
        ParserKind::NginxCombined => {
            let mut attributes = Vec::with_capacity(14);
            nginx_combined(text, &mut attributes).map(|m| Parsed {
                time_unix_nano: m.time_unix_nano,
                severity: m.severity,
                severity_text: m.severity_text,
                body: None,
                attributes,
                access: m.access,
            })
        }
        ParserKind::NginxJson => nginx_json(text),
        ParserKind::NginxError => nginx_error(text),
        ParserKind::PhpFpm => php(text),
        ParserKind::Json => json_app(text),
    };
    parsed.unwrap_or(Parsed {
        severity: 0,
        ..Default::default()
    })
}

pub fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn kv_f64(key: &str, value: f64) -> KeyValue {
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

fn status_severity(status: u16) -> (i32, &'static str) {
    match status {
        500..=599 => (severity::ERROR, "ERROR"),
        400..=499 => (severity::WARN, "WARN"),
        _ => (severity::INFO, "INFO"),
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian); `None`
/// for a year so far out (the line's text decides) that it overflows.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = if y >= 0 { y } else { y.checked_sub(399)? } / 400;
    // 0..=399, and the terms below stay small: only `era` can be huge.
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146097)?.checked_add(doe - 719468)
}

fn month_number(name: &str) -> Option<u32> {
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

fn unix_nanos(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, offset_secs: i64) -> Option<u64> {
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
fn parse_time_local(t: &str) -> Option<u64> {
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
fn parse_zone(z: &str) -> Option<i64> {
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
fn parse_rfc3339(t: &str) -> Option<u64> {
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(dt.unix_timestamp_nanos()).ok()
}

/// Splits `"GET /a?b HTTP/1.1"` and adds method, path, query, protocol.
fn request_line<S: AttributeSink>(request: &str, attrs: &mut S) -> &'static str {
    let mut parts = request.splitn(3, ' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next();
    let protocol = parts.next();
    let normalized = normalize_method(method);
    attrs.attribute("http.request.method", Value::Str(normalized));
    if normalized == "_OTHER" && !method.is_empty() {
        attrs.attribute("http.request.method_original", Value::Str(method));
    }
    if let Some(target) = target {
        match target.split_once('?') {
            Some((path, query)) => {
                attrs.attribute("url.path", Value::Str(path));
                attrs.attribute("url.query", Value::Str(query));
            }
            None => attrs.attribute("url.path", Value::Str(target)),
        }
    }
    if let Some(version) = protocol.and_then(|p| p.strip_prefix("HTTP/")) {
        attrs.attribute("network.protocol.name", Value::Str("http"));
        attrs.attribute("network.protocol.version", Value::Str(version));
    }
    normalized
}

/// A time in seconds. `NaN`, infinities and negative values (a forged or
/// broken line) are no time: one would poison a histogram's sum for good.
fn seconds(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A size for an `Int` attribute: past `i64::MAX` it is clamped, not
/// wrapped to a negative number.
fn size_attribute(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// `$upstream_response_time`: `-`, `0.012`, or several (`0.010, 0.002 : 0.004`).
fn parse_upstream_times(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for part in s.split([',', ':', ' ']).filter(|p| !p.is_empty()) {
        if let Some(v) = part.parse::<f64>().ok().and_then(seconds) {
            total += v;
            any = true;
        }
    }
    any.then_some(total)
}

/// Takes a `"quoted"` field from the start of `s`; nginx escapes `"` as
/// `\x22`, so the field ends at the next quote.
fn take_quoted(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix('"')?;
    let end = memchr::memchr(b'"', s.as_bytes())?;
    Some((&s[..end], s[end + 1..].trim_start()))
}

fn take_token(s: &str) -> (&str, &str) {
    // memchr: an ASCII byte's index is a char boundary; faster than
    // `str::find` on these short fields (this runs per field per line).
    match memchr::memchr(b' ', s.as_bytes()) {
        Some(i) => (&s[..i], s[i + 1..].trim_start()),
        None => (s, ""),
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
}

/// `combined` plus optional `$request_time $upstream_response_time`.
/// Attributes go to `attrs` only once the line is known to parse, so a
/// `None` leaves it untouched.
fn nginx_combined<S: AttributeSink>(line: &str, attrs: &mut S) -> Option<Meta> {
    let (remote_addr, rest) = take_token(line);
    let rest = rest.strip_prefix("- ")?;
    let (remote_user, rest) = take_token(rest);
    let rest = rest.strip_prefix('[')?;
    let close = memchr::memchr(b']', rest.as_bytes())?;
    let time_local = &rest[..close];
    let rest = rest[close + 1..].trim_start();
    let (request, rest) = take_quoted(rest)?;
    let (status, rest) = take_token(rest);
    let status: u16 = status.parse().ok()?;
    let (bytes, rest) = take_token(rest);
    let bytes: u64 = bytes.parse().unwrap_or(0);
    attrs.attribute("client.address", Value::Str(remote_addr));
    if remote_user != "-" {
        attrs.attribute("enduser.id", Value::Str(remote_user));
    }
    let method = request_line(request, attrs);
    attrs.attribute("http.response.status_code", Value::Int(status as i64));
    attrs.attribute("http.response.body.size", Value::Int(size_attribute(bytes)));
    let mut duration = None;
    let mut upstream = None;
    if let Some((referer, rest)) = take_quoted(rest) {
        if referer != "-" {
            attrs.attribute("http.request.header.referer", Value::Str(referer));
        }
        if let Some((agent, rest)) = take_quoted(rest) {
            if agent != "-" {
                attrs.attribute("user_agent.original", Value::Str(agent));
            }
            let (request_time, rest) = take_token(rest);
            duration = request_time.parse::<f64>().ok().and_then(seconds);
            if let Some(d) = duration {
                attrs.attribute("nginx.request_time", Value::F64(d));
            }
            upstream = parse_upstream_times(rest);
            if let Some(u) = upstream {
                attrs.attribute("nginx.upstream_response_time", Value::F64(u));
            }
        }
    }
    let (severity, severity_text) = status_severity(status);
    Some(Meta {
        time_unix_nano: parse_time_local(time_local).unwrap_or(0),
        severity,
        severity_text,
        access: Some(AccessInfo {
            method,
            status,
            bytes,
            duration,
            upstream,
        }),
    })
}

/// Parses `text` like [`parse`], writing the attributes encoded into
/// `attrs` (cleared first) instead of building messages: the tailer's
/// path. The returned body is `None` when the text is the body.
pub fn parse_encoded(
    kind: ParserKind,
    text: &str,
    attrs: &mut EncodedAttributes,
) -> (Meta, Option<AnyValue>) {
    attrs.clear();
    match kind {
        ParserKind::Plain => (Meta::default(), None),
        ParserKind::NginxCombined => (nginx_combined(text, attrs).unwrap_or_default(), None),
        _ => {
            let p = parse(kind, text);
            for kv in &p.attributes {
                attrs.push_message(kv);
            }
            (
                Meta {
                    time_unix_nano: p.time_unix_nano,
                    severity: p.severity,
                    severity_text: p.severity_text,
                    access: p.access,
                },
                p.body,
            )
        }
    }
}

fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn json_to_any(v: &serde_json::Value) -> Option<any_value::Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => any_value::Value::BoolValue(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => any_value::Value::StringValue(s.clone()),
        other => any_value::Value::StringValue(other.to_string()),
    })
}

/// Adds `prefix.key` attributes for an object, one level of nesting
/// flattened with dots, deeper values as JSON text.
fn flatten(prefix: &str, v: &serde_json::Value, attrs: &mut Vec<KeyValue>, depth: usize) {
    match v {
        serde_json::Value::Object(map) if depth < 3 => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, attrs, depth + 1);
            }
        }
        other => {
            if let Some(value) = json_to_any(other) {
                attrs.push(kv(prefix, value));
            }
        }
    }
}

/// nginx `log_format ... escape=json '{...}'` with nginx variable names as keys.
fn nginx_json(line: &str) -> Option<Parsed> {
    let serde_json::Value::Object(map) = serde_json::from_str(line.trim()).ok()? else {
        return None;
    };
    let mut attrs = Vec::with_capacity(map.len() + 2);
    let mut status = 0u16;
    let mut bytes = 0u64;
    let mut method = "_OTHER";
    let mut duration = None;
    let mut upstream = None;
    let mut time_unix_nano = 0;
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    for (key, value) in &map {
        match key.as_str() {
            "remote_addr" => attrs.push(kv_str("client.address", &text(value))),
            "request" => method = request_line(&text(value), &mut attrs),
            "request_method" => {
                method = normalize_method(&text(value));
                attrs.push(kv_str("http.request.method", method));
            }
            "uri" | "request_uri" if !map.contains_key("request") => {
                let t = text(value);
                match t.split_once('?') {
                    Some((p, q)) => {
                        attrs.push(kv_str("url.path", p));
                        attrs.push(kv_str("url.query", q));
                    }
                    None => attrs.push(kv_str("url.path", &t)),
                }
            }
            "args" | "query_string" => {
                let t = text(value);
                if !t.is_empty() && !map.contains_key("request") && !map.contains_key("request_uri")
                {
                    attrs.push(kv_str("url.query", &t));
                }
            }
            "status" => {
                status = json_number(value).unwrap_or(0.0) as u16;
                attrs.push(kv_int("http.response.status_code", status as i64));
            }
            "body_bytes_sent" => {
                bytes = json_number(value).unwrap_or(0.0) as u64;
                attrs.push(kv_int("http.response.body.size", size_attribute(bytes)));
            }
            "http_user_agent" => attrs.push(kv_str("user_agent.original", &text(value))),
            "http_referer" => attrs.push(kv_str("http.request.header.referer", &text(value))),
            "host" | "server_name" => attrs.push(kv_str("server.address", &text(value))),
            "request_time" => {
                duration = json_number(value).and_then(seconds);
                if let Some(d) = duration {
                    attrs.push(kv_f64("nginx.request_time", d));
                }
            }
            "upstream_response_time" => {
                upstream = parse_upstream_times(&text(value));
                if let Some(u) = upstream {
                    attrs.push(kv_f64("nginx.upstream_response_time", u));
                }
            }
            "time_iso8601" => time_unix_nano = parse_rfc3339(&text(value)).unwrap_or(0),
            "time_local" => time_unix_nano = parse_time_local(&text(value)).unwrap_or(0),
            other => flatten(&format!("nginx.{other}"), value, &mut attrs, 1),
        }
    }
    let (severity, severity_text) = status_severity(status);
    Some(Parsed {
        time_unix_nano,
        severity,
        severity_text,
        body: None,
        attributes: attrs,
        access: (status > 0).then_some(AccessInfo {
            method,
            status,
            bytes,
            duration,
            upstream,
        }),
    })
}

fn level_severity(level: &str) -> Option<(i32, &'static str)> {
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

/// `2026/11/23 18:55:10 [error] 123#123: *5 message`. nginx writes local
/// time without a zone, so the timestamp is left to the observed time.
fn nginx_error(line: &str) -> Option<Parsed> {
    let open = line.find(" [")?;
    let rest = &line[open + 2..];
    let close = rest.find(']')?;
    let (severity, severity_text) = level_severity(&rest[..close])?;
    let mut attrs = Vec::new();
    let after = rest[close + 1..].trim_start();
    if let Some((pid_tid, _)) = after.split_once(": ") {
        if let Some((pid, tid)) = pid_tid.split_once('#') {
            if let (Ok(pid), Ok(tid)) = (pid.parse::<i64>(), tid.parse::<i64>()) {
                attrs.push(kv_int("process.pid", pid));
                attrs.push(kv_int("thread.id", tid));
            }
        }
    }
    for (marker, key) in [
        (", client: ", "client.address"),
        (", server: ", "server.address"),
    ] {
        if let Some(i) = line.find(marker) {
            let v = &line[i + marker.len()..];
            let v = v.split(',').next().unwrap_or(v);
            attrs.push(kv_str(key, v));
        }
    }
    Some(Parsed {
        time_unix_nano: 0,
        severity,
        severity_text,
        body: None,
        attributes: attrs,
        access: None,
    })
}

/// PHP-FPM (`[23-Nov-2026 18:55:10] WARNING: [pool www] ...`), PHP's
/// error_log (`[23-Nov-2026 18:55:10 UTC] PHP Fatal error: ...`) and slow
/// log records (multiline).
fn php(text: &str) -> Option<Parsed> {
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
    })
}

/// `23-Nov-2026 18:55:10`.
fn parse_php_stamp(s: &str) -> Option<u64> {
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

/// One JSON object per line: Monolog/Laravel (`message`, `level_name`,
/// `datetime`, `context`, `extra`, `channel`) and common alternatives
/// (`msg`, `level`, `time`, `timestamp`, `@timestamp`).
fn json_app(line: &str) -> Option<Parsed> {
    let serde_json::Value::Object(map) = serde_json::from_str(line.trim()).ok()? else {
        return None;
    };
    let mut parsed = Parsed {
        severity: 0,
        ..Default::default()
    };
    for (key, value) in &map {
        match key.as_str() {
            "message" | "msg" | "@message" if parsed.body.is_none() => {
                parsed.body = json_to_any(value).map(|v| AnyValue { value: Some(v) });
            }
            "level_name" | "level" | "severity" | "log.level" | "levelname" => {
                let found = match value {
                    serde_json::Value::String(s) => level_severity(s),
                    serde_json::Value::Number(n) => monolog_level(n.as_i64().unwrap_or(0)),
                    _ => None,
                };
                if let Some((n, t)) = found {
                    if parsed.severity == 0 || key == "level_name" {
                        parsed.severity = n;
                        parsed.severity_text = t;
                    }
                } else {
                    flatten(key, value, &mut parsed.attributes, 0);
                }
            }
            "datetime" | "time" | "timestamp" | "@timestamp" | "ts" => {
                let t = match value {
                    serde_json::Value::String(s) => parse_rfc3339(s),
                    serde_json::Value::Number(n) => n
                        .as_f64()
                        .filter(|v| *v > 0.0)
                        .map(|v| if v > 1e12 { v * 1e6 } else { v * 1e9 } as u64),
                    _ => None,
                };
                match t {
                    Some(t) => parsed.time_unix_nano = t,
                    None => flatten(key, value, &mut parsed.attributes, 0),
                }
            }
            _ => flatten(key, value, &mut parsed.attributes, 0),
        }
    }
    if parsed.body.is_none() {
        // No message field: the whole object is the body, as text.
        parsed.body = Some(string_value(line.trim()));
    }
    Some(parsed)
}

fn monolog_level(n: i64) -> Option<(i32, &'static str)> {
    Some(match n {
        100 => (severity::DEBUG, "DEBUG"),
        200 => (severity::INFO, "INFO"),
        250 => (severity::NOTICE, "NOTICE"),
        300 => (severity::WARN, "WARNING"),
        400 => (severity::ERROR, "ERROR"),
        500 => (severity::CRIT, "CRITICAL"),
        550 => (severity::ALERT, "ALERT"),
        600 => (severity::FATAL, "EMERGENCY"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
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
