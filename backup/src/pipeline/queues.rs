//! The blocking ends of the queues between the pipeline's stages: a
//! writer that sends fixed-size chunks on (compression to encryption), the
//! fan-out that hands each encrypted chunk to every target (hashing the
//! stored bytes when a manifest records them), and the reader a target
//! consumes.

use std::io::Write;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{ByteCounters, Piece, StoredHash, TARGET_CHUNK_BYTES};
use crate::target::ByteReader;

/// A blocking `Write` that sends fixed-size chunks into a queue.
pub(super) struct QueueWriter {
    tx: mpsc::Sender<Piece>,
    buf: Vec<u8>,
    chunk: usize,
}

impl QueueWriter {
    pub(super) fn new(tx: mpsc::Sender<Piece>, chunk: usize) -> Self {
        QueueWriter {
            tx,
            buf: Vec::with_capacity(chunk),
            chunk,
        }
    }

    pub(super) fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        self.tx
            .blocking_send(Piece::Data(Bytes::from(data)))
            .map_err(|_| std::io::Error::other("the next stage stopped"))
    }
}

impl Write for QueueWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.chunk - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= self.chunk {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Chunks go out when full or at the end; nothing to force here.
        Ok(())
    }
}

/// Hashes the stored bytes and copies each chunk to every live target.
pub(super) struct Fanout<'a> {
    targets: Vec<Option<mpsc::Sender<Piece>>>,
    buf: Vec<u8>,
    /// sha256 of the stored bytes, unless [`StoredHash::Skip`].
    hasher: Option<Sha256>,
    pub(super) total: u64,
    counters: &'a ByteCounters,
}

impl<'a> Fanout<'a> {
    pub(super) fn new(
        txs: &[mpsc::Sender<Piece>],
        stored_hash: StoredHash,
        counters: &'a ByteCounters,
    ) -> Self {
        Fanout {
            targets: txs.iter().cloned().map(Some).collect(),
            buf: Vec::with_capacity(TARGET_CHUNK_BYTES),
            hasher: (stored_hash == StoredHash::Record).then(Sha256::new),
            total: 0,
            counters,
        }
    }

    pub(super) fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(TARGET_CHUNK_BYTES),
        ));
        for slot in &mut self.targets {
            if let Some(tx) = slot {
                if tx.blocking_send(Piece::Data(data.clone())).is_err() {
                    // That target's upload failed; it reports why.
                    *slot = None;
                }
            }
        }
        if self.targets.iter().all(Option::is_none) {
            return Err(std::io::Error::other("every target failed"));
        }
        Ok(())
    }

    pub(super) fn stored_sha256(&mut self) -> Option<String> {
        self.hasher
            .take()
            .map(|h| hex::encode(sha2::Digest::finalize(h)))
    }
}

impl Write for Fanout<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = TARGET_CHUNK_BYTES - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if let Some(h) = self.hasher.as_mut() {
            h.update(&data[..n]);
        }
        self.total += n as u64;
        self.counters
            .stored_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        if self.buf.len() >= TARGET_CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns a queue of pieces into the reader a target consumes: EOF only on
/// `End`, an error on `Failed` or on a queue closed without `End`.
pub fn piece_reader(rx: mpsc::Receiver<Piece>) -> ByteReader {
    let stream = futures::stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(Piece::Data(b)) => Some((Ok(b), (rx, false))),
            Some(Piece::End) => None,
            Some(Piece::Failed(e)) => Some((Err(std::io::Error::other(e)), (rx, true))),
            None => Some((
                Err(std::io::Error::other(
                    "the backup stream stopped before its end",
                )),
                (rx, true),
            )),
        }
    });
    Box::pin(tokio_util::io::StreamReader::new(stream))
}
