//! One JSON object per line (Monolog's JsonFormatter and alike), and the
//! JSON helpers the other parsers share.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};

use super::time::parse_rfc3339;
use super::{kv, level_severity, severity, string_value, Parsed};
use crate::wire::{AttributeSink, Value};

pub(super) fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn json_to_any(v: &serde_json::Value) -> Option<any_value::Value> {
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
pub(super) fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    attrs: &mut Vec<KeyValue>,
    depth: usize,
) {
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

/// One JSON object per line: Monolog/Laravel (`message`, `level_name`,
/// `datetime`, `context`, `extra`, `channel`) and common alternatives
/// (`msg`, `level`, `time`, `timestamp`, `@timestamp`).
pub(super) fn json_app(line: &str) -> Option<Parsed> {
    let whole: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let serde_json::Value::Object(map) = &whole else {
        return None;
    };
    // Top level (most JSON loggers), then Monolog's context and extra.
    let (trace_id, span_id) = trace_context(&[Some(&whole), map.get("context"), map.get("extra")]);
    let mut parsed = Parsed {
        severity: 0,
        trace_id,
        span_id,
        ..Default::default()
    };
    for (key, value) in map {
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

pub(super) fn monolog_level(n: i64) -> Option<(i32, &'static str)> {
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
/// As [`flatten`], into any [`AttributeSink`]: `prefix.key` attributes,
/// nested objects flattened with dots down to `depth` 3, deeper values
/// and arrays as JSON text, nulls dropped.
pub(super) fn flatten_into<S: AttributeSink>(
    prefix: &str,
    v: &serde_json::Value,
    attrs: &mut S,
    depth: usize,
) {
    match v {
        serde_json::Value::Null => {}
        serde_json::Value::Object(map) if depth < 3 => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_into(&key, v, attrs, depth + 1);
            }
        }
        serde_json::Value::Bool(b) => attrs.attribute(prefix, Value::Bool(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => attrs.attribute(prefix, Value::Int(i)),
            None => attrs.attribute(prefix, Value::F64(n.as_f64().unwrap_or(0.0))),
        },
        serde_json::Value::String(s) => attrs.attribute(prefix, Value::Str(s)),
        other => attrs.attribute(prefix, Value::Str(&other.to_string())),
    }
}

/// A W3C trace or span id in hex (`4bf92f35...`, 2*N digits, not all
/// zero, as the trace context spec requires).
pub(super) fn hex_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    (out != [0u8; N]).then_some(out)
}

/// The trace context a record's JSON carries (`trace_id`/`span_id`, as
/// OpenTelemetry's PHP SDK and Monolog processors put them), looked up in
/// `objects` in order.
pub(super) fn trace_context(
    objects: &[Option<&serde_json::Value>],
) -> (Option<[u8; 16]>, Option<[u8; 8]>) {
    let find = |keys: &[&str]| {
        objects.iter().flatten().find_map(|o| {
            keys.iter()
                .find_map(|k| o.get(*k).and_then(serde_json::Value::as_str))
        })
    };
    (
        find(&["trace_id", "traceId", "otel.trace_id"]).and_then(hex_id::<16>),
        find(&["span_id", "spanId", "otel.span_id"]).and_then(hex_id::<8>),
    )
}
