//! File tailing: reads the files of every source as they grow and turns
//! their lines into OTLP log records in the durable queue. Three parts:
//! `files` finds the files and follows them through rotation, `record`
//! turns bytes into records (lines, multiline, size cap), and `batch`
//! parses, encodes and queues them with the file positions they cover.

mod batch;
mod files;
pub(crate) mod record;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use regex::Regex;

use crate::checkpoint::Checkpoints;
use crate::config::SourceConfig;
use crate::queue::Queue;
use crate::stats::{AccessMetrics, Stats};

use batch::{Batcher, Limits};
use files::FileSet;
use record::Rules;

/// A multiline record with no new line for this long is complete.
const MULTILINE_FLUSH: Duration = Duration::from_millis(1000);
/// A rotated or deleted file is closed after this long without growth.
const ROTATED_GRACE: Duration = Duration::from_secs(3);
/// Read at most this much of one file before looking at the others.
const READ_BUDGET: usize = 8 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// Everything the tailer needs from the pipeline.
pub struct TailContext {
    pub queue: Arc<Queue>,
    pub checkpoints: Arc<Checkpoints>,
    pub stats: Arc<Stats>,
    pub access: Arc<AccessMetrics>,
    /// Resource attributes common to all sources.
    pub resource: Vec<KeyValue>,
    /// Service name when a source does not set its own.
    pub service_name: String,
    /// Per file id: the furthest offset held in the queue (not acknowledged).
    pub queued: HashMap<u64, u64>,
    /// True when no checkpoint file existed (Steward's first start).
    pub first_start: bool,
    pub poll_interval: Duration,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub batch_timeout: Duration,
}

/// How one source's bytes become records.
struct SourceRules {
    name: String,
    max_record_bytes: usize,
    multiline: Option<Regex>,
}

/// The tailer of all sources; runs on its own thread.
pub struct Tailer {
    rules: Vec<SourceRules>,
    files: FileSet,
    batcher: Batcher,
    checkpoints: Arc<Checkpoints>,
    stats: Arc<Stats>,
    poll_interval: Duration,
    /// Read buffer, reused.
    buf: Vec<u8>,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Tailer {
    pub fn new(ctx: TailContext, sources: &[SourceConfig]) -> Tailer {
        let rules = sources
            .iter()
            .map(|config| SourceRules {
                name: config.name.clone(),
                max_record_bytes: config.max_record_bytes,
                multiline: config
                    .multiline_start
                    .as_deref()
                    .or_else(|| crate::parse::default_multiline_start(config.parser))
                    .and_then(|re| Regex::new(re).ok()),
            })
            .collect();
        let batcher = Batcher::new(
            sources,
            &ctx.resource,
            &ctx.service_name,
            ctx.queue,
            Arc::clone(&ctx.stats),
            ctx.access,
            Limits {
                max_records: ctx.max_batch_records,
                max_bytes: ctx.max_batch_bytes,
                timeout: ctx.batch_timeout,
            },
        );
        Tailer {
            rules,
            files: FileSet::new(
                sources,
                Arc::clone(&ctx.checkpoints),
                ctx.queued,
                ctx.first_start,
                Arc::clone(&ctx.stats),
            ),
            batcher,
            checkpoints: ctx.checkpoints,
            stats: ctx.stats,
            poll_interval: ctx.poll_interval,
            buf: Vec::new(),
        }
    }

    /// Runs until `stop` is set; flushes batches and saves checkpoints.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        self.batcher.set_stop(Arc::clone(&stop));
        let mut last_save = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.files.discover();
            self.update_tracked_gauge();
            let busy = self.read_all();
            self.batcher.flush_due(false);
            if last_save.elapsed() >= Duration::from_secs(1) {
                self.save();
                last_save = Instant::now();
            }
            if !busy {
                let mut slept = Duration::ZERO;
                while slept < self.poll_interval && !stop.load(Ordering::Relaxed) {
                    let step = Duration::from_millis(20).min(self.poll_interval - slept);
                    std::thread::sleep(step);
                    slept += step;
                }
            }
        }
        // Complete records go to the queue; partial lines and unfinished
        // multiline records are re-read next time (their offsets are not
        // covered by any queued record).
        self.batcher.flush_due(true);
        self.save();
    }

    fn save(&self) {
        if let Err(e) = self.checkpoints.save() {
            tracing::error!("{e}");
        }
    }

    fn update_tracked_gauge(&self) {
        if let Ok(mut m) = self.stats.files_tracked.lock() {
            m.clear();
            for (rules, n) in self.rules.iter().zip(self.files.tracked_per_source()) {
                *m.entry(rules.name.clone()).or_insert(0) += n;
            }
        }
    }

    /// Reads what is new in every file; true if any read hit its budget
    /// (more data waiting: don't sleep).
    fn read_all(&mut self) -> bool {
        let mut busy = false;
        let mut close = Vec::new();
        let now_ns = now_nanos();
        for idx in 0..self.files.files.len() {
            let len = match self.files.files[idx].file.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            };
            self.files.restart_if_truncated(idx, len);
            let mut budget = READ_BUDGET;
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(CHUNK, 0);
            loop {
                let f = &mut self.files.files[idx];
                if f.read_off >= len || budget == 0 {
                    break;
                }
                let want = ((len - f.read_off) as usize).min(CHUNK);
                let n = match f.file.read_at(&mut buf[..want], f.read_off) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(path = %f.path.display(), "read failed: {e}");
                        break;
                    }
                };
                budget = budget.saturating_sub(n);
                let now = Instant::now();
                f.last_growth = now;
                let s = &self.rules[f.source];
                let rules = Rules {
                    max_record_bytes: s.max_record_bytes,
                    multiline_start: s.multiline.as_ref(),
                };
                let (source, id, label) = (f.source, f.id, Arc::clone(&f.label));
                let batcher = &mut self.batcher;
                let lines = f
                    .assembler
                    .push(&buf[..n], f.read_off, &rules, now, &mut |r| {
                        batcher.push(source, id, &label, r, now_ns)
                    });
                f.read_off += n as u64;
                self.batcher.count_lines(source, lines);
            }
            self.buf = buf;
            if budget == 0 {
                busy = true;
            }
            self.files.refresh_fingerprint(idx, len);
            let f = &mut self.files.files[idx];
            let (source, id, label) = (f.source, f.id, Arc::clone(&f.label));
            let batcher = &mut self.batcher;
            f.assembler
                .flush_quiet(Instant::now(), MULTILINE_FLUSH, |r| {
                    batcher.push(source, id, &label, r, now_ns)
                });
            if f.rotated && f.read_off >= len && f.last_growth.elapsed() >= ROTATED_GRACE {
                close.push(idx);
            }
        }
        for idx in close.into_iter().rev() {
            let mut f = self.files.release(idx);
            let batcher = &mut self.batcher;
            f.assembler.finish(f.read_off, &mut |r| {
                batcher.push(f.source, f.id, &f.label, r, now_ns)
            });
            tracing::debug!(path = %f.path.display(), "finished a rotated file");
        }
        busy
    }
}
