//! Harnesses over what the telemetry crate reads from outside: log records
//! (every parser, then the tailer's hand-written protobuf encoding), OTLP
//! request bodies as the receiver takes them, and the durable queue's
//! files as a restart finds them. One per fuzz target in `fuzz/`; here so
//! the fuzz targets and the seed regression test below run the same code.
//! Built for tests and with the `fuzzing` feature only.

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::config::ParserKind;
use crate::parse;
use crate::queue::{Queue, QueueOptions};
use crate::stats::AccessMetrics;
use crate::tail::record::{Assembler, Record, Rules};
use crate::wire::{self, Body, EncodedAttributes, RecordParts, ScopePart};

/// A harness's name (its fuzz target and seed folder) and the harness,
/// which takes any bytes and says whether they made sense; only a panic is
/// a finding (the same shape as `steward_exporters::fuzzing::Harness`).
pub type Harness = (&'static str, fn(&[u8]) -> bool);

pub const HARNESSES: [Harness; 8] = [
    ("log_line", log_line),
    ("otlp_request", otlp_request),
    ("queue_segment", queue_segment),
    ("log_monolog", log_monolog),
    ("log_mysql", log_mysql),
    ("log_postgresql", log_postgresql),
    ("log_redis", log_redis),
    ("log_syslog", log_syslog),
];

/// One log record: the first line names the parser as the configuration
/// does (`nginx_combined`, `nginx_json`, `nginx_error`, `php_fpm`, `json`),
/// the rest is the record. Both parser paths run; the tailer's encoding of
/// the result must decode as protobuf and agree with the message path.
/// Made sense when the parser found a time, attributes or a body.
pub fn log_line(data: &[u8]) -> bool {
    let text = wire::text_of(data);
    let (name, record) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(kind) = serde_json::from_value::<ParserKind>(name.into()) else {
        return false;
    };
    // The tailer hands over a record without its final newline.
    let record = record.strip_suffix('\n').unwrap_or(record);
    check_record(kind, record)
}

/// Both parser paths over one record: the tailer's encoding must decode
/// as protobuf and agree with the message path. Made sense when the
/// parser found a time, attributes or a body.
fn check_record(kind: ParserKind, record: &str) -> bool {
    let parsed = parse::parse(kind, record);
    let mut attributes = EncodedAttributes::default();
    let meta = parse::parse_encoded(kind, &parse::Options::default(), record, &mut attributes);
    let mut records = Vec::new();
    wire::put_log_record(
        &mut records,
        &RecordParts {
            time_unix_nano: meta.time_unix_nano,
            observed_time_unix_nano: 1,
            severity_number: meta.severity,
            severity_text: meta.severity_text,
            body: match &meta.body {
                Some(parse::BodyPart::Any(a)) => Body::Any(a),
                Some(parse::BodyPart::Slice(r)) => Body::Str(&record[r.clone()]),
                None => Body::Str(record),
            },
            attributes: &attributes.0,
            trace_id: meta.trace_id.as_ref().map_or(&[], |t| &t[..]),
            span_id: meta.span_id.as_ref().map_or(&[], |t| &t[..]),
        },
    );
    let mut request = Vec::new();
    let scopes = [ScopePart {
        scope: &[],
        records: &records,
    }];
    wire::put_logs_request(&mut request, &[], &scopes);
    let decoded = ExportLogsServiceRequest::decode(request.as_slice())
        .expect("the tailer's encoding is protobuf");
    let sent = &decoded.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(
        sent.attributes, parsed.attributes,
        "both parser paths agree"
    );
    assert_eq!(sent.time_unix_nano, parsed.time_unix_nano);
    assert_eq!(sent.severity_number, parsed.severity);
    let body_text = |b: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| {
        b.clone().unwrap_or_else(|| parse::string_value(record))
    };
    assert_eq!(
        sent.body.clone().map(Some).unwrap_or_default(),
        Some(body_text(&parsed.body)),
        "both parser paths give the same body"
    );
    assert_eq!(
        sent.trace_id,
        parsed.trace_id.map(|t| t.to_vec()).unwrap_or_default()
    );
    assert_eq!(
        sent.span_id,
        parsed.span_id.map(|t| t.to_vec()).unwrap_or_default()
    );
    if let Some(access) = meta.access {
        // Twice: the per-status sums add up within a batch.
        AccessMetrics::default().record("fuzz", &[access.clone(), access]);
    }
    assert_eq!(meta.slow_query, parsed.slow_query);
    if let Some(q) = meta.slow_query {
        AccessMetrics::default().record_slow_queries("fuzz", &[q, q]);
    }
    parsed.time_unix_nano != 0 || !parsed.attributes.is_empty() || parsed.body.is_some()
}

/// The default record start of each parser, compiled once (a fuzzer
/// calls a harness millions of times).
fn record_start(kind: ParserKind) -> Option<&'static regex::Regex> {
    static STARTS: OnceLock<Vec<(ParserKind, regex::Regex)>> = OnceLock::new();
    let all = STARTS.get_or_init(|| {
        [
            ParserKind::Monolog,
            ParserKind::MysqlError,
            ParserKind::MysqlSlow,
            ParserKind::Postgresql,
            ParserKind::Redis,
        ]
        .into_iter()
        .filter_map(|k| {
            let re = parse::default_multiline_start(k)?;
            Some((
                k,
                regex::Regex::new(re).expect("a parser's record start compiles"),
            ))
        })
        .collect()
    });
    all.iter().find(|(k, _)| *k == kind).map(|(_, re)| re)
}

/// A log file's bytes as the tailer reads them: the first byte sets
/// `max_record_bytes` (256 + 64 per unit, so records get cut), the rest
/// is split in two reads at the second byte, assembled into records with
/// the parser's default multiline start and each record checked as
/// [`log_line`] does. Made sense when some record did.
fn file_records(kind: ParserKind, data: &[u8]) -> bool {
    let Some((&[size, split], bytes)) = data.split_first_chunk::<2>() else {
        return false;
    };
    let rules = Rules {
        max_record_bytes: 256 + 64 * usize::from(size),
        multiline_start: record_start(kind),
    };
    let cut = usize::from(split).min(bytes.len());
    let mut assembler = Assembler::default();
    let mut records: Vec<Vec<u8>> = Vec::new();
    let now = std::time::Instant::now();
    let mut keep = |r: Record<'_>| {
        assert!(
            r.text.len() <= rules.max_record_bytes,
            "a record is capped at max_record_bytes"
        );
        records.push(r.text.to_vec());
    };
    assembler.push(&bytes[..cut], 0, &rules, now, &mut keep);
    assembler.push(&bytes[cut..], cut as u64, &rules, now, &mut keep);
    assembler.finish(bytes.len() as u64, &mut keep);
    let mut any = false;
    for r in records {
        any |= check_record(kind, &wire::text_of(&r));
    }
    any
}

/// Laravel's `laravel.log` (Monolog LineFormatter, stack traces).
pub fn log_monolog(data: &[u8]) -> bool {
    file_records(ParserKind::Monolog, data)
}

/// A MySQL/MariaDB log: the first byte's low bit picks the slow query
/// log over the error log; then as [`file_records`].
pub fn log_mysql(data: &[u8]) -> bool {
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    let kind = if flags & 1 == 1 {
        ParserKind::MysqlSlow
    } else {
        ParserKind::MysqlError
    };
    file_records(kind, rest)
}

/// A PostgreSQL log, stderr with any prefix or jsonlog.
pub fn log_postgresql(data: &[u8]) -> bool {
    file_records(ParserKind::Postgresql, data)
}

/// redis-server's log.
pub fn log_redis(data: &[u8]) -> bool {
    file_records(ParserKind::Redis, data)
}

/// A syslog file, or with the first byte's low bit a supervisor log (the
/// file names it derives tags from are checked too).
pub fn log_syslog(data: &[u8]) -> bool {
    let Some((&flags, rest)) = data.split_first() else {
        return false;
    };
    if flags & 1 == 1 {
        let name = wire::text_of(rest);
        let _ = parse::supervisor_file_tags(name.lines().next().unwrap_or(""));
        file_records(ParserKind::Supervisor, rest)
    } else {
        file_records(ParserKind::Syslog, rest)
    }
}

/// An OTLP/HTTP body as the receiver takes it: the first byte's low bit
/// picks logs or traces, the next bit gzip; the rest is the body. Decoded,
/// given its `host.name`, re-encoded and decoded again as the queue's
/// reader does. Made sense when the body decoded.
pub fn otlp_request(data: &[u8]) -> bool {
    let Some((&flags, body)) = data.split_first() else {
        return false;
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    if flags & 2 != 0 {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let Ok(raw) = crate::receiver::body_bytes(&headers, &body.to_vec().into(), 1 << 20) else {
        return false;
    };
    if flags & 1 == 0 {
        let Ok(mut request) = ExportLogsServiceRequest::decode(raw.as_slice()) else {
            return false;
        };
        for r in &mut request.resource_logs {
            crate::receiver::fill_resource(&mut r.resource, "fuzz-host");
        }
        let queued = request.encode_to_vec();
        let read_back = ExportLogsServiceRequest::decode(queued.as_slice());
        assert_eq!(
            read_back.as_ref(),
            Ok(&request),
            "a queued request reads back"
        );
    } else {
        let Ok(mut request) = ExportTraceServiceRequest::decode(raw.as_slice()) else {
            return false;
        };
        for r in &mut request.resource_spans {
            crate::receiver::fill_resource(&mut r.resource, "fuzz-host");
        }
        let queued = request.encode_to_vec();
        let read_back = ExportTraceServiceRequest::decode(queued.as_slice());
        assert_eq!(
            read_back.as_ref(),
            Ok(&request),
            "a queued request reads back"
        );
    }
    true
}

/// A folder of its own per process, emptied for every input (set TMPDIR
/// to a tmpfs for speed).
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("steward-fuzz-queue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Frames `chunks` as queue records with good checksums, so the fuzzer
/// reaches what lies behind the CRC: each chunk is `[u16 len][body]`.
fn framed_records(mut chunks: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = chunks {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (body, next) = rest.split_at(len);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        chunks = next;
    }
    out
}

/// The queue's files after a restart: the first byte's low bit says the
/// rest is one raw segment file (torn and corrupt records) or records the
/// harness frames with good checksums (see [`framed_records`]); the next
/// bit puts a ledger (three little-endian u64 after the flags byte) in
/// front. The queue opens, hands out every record and takes their
/// acknowledgements. Made sense when some record came back.
pub fn queue_segment(data: &[u8]) -> bool {
    let Some((&flags, mut rest)) = data.split_first() else {
        return false;
    };
    let dir = scratch_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    if flags & 2 != 0 {
        let word = |rest: &mut &[u8]| {
            let (n, tail) = rest.split_at(rest.len().min(8));
            *rest = tail;
            let mut bytes = [0u8; 8];
            bytes[..n.len()].copy_from_slice(n);
            u64::from_le_bytes(bytes)
        };
        let ledger = serde_json::json!({
            "acked_id": word(&mut rest),
            "acked_segment": word(&mut rest),
            "acked_offset": word(&mut rest),
        });
        let _ = std::fs::write(dir.join("ledger"), ledger.to_string());
    }
    let segment = if flags & 1 != 0 {
        framed_records(rest)
    } else {
        rest.to_vec()
    };
    let _ = std::fs::write(dir.join(format!("{:016x}.seg", 1)), segment);
    let opened = Queue::open(QueueOptions {
        dir: dir.clone(),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        fsync_interval: Duration::from_secs(3600),
    });
    let mut delivered = 0;
    if let Ok((queue, _recovered)) = opened {
        // `next` waits for new records once the old ones are out: poll
        // it once per record, never wait.
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(d)) = std::pin::pin!(queue.next()).poll(&mut cx) {
            queue.ack(d.id, d.entry.items);
            delivered += 1;
        }
        let _ = queue.depth();
        queue.close();
    }
    let _ = std::fs::remove_dir_all(&dir);
    delivered > 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_fuzz_seeds_parse() {
        steward_exporters::fuzzing::check_seeds(&super::HARNESSES);
    }
}
