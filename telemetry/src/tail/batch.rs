//! The tailer's output: parses each record, encodes it straight into its
//! source's OTLP logs request, and appends full or due batches to the
//! durable queue with the file positions they cover.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::config::{ParserKind, SourceConfig};
use crate::parse::{self, string_value, AccessInfo, BodyPart, Options, SlowQuery};
use crate::queue::{Entry, FilePosition, Queue, Signal};
use crate::stats::{AccessMetrics, Stats};
use crate::wire::{self, AttributeSink, Body, EncodedAttributes, RecordParts, ScopePart};

use super::record::Record;

/// Records of one file in the batch, encoded as they are read.
struct BatchFile {
    id: u64,
    /// The encoded `InstrumentationScope` naming the file.
    scope: Vec<u8>,
    /// `ScopeLogs.log_records` entries (see `wire::put_log_record`).
    records: Vec<u8>,
}

#[derive(Default)]
struct Batch {
    /// Kept (with their buffers) across batches; emptied files are
    /// dropped at the next flush.
    files: Vec<BatchFile>,
    positions: HashMap<u64, u64>,
    records: usize,
    bytes: usize,
    started: Option<Instant>,
}

struct Source {
    config: SourceConfig,
    /// The parser's options (the zone resolved once).
    options: Options,
    /// The encoded `Resource` of every request of this source.
    resource: Vec<u8>,
    batch: Batch,
    access_batch: Vec<AccessInfo>,
    slow_batch: Vec<SlowQuery>,
    /// The encoded request, reused from batch to batch.
    payload: Vec<u8>,
}

/// Where a batch goes and when it is full.
pub(super) struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// The batches of all sources.
pub(super) struct Batcher {
    sources: Vec<Source>,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
    access: Arc<AccessMetrics>,
    limits: Limits,
    /// Set when the tailer stops: a failing queue is no longer retried.
    stop: Arc<AtomicBool>,
    /// Attributes of the record being encoded, reused.
    attributes: EncodedAttributes,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

/// The resource attributes of one source's requests: the common ones,
/// its `service.name`, its own `resource` entries, and `log.source`.
fn source_resource(common: &[KeyValue], service_name: &str, config: &SourceConfig) -> Vec<u8> {
    let mut attributes = common.to_vec();
    let service = config.service_name.as_deref().unwrap_or(service_name);
    attributes.retain(|k| k.key != "service.name");
    attributes.insert(0, kv("service.name", service));
    for (k, v) in &config.resource {
        attributes.retain(|a| &a.key != k);
        attributes.push(kv(k, v));
    }
    attributes.push(kv("log.source", &config.name));
    prost::Message::encode_to_vec(&Resource {
        attributes,
        ..Default::default()
    })
}

impl Batcher {
    pub fn new(
        sources: &[SourceConfig],
        common: &[KeyValue],
        service_name: &str,
        queue: Arc<Queue>,
        stats: Arc<Stats>,
        access: Arc<AccessMetrics>,
        limits: Limits,
    ) -> Batcher {
        let sources = sources
            .iter()
            .map(|config| Source {
                config: config.clone(),
                options: Options {
                    // Validated with the configuration; a name that stopped
                    // resolving since is UTC.
                    zone: crate::zone::Zone::parse(&config.time_zone).unwrap_or_default(),
                },
                resource: source_resource(common, service_name, config),
                batch: Batch::default(),
                access_batch: Vec::new(),
                slow_batch: Vec::new(),
                payload: Vec::new(),
            })
            .collect();
        Batcher {
            sources,
            queue,
            stats,
            access,
            limits,
            stop: Arc::new(AtomicBool::new(false)),
            attributes: EncodedAttributes::default(),
        }
    }

    pub fn set_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop = stop;
    }

    /// Parses one record of file `file_id` (at `path`) and encodes it into
    /// its source's batch.
    pub fn push(
        &mut self,
        source: usize,
        file_id: u64,
        path: &Arc<str>,
        record: Record<'_>,
        now_ns: u64,
    ) {
        let s = &mut self.sources[source];
        if record.truncated {
            self.stats.records_truncated.add(&[&s.config.name], 1);
        }
        // Invalid UTF-8 becomes U+FFFD; the record is kept.
        let text = wire::text_of(record.text);
        let attributes = &mut self.attributes;
        let meta = parse::parse_encoded(s.config.parser, &s.options, &text, attributes);
        if let (Some(a), true) = (meta.access, s.config.access_metrics) {
            s.access_batch.push(a);
        }
        if let Some(q) = meta.slow_query {
            s.slow_batch.push(q);
        }
        if record.truncated {
            attributes.attribute("log.record.truncated", wire::Value::Bool(true));
        }
        let b = &mut s.batch;
        if b.started.is_none() {
            b.started = Some(Instant::now());
        }
        let file = match b.files.iter().position(|f| f.id == file_id) {
            Some(i) => i,
            None => {
                let mut attributes = vec![kv("log.file.path", path)];
                if s.config.parser == ParserKind::Supervisor {
                    // A program's output file: its lines are plain, the
                    // file says whose they are (once per file, not per line).
                    for (key, value) in parse::supervisor_file_tags(path) {
                        attributes.push(kv(key, &value));
                    }
                }
                let scope = InstrumentationScope {
                    name: "steward.filelog".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    attributes,
                    ..Default::default()
                };
                b.files.push(BatchFile {
                    id: file_id,
                    scope: prost::Message::encode_to_vec(&scope),
                    records: Vec::new(),
                });
                b.files.len() - 1
            }
        };
        let records = &mut b.files[file].records;
        let before = records.len();
        wire::put_log_record(
            records,
            &RecordParts {
                time_unix_nano: meta.time_unix_nano,
                observed_time_unix_nano: now_ns,
                severity_number: meta.severity,
                severity_text: meta.severity_text,
                body: match &meta.body {
                    Some(BodyPart::Any(any)) => Body::Any(any),
                    Some(BodyPart::Slice(r)) => Body::Str(text.get(r.clone()).unwrap_or(&text)),
                    None => Body::Str(&text),
                },
                attributes: &attributes.0,
                trace_id: meta.trace_id.as_ref().map_or(&[], |t| &t[..]),
                span_id: meta.span_id.as_ref().map_or(&[], |t| &t[..]),
            },
        );
        let size = records.len() - before;
        let p = b.positions.entry(file_id).or_insert(0);
        *p = (*p).max(record.end);
        b.records += 1;
        b.bytes += size;
        if b.records >= self.limits.max_records || b.bytes >= self.limits.max_bytes {
            self.flush_source(source);
        }
    }

    /// Counts lines read from a file of `source`.
    pub fn count_lines(&self, source: usize, lines: u64) {
        let name = &self.sources[source].config.name;
        self.stats.lines_read.add(&[name], lines);
    }

    /// Flushes the batches older than the batch timeout, or all of them.
    pub fn flush_due(&mut self, all: bool) {
        for i in 0..self.sources.len() {
            let due = self.sources[i]
                .batch
                .started
                .is_some_and(|s| all || s.elapsed() >= self.limits.timeout);
            if due {
                self.flush_source(i);
            }
        }
    }

    /// Encodes the source's batch and appends it to the queue. A queue
    /// error (disk full) blocks the tailer and is retried: nothing read is
    /// checkpointed before it is queued, so at worst it is read again.
    fn flush_source(&mut self, i: usize) {
        let s = &mut self.sources[i];
        if s.batch.records == 0 {
            return;
        }
        let b = &mut s.batch;
        b.files.retain(|f| !f.records.is_empty());
        let scopes: Vec<ScopePart<'_>> = b
            .files
            .iter()
            .map(|f| ScopePart {
                scope: &f.scope,
                records: &f.records,
            })
            .collect();
        let mut payload = std::mem::take(&mut s.payload);
        wire::put_logs_request(&mut payload, &s.resource, &scopes);
        let entry = Entry {
            signal: Signal::Logs,
            items: b.records as u32,
            positions: b
                .positions
                .iter()
                .map(|(&file_id, &offset)| FilePosition { file_id, offset })
                .collect(),
            payload,
        };
        // Buffers stay for the next batch, unless one outsized record
        // (up to max_record_bytes) grew them far past the batch size.
        let keep = 2 * self.limits.max_bytes.max(64 * 1024);
        for f in &mut b.files {
            f.records.clear();
            f.records.shrink_to(keep);
        }
        b.positions.clear();
        b.records = 0;
        b.bytes = 0;
        b.started = None;
        let access = std::mem::take(&mut s.access_batch);
        let slow = std::mem::take(&mut s.slow_batch);
        let name = s.config.name.clone();
        loop {
            match self.queue.append(&entry) {
                Ok(()) => {
                    self.access.record(&name, &access);
                    self.access.record_slow_queries(&name, &slow);
                    break;
                }
                Err(e @ crate::queue::QueueError::TooLarge { .. }) => {
                    // Cannot happen within the configured batch bounds;
                    // retrying would stall the source for good.
                    tracing::error!(source = %name, "{e}; batch dropped");
                    break;
                }
                Err(e) => {
                    tracing::error!(source = %name, "{e}");
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        let s = &mut self.sources[i];
        s.payload = entry.payload;
        s.payload.shrink_to(keep);
        s.access_batch = access;
        s.access_batch.clear();
        s.slow_batch = slow;
        s.slow_batch.clear();
    }
}
