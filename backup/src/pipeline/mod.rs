//! The backup pipeline for one object: source stream -> BLAKE3 + zstd
//! (multithreaded) -> age -> sha256 -> one or more targets, every stage
//! running at the same time with small bounded queues between them, so
//! memory stays bounded whatever the size of the stream.
//!
//! ```text
//!  source (async read, this task; or slices of in-memory content)
//!     -- Piece queue (8 x 256 KiB) -->  compress thread: BLAKE3(plain), zstd
//!     -- Piece queue (8 x 256 KiB) -->  encrypt thread:  age, sha256(stored) for a manifest
//!     -- Piece queue per target (4 x 1 MiB) --> StorageTarget::put task
//! ```
//! With one zstd thread (WAL, binlog shipping, Redis, `zstd_workers = 1`)
//! the compress and encrypt stages are one thread: zstd writes straight
//! into age, with no queue between them, as independent frames of
//! `zstd_packer::FRAME_BYTES` each compressed in one call (see
//! `zstd_packer::Packer`).
//! A stream ends with an explicit [`Piece::End`]; a queue that closes
//! without it (a stage failed, panicked or was dropped) is an error
//! downstream, so a target never completes an object from a truncated
//! stream. `End` is sent only after the source's `finish()` confirmed the
//! stream was whole (dump tool exited 0, trailer present).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::crypto::Recipients;
use crate::error::{Error, Result};
use crate::manifest::{PlaintextHash, PlaintextHasher};
use crate::source::Source;
use crate::target::{ByteReader, StorageTarget};

mod queues;
mod zstd_packer;
pub use queues::piece_reader;
use queues::{Fanout, QueueWriter};
use zstd_packer::Packer;

/// Size of the chunks read from the source and produced by zstd.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Size of the chunks handed to targets.
pub const TARGET_CHUNK_BYTES: usize = 1024 * 1024;
const STAGE_DEPTH: usize = 8;
const TARGET_DEPTH: usize = 4;

/// What travels between stages.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    /// The stream is complete and whole.
    End,
    /// An upstream stage failed; the text names the cause.
    Failed(String),
}

/// How objects are compressed and encrypted.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub zstd_level: i32,
    /// zstd worker threads (0 = one per CPU).
    pub zstd_workers: u32,
    pub recipients: Recipients,
}

/// Byte counters a progress display or the scheduler can read while a run
/// goes on.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Plaintext bytes read from sources.
    pub source_bytes: AtomicU64,
    /// Encrypted bytes handed to targets.
    pub stored_bytes: AtomicU64,
}

impl ByteCounters {
    pub fn source(&self) -> u64 {
        self.source_bytes.load(Ordering::Relaxed)
    }
    pub fn stored(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }
}

/// Whether [`store_object`] hashes the stored (encrypted) bytes. A
/// manifest records that sha256 so `verify` checks an object without the
/// key; WAL files and streamed deltas have no manifest entry (their key
/// holds the plaintext hash), so for them it would be CPU for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredHash {
    Record,
    Skip,
}

/// Sizes and hashes of one object, the same for every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    pub plaintext_bytes: u64,
    pub plaintext_hash: PlaintextHash,
    pub stored_bytes: u64,
    /// sha256 (hex) of the stored bytes; `None` with [`StoredHash::Skip`].
    pub stored_sha256: Option<String>,
}

impl StreamStats {
    /// The stored bytes' sha256 for a manifest entry: an error (never an
    /// empty hash in a manifest) if the object was stored without it.
    pub fn recorded_stored_sha256(&self) -> Result<String> {
        self.stored_sha256.clone().ok_or_else(|| {
            Error::Internal("an object for a manifest was stored without its sha256".into())
        })
    }
}

/// The result of storing one object.
#[derive(Debug)]
pub struct StoreOutcome {
    /// `Err` when the stream itself failed (source, compression,
    /// encryption): then no target has the object.
    pub stream: Result<StreamStats>,
    /// Per target (in the order given): bytes stored, or why not.
    pub targets: Vec<(String, Result<u64>)>,
}

/// Streams `source` through zstd and age into `key` on every target.
/// Targets fail independently: one refusing the upload does not stop the
/// others.
pub async fn store_object(
    source: &mut dyn Source,
    settings: &PipelineSettings,
    targets: &[Arc<dyn StorageTarget>],
    key: &str,
    counters: Arc<ByteCounters>,
    stored_hash: StoredHash,
) -> StoreOutcome {
    let fail_all = |e: &Error| {
        targets
            .iter()
            .map(|t| {
                (
                    t.name().to_string(),
                    Err(Error::Other(format!("not stored: {e}"))),
                )
            })
            .collect()
    };
    // Content already in memory and hashed is sliced, not copied, and
    // not hashed again; anything else is read from its stream.
    let in_memory = source.take_in_memory();
    let known_hash = in_memory.as_ref().map(|m| m.hash.clone());
    let opened = match in_memory {
        Some(m) => Ok(Feed::Memory(m.bytes)),
        None => match source.open_chunks().await {
            Ok(Some(chunks)) => Ok(Feed::Chunks(chunks)),
            Ok(None) => source.open().await.map(Feed::Stream),
            Err(e) => Err(e),
        },
    };
    let reader = match opened {
        Ok(feed) => feed,
        Err(e) => {
            let targets = fail_all(&e);
            return StoreOutcome {
                stream: Err(e),
                targets,
            };
        }
    };

    let (plain_tx, plain_rx) = mpsc::channel::<Piece>(STAGE_DEPTH);
    let mut target_txs = Vec::new();
    let mut puts = Vec::new();
    for target in targets {
        let (tx, rx) = mpsc::channel::<Piece>(TARGET_DEPTH);
        target_txs.push(tx);
        let target = Arc::clone(target);
        let key = key.to_string();
        puts.push(tokio::spawn(async move {
            target.put(&key, piece_reader(rx)).await
        }));
    }

    let level = settings.zstd_level;
    let workers = effective_workers(settings.zstd_workers);
    let recipients = settings.recipients.clone();
    let stage_counters = Arc::clone(&counters);
    let pack = async move {
        if workers == 1 {
            // One zstd thread: compress and encrypt on that thread, with
            // no queue, copy or wake-up between them.
            let fused = tokio::task::spawn_blocking(move || {
                compress_encrypt_stage(
                    plain_rx,
                    target_txs,
                    level,
                    known_hash,
                    &recipients,
                    stored_hash,
                    &stage_counters,
                )
            });
            return joined(fused.await, "compression and encryption");
        }
        let (packed_tx, packed_rx) = mpsc::channel::<Piece>(STAGE_DEPTH);
        let compress = {
            let counters = Arc::clone(&stage_counters);
            tokio::task::spawn_blocking(move || {
                compress_stage(plain_rx, packed_tx, level, workers, known_hash, &counters)
            })
        };
        let encrypt = tokio::task::spawn_blocking(move || {
            encrypt_stage(
                packed_rx,
                target_txs,
                &recipients,
                stored_hash,
                &stage_counters,
            )
        });
        let (compressed, encrypted) = tokio::join!(compress, encrypt);
        match (
            joined(compressed, "compression"),
            joined(encrypted, "encryption"),
        ) {
            (Ok(plain), Ok(stored)) => Ok((plain, stored)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    };

    let read = async {
        match reader {
            Feed::Stream(r) => read_stage(source, r, plain_tx).await,
            Feed::Chunks(chunks) => chunk_stage(source, chunks, plain_tx).await,
            Feed::Memory(bytes) => {
                slice_stage(bytes, plain_tx).await;
                Ok(())
            }
        }
    };
    let (read_result, packed) = tokio::join!(read, pack);
    let mut put_results = Vec::new();
    for (target, put) in targets.iter().zip(puts) {
        let r = match put.await {
            Ok(r) => r,
            Err(e) => Err(Error::target(
                target.name(),
                target.location(),
                format!("upload task failed: {e}"),
            )),
        };
        put_results.push((target.name().to_string(), r));
    }

    // The source's error is the cause when there is one; the later stages
    // only report that their input stopped.
    let source_ok = read_result.is_ok();
    let stream = match read_result {
        Err(e) => Err(e),
        Ok(()) => {
            packed.map(
                |((plain_bytes, plain_hash), (stored_bytes, stored_hash))| StreamStats {
                    plaintext_bytes: plain_bytes,
                    plaintext_hash: plain_hash,
                    stored_bytes,
                    stored_sha256: stored_hash,
                },
            )
        }
    };
    // When the stream stopped only because every target failed, the
    // targets' own errors are the cause.
    let stream = match stream {
        Err(_)
            if source_ok
                && !put_results.is_empty()
                && put_results.iter().all(|(_, r)| r.is_err()) =>
        {
            let causes: Vec<String> = put_results
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            Err(Error::Other(causes.join("; ")))
        }
        other => other,
    };
    let targets = match &stream {
        Ok(_) => put_results,
        Err(e) => put_results
            .into_iter()
            .map(|(name, r)| match r {
                // A target cannot have completed (End is never sent after
                // a failure); keep the guard anyway.
                Ok(_) => (name, Err(Error::Other(format!("not stored: {e}")))),
                Err(own) => (name, Err(own)),
            })
            .collect(),
    };
    StoreOutcome { stream, targets }
}

/// Reads the source into the first queue; sends `End` only once the
/// source says the stream is whole.
async fn read_stage(
    source: &mut dyn Source,
    mut reader: ByteReader,
    tx: mpsc::Sender<Piece>,
) -> Result<()> {
    let what = source.describe();
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
        let mut read_err = None;
        while buf.len() < CHUNK_BYTES {
            match reader.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        let eof = buf.len() < CHUNK_BYTES;
        if !buf.is_empty() && tx.send(Piece::Data(buf.freeze())).await.is_err() {
            // The compression stage stopped; it reports why.
            drop(reader);
            let _ = source.finish().await;
            return Ok(());
        }
        if let Some(e) = read_err {
            drop(reader);
            // The producer's own verdict (exit status, stderr) explains
            // more than the read error.
            let err = match source.finish().await {
                Err(src) => src,
                Ok(()) => Error::Source(format!("reading {what}: {e}")),
            };
            let _ = tx.send(Piece::Failed(err.to_string())).await;
            return Err(err);
        }
        if eof {
            break;
        }
    }
    drop(reader);
    end_with_verdict(source, &tx).await
}

/// Passes a source's own buffers on to the first queue; sends `End` only
/// once the source says the stream is whole.
async fn chunk_stage(
    source: &mut dyn Source,
    mut chunks: crate::source::ChunkReceiver,
    tx: mpsc::Sender<Piece>,
) -> Result<()> {
    while let Some(chunk) = chunks.recv().await {
        if tx.send(Piece::Data(chunk)).await.is_err() {
            // The compression stage stopped; it reports why. Dropping the
            // receiver stops the source's producer.
            drop(chunks);
            let _ = source.finish().await;
            return Ok(());
        }
    }
    end_with_verdict(source, &tx).await
}

/// After the source's last byte: `End` when the source says the stream is
/// whole, else `Failed` with its reason.
async fn end_with_verdict(source: &mut dyn Source, tx: &mpsc::Sender<Piece>) -> Result<()> {
    match source.finish().await {
        Ok(()) => {
            let _ = tx.send(Piece::End).await;
            Ok(())
        }
        Err(e) => {
            let _ = tx.send(Piece::Failed(e.to_string())).await;
            Err(e)
        }
    }
}

/// A blocking stage's verdict, its crash included, naming the stage.
fn joined<T>(
    r: std::result::Result<std::io::Result<T>, tokio::task::JoinError>,
    stage: &str,
) -> Result<T> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Other(format!("{stage}: {e}"))),
        Err(e) => Err(Error::Other(format!("{stage} stage crashed: {e}"))),
    }
}

/// Where the plaintext comes from.
enum Feed {
    Stream(ByteReader),
    Chunks(crate::source::ChunkReceiver),
    Memory(Bytes),
}

/// Hands `bytes` to the compression stage in [`CHUNK_BYTES`] slices (no
/// copy), then `End`: in-memory content is whole by construction.
async fn slice_stage(bytes: Bytes, tx: mpsc::Sender<Piece>) {
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + CHUNK_BYTES).min(bytes.len());
        if tx.send(Piece::Data(bytes.slice(at..end))).await.is_err() {
            // The compression stage stopped; it reports why.
            return;
        }
        at = end;
    }
    let _ = tx.send(Piece::End).await;
}

/// Receives the next piece; a closed queue means the sender died.
fn next_piece(rx: &mut mpsc::Receiver<Piece>, upstream: &str) -> std::io::Result<Option<Bytes>> {
    match rx.blocking_recv() {
        Some(Piece::Data(b)) => Ok(Some(b)),
        Some(Piece::End) => Ok(None),
        Some(Piece::Failed(e)) => Err(std::io::Error::other(e)),
        None => Err(std::io::Error::other(format!(
            "the {upstream} stage stopped before the end of the stream"
        ))),
    }
}

/// zstd worker threads: 0 means one per CPU.
fn effective_workers(workers: u32) -> u32 {
    if workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    } else {
        workers
    }
}

/// Compresses what arrives on `rx` into `out` (zstd with checksums, see
/// [`Packer`]); returns the plaintext's size and hash and `out` once the
/// last frame is finished.
fn compress_into<W: Write>(
    rx: &mut mpsc::Receiver<Piece>,
    out: W,
    level: i32,
    workers: u32,
    known_hash: Option<PlaintextHash>,
    counters: &ByteCounters,
) -> std::io::Result<(u64, PlaintextHash, W)> {
    let mut packer = Packer::new(out, level, workers)?;
    // The source's own hash, when it has one, is of exactly these
    // bytes (MemorySource hashed what it hands out): `Ok` holds it,
    // `Err` the hasher that computes it here.
    let mut hashing = known_hash.ok_or_else(PlaintextHasher::new);
    let mut total = 0u64;
    while let Some(chunk) = next_piece(rx, "source")? {
        if let Err(h) = hashing.as_mut() {
            h.update(&chunk);
        }
        total += chunk.len() as u64;
        counters
            .source_bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        packer.write_all(&chunk)?;
    }
    let out = packer.finish()?;
    let hash = hashing.unwrap_or_else(PlaintextHasher::finish);
    Ok((total, hash, out))
}

/// The compression thread of a multithreaded zstd: compressed chunks go
/// to the encryption thread.
fn compress_stage(
    mut rx: mpsc::Receiver<Piece>,
    tx: mpsc::Sender<Piece>,
    level: i32,
    workers: u32,
    known_hash: Option<PlaintextHash>,
    counters: &ByteCounters,
) -> std::io::Result<(u64, PlaintextHash)> {
    let result = (|| -> std::io::Result<(u64, PlaintextHash)> {
        let out = QueueWriter::new(tx.clone(), CHUNK_BYTES);
        let (total, hash, mut out) =
            compress_into(&mut rx, out, level, workers, known_hash, counters)?;
        out.flush_chunk()?;
        Ok((total, hash))
    })();
    match &result {
        Ok(_) => {
            let _ = tx.blocking_send(Piece::End);
        }
        Err(e) => {
            let _ = tx.blocking_send(Piece::Failed(e.to_string()));
        }
    }
    result
}

/// Plaintext size and hash, stored size and sha256.
type PackedStats = ((u64, PlaintextHash), (u64, Option<String>));

/// Single-threaded zstd straight into age and the targets' queues.
fn compress_encrypt_stage(
    mut rx: mpsc::Receiver<Piece>,
    txs: Vec<mpsc::Sender<Piece>>,
    level: i32,
    known_hash: Option<PlaintextHash>,
    recipients: &Recipients,
    stored_hash: StoredHash,
    counters: &ByteCounters,
) -> std::io::Result<PackedStats> {
    let result = (|| -> std::io::Result<PackedStats> {
        let writer = recipients.encrypt(Fanout::new(&txs, stored_hash, counters))?;
        let (plain_bytes, plain_hash, writer) =
            compress_into(&mut rx, writer, level, 1, known_hash, counters)?;
        let mut fanout = writer.finish()?;
        fanout.send_buffered()?;
        let stored_sha256 = fanout.stored_sha256();
        Ok(((plain_bytes, plain_hash), (fanout.total, stored_sha256)))
    })();
    end_targets(&txs, &result);
    result
}

/// Tells every target the stream ended whole, or why not.
fn end_targets<T>(txs: &[mpsc::Sender<Piece>], result: &std::io::Result<T>) {
    for tx in txs {
        let piece = match result {
            Ok(_) => Piece::End,
            Err(e) => Piece::Failed(e.to_string()),
        };
        let _ = tx.blocking_send(piece);
    }
}

fn encrypt_stage(
    mut rx: mpsc::Receiver<Piece>,
    txs: Vec<mpsc::Sender<Piece>>,
    recipients: &Recipients,
    stored_hash: StoredHash,
    counters: &ByteCounters,
) -> std::io::Result<(u64, Option<String>)> {
    let result = (|| -> std::io::Result<(u64, Option<String>)> {
        let mut writer = recipients.encrypt(Fanout::new(&txs, stored_hash, counters))?;
        while let Some(chunk) = next_piece(&mut rx, "compression")? {
            writer.write_all(&chunk)?;
        }
        let mut fanout = writer.finish()?;
        fanout.send_buffered()?;
        Ok((fanout.total, fanout.stored_sha256()))
    })();
    end_targets(&txs, &result);
    result
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use age::secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::source::memory::MemorySource;
    use crate::target::local::LocalTarget;

    /// Content the pipeline must store byte for byte: compressible and not.
    fn content() -> Vec<u8> {
        let mut v: Vec<u8> = (0..3 * CHUNK_BYTES + 1234)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut x = 0x1234_5678u32;
        for b in v.iter_mut().skip(CHUNK_BYTES).take(CHUNK_BYTES) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        v
    }

    /// A reader source over the same bytes: the streaming feed.
    struct ReaderSource(Option<Vec<u8>>);

    #[async_trait::async_trait]
    impl Source for ReaderSource {
        fn describe(&self) -> String {
            "reader".into()
        }
        async fn open(&mut self) -> Result<ByteReader> {
            Ok(Box::pin(std::io::Cursor::new(
                self.0.take().unwrap_or_default(),
            )))
        }
        async fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }

    /// One zstd thread (compress and encrypt fused) and two (separate
    /// compression and encryption threads).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_and_streamed_sources_store_the_same_checked_plaintext() {
        for workers in [1, 2] {
            store_and_read_back(workers).await;
        }
    }

    async fn store_and_read_back(zstd_workers: u32) {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let settings = PipelineSettings {
            zstd_level: 3,
            zstd_workers,
            recipients: Recipients::from_strings(&[identity.to_public().to_string()]).unwrap(),
        };
        let target: Arc<dyn StorageTarget> = Arc::new(LocalTarget::at("local", dir.path()));
        let data = content();

        let blake3 = PlaintextHash::Blake3(blake3::hash(&data).to_hex().to_string());
        let mut memory = MemorySource::new("memory".into(), Bytes::from(data.clone()));
        assert_eq!(memory.hash(), &blake3);
        let mut reader = ReaderSource(Some(data.clone()));
        // WAL objects (in memory) skip the stored hash; manifest objects
        // record it.
        for (key, source, stored_hash) in [
            ("m", &mut memory as &mut dyn Source, StoredHash::Skip),
            ("r", &mut reader as &mut dyn Source, StoredHash::Record),
        ] {
            let counters = Arc::new(ByteCounters::default());
            let out = store_object(
                source,
                &settings,
                std::slice::from_ref(&target),
                key,
                Arc::clone(&counters),
                stored_hash,
            )
            .await;
            let stats = out.stream.unwrap();
            assert_eq!(stats.plaintext_bytes, data.len() as u64, "{key}");
            // A memory source's own hash is kept (a WAL segment's key
            // holds it), and is what a streamed source gets computed.
            assert_eq!(stats.plaintext_hash, blake3, "{key}");
            assert_eq!(counters.source(), data.len() as u64, "{key}");
            let stored = std::fs::read(dir.path().join(key)).unwrap();
            assert_eq!(stats.stored_bytes, stored.len() as u64, "{key}");
            let want_stored =
                (stored_hash == StoredHash::Record).then(|| hex::encode(Sha256::digest(&stored)));
            assert_eq!(stats.stored_sha256, want_stored, "{key}");
            let key_text = identity.to_string();
            let id: Box<dyn age::Identity> = Box::new(
                key_text
                    .expose_secret()
                    .parse::<age::x25519::Identity>()
                    .unwrap(),
            );
            let plain = crate::crypto::decrypt(&stored[..], &[id]).unwrap();
            let mut back = Vec::new();
            zstd::stream::read::Decoder::new(plain)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(
                back == data,
                "{key}: the stored object decrypts to the input"
            );
        }
    }
}
