//! The on-disk record frame of the queue's segments:
//! `[u32 len][u32 crc32(body)][body]`, where body is
//! `[u64 id][u8 signal][u32 items][u16 n][n × (u64 file, u64 offset)][payload]`.
//! Encoding, reading back one record, and finding the next whole record
//! after a damaged one: everything that knows the byte layout, apart from
//! the queue's bookkeeping.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use super::{Entry, FilePosition, Signal};

pub(super) const HEADER: usize = 8;
/// Largest record body the queue writes and reads back (the same number at
/// both ends: `append` refuses anything larger). Above the receiver's
/// largest request and the tailer's largest batch, which must stay below it.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
pub(super) const MAX_RECORD: usize = MAX_RECORD_BYTES;

/// Bytes of the body before the positions: id, signal, items, n.
pub(super) const META: usize = 8 + 1 + 4 + 2;

/// A record's frame up to (not including) its payload; the checksum covers
/// the rest of the frame and the payload, which is written from the
/// caller's buffer as it is (not copied into the frame).
pub(super) fn encode_head(id: u64, entry: &Entry) -> Vec<u8> {
    let n = entry.positions.len().min(u16::MAX as usize);
    let body_len = META + n * 16 + entry.payload.len();
    let mut buf = Vec::with_capacity(HEADER + META + n * 16);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(entry.signal.to_byte());
    buf.extend_from_slice(&entry.items.to_le_bytes());
    buf.extend_from_slice(&(n as u16).to_le_bytes());
    for p in entry.positions.iter().take(n) {
        buf.extend_from_slice(&p.file_id.to_le_bytes());
        buf.extend_from_slice(&p.offset.to_le_bytes());
    }
    let mut sum = crc32fast::Hasher::new();
    sum.update(&buf[HEADER..]);
    sum.update(&entry.payload);
    let sum = sum.finalize();
    buf[4..8].copy_from_slice(&sum.to_le_bytes());
    buf
}

/// Writes `head` then `payload` (one record) with as few system calls as
/// the kernel allows.
pub(super) fn write_record(file: &mut File, head: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let mut parts = [head, payload];
    while !parts[0].is_empty() || !parts[1].is_empty() {
        let n = file.write_vectored(&[
            std::io::IoSlice::new(parts[0]),
            std::io::IoSlice::new(parts[1]),
        ])?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let first = n.min(parts[0].len());
        parts[0] = &parts[0][first..];
        parts[1] = &parts[1][n - first..];
    }
    Ok(())
}

/// A record's body read back: the part before the payload, and the payload
/// in its own buffer (handed to the exporter without another copy).
pub(super) struct RawRecord {
    head: Vec<u8>,
    payload: Vec<u8>,
}

/// Ids a queue ever gives out stay below this (a million records a second
/// for 290 000 years); one above is damage, and `id + 1` cannot overflow.
pub(super) const MAX_ID: u64 = 1 << 63;

pub(super) fn decode(record: RawRecord) -> Option<(u64, Entry)> {
    let body = &record.head;
    let take = |range: std::ops::Range<usize>| body.get(range);
    let id = u64::from_le_bytes(take(0..8)?.try_into().ok()?);
    if id >= MAX_ID {
        return None;
    }
    let signal = Signal::from_byte(*body.get(8)?)?;
    let items = u32::from_le_bytes(take(9..13)?.try_into().ok()?);
    let n = u16::from_le_bytes(take(13..15)?.try_into().ok()?) as usize;
    let mut at = META;
    let mut positions = Vec::with_capacity(n);
    for _ in 0..n {
        let file_id = u64::from_le_bytes(take(at..at + 8)?.try_into().ok()?);
        let offset = u64::from_le_bytes(take(at + 8..at + 16)?.try_into().ok()?);
        positions.push(FilePosition { file_id, offset });
        at += 16;
    }
    Some((
        id,
        Entry {
            signal,
            items,
            positions,
            payload: record.payload,
        },
    ))
}

/// Reads `len` bytes at `off` into a new buffer without zeroing it first.
pub(super) fn read_exact_new(file: &File, off: u64, len: usize) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut reader = file;
    reader.seek(SeekFrom::Start(off)).ok()?;
    let mut buf = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut buf).ok()?;
    (buf.len() == len).then_some(buf)
}

/// Reads the record at `off` of `file`: `Ok(None)` at a clean end,
/// `Err(())` for a torn or corrupt record.
pub(super) fn read_record(
    file: &File,
    off: u64,
    file_len: u64,
) -> Result<Option<(RawRecord, u64)>, ()> {
    if off == file_len {
        return Ok(None);
    }
    if off + (HEADER + META) as u64 > file_len {
        return Err(());
    }
    let mut header = [0u8; HEADER + META];
    file.read_exact_at(&mut header, off).map_err(|_| ())?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let sum = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let n = u16::from_le_bytes([header[HEADER + 13], header[HEADER + 14]]) as usize;
    let head_len = META + n * 16;
    if len > MAX_RECORD || len < head_len || off + (HEADER + len) as u64 > file_len {
        return Err(());
    }
    let head = if n == 0 {
        header[HEADER..].to_vec()
    } else {
        read_exact_new(file, off + HEADER as u64, head_len).ok_or(())?
    };
    let payload =
        read_exact_new(file, off + (HEADER + head_len) as u64, len - head_len).ok_or(())?;
    let mut check = crc32fast::Hasher::new();
    check.update(&head);
    check.update(&payload);
    if check.finalize() != sum {
        return Err(());
    }
    Ok(Some((
        RawRecord { head, payload },
        off + (HEADER + len) as u64,
    )))
}

/// Where the first good record after the corrupt one at `off` starts, or
/// `None` when nothing after it reads back. A damaged body with an intact
/// length skips just that frame; a damaged length is found again by
/// scanning for the next frame whose checksum holds (a false match needs a
/// CRC-32 collision on a plausible length).
pub(super) fn resync(file: &File, off: u64, file_len: u64) -> Option<u64> {
    let mut len = [0u8; 4];
    if file.read_exact_at(&mut len, off).is_ok() {
        let next = off + HEADER as u64 + u64::from(u32::from_le_bytes(len));
        if next <= file_len && matches!(read_record(file, next, file_len), Ok(Some(_))) {
            return Some(next);
        }
    }
    (off + 1..file_len).find(|&at| matches!(read_record(file, at, file_len), Ok(Some(_))))
}
