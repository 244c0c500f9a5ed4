//! Reading one stored object back: target -> sha256 of the stored bytes ->
//! age decrypt -> zstd decode -> hash of the plaintext, as a blocking
//! `Read` whose end-of-file means "every byte checked against the manifest".
//!
//! Three stages run concurrently (download + stored sha256 + decrypt on a
//! blocking thread, decompress + plaintext hash on a second, the consumer
//! on the caller's), joined by bounded channels of `CHUNK_BYTES` blocks
//! that the reader of each channel hands back to its writer for refilling:
//! memory stays a few MiB whatever the object's size, and the allocator is
//! not asked for a new block per block read. A target that asks for it
//! ([`StorageTarget::ranged_reads`]) has a large object downloaded as
//! parallel byte ranges put back in order ([`crate::restore::ranged`]),
//! which adds at most part size x concurrency. When anything fails,
//! the rest of the stored object is still read and hashed so the error says
//! precisely what is wrong: missing, truncated, corrupt, or the wrong key.

use std::io::{BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio_util::io::SyncIoBridge;

use crate::error::Error;
use crate::manifest::{Manifest, ObjectEntry, PlaintextHasher};
use crate::restore::identity::Identities;
use crate::restore::ranged::{self, Budget, Opened};
use crate::target::StorageTarget;

/// Size of the decrypted blocks handed from the decrypt stage to the
/// decompress stage, and of the plaintext blocks handed to the consumer.
/// 256 KiB: a 1 GB restore on moto ran as fast as with 1 MiB blocks and
/// 9 MB lower in peak RSS (release-quick, 2026-12-04): both queues
/// together hold a few MiB instead of twelve.
const CHUNK_BYTES: usize = 256 * 1024;
/// Blocks in flight between two stages (memory bound: this x CHUNK_BYTES,
/// plus the one each side holds).
const CHUNKS_IN_FLIGHT: usize = 4;
/// Spent blocks a stage's reader hands back to its writer for refilling,
/// so blocks are not allocated (and zeroed) for every MiB of the object.
const SPARE_CHUNKS: usize = 2;
/// Read buffer in front of the target's stream.
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Reports bytes as they are read; the CLI draws a bar, drills stay quiet.
pub trait Progress: Send + Sync {
    /// A new phase (`db/postgres/app.pgdump.zst.age`) of `total` bytes.
    fn start(&self, label: &str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    /// A line for the user (kept above a progress bar).
    fn note(&self, line: &str);
    fn finish(&self);
}

/// Progress that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn note(&self, _line: &str) {}
    fn finish(&self) {}
}

/// What is wrong with a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The object is not on the target.
    Missing,
    /// Fewer bytes are stored than the manifest records.
    Truncated,
    /// Bytes differ from what was written (hash, authentication or format).
    Corrupt,
    /// The identity is not one of the snapshot's recipients.
    WrongKey,
    /// The target could not be read (network, permissions).
    Unreadable,
}

/// A stored object that could not be read back whole and intact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectFault {
    pub kind: FaultKind,
    pub snapshot: String,
    pub object: String,
    pub target: String,
    pub detail: String,
}

impl std::fmt::Display for ObjectFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, o, t, d) = (&self.snapshot, &self.object, &self.target, &self.detail);
        match self.kind {
            FaultKind::Missing => write!(
                f,
                "snapshot {s}: object {o} is missing from target {t} ({d}); the snapshot is damaged: restore an older one (see `steward restore list`)"
            ),
            FaultKind::Truncated => write!(
                f,
                "snapshot {s}: object {o} on target {t} is truncated: {d}; restore an older snapshot"
            ),
            FaultKind::Corrupt => write!(
                f,
                "snapshot {s}: object {o} on target {t} is corrupt: {d}; restore an older snapshot"
            ),
            FaultKind::WrongKey => write!(
                f,
                "snapshot {s}: object {o} cannot be decrypted: wrong key: {d}"
            ),
            FaultKind::Unreadable => write!(f, "snapshot {s}: cannot read object {o} from target {t}: {d}"),
        }
    }
}

impl std::error::Error for ObjectFault {}

impl From<ObjectFault> for Error {
    fn from(f: ObjectFault) -> Self {
        match f.kind {
            FaultKind::Missing => Error::NotFound(f.to_string()),
            FaultKind::Truncated | FaultKind::Corrupt => Error::Integrity(f.to_string()),
            FaultKind::WrongKey => Error::Config(f.to_string()),
            FaultKind::Unreadable => Error::Other(f.to_string()),
        }
    }
}

/// Where a fault is recorded so the caller can report it precisely even
/// when a consumer (tar, a child's stdin copy) wrapped the I/O error.
pub type FaultSlot = Arc<Mutex<Option<ObjectFault>>>;

fn record(slot: &FaultSlot, fault: ObjectFault) {
    if let Ok(mut s) = slot.lock() {
        if s.is_none() {
            *s = Some(fault);
        }
    }
}

/// Takes the recorded fault, if any.
pub fn take_fault(slot: &FaultSlot) -> Option<ObjectFault> {
    slot.lock().ok().and_then(|mut s| s.take())
}

enum Msg {
    Chunk(Vec<u8>),
    End,
    Fault(ObjectFault),
}

/// The writer's end of a stage's block recycling: a block handed back by
/// the reader when there is one, else a new one.
struct Spares(Receiver<Vec<u8>>);

impl Spares {
    /// A block of CHUNK_BYTES to fill (a recycled one is not zeroed again,
    /// except a tail it lost to a short last block).
    fn block(&self) -> Vec<u8> {
        let mut buf = self.0.try_recv().unwrap_or_default();
        buf.resize(CHUNK_BYTES, 0);
        buf
    }
}

/// The reader's end: spent blocks go back, or are freed when the writer
/// already has enough.
#[derive(Clone)]
struct SpentBlocks(SyncSender<Vec<u8>>);

impl SpentBlocks {
    fn give_back(&self, block: Vec<u8>) {
        if block.capacity() > 0 {
            let _ = self.0.try_send(block);
        }
    }
}

fn recycling() -> (SpentBlocks, Spares) {
    let (tx, rx) = sync_channel(SPARE_CHUNKS);
    (SpentBlocks(tx), Spares(rx))
}

/// Opens an object of `manifest` on `target` for checked reading. Must be
/// called inside a tokio runtime; the returned reader is blocking (use it
/// on a blocking thread).
pub async fn open_object(
    target: Arc<dyn StorageTarget>,
    manifest: &Manifest,
    entry: &ObjectEntry,
    identities: &Identities,
    progress: Arc<dyn Progress>,
) -> Result<ObjectReader, ObjectFault> {
    open_object_within(target, manifest, entry, identities, progress, None).await
}

/// [`open_object`] with its ranged part buffers paid from `budget` (shared
/// with other objects read at the same time) instead of a budget of its own.
pub async fn open_object_within(
    target: Arc<dyn StorageTarget>,
    manifest: &Manifest,
    entry: &ObjectEntry,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    budget: Option<&Budget>,
) -> Result<ObjectReader, ObjectFault> {
    let key = manifest.object_key(entry);
    let fault = |kind, detail: String| ObjectFault {
        kind,
        snapshot: manifest.snapshot_id.clone(),
        object: entry.name.clone(),
        target: target.name().to_string(),
        detail,
    };
    let bridge = match stored_bytes(&target, &key, entry.stored_bytes, budget).await {
        Ok(r) => r,
        Err(Error::NotFound(m)) => {
            return Err(fault(FaultKind::Missing, format!("key {key}: {m}")))
        }
        Err(e) => return Err(fault(FaultKind::Unreadable, e.to_string())),
    };
    let slot: FaultSlot = Arc::new(Mutex::new(None));
    let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
    let (spent_decrypted, decrypt_spares) = recycling();
    let template = fault(FaultKind::Corrupt, String::new());
    let expected = entry.clone();
    let ids = identities.clone();
    let stage_slot = Arc::clone(&slot);
    tokio::task::spawn_blocking(move || {
        let result = decrypt_stage(bridge, &expected, &ids, &tx, &decrypt_spares, progress);
        match result {
            Ok(()) => {
                let _ = tx.send(Msg::End);
            }
            Err((kind, detail)) => {
                let f = ObjectFault {
                    kind,
                    detail,
                    ..template
                };
                record(&stage_slot, f.clone());
                let _ = tx.send(Msg::Fault(f));
            }
        }
    });
    let channel = ChannelReader {
        rx,
        current: Vec::new(),
        pos: 0,
        done: false,
        spent: spent_decrypted,
    };
    // Decompression and the plaintext hash on a third thread: the consumer
    // (tar unpack, hashing and writing files; a database tool's pipe) is
    // the heaviest stage, and zstd on its thread made it the bottleneck.
    let (plain_tx, plain_rx) = sync_channel(CHUNKS_IN_FLIGHT);
    let (spent_plain, plain_spares) = recycling();
    let expected = entry.clone();
    let template = fault(FaultKind::Corrupt, String::new());
    let stage_slot = Arc::clone(&slot);
    tokio::task::spawn_blocking(move || {
        decompress_stage(
            channel,
            &expected,
            template,
            &stage_slot,
            &plain_tx,
            &plain_spares,
        )
    });
    Ok(ObjectReader {
        rx: plain_rx,
        current: Vec::new(),
        spent: spent_plain,
        pos: 0,
        bytes: 0,
        entry: entry.clone(),
        slot,
        finished: false,
    })
}

/// The stored bytes of `key` as a blocking reader: parallel ranges when
/// the target wants them and the object spans more than one part (already
/// in memory: read without a buffer in front), else one stream (behind a
/// [`READ_BUFFER_BYTES`] buffer: each read of the bridge is a trip through
/// the runtime).
async fn stored_bytes(
    target: &Arc<dyn StorageTarget>,
    key: &str,
    size: u64,
    budget: Option<&Budget>,
) -> Result<Box<dyn Read + Send>, Error> {
    if let Some(plan) = target.ranged_reads() {
        if size > plan.part_size {
            let own;
            let budget = match budget {
                Some(b) => b,
                None => {
                    own = Budget::new(plan.concurrency);
                    &own
                }
            };
            if let Opened::Ranged(r) =
                ranged::open(Arc::clone(target), key, size, plan, budget).await?
            {
                return Ok(Box::new(r));
            }
        }
    }
    let raw = target.get(key).await?;
    Ok(Box::new(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        SyncIoBridge::new_with_handle(raw, tokio::runtime::Handle::current()),
    )))
}

/// Counts and hashes every byte read through it and reports progress;
/// remembers an I/O error of the underlying reader (as opposed to an error
/// of a layer above, which says the bytes are bad).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    io_error: Option<String>,
    progress: Arc<dyn Progress>,
    unreported: u64,
}

impl<R: Read> Hashing<R> {
    fn report(&mut self) {
        if self.unreported > 0 {
            self.progress.advance(std::mem::take(&mut self.unreported));
        }
    }

    /// Reads what is left, so size and hash cover the whole object.
    fn drain(&mut self) {
        let mut sink = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.report();
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                self.unreported += n as u64;
                if self.unreported >= 256 * 1024 {
                    self.report();
                }
                Ok(n)
            }
            Err(e) => {
                // The first error says what went wrong; later ones follow.
                if e.kind() != std::io::ErrorKind::Interrupted && self.io_error.is_none() {
                    self.io_error = Some(e.to_string());
                }
                Err(e)
            }
        }
    }
}

type StageError = (FaultKind, String);

enum Abort {
    /// The consumer stopped reading (it failed on its own and reports why).
    ConsumerGone,
    Failed(FaultKind, String),
}

fn decrypt_stage<R: Read>(
    raw: R,
    entry: &ObjectEntry,
    ids: &Identities,
    tx: &SyncSender<Msg>,
    spares: &Spares,
    progress: Arc<dyn Progress>,
) -> Result<(), StageError> {
    let mut counted = Hashing {
        inner: raw,
        hasher: Sha256::new(),
        bytes: 0,
        io_error: None,
        progress,
        unreported: 0,
    };
    let primary = match pump(&mut counted, ids, tx, spares) {
        Ok(()) => None,
        Err(Abort::ConsumerGone) => return Ok(()),
        Err(Abort::Failed(kind, detail)) => Some((kind, detail)),
    };
    counted.drain();
    if let Some(e) = &counted.io_error {
        return Err((FaultKind::Unreadable, e.clone()));
    }
    let stored_sha = hex::encode(counted.hasher.clone().finalize());
    if counted.bytes < entry.stored_bytes {
        return Err((
            FaultKind::Truncated,
            format!("{} of {} bytes stored", counted.bytes, entry.stored_bytes),
        ));
    }
    if counted.bytes > entry.stored_bytes {
        return Err((
            FaultKind::Corrupt,
            format!(
                "{} bytes stored but the manifest records {}",
                counted.bytes, entry.stored_bytes
            ),
        ));
    }
    if stored_sha != entry.stored_sha256 {
        let why = primary.map(|(_, d)| format!("; {d}")).unwrap_or_default();
        return Err((
            FaultKind::Corrupt,
            format!(
                "sha256 of the stored bytes is {stored_sha} but the manifest records {}{why}",
                entry.stored_sha256
            ),
        ));
    }
    match primary {
        None => Ok(()),
        Some((FaultKind::WrongKey, _)) => Err((
            FaultKind::WrongKey,
            format!(
                "no key in {} matches its recipients (the stored bytes are intact); use the identity of a recipient listed by `steward restore show`",
                ids.origin
            ),
        )),
        Some(other) => Err(other),
    }
}

fn pump<R: Read>(
    counted: &mut Hashing<R>,
    ids: &Identities,
    tx: &SyncSender<Msg>,
    spares: &Spares,
) -> Result<(), Abort> {
    let decryptor = age::Decryptor::new(&mut *counted).map_err(|e| {
        Abort::Failed(
            FaultKind::Corrupt,
            format!("the age header is unreadable: {e}"),
        )
    })?;
    let mut plain = decryptor.decrypt(ids.as_dyn()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => Abort::Failed(FaultKind::WrongKey, e.to_string()),
        other => Abort::Failed(
            FaultKind::Corrupt,
            format!("the age header does not verify: {other}"),
        ),
    })?;
    loop {
        let mut buf = spares.block();
        let mut filled = 0;
        while filled < buf.len() {
            match plain.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        format!("the encrypted stream ends early ({e})")
                    } else {
                        format!("the encrypted data does not authenticate ({e})")
                    };
                    return Err(Abort::Failed(FaultKind::Corrupt, detail));
                }
            }
        }
        if filled == 0 {
            return Ok(());
        }
        buf.truncate(filled);
        if tx.send(Msg::Chunk(buf)).is_err() {
            return Err(Abort::ConsumerGone);
        }
    }
}

/// The decrypted blocks as a byte stream; end-of-file only after the
/// decrypt stage has checked size and hash of the stored bytes.
struct ChannelReader {
    rx: Receiver<Msg>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    spent: SpentBlocks,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Chunk(c)) => {
                    self.spent
                        .give_back(std::mem::replace(&mut self.current, c));
                    self.pos = 0;
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Fault(f)) => return Err(std::io::Error::other(f.to_string())),
                Err(_) => {
                    return Err(std::io::Error::other(
                        "the decrypt stage stopped without a result",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The plaintext of one object. Reading it to end-of-file (`Ok(0)`) means
/// the stored bytes and the plaintext both matched the manifest's sizes and
/// hashes; any failure is an `io::Error` carrying the fault's message, and
/// the fault itself is in [`ObjectReader::fault`].
pub struct ObjectReader {
    rx: Receiver<Msg>,
    current: Vec<u8>,
    spent: SpentBlocks,
    pos: usize,
    bytes: u64,
    entry: ObjectEntry,
    slot: FaultSlot,
    finished: bool,
}

/// Decompresses the decrypted stream, hashes the plaintext and hands it on
/// in blocks; ends with [`Msg::End`] only when size and hash of the
/// plaintext match the manifest, else with the fault (the decrypt stage's
/// when it found one: a zstd error after it is only its consequence).
fn decompress_stage(
    channel: ChannelReader,
    entry: &ObjectEntry,
    template: ObjectFault,
    slot: &FaultSlot,
    tx: &SyncSender<Msg>,
    spares: &Spares,
) {
    let fail = |detail: String| {
        let f = slot
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or(ObjectFault {
                detail,
                ..template.clone()
            });
        record(slot, f.clone());
        let _ = tx.send(Msg::Fault(f));
    };
    let mut decoder = match zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
        256 * 1024,
        channel,
    )) {
        Ok(d) => d,
        Err(e) => return fail(format!("zstd: {e}")),
    };
    // The frame's own checksum (XXH64, which `zstd -d` checks in the
    // escape hatch) proves less than the plaintext hash checked below over
    // the same bytes, and cost 2 % of a restore's CPU.
    if let Err(e) = decoder.set_parameter(zstd::zstd_safe::DParameter::ForceIgnoreChecksum(true)) {
        return fail(format!("zstd: {e}"));
    }
    let mut hasher = PlaintextHasher::like(&entry.plaintext_hash);
    let mut bytes = 0u64;
    loop {
        let mut buf = spares.block();
        let mut filled = 0;
        while filled < buf.len() {
            match decoder.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return fail(format!("zstd: {e}")),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        bytes += filled as u64;
        if tx.send(Msg::Chunk(buf)).is_err() {
            return; // the consumer stopped reading and reports why
        }
    }
    let hash = hasher.finish();
    if bytes != entry.plaintext_bytes {
        return fail(format!(
            "{bytes} bytes after decompression but the manifest records {}",
            entry.plaintext_bytes
        ));
    }
    if hash != entry.plaintext_hash {
        return fail(format!(
            "{} of the plaintext is {} but the manifest records {}",
            hash.algorithm(),
            hash.hex(),
            entry.plaintext_hash.hex()
        ));
    }
    let _ = tx.send(Msg::End);
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("object", &self.entry.name)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl ObjectReader {
    /// The fault that stopped this stream, if one did.
    pub fn fault(&self) -> Option<ObjectFault> {
        self.slot.lock().ok().and_then(|s| s.clone())
    }

    /// A handle to the fault, usable after the reader was moved into a
    /// consumer.
    pub fn fault_slot(&self) -> FaultSlot {
        Arc::clone(&self.slot)
    }

    /// Reads what the consumer left to the checked end (tar leaves its
    /// end-of-archive padding unread, a format check may stop early), so
    /// the stored and plaintext hashes are compared whatever the consumer
    /// read: `Ok` means the whole object matched the manifest.
    pub fn finish(&mut self) -> std::io::Result<()> {
        let mut sink = vec![0u8; 64 * 1024];
        loop {
            match self.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Plaintext bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.pos >= self.current.len() {
            if self.finished {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Chunk(c)) => {
                    self.spent
                        .give_back(std::mem::replace(&mut self.current, c));
                    self.pos = 0;
                }
                Ok(Msg::End) => {
                    self.current = Vec::new();
                    self.pos = 0;
                    self.finished = true;
                }
                Ok(Msg::Fault(f)) => return Err(std::io::Error::other(f.to_string())),
                Err(_) => {
                    return Err(match self.fault() {
                        Some(f) => std::io::Error::other(f.to_string()),
                        None => {
                            std::io::Error::other("the decompress stage stopped without a result")
                        }
                    })
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        self.bytes += n as u64;
        Ok(n)
    }
}
