//! MySQL/MariaDB point-in-time recovery: dumps record their binlog
//! position (crate::source::binlog_position), the binary logs are followed
//! by Steward's own replication client (`follower`) and shipped
//! continuously to the job's targets as encrypted segments ([`ship`]), what is on a target and
//! whether it is continuous ([`archive`]), and replaying them onto a
//! restored dump up to a time or position ([`replay`]).
//!
//! Segments live beside the job's snapshots, under a name no snapshot id
//! can take: `<host>/<job>/binlog/<file>/<start>-<end>.zst.age`, each with
//! a small `<start>-<end>.json` written after it (sizes, hashes, event
//! times), which makes the segment exist, as a manifest does a snapshot.

pub mod archive;
mod follower;
pub mod replay;
mod segment;
pub mod ship;
mod state;

/// The 4 bytes every binlog file starts with.
pub const MAGIC: &[u8; 4] = b"\xfebin";
/// Size of a v4 event header: timestamp, type, server id, size, next
/// position, flags.
pub const EVENT_HEADER_BYTES: usize = 19;

/// The sequence number of a binlog file name (`mysql-bin.000042` -> 42)
/// and its base name.
pub fn file_number(name: &str) -> Option<(&str, u64)> {
    let (base, ext) = name.rsplit_once('.')?;
    if base.is_empty() || ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, ext.parse().ok()?))
}

/// The file the server writes after `name` (`mysql-bin.000042` ->
/// `mysql-bin.000043`), keeping at least the same number of digits.
pub fn next_file(name: &str) -> Option<String> {
    let (base, n) = file_number(name)?;
    let width = name.len() - base.len() - 1;
    Some(format!("{base}.{:0width$}", n + 1))
}

/// Whether `name` can be a binlog file name from the server: a path
/// segment of letters, digits, `-`, `_`, `.` ending in `.<digits>`. Names
/// read from the bucket or a server go through this before they become
/// keys or local file names.
pub fn is_valid_file_name(name: &str) -> bool {
    crate::layout::is_valid_segment(name) && file_number(name).is_some()
}

/// Orders binlog file names by base name, then number (`.999999` before
/// `.1000000`).
pub fn file_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (file_number(a), file_number(b)) {
        (Some((ba, na)), Some((bb, nb))) => ba.cmp(bb).then(na.cmp(&nb)),
        _ => a.cmp(b),
    }
}

/// Where the complete events of a binlog byte stream end, scanning from
/// `start` (an event boundary, or 0 for the file's start) and the
/// timestamp of the last complete event seen. `bytes` are the stream's
/// bytes from `start` on; a trailing partial event (the server or the
/// client is still writing it) is left for the next scan.
pub fn complete_events(bytes: &[u8], start: u64) -> std::io::Result<EventScan> {
    let len = start + bytes.len() as u64;
    scan_events(len, start, |at, buf| {
        let from = (at - start) as usize;
        buf.copy_from_slice(&bytes[from..from + buf.len()]);
        Ok(())
    })
}

/// [`complete_events`] of a spooled binlog file as long as it is now. Only
/// the event headers are read (one positioned read each): the bodies are
/// skipped, not copied, so a scan costs per event, not per byte, and the
/// bytes are read once, by the pipeline that ships them.
pub fn complete_events_in_file(file: &std::fs::File, start: u64) -> std::io::Result<EventScan> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    scan_events(len, start, |at, buf| file.read_exact_at(buf, at))
}

/// The walk over event headers: `read_at(offset, buf)` fills `buf` with
/// the bytes at `offset`, all below `len`.
fn scan_events(
    len: u64,
    start: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<EventScan> {
    let mut pos = start;
    let mut scan = EventScan {
        end: start,
        last_event_time: None,
        newest_event_time: None,
        events: 0,
    };
    if start == 0 {
        if len < MAGIC.len() as u64 {
            return Ok(scan);
        }
        let mut magic = [0u8; 4];
        read_at(0, &mut magic)?;
        if &magic != MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a binlog file (bad magic number)",
            ));
        }
        pos = 4;
        scan.end = 4;
    }
    loop {
        if len - pos < EVENT_HEADER_BYTES as u64 {
            return Ok(scan);
        }
        let mut header = [0u8; EVENT_HEADER_BYTES];
        read_at(pos, &mut header)?;
        let time = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as u64;
        if size < EVENT_HEADER_BYTES as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("event at offset {pos} claims {size} bytes, less than its header"),
            ));
        }
        if len - pos < size {
            return Ok(scan);
        }
        pos += size;
        scan.end = pos;
        scan.events += 1;
        if time != 0 {
            let time = i64::from(time);
            scan.last_event_time = Some(time);
            scan.newest_event_time = scan.newest_event_time.max(Some(time));
        }
    }
}

/// What [`complete_events`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventScan {
    /// Offset just past the last complete event.
    pub end: u64,
    /// Unix time of the last complete event with a time.
    pub last_event_time: Option<i64>,
    /// The latest time of any complete event (event times need not rise:
    /// an event carries its statement's start time).
    pub newest_event_time: Option<i64>,
    pub events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time: u32, body: usize) -> Vec<u8> {
        let size = (EVENT_HEADER_BYTES + body) as u32;
        let mut e = Vec::new();
        e.extend_from_slice(&time.to_le_bytes());
        e.push(2);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend(std::iter::repeat_n(7u8, body));
        e
    }

    #[test]
    fn names_order_and_follow() {
        assert_eq!(file_number("mysql-bin.000042"), Some(("mysql-bin", 42)));
        assert_eq!(next_file("mysql-bin.000042").unwrap(), "mysql-bin.000043");
        assert_eq!(next_file("b.999999").unwrap(), "b.1000000");
        assert_eq!(
            file_order("b.999999", "b.1000000"),
            std::cmp::Ordering::Less
        );
        assert!(is_valid_file_name("mysql-bin.000001"));
        assert!(!is_valid_file_name("../x.000001"));
        assert!(!is_valid_file_name("mysql-bin.index"));
    }

    #[test]
    fn scan_stops_before_a_partial_event() {
        let mut file = MAGIC.to_vec();
        file.extend(event(100, 10));
        file.extend(event(200, 30));
        let whole = file.len() as u64;
        file.extend(&event(300, 50)[..25]);
        let scan = complete_events(&file[..], 0).unwrap();
        assert_eq!(scan.end, whole);
        assert_eq!(scan.last_event_time, Some(200));
        assert_eq!(scan.events, 2);
        // From a boundary in the middle.
        let from = 4 + (EVENT_HEADER_BYTES + 10) as u64;
        let rest = complete_events(&file[from as usize..], from).unwrap();
        assert_eq!(rest.end, whole);
        assert!(complete_events(&b"junk"[..], 0).is_err());
        // Event times need not rise (an event carries its statement's
        // start time): the newest is not always the last.
        let mut unordered = MAGIC.to_vec();
        unordered.extend(event(300, 10));
        unordered.extend(event(0, 10));
        unordered.extend(event(250, 10));
        let scan = complete_events(&unordered[..], 0).unwrap();
        assert_eq!(
            (scan.last_event_time, scan.newest_event_time),
            (Some(250), Some(300))
        );
        assert_eq!(complete_events(&MAGIC[..2], 0).unwrap().end, 0);
        let mut lying = MAGIC.to_vec();
        lying.extend(event(100, 0));
        lying[4 + 9] = 3; // an event of 3 bytes, shorter than its header
        assert!(complete_events(&lying[..], 0).is_err());
    }

    #[test]
    fn a_growing_file_is_scanned_by_headers_up_to_its_last_whole_event() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mysql-bin.000001");
        let mut w = std::fs::File::create(&path).unwrap();
        w.write_all(MAGIC).unwrap();
        w.write_all(&event(100, 5000)).unwrap();
        let first_end = 4 + (EVENT_HEADER_BYTES + 5000) as u64;
        let second = event(200, 70_000);
        w.write_all(&second[..30_000]).unwrap();
        let r = std::fs::File::open(&path).unwrap();
        let scan = complete_events_in_file(&r, 0).unwrap();
        assert_eq!(
            (scan.end, scan.events, scan.last_event_time),
            (first_end, 1, Some(100))
        );
        // The writer finishes the event: the next scan goes on from there.
        w.write_all(&second[30_000..]).unwrap();
        let rest = complete_events_in_file(&r, first_end).unwrap();
        assert_eq!(rest.end, first_end + second.len() as u64);
        assert_eq!((rest.events, rest.last_event_time), (1, Some(200)));
        let all = std::fs::read(&path).unwrap();
        assert_eq!(complete_events(&all, 0).unwrap().end, rest.end);
    }
}
