//! PostgreSQL WAL file names and LSNs: what `archive_command` may hand over
//! (segments, `.partial`, `.backup` labels, `.history`), which segment holds
//! an LSN, and which segment follows another.

use std::fmt;

use crate::error::{Error, Result};

/// The segment size of a default `initdb` (`--wal-segsize` changes it).
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// What an archived WAL file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalKind {
    /// A complete segment, `TTTTTTTTXXXXXXXXYYYYYYYY`.
    Segment,
    /// The last, incomplete segment of an old timeline after a promotion.
    Partial,
    /// A backup history file, `<segment>.<offset>.backup`.
    Backup,
    /// A timeline history file, `TTTTTTTT.history`.
    History,
}

/// A file name PostgreSQL archives, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalName {
    pub kind: WalKind,
    pub timeline: u32,
    /// The segment number over the whole WAL (`log * segs_per_log + seg`
    /// as written in the name: `XXXXXXXX` high, `YYYYYYYY` low), for
    /// segments, partials and backup labels; 0 for history files.
    pub log: u32,
    pub seg: u32,
    text: String,
}

fn hex8(s: &str) -> Option<u32> {
    // PostgreSQL writes upper case; a lower-case name would be a second
    // key for the same file.
    (s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')))
        .then(|| u32::from_str_radix(s, 16).ok())
        .flatten()
}

impl WalName {
    /// Parses a bare file name (no directory). Anything else than the four
    /// forms PostgreSQL archives is refused, so a name can never become a
    /// path or a key outside the archive.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "{name:?} is not a WAL file name (expected a segment such as 000000010000000000000003, \
                 or a .partial, .backup or .history file): give archive_command %p and restore_command %f"
            ))
        };
        let segment = |s: &str| -> Option<(u32, u32, u32)> {
            if s.len() != 24 {
                return None;
            }
            Some((hex8(&s[0..8])?, hex8(&s[8..16])?, hex8(&s[16..24])?))
        };
        let (kind, (timeline, log, seg)) = if let Some(tl) = name.strip_suffix(".history") {
            (WalKind::History, (hex8(tl).ok_or_else(bad)?, 0, 0))
        } else if let Some(s) = name.strip_suffix(".partial") {
            (WalKind::Partial, segment(s).ok_or_else(bad)?)
        } else if let Some(rest) = name.strip_suffix(".backup") {
            let (s, offset) = rest.split_once('.').ok_or_else(bad)?;
            hex8(offset).ok_or_else(bad)?;
            (WalKind::Backup, segment(s).ok_or_else(bad)?)
        } else {
            (WalKind::Segment, segment(name).ok_or_else(bad)?)
        };
        Ok(WalName {
            kind,
            timeline,
            log,
            seg,
            text: name.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segment's position in the WAL, comparable across names with
    /// the same segment size.
    pub fn position(&self, segment_bytes: u64) -> u64 {
        u64::from(self.log) * segs_per_log(segment_bytes) + u64::from(self.seg)
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Segments per `XXXXXXXX` step of the name (256 for 16 MiB segments).
pub fn segs_per_log(segment_bytes: u64) -> u64 {
    0x1_0000_0000 / segment_bytes.max(1)
}

/// The name of segment number `position` on `timeline`.
pub fn segment_name(timeline: u32, position: u64, segment_bytes: u64) -> String {
    let per = segs_per_log(segment_bytes);
    format!("{timeline:08X}{:08X}{:08X}", position / per, position % per)
}

/// A WAL location, `X/Y` in PostgreSQL's notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "{text:?} is not an LSN (expected two hex numbers as PostgreSQL writes them, e.g. 0/3000148)"
            ))
        };
        let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }

    /// The segment number holding this location.
    pub fn position(self, segment_bytes: u64) -> u64 {
        self.0 / segment_bytes.max(1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_archived_forms_parse_and_nothing_else() {
        let s = WalName::parse("000000010000000200000003").unwrap();
        assert_eq!(
            (s.kind, s.timeline, s.log, s.seg),
            (WalKind::Segment, 1, 2, 3)
        );
        assert_eq!(s.position(DEFAULT_SEGMENT_BYTES), 2 * 256 + 3);
        let p = WalName::parse("0000000100000000000000A1.partial").unwrap();
        assert_eq!((p.kind, p.seg), (WalKind::Partial, 0xA1));
        let b = WalName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(b.kind, WalKind::Backup);
        let h = WalName::parse("00000002.history").unwrap();
        assert_eq!((h.kind, h.timeline), (WalKind::History, 2));
        for bad in [
            "",
            "pg_wal/000000010000000000000003",
            "../000000010000000000000003",
            "00000001000000000000000",
            "0000000100000000000000031",
            "00000001000000000000000g",
            "0000000100000000000000a1",
            "000000010000000000000002.backup",
            "1.history",
            "000000010000000000000003.zst",
        ] {
            assert!(WalName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn segments_follow_each_other_across_the_log_boundary() {
        let seg = DEFAULT_SEGMENT_BYTES;
        assert_eq!(segment_name(1, 255, seg), "0000000100000000000000FF");
        assert_eq!(segment_name(1, 256, seg), "000000010000000100000000");
        let lsn = Lsn::parse("1/2000028").unwrap();
        assert_eq!(lsn.to_string(), "1/2000028");
        assert_eq!(
            segment_name(3, lsn.position(seg), seg),
            "000000030000000100000002"
        );
        assert!(Lsn::parse("12").is_err() && Lsn::parse("x/1").is_err());
    }
}
