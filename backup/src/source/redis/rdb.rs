//! The RDB file's outer structure, checked while it streams: the `REDIS`
//! magic and 4-digit version up front, the EOF opcode (0xFF) and the CRC-64
//! (Jones, Redis's `crc64`) of every byte before it in the last 8 bytes.
//! A transfer cut short, a restarted server or a flipped byte fails this;
//! snapshot, restore and verify all use it. Also the replication
//! protocol's two payload framings (`$<len>` and `$EOF:<mark>`).

use crc_fast::{CrcAlgorithm, Digest};

/// The 40-byte end mark of a diskless (`$EOF:`) transfer.
pub const MARK_BYTES: usize = 40;

/// What a well-formed RDB file said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbSummary {
    /// RDB format version (10 for Redis 7.0, 11 for 7.2, 12 for 7.4).
    pub version: u32,
    pub bytes: u64,
    /// The CRC-64 it carries; `None` when written with `rdbchecksum no`.
    pub checksum: Option<u64>,
}

/// Streaming structure check of an RDB file.
pub struct RdbChecker {
    head: Vec<u8>,
    crc: Digest,
    /// The last 8 bytes seen: the checksum, once the stream ended.
    held: Vec<u8>,
    /// The last byte that went into the CRC: must be the EOF opcode.
    last_crc_byte: Option<u8>,
    bytes: u64,
}

impl Default for RdbChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl RdbChecker {
    pub fn new() -> Self {
        RdbChecker {
            head: Vec::with_capacity(9),
            crc: Digest::new(CrcAlgorithm::Crc64Redis),
            held: Vec::with_capacity(16),
            last_crc_byte: None,
            bytes: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.head.len() < 9 {
            let n = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
        }
        if data.len() >= 8 {
            let held = std::mem::take(&mut self.held);
            self.feed(&held);
            let cut = data.len() - 8;
            self.feed(&data[..cut]);
            self.held.extend_from_slice(&data[cut..]);
        } else {
            self.held.extend_from_slice(data);
            if self.held.len() > 8 {
                let cut = self.held.len() - 8;
                let front: Vec<u8> = self.held.drain(..cut).collect();
                self.feed(&front);
            }
        }
    }

    fn feed(&mut self, data: &[u8]) {
        if let Some(&b) = data.last() {
            self.crc.update(data);
            self.last_crc_byte = Some(b);
        }
    }

    /// Checks what was seen; the error says what is wrong.
    pub fn finish(&self) -> Result<RdbSummary, String> {
        let version = header_version(&self.head).ok_or_else(|| {
            if self.bytes < 9 {
                format!("{} bytes is too short for an RDB file", self.bytes)
            } else {
                "it does not start with the RDB magic \"REDIS\" and a 4-digit version".to_string()
            }
        })?;
        if self.held.len() < 8 || self.bytes < 18 {
            return Err(format!("{} bytes is too short for an RDB file", self.bytes));
        }
        if self.last_crc_byte != Some(0xFF) {
            return Err(
                "it does not end with the RDB end-of-file opcode: the file is truncated".into(),
            );
        }
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&self.held);
        let stored = u64::from_le_bytes(stored);
        if stored == 0 {
            // `rdbchecksum no` writes zeros.
            return Ok(RdbSummary {
                version,
                bytes: self.bytes,
                checksum: None,
            });
        }
        let computed = self.crc.finalize();
        if computed != stored {
            return Err(format!(
                "its CRC-64 is {computed:016x} but the file records {stored:016x}: the file is damaged or truncated"
            ));
        }
        Ok(RdbSummary {
            version,
            bytes: self.bytes,
            checksum: Some(stored),
        })
    }
}

/// The version of an RDB header (`REDIS0010` -> 10).
pub fn header_version(head: &[u8]) -> Option<u32> {
    if head.len() < 9 || &head[..5] != b"REDIS" {
        return None;
    }
    let digits = std::str::from_utf8(&head[5..9]).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How the server frames the RDB payload after `SYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// `$<len>`: a disk-based transfer of exactly this many bytes.
    Sized(u64),
    /// `$EOF:<40 bytes>`: diskless; the payload ends with this mark.
    Mark(Vec<u8>),
}

/// Parses the payload announcement line (without `\r\n`).
pub fn parse_announcement(line: &[u8]) -> Option<Framing> {
    let rest = line.strip_prefix(b"$")?;
    if let Some(mark) = rest.strip_prefix(b"EOF:") {
        return (mark.len() == MARK_BYTES).then(|| Framing::Mark(mark.to_vec()));
    }
    let n: u64 = std::str::from_utf8(rest).ok()?.parse().ok()?;
    Some(Framing::Sized(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid RDB: header, EOF opcode, CRC-64 of both.
    fn rdb(body: &[u8]) -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.extend_from_slice(body);
        v.push(0xFF);
        let mut d = Digest::new(CrcAlgorithm::Crc64Redis);
        d.update(&v);
        v.extend_from_slice(&d.finalize().to_le_bytes());
        v
    }

    fn check_in_pieces(data: &[u8], piece: usize) -> Result<RdbSummary, String> {
        let mut c = RdbChecker::new();
        for p in data.chunks(piece) {
            c.update(p);
        }
        c.finish()
    }

    #[test]
    fn crc_is_redis_crc64() {
        // The check value of Redis's crc64 (src/crc64.c's self test).
        let mut d = Digest::new(CrcAlgorithm::Crc64Redis);
        d.update(b"123456789");
        assert_eq!(d.finalize(), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn whole_files_pass_in_any_piece_size() {
        let f = rdb(&[0xFE, 0x00, 0xFB, 0x01, 0x00, 0x00, 0x01, b'k', 0x01, b'v']);
        for piece in [1, 3, 7, 8, 9, 64] {
            let s = check_in_pieces(&f, piece).unwrap();
            assert_eq!(s.version, 10);
            assert_eq!(s.bytes, f.len() as u64);
            assert!(s.checksum.is_some());
        }
    }

    #[test]
    fn truncation_and_damage_fail() {
        let f = rdb(b"some payload bytes");
        for cut in [0, 5, 9, f.len() - 9, f.len() - 1] {
            assert!(check_in_pieces(&f[..cut], 4).is_err(), "cut at {cut}");
        }
        let mut bad = f.clone();
        bad[12] ^= 1;
        let e = check_in_pieces(&bad, 5).unwrap_err();
        assert!(e.contains("CRC-64"), "{e}");
        assert!(check_in_pieces(b"HTTP/1.1 200 OK\r\n\r\nhello there", 4).is_err());
    }

    #[test]
    fn announcements() {
        assert_eq!(parse_announcement(b"$1234"), Some(Framing::Sized(1234)));
        let mark = [b'a'; 40];
        let mut line = b"$EOF:".to_vec();
        line.extend_from_slice(&mark);
        assert_eq!(
            parse_announcement(&line),
            Some(Framing::Mark(mark.to_vec()))
        );
        assert_eq!(parse_announcement(b"$EOF:short"), None);
        assert_eq!(parse_announcement(b"+OK"), None);
    }
}
