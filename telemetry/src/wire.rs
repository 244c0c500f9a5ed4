//! Protobuf encoding of OTLP log requests straight from parsed fields.
//!
//! The tailer's hot path: building a prost `LogRecord` per line costs one
//! `String` per attribute key and value plus the body, and encoding walks
//! them again. Here a record is written once, as bytes, from borrowed
//! slices of the line, into buffers reused from batch to batch. The output
//! is the same wire format prost produces (a test decodes it with prost).
//!
//! Field numbers are those of `opentelemetry/proto/logs/v1/logs.proto` and
//! `common/v1/common.proto`.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;

/// An attribute value borrowed from the record being parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    F64(f64),
    Bool(bool),
}

/// Where a parser puts attributes: prost `KeyValue`s (for callers that
/// want messages), or encoded bytes ([`EncodedAttributes`], the tailer).
pub trait AttributeSink {
    fn attribute(&mut self, key: &str, value: Value<'_>);
}

impl AttributeSink for Vec<KeyValue> {
    fn attribute(&mut self, key: &str, value: Value<'_>) {
        let value = match value {
            Value::Str(s) => any_value::Value::StringValue(s.to_string()),
            Value::Int(i) => any_value::Value::IntValue(i),
            Value::F64(f) => any_value::Value::DoubleValue(f),
            Value::Bool(b) => any_value::Value::BoolValue(b),
        };
        self.push(KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
    }
}

/// `LogRecord.attributes` (field 6) entries, already encoded; cleared and
/// reused for every record.
#[derive(Debug, Default)]
pub struct EncodedAttributes(pub Vec<u8>);

impl EncodedAttributes {
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Adds a prost `KeyValue` (parsers that build messages).
    pub fn push_message(&mut self, kv: &KeyValue) {
        put_message(&mut self.0, 6, kv);
    }
}

impl AttributeSink for EncodedAttributes {
    fn attribute(&mut self, key: &str, value: Value<'_>) {
        let out = &mut self.0;
        let any_len = any_value_len(&value);
        // KeyValue { key = 1; value = 2 (AnyValue) }
        let kv_len = field_len_delimited(key.len()) + field_len_delimited(any_len);
        put_tag(out, 6, WIRE_LEN);
        put_varint(out, kv_len as u64);
        put_bytes_field(out, 1, key.as_bytes());
        put_tag(out, 2, WIRE_LEN);
        put_varint(out, any_len as u64);
        put_any_value(out, &value);
    }
}

/// The body of a record.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Str(&'a str),
    Any(&'a AnyValue),
}

/// One log record's parts.
#[derive(Debug, Clone, Copy)]
pub struct RecordParts<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    pub body: Body<'a>,
    /// Encoded field-6 entries (see [`EncodedAttributes`]).
    pub attributes: &'a [u8],
    /// 16 bytes, or empty when the record belongs to no trace.
    pub trace_id: &'a [u8],
    /// 8 bytes, or empty.
    pub span_id: &'a [u8],
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field << 3) | wire as u32) as u64);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-delimited field with a one-byte tag (fields < 16).
fn field_len_delimited(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_message<M: Message>(out: &mut Vec<u8>, field: u32, m: &M) {
    put_tag(out, field, WIRE_LEN);
    put_varint(out, m.encoded_len() as u64);
    // Encoding into a Vec cannot run out of room.
    let _ = m.encode(out);
}

fn any_value_len(v: &Value<'_>) -> usize {
    match v {
        Value::Str(s) => field_len_delimited(s.len()),
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::F64(_) => 1 + 8,
        Value::Bool(_) => 2,
    }
}

/// AnyValue { string_value = 1; bool_value = 2; int_value = 3; double_value = 4 }
fn put_any_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::Str(s) => put_bytes_field(out, 1, s.as_bytes()),
        Value::Bool(b) => {
            put_tag(out, 2, WIRE_VARINT);
            out.push(*b as u8);
        }
        Value::Int(i) => {
            put_tag(out, 3, WIRE_VARINT);
            put_varint(out, *i as u64);
        }
        Value::F64(f) => {
            put_tag(out, 4, WIRE_FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// Appends one record to `out` as a `ScopeLogs.log_records` entry
/// (field 2: tag, length, `LogRecord`).
pub fn put_log_record(out: &mut Vec<u8>, r: &RecordParts<'_>) {
    let body_len = match r.body {
        Body::Str(s) => field_len_delimited(s.len()),
        Body::Any(a) => a.encoded_len(),
    };
    let mut len = 0;
    if r.time_unix_nano != 0 {
        len += 1 + 8;
    }
    if r.severity_number != 0 {
        len += 1 + varint_len(r.severity_number as i64 as u64);
    }
    if !r.severity_text.is_empty() {
        len += field_len_delimited(r.severity_text.len());
    }
    len += 1 + varint_len(body_len as u64) + body_len;
    len += r.attributes.len();
    if !r.trace_id.is_empty() {
        len += field_len_delimited(r.trace_id.len());
    }
    if !r.span_id.is_empty() {
        len += field_len_delimited(r.span_id.len());
    }
    if r.observed_time_unix_nano != 0 {
        len += 1 + 8;
    }
    out.reserve(len + 4);
    put_tag(out, 2, WIRE_LEN);
    put_varint(out, len as u64);
    // LogRecord: time_unix_nano = 1 (fixed64), severity_number = 2,
    // severity_text = 3, body = 5, attributes = 6, trace_id = 9,
    // span_id = 10, observed_time = 11.
    if r.time_unix_nano != 0 {
        put_tag(out, 1, WIRE_FIXED64);
        out.extend_from_slice(&r.time_unix_nano.to_le_bytes());
    }
    if r.severity_number != 0 {
        put_tag(out, 2, WIRE_VARINT);
        put_varint(out, r.severity_number as i64 as u64);
    }
    if !r.severity_text.is_empty() {
        put_bytes_field(out, 3, r.severity_text.as_bytes());
    }
    put_tag(out, 5, WIRE_LEN);
    put_varint(out, body_len as u64);
    match r.body {
        Body::Str(s) => put_bytes_field(out, 1, s.as_bytes()),
        Body::Any(a) => {
            let _ = a.encode(out);
        }
    }
    out.extend_from_slice(r.attributes);
    if !r.trace_id.is_empty() {
        put_bytes_field(out, 9, r.trace_id);
    }
    if !r.span_id.is_empty() {
        put_bytes_field(out, 10, r.span_id);
    }
    if r.observed_time_unix_nano != 0 {
        put_tag(out, 11, WIRE_FIXED64);
        out.extend_from_slice(&r.observed_time_unix_nano.to_le_bytes());
    }
}

/// One `ScopeLogs`: its encoded `InstrumentationScope` and its records as
/// written by [`put_log_record`].
#[derive(Debug, Clone, Copy)]
pub struct ScopePart<'a> {
    pub scope: &'a [u8],
    pub records: &'a [u8],
}

/// The text of a record: in place when it is valid UTF-8 (the check is
/// much faster than `from_utf8_lossy`'s), else with U+FFFD replacements.
pub fn text_of(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Writes an `ExportLogsServiceRequest` with one `ResourceLogs` (encoded
/// `Resource` bytes) into `out` (cleared first).
pub fn put_logs_request(out: &mut Vec<u8>, resource: &[u8], scopes: &[ScopePart<'_>]) {
    // ScopeLogs { scope = 1; log_records = 2 (already tagged) }
    let scope_len = |s: &ScopePart<'_>| field_len_delimited(s.scope.len()) + s.records.len();
    // ResourceLogs { resource = 1; scope_logs = 2 }
    let resource_logs_len = field_len_delimited(resource.len())
        + scopes
            .iter()
            .map(|s| field_len_delimited(scope_len(s)))
            .sum::<usize>();
    out.clear();
    out.reserve(field_len_delimited(resource_logs_len));
    put_tag(out, 1, WIRE_LEN);
    put_varint(out, resource_logs_len as u64);
    put_bytes_field(out, 1, resource);
    for s in scopes {
        put_tag(out, 2, WIRE_LEN);
        put_varint(out, scope_len(s) as u64);
        put_bytes_field(out, 1, s.scope);
        out.extend_from_slice(s.records);
    }
}

/// gzip (level 1: the upstream's CPU is not ours to save, the link
/// usually is not the limit) into `out`, a scratch buffer kept between
/// calls: the compressed bytes are `out[..n]` for the returned `n`. zlib-rs: a faster
/// deflate than the C zlib other crates pull into flate2.
pub fn gzip_fast(input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
    let config = zlib_rs::DeflateConfig {
        // 16 + 15: the gzip wrapper around a 32 KiB window.
        window_bits: 31,
        ..zlib_rs::DeflateConfig::new(1)
    };
    gzip_with(input, out, config)
}

/// [`gzip_fast`] for bodies of tens of KiB (a `/metrics` scrape): an 8 KiB
/// window and 2 Ki symbol buffers. The encoder's state is 174 KiB instead
/// of 368 KiB, all of it touched at every scrape, for a body within 1 % of
/// the size (a 52 KB node scrape: 9.76 KB instead of 9.73 KB with zlib;
/// metric names repeat within a few lines, not 32 KiB apart).
pub fn gzip_compact(input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
    let config = zlib_rs::DeflateConfig {
        // 16 + 13: the gzip wrapper around an 8 KiB window.
        window_bits: 29,
        mem_level: 5,
        ..zlib_rs::DeflateConfig::new(1)
    };
    gzip_with(input, out, config)
}

fn gzip_with(
    input: &[u8],
    out: &mut Vec<u8>,
    config: zlib_rs::DeflateConfig,
) -> Result<usize, String> {
    // The bound is for zlib's wrapper; gzip's header and trailer are 12
    // bytes longer. A buffer reused from the last call is not zeroed again.
    let need = zlib_rs::compress_bound(input.len()) + 32;
    if out.len() < need {
        out.resize(need, 0);
    }
    let (written, code) = zlib_rs::compress_slice(out, input, config);
    let n = written.len();
    if code != zlib_rs::ReturnCode::Ok {
        return Err(format!("gzip failed: {code:?}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use std::io::Read;

    fn sample_attributes<S: AttributeSink>(s: &mut S) {
        s.attribute("client.address", Value::Str("10.0.0.1"));
        s.attribute("http.response.status_code", Value::Int(503));
        s.attribute("negative", Value::Int(-3));
        s.attribute("nginx.request_time", Value::F64(0.25));
        s.attribute("log.record.truncated", Value::Bool(true));
        s.attribute("long", Value::Str(&"x".repeat(300)));
    }

    #[test]
    fn same_bytes_meaning_as_prost() {
        let mut kvs: Vec<KeyValue> = Vec::new();
        sample_attributes(&mut kvs);
        let mut encoded = EncodedAttributes::default();
        sample_attributes(&mut encoded);
        let json_body = AnyValue {
            value: Some(any_value::Value::IntValue(7)),
        };
        let bodies = [Body::Str("a line \u{fffd}"), Body::Any(&json_body)];
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("web".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let scope = InstrumentationScope {
            name: "steward.filelog".into(),
            version: "1".into(),
            ..Default::default()
        };
        let mut records = Vec::new();
        let mut expected = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            let parts = RecordParts {
                time_unix_nano: i as u64 * 1_795_456_510_000_000_000,
                observed_time_unix_nano: 1_795_456_511_000_000_000,
                severity_number: 17,
                severity_text: if i == 0 { "ERROR" } else { "" },
                body: *body,
                attributes: &encoded.0,
                trace_id: if i == 0 { &[7; 16] } else { &[] },
                span_id: if i == 0 { &[9; 8] } else { &[] },
            };
            put_log_record(&mut records, &parts);
            expected.push(LogRecord {
                time_unix_nano: parts.time_unix_nano,
                observed_time_unix_nano: parts.observed_time_unix_nano,
                severity_number: 17,
                severity_text: parts.severity_text.into(),
                body: Some(match body {
                    Body::Str(s) => AnyValue {
                        value: Some(any_value::Value::StringValue(s.to_string())),
                    },
                    Body::Any(a) => (*a).clone(),
                }),
                attributes: kvs.clone(),
                trace_id: parts.trace_id.to_vec(),
                span_id: parts.span_id.to_vec(),
                ..Default::default()
            });
        }
        let mut out = Vec::new();
        put_logs_request(
            &mut out,
            &resource.encode_to_vec(),
            &[ScopePart {
                scope: &scope.encode_to_vec(),
                records: &records,
            }],
        );
        let want = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope),
                    log_records: expected,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            ExportLogsServiceRequest::decode(out.as_slice()).unwrap(),
            want
        );
        assert_eq!(out, want.encode_to_vec());

        let mut gz = Vec::new();
        let n = gzip_fast(&out, &mut gz).unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..n])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, out);
    }

    #[test]
    fn compact_gzip_round_trips_a_scrape_sized_body() {
        let body: String = (0..2000)
            .map(|i| {
                format!(
                    "node_cpu_seconds_total{{cpu=\"{}\",mode=\"idle\"}} {i}.5\n",
                    i % 7
                )
            })
            .collect();
        let mut gz = vec![0xAA; 16];
        let n = gzip_compact(body.as_bytes(), &mut gz).unwrap();
        assert!(n < body.len() / 4, "{n} of {}", body.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..n])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, body.as_bytes());
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
