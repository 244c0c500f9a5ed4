//! Parallel ranged reads of one stored object: byte ranges of `part_size`
//! bytes fetched `concurrency` at a time and handed out strictly in order
//! as one blocking `Read`, so the checked stream (sha256 -> age -> zstd)
//! sees exactly the bytes one GET would give and checks them the same way.
//!
//! Memory: a part buffer is paid for with a permit of a [`Budget`] taken
//! before its request is sent and given back only once the reader has
//! consumed it, so at most `concurrency` buffers exist at once (downloading,
//! waiting for their turn, or being read), whatever the object's size. One
//! budget can be shared by several objects read at the same time
//! (`crate::restore::stream::fetch_objects`): the bound then holds for
//! all of them together. The buffers themselves are kept by the budget and
//! refilled by the next range instead of being freed and allocated again:
//! the allocator never sees part-sized blocks come and go (glibc would keep
//! the freed ones resident in its heap, and raise its mmap threshold so
//! that every later one is served from there), and a recycled buffer is
//! filled straight from the socket, without being zeroed first.
//! A range whose
//! request or body fails is fetched again on its own, up to
//! [`PART_ATTEMPTS`] times, without restarting the object.

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BufMut;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::target::{ByteReader, RangedReads, StorageTarget};

/// Tries per range (the first included).
pub const PART_ATTEMPTS: u32 = 3;
/// Pause before the second try; doubles before each further one.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Part buffers alive now and at most (the memory bound a test checks),
/// ranges fetched and ranges fetched again.
#[derive(Debug, Default)]
pub struct PartGauge {
    held: AtomicUsize,
    peak: AtomicUsize,
    retried: AtomicUsize,
    allocated: AtomicUsize,
}

impl PartGauge {
    /// The most part buffers that existed at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    /// Ranges that needed more than one try.
    pub fn retried(&self) -> usize {
        self.retried.load(Ordering::SeqCst)
    }
    /// Part buffers allocated (the others were recycled): at most the
    /// budget's permits unless a failed range dropped its buffer.
    pub fn allocated(&self) -> usize {
        self.allocated.load(Ordering::SeqCst)
    }
    fn take(&self) {
        let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
}

/// Part buffers given back by readers, for the next ranges to fill.
type Spares = Arc<Mutex<Vec<Vec<u8>>>>;

/// Permits for part buffers, shared by every object read with it.
#[derive(Clone)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    gauge: Arc<PartGauge>,
    permits: usize,
    spares: Spares,
}

impl Budget {
    /// `permits` part buffers at most (at least one).
    pub fn new(permits: usize) -> Self {
        let permits = permits.max(1);
        Budget {
            semaphore: Arc::new(Semaphore::new(permits)),
            gauge: Arc::default(),
            permits,
            spares: Arc::default(),
        }
    }

    /// The count of buffers held now and at most.
    pub fn gauge(&self) -> Arc<PartGauge> {
        Arc::clone(&self.gauge)
    }

    pub fn permits(&self) -> usize {
        self.permits
    }

    /// A permit and the buffer it pays for: a spare one when a reader gave
    /// one back (there are never more spares than permits), else a new,
    /// empty one that the range's body fills.
    async fn take(&self) -> Option<(Held, Vec<u8>)> {
        let permit = Arc::clone(&self.semaphore).acquire_owned().await.ok()?;
        self.gauge.take();
        let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
        let buffer = spare.unwrap_or_else(|| {
            self.gauge.allocated.fetch_add(1, Ordering::SeqCst);
            Vec::new()
        });
        Some((
            Held {
                _permit: permit,
                gauge: Arc::clone(&self.gauge),
                spares: Arc::clone(&self.spares),
            },
            buffer,
        ))
    }
}

/// The right to hold one part buffer; gives it back when dropped.
struct Held {
    _permit: OwnedSemaphorePermit,
    gauge: Arc<PartGauge>,
    spares: Spares,
}

impl Held {
    /// Gives the permit back with its buffer, kept for the next range.
    fn recycle(self, buffer: Vec<u8>) {
        if buffer.capacity() > 0 {
            if let Ok(mut spares) = self.spares.lock() {
                spares.push(buffer);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Aborts a task when its result is no longer wanted (the reader was
/// dropped after a failure elsewhere), so no download outlives the stream.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One range in delivery order: its result arrives on `result`.
struct Slot {
    result: oneshot::Receiver<std::io::Result<Vec<u8>>>,
    held: Held,
    _task: AbortOnDrop,
}

/// What [`open`] found.
pub enum Opened {
    Ranged(RangedReader),
    /// The object is not the size the manifest records (or the first range
    /// could not be read): the caller reads it as one stream, which names
    /// the fault precisely (truncated, corrupt, unreadable).
    Sequential,
}

/// Starts reading `key` (`size` bytes per the manifest) in ranges of
/// `plan.part_size`, each paid for from `budget`. Must be called inside a
/// tokio runtime; the reader is blocking.
pub async fn open(
    target: Arc<dyn StorageTarget>,
    key: &str,
    size: u64,
    plan: RangedReads,
    budget: &Budget,
) -> Result<Opened, Error> {
    let part = plan.part_size.max(1);
    // Ranges queued for this reader: no more than the budget could fill.
    let queue = budget.permits();
    // The first range also tells the object's current size.
    let first = match target.get_range(key, 0..part.min(size)).await {
        Ok(r) => r,
        Err(e @ Error::NotFound(_)) => return Err(e),
        Err(_) => return Ok(Opened::Sequential),
    };
    if first.object_size != size {
        return Ok(Opened::Sequential);
    }
    let (tx, rx) = mpsc::channel(queue);
    let producer_gauge = budget.gauge();
    let budget = budget.clone();
    let key_owned = key.to_string();
    let producer = tokio::spawn(async move {
        let mut first = Some(first.body);
        let mut start = 0;
        while start < size {
            let end = (start + part).min(size);
            let Some((held, buffer)) = budget.take().await else {
                return;
            };
            let (done, result) = oneshot::channel();
            let fetch = fetch_part(
                Arc::clone(&target),
                key_owned.clone(),
                start..end,
                first.take(),
                buffer,
                Arc::clone(&producer_gauge),
            );
            let task = tokio::spawn(async move {
                let _ = done.send(fetch.await);
            });
            let slot = Slot {
                result,
                held,
                _task: AbortOnDrop(task),
            };
            if tx.send(slot).await.is_err() {
                return; // the reader is gone
            }
            start = end;
        }
    });
    Ok(Opened::Ranged(RangedReader {
        rx,
        current: Vec::new(),
        pos: 0,
        held: None,
        delivered: 0,
        size,
        failed: None,
        _producer: AbortOnDrop(producer),
    }))
}

/// Downloads one range whole into `buf` (its old content is overwritten),
/// trying again on failure; a missing object is final (it was deleted
/// while being read).
async fn fetch_part(
    target: Arc<dyn StorageTarget>,
    key: String,
    range: Range<u64>,
    mut first: Option<ByteReader>,
    mut buf: Vec<u8>,
    gauge: Arc<PartGauge>,
) -> std::io::Result<Vec<u8>> {
    let len = (range.end - range.start) as usize;
    let mut why = String::new();
    for attempt in 0..PART_ATTEMPTS {
        if attempt > 0 {
            gauge.retried.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
        }
        let body = match first.take() {
            Some(b) => Ok(b),
            None => target.get_range(&key, range.clone()).await.map(|r| r.body),
        };
        let mut body = match body {
            Ok(b) => b,
            Err(Error::NotFound(m)) => {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, m))
            }
            Err(e) => {
                why = e.to_string();
                continue;
            }
        };
        if let Err(e) = fill_exactly(&mut body, &mut buf, len).await {
            why = format!("the body ended after fewer than {len} bytes ({e})");
            continue;
        }
        // The range must end where asked: more bytes mean the store sent
        // something else than the range.
        let mut extra = [0u8; 1];
        match body.read(&mut extra).await {
            Ok(0) => return Ok(buf),
            Ok(_) => why = format!("the body is longer than the {len} bytes asked for"),
            Err(e) => why = e.to_string(),
        }
    }
    Err(std::io::Error::other(format!(
        "bytes {}-{} of {key}: {why} ({PART_ATTEMPTS} attempts)",
        range.start,
        range.end - 1
    )))
}

/// Reads exactly `len` bytes of `body` into `buf`, replacing its content.
/// Bytes land in the buffer's spare capacity (reserved once, at the first
/// use of the buffer), so it is never zeroed first.
async fn fill_exactly(body: &mut ByteReader, buf: &mut Vec<u8>, len: usize) -> std::io::Result<()> {
    buf.clear();
    buf.reserve_exact(len);
    while buf.len() < len {
        let room = len - buf.len();
        if body.read_buf(&mut (&mut *buf).limit(room)).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// The ranges as one byte stream, in order.
pub struct RangedReader {
    rx: mpsc::Receiver<Slot>,
    current: Vec<u8>,
    pos: usize,
    held: Option<Held>,
    delivered: u64,
    size: u64,
    /// The first failure: every later read repeats it, so nothing after a
    /// lost range is downloaded and the message names the range.
    failed: Option<String>,
    _producer: AbortOnDrop,
}

impl Read for RangedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(why.clone()));
        }
        match self.fill(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.failed = Some(e.to_string());
                // Stop the downloads still running: no more are started, and
                // dropping the queued ones aborts them.
                self.rx.close();
                while self.rx.try_recv().is_ok() {}
                Err(e)
            }
        }
    }
}

impl RangedReader {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            // Give the consumed buffer back before waiting for the next one.
            let spent = std::mem::take(&mut self.current);
            if let Some(held) = self.held.take() {
                held.recycle(spent);
            }
            self.pos = 0;
            if self.delivered >= self.size {
                return Ok(0);
            }
            let Some(slot) = self.rx.blocking_recv() else {
                return Err(std::io::Error::other(format!(
                    "the ranged download stopped after {} of {} bytes",
                    self.delivered, self.size
                )));
            };
            let data = slot.result.blocking_recv().map_err(|_| {
                std::io::Error::other("a range download stopped without a result")
            })??;
            self.delivered += data.len() as u64;
            self.current = data;
            self.held = Some(slot.held);
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::local::LocalTarget;
    use crate::target::{ObjectInfo, RangeRead};
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use std::sync::atomic::AtomicBool;

    fn random_bytes(n: usize) -> Vec<u8> {
        // xorshift: incompressible enough, reproducible, no extra crate.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn local(dir: &std::path::Path, data: &[u8], plan: RangedReads) -> Arc<dyn StorageTarget> {
        std::fs::create_dir_all(dir.join("h")).unwrap();
        std::fs::write(dir.join("h/obj"), data).unwrap();
        Arc::new(LocalTarget::at("local", dir).with_ranged_reads(plan))
    }

    async fn read_all(
        target: Arc<dyn StorageTarget>,
        size: u64,
        plan: RangedReads,
        budget: &Budget,
        slow: bool,
    ) -> std::io::Result<Vec<u8>> {
        let watch = budget.gauge();
        let Opened::Ranged(mut reader) = open(target, "h/obj", size, plan, budget).await.unwrap()
        else {
            panic!("expected a ranged read");
        };
        tokio::task::spawn_blocking(move || {
            if slow {
                // Let the producer take every permit it can before reading.
                let start = std::time::Instant::now();
                while watch.held.load(Ordering::SeqCst) < plan.concurrency
                    && start.elapsed() < Duration::from_secs(20)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut out = Vec::new();
            let mut buf = vec![0u8; 10_000];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
                if slow {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ranges_come_back_in_order_with_at_most_concurrency_buffers() {
        let dir = tempfile::tempdir().unwrap();
        // Not a multiple of the part size: the last range is short.
        let data = random_bytes(1_000_003);
        let plan = RangedReads {
            part_size: 65_536,
            concurrency: 3,
        };
        let target = local(dir.path(), &data, plan);
        let budget = Budget::new(plan.concurrency);
        let gauge = budget.gauge();
        let out = read_all(target, data.len() as u64, plan, &budget, true)
            .await
            .unwrap();
        assert!(out == data, "reassembled bytes differ");
        // The slow reader lets every permit fill: the bound is reached and
        // never passed.
        assert_eq!(gauge.peak(), 3, "part buffers held at once");
        assert_eq!(gauge.retried(), 0);
        // 16 ranges were read through 3 buffers, recycled.
        assert_eq!(gauge.allocated(), 3, "part buffers allocated");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_size_other_than_the_manifest_falls_back_to_one_stream() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(200_000);
        let plan = RangedReads {
            part_size: 65_536,
            concurrency: 2,
        };
        let target = local(dir.path(), &data, plan);
        let opened = open(target, "h/obj", 300_000, plan, &Budget::new(2))
            .await
            .unwrap();
        assert!(matches!(opened, Opened::Sequential));
    }

    /// A real local target whose range bodies break once, part-way, for
    /// the range starting at `fail_at`.
    struct BreaksOnce {
        inner: LocalTarget,
        fail_at: u64,
        failed: AtomicBool,
        always: bool,
    }

    #[async_trait]
    impl StorageTarget for BreaksOnce {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn location(&self) -> String {
            self.inner.location()
        }
        async fn put(&self, key: &str, body: ByteReader) -> crate::error::Result<u64> {
            self.inner.put(key, body).await
        }
        async fn get(&self, key: &str) -> crate::error::Result<ByteReader> {
            self.inner.get(key).await
        }
        fn ranged_reads(&self) -> Option<RangedReads> {
            self.inner.ranged_reads()
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> crate::error::Result<RangeRead> {
            let mut r = self.inner.get_range(key, range.clone()).await?;
            if range.start == self.fail_at
                && (self.always || !self.failed.swap(true, Ordering::SeqCst))
            {
                // Half the bytes, then the connection "drops".
                let half = (range.end - range.start) / 2;
                let head = r.body.take(half);
                let broken = tokio::io::AsyncReadExt::chain(head, Broken);
                r.body = Box::pin(broken);
            }
            Ok(r)
        }
        async fn list(&self, prefix: &str) -> crate::error::Result<Vec<ObjectInfo>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> crate::error::Result<()> {
            self.inner.delete(key).await
        }
        async fn cleanup_incomplete(
            &self,
            prefix: &str,
            older_than: DateTime<Utc>,
        ) -> crate::error::Result<Vec<String>> {
            self.inner.cleanup_incomplete(prefix, older_than).await
        }
    }

    struct Broken;
    impl tokio::io::AsyncRead for Broken {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            _buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_that_breaks_is_fetched_again_alone() {
        let dir = tempfile::tempdir().unwrap();
        let data = random_bytes(500_000);
        let plan = RangedReads {
            part_size: 65_536,
            concurrency: 2,
        };
        std::fs::create_dir_all(dir.path().join("h")).unwrap();
        std::fs::write(dir.path().join("h/obj"), &data).unwrap();
        for always in [false, true] {
            let target = Arc::new(BreaksOnce {
                inner: LocalTarget::at("local", dir.path()).with_ranged_reads(plan),
                fail_at: 3 * 65_536,
                failed: AtomicBool::new(false),
                always,
            });
            let budget = Budget::new(plan.concurrency);
            let gauge = budget.gauge();
            let got = read_all(target, data.len() as u64, plan, &budget, false).await;
            if always {
                let e = got.unwrap_err().to_string();
                assert!(e.contains("bytes 196608-262143 of h/obj"), "{e}");
                assert!(e.contains("3 attempts"), "{e}");
                assert_eq!(gauge.retried(), 2);
            } else {
                assert!(got.unwrap() == data, "reassembled bytes differ");
                assert_eq!(gauge.retried(), 1, "only the broken range is fetched again");
            }
        }
    }
}
