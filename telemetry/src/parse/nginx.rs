//! nginx access logs (`combined` + timings, `escape=json`) into the HTTP
//! semantic conventions, and the error log.

use super::json::{flatten, json_number};
use super::time::{parse_rfc3339, parse_time_local};
use super::{
    kv_f64, kv_int, kv_str, level_severity, normalize_method, status_severity, AccessInfo, Meta,
    Parsed,
};
use crate::wire::{AttributeSink, Value};

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
pub(super) fn seconds(v: f64) -> Option<f64> {
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A size for an `Int` attribute: past `i64::MAX` it is clamped, not
/// wrapped to a negative number.
pub(super) fn size_attribute(bytes: u64) -> i64 {
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

pub(super) fn take_token(s: &str) -> (&str, &str) {
    // memchr: an ASCII byte's index is a char boundary; faster than
    // `str::find` on these short fields (this runs per field per line).
    match memchr::memchr(b' ', s.as_bytes()) {
        Some(i) => (&s[..i], s[i + 1..].trim_start()),
        None => (s, ""),
    }
}

/// `combined` plus optional `$request_time $upstream_response_time`.
/// Attributes go to `attrs` only once the line is known to parse, so a
/// `None` leaves it untouched.
pub(super) fn nginx_combined<S: AttributeSink>(line: &str, attrs: &mut S) -> Option<Meta> {
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
        ..Default::default()
    })
}

/// nginx `log_format ... escape=json '{...}'` with nginx variable names as keys.
pub(super) fn nginx_json(line: &str) -> Option<Parsed> {
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
        ..Default::default()
    })
}

/// `2026/11/23 18:55:10 [error] 123#123: *5 message`. nginx writes local
/// time without a zone, so the timestamp is left to the observed time.
pub(super) fn nginx_error(line: &str) -> Option<Parsed> {
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
        ..Default::default()
    })
}
