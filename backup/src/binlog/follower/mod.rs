//! Steward's own binlog follower: a replication client that asks the
//! server for its binary logs from a file's start (`COM_BINLOG_DUMP`, as
//! `mariadb-binlog --read-from-remote-server --raw --stop-never` does)
//! and writes them into the spool byte for byte as that tool does, one
//! file per server file. It runs on a thread of its own with blocking
//! I/O, reads the socket in large pieces and writes what it read with
//! one `write` per piece: the shipper's scan sees whole events as soon as
//! they arrive. `mariadb-binlog` spent 1.7 s of CPU per GB of binlog
//! doing the same (BENCHMARKS.md, binlog section).

mod wire;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use wire::WireError;
use wire::{Conn, Stream, MAX_PAYLOAD};

use super::{EVENT_HEADER_BYTES, MAGIC};
use crate::config::JobConfig;

/// Read buffer: socket reads of up to this much.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Bytes gathered before a write to the spool file when more are
/// already buffered (otherwise every piece is written as it ends).
const WRITE_BATCH_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The server id the follower announces, `mariadb-binlog --stop-never`'s.
const FOLLOWER_SERVER_ID: u32 = 1;

// Event types and flags (MariaDB's log_event.h).
const ROTATE_EVENT: u8 = 4;
const HEARTBEAT_LOG_EVENT: u8 = 27;
const HEARTBEAT_LOG_EVENT_V2: u8 = 41;
const LOG_EVENT_ARTIFICIAL_F: u16 = 0x20;
/// COM_BINLOG_DUMP flag: send Annotate_rows events (the statement text
/// of row events), as `mariadb-binlog` asks.
const BINLOG_SEND_ANNOTATE_ROWS_EVENT: u16 = 2;
/// Longest rotate event accepted: a position and a file name.
const ROTATE_LIMIT: usize = 4096;

/// A follower running on its thread. Dropping it ends the connection
/// and waits for the thread, so no write lands in the spool afterwards.
pub(crate) struct Follower {
    stopper: Stream,
    stopped: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    done: Option<tokio::sync::oneshot::Receiver<WireError>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Follower")
    }
}

impl Follower {
    /// Connects, logs in and asks for the binlogs from `file`'s start;
    /// the files land in `spool` as they arrive. The server sends a
    /// heartbeat after `binlog_heartbeat_secs` of silence, so a read
    /// waiting 3 heartbeats + 5 s means the connection is dead (a server
    /// host that vanished leaves a TCP connection open forever otherwise).
    pub(crate) async fn start(
        job: &JobConfig,
        spool: &Path,
        file: &str,
    ) -> Result<Follower, WireError> {
        let (host, port, socket) = (
            job.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            job.port.unwrap_or(3306),
            job.socket.clone(),
        );
        let (user, password) = (job.user.clone().unwrap_or_default(), job.password.clone());
        let first = file.to_string();
        let heartbeat = Duration::from_secs(job.binlog_heartbeat_secs.max(1));
        let read_timeout = heartbeat * 3 + Duration::from_secs(5);
        let conn = tokio::task::spawn_blocking(move || -> Result<Conn, WireError> {
            let stream = match &socket {
                Some(path) => Stream::connect_unix(path)?,
                None => Stream::connect_tcp(&host, port, CONNECT_TIMEOUT)?,
            };
            stream.set_timeouts(Some(CONNECT_TIMEOUT * 3))?;
            let mut conn = Conn::new(stream, READ_BUFFER_BYTES);
            conn.login(&user, password.as_deref())?;
            request_dump(&mut conn, &first, heartbeat)?;
            conn.stream().set_timeouts(Some(read_timeout))?;
            Ok(conn)
        })
        .await
        .map_err(|e| WireError::Protocol(format!("the connecting task failed: {e}")))??;
        let stopper = conn.stream().try_clone()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spool = spool.to_path_buf();
        let flag = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("binlog-follow".into())
            .spawn(move || {
                let e = SpoolWriter::new(spool, flag).run(conn);
                let _ = tx.send(e);
            })?;
        Ok(Follower {
            stopper,
            stopped,
            thread: Some(thread),
            done: Some(rx),
        })
    }

    /// Waits until the follower stops, and why (it only stops on an
    /// error: the connection lost, the server's ERR).
    pub(crate) async fn stopped(&mut self) -> WireError {
        match self.done.as_mut() {
            Some(rx) => {
                let e = rx
                    .await
                    .unwrap_or_else(|_| WireError::Protocol("the follower thread ended".into()));
                self.done = None;
                e
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stopper.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What `mariadb-binlog --stop-never` sends before the dump: the server
/// sends events with their checksums as stored, GTID and annotate events
/// as MariaDB writes them (not rewritten for an old replica), and a
/// heartbeat when it has nothing to send.
fn request_dump(conn: &mut Conn, file: &str, heartbeat: Duration) -> Result<(), WireError> {
    conn.execute("SET @master_binlog_checksum='NONE'")?;
    conn.execute("SET @mariadb_slave_capability=4")?;
    conn.execute(&format!(
        "SET @master_heartbeat_period={}",
        heartbeat.as_nanos()
    ))?;
    let mut dump = vec![0x12];
    dump.extend_from_slice(&(MAGIC.len() as u32).to_le_bytes());
    dump.extend_from_slice(&BINLOG_SEND_ANNOTATE_ROWS_EVENT.to_le_bytes());
    dump.extend_from_slice(&FOLLOWER_SERVER_ID.to_le_bytes());
    dump.extend_from_slice(file.as_bytes());
    conn.command(&dump)?;
    Ok(())
}

/// The spool side: the file being written and the bytes not yet in it.
struct SpoolWriter {
    dir: PathBuf,
    stopped: Arc<AtomicBool>,
    file: Option<(String, File)>,
    pending: Vec<u8>,
}

impl SpoolWriter {
    fn new(dir: PathBuf, stopped: Arc<AtomicBool>) -> Self {
        SpoolWriter {
            dir,
            stopped,
            file: None,
            pending: Vec::with_capacity(WRITE_BATCH_BYTES + READ_BUFFER_BYTES),
        }
    }

    /// Follows until an error; returns it.
    fn run<S: std::io::Read + std::io::Write>(mut self, mut conn: Conn<S>) -> WireError {
        match self.follow(&mut conn) {
            Ok(never) => match never {},
            Err(e) => {
                let _ = self.flush();
                e
            }
        }
    }

    fn follow<S: std::io::Read + std::io::Write>(
        &mut self,
        conn: &mut Conn<S>,
    ) -> Result<std::convert::Infallible, WireError> {
        loop {
            // About to wait for the socket: what arrived goes to the file
            // first, so the shipper sees every whole event received.
            if !conn.has_whole_packet() || self.pending.len() >= WRITE_BATCH_BYTES {
                self.flush()?;
            }
            let len = conn.header()?;
            if len == 0 {
                return Err(WireError::Protocol(
                    "an empty packet in the binlog stream".into(),
                ));
            }
            conn.fill(1)?;
            match conn.buffered()[0] {
                0x00 => conn.consume(1),
                0xFF => {
                    let reply = conn.rest_of_message(len, 64 * 1024)?;
                    return Err(wire::server_error(&reply));
                }
                0xFE if len < 9 => {
                    return Err(WireError::Protocol(
                        "the server ended the binlog stream".into(),
                    ))
                }
                other => {
                    return Err(WireError::Protocol(format!(
                        "a packet starting 0x{other:02x} in the binlog stream"
                    )))
                }
            }
            self.event(conn, len - 1)?;
        }
    }

    /// One event whose first packet has `len` bytes left (more packets
    /// follow when that one is full).
    fn event<S: std::io::Read + std::io::Write>(
        &mut self,
        conn: &mut Conn<S>,
        len: usize,
    ) -> Result<(), WireError> {
        if len < EVENT_HEADER_BYTES {
            return Err(WireError::Protocol(format!(
                "an event of {len} bytes, shorter than its header"
            )));
        }
        conn.fill(EVENT_HEADER_BYTES)?;
        let h = &conn.buffered()[..EVENT_HEADER_BYTES];
        let kind = h[4];
        let size = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
        let log_pos = u32::from_le_bytes([h[13], h[14], h[15], h[16]]);
        let flags = u16::from_le_bytes([h[17], h[18]]);
        let continued = len + 1 == MAX_PAYLOAD;
        if (!continued && size != len) || (continued && size < len) {
            return Err(WireError::Protocol(format!(
                "an event claiming {size} bytes in a packet of {len}"
            )));
        }
        match kind {
            HEARTBEAT_LOG_EVENT | HEARTBEAT_LOG_EVENT_V2 => {
                conn.rest_of_message(len, ROTATE_LIMIT)?;
                Ok(())
            }
            ROTATE_EVENT => {
                let event = conn.rest_of_message(len, ROTATE_LIMIT)?;
                let next = rotate_target(&event)?;
                let artificial = flags & LOG_EVENT_ARTIFICIAL_F != 0 || log_pos == 0;
                if !artificial {
                    // The rotate written at the end of a file is part of it.
                    self.append(&event)?;
                }
                self.switch_to(&next)
            }
            _ => {
                if self.file.is_none() {
                    return Err(WireError::Protocol(
                        "an event before the server named its binlog file".into(),
                    ));
                }
                let mut left = len;
                let mut continues = continued;
                let mut got = 0;
                loop {
                    got += left;
                    // More than the header said: stop before writing it
                    // (a lying peer could otherwise fill the spool's disk).
                    if got > size {
                        return Err(WireError::Protocol(format!(
                            "an event claiming {size} bytes came in more"
                        )));
                    }
                    while left > 0 {
                        let piece = conn.piece(left)?;
                        left -= piece.len();
                        self.pending.extend_from_slice(piece);
                    }
                    if !continues {
                        if got != size {
                            return Err(WireError::Protocol(format!(
                                "an event claiming {size} bytes came in {got}"
                            )));
                        }
                        return Ok(());
                    }
                    left = conn.header()?;
                    continues = left == MAX_PAYLOAD;
                    if self.pending.len() >= WRITE_BATCH_BYTES {
                        self.flush()?;
                    }
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if self.file.is_none() {
            return Err(WireError::Protocol(
                "an event before the server named its binlog file".into(),
            ));
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// The server moved to (or named first) `name`: later events go
    /// there, in a new spool file that starts with the magic bytes.
    fn switch_to(&mut self, name: &str) -> Result<(), WireError> {
        if self.file.as_ref().is_some_and(|(n, _)| n == name) {
            return Ok(());
        }
        self.flush()?;
        self.file = None;
        if self.stopped.load(Ordering::SeqCst) {
            return Err(WireError::Protocol("stopped".into()));
        }
        let path = self.dir.join(name);
        let file = crate::private_fs::create_options()
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)?;
        self.file = Some((name.to_string(), file));
        self.pending.extend_from_slice(MAGIC);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WireError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // A dropped follower writes nothing more: the next one may have
        // cleared the spool.
        if self.stopped.load(Ordering::SeqCst) {
            return Err(WireError::Protocol("stopped".into()));
        }
        if let Some((_, f)) = self.file.as_mut() {
            f.write_all(&self.pending)?;
        }
        self.pending.clear();
        Ok(())
    }
}

/// The file a rotate event names: after the 8-byte position, up to the
/// checksum if the event has one (the server's artificial rotate has
/// none, the one at a file's end carries the file's CRC32). The name
/// becomes a spool file name, so it must be one a server writes.
fn rotate_target(event: &[u8]) -> Result<String, WireError> {
    let body = event.get(EVENT_HEADER_BYTES + 8..).unwrap_or_default();
    let n = event.len();
    let name = if n >= EVENT_HEADER_BYTES + 8 + 4
        && crc32fast::hash(&event[..n - 4]).to_le_bytes() == event[n - 4..]
    {
        &body[..body.len() - 4]
    } else {
        body
    };
    std::str::from_utf8(name)
        .ok()
        .filter(|n| super::is_valid_file_name(n))
        .map(str::to_string)
        .ok_or_else(|| {
            WireError::Protocol(format!(
                "a rotate event naming {:?}, not a binlog file name",
                String::from_utf8_lossy(name)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Read};

    fn event(kind: u8, log_pos: u32, flags: u16, body: &[u8], crc: bool) -> Vec<u8> {
        let size = (EVENT_HEADER_BYTES + body.len() + if crc { 4 } else { 0 }) as u32;
        let mut e = 1_700_000_000u32.to_le_bytes().to_vec();
        e.push(kind);
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&log_pos.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(body);
        if crc {
            let c = crc32fast::hash(&e);
            e.extend_from_slice(&c.to_le_bytes());
        }
        e
    }

    fn rotate(name: &str, artificial: bool) -> Vec<u8> {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(name.as_bytes());
        if artificial {
            event(ROTATE_EVENT, 0, LOG_EVENT_ARTIFICIAL_F, &body, false)
        } else {
            event(ROTATE_EVENT, 500, 0, &body, true)
        }
    }

    /// Packets of an event as the server sends them: a 0x00 status byte,
    /// split into full packets when long.
    fn packets(event: &[u8]) -> Vec<u8> {
        let mut payload = vec![0];
        payload.extend_from_slice(event);
        let mut out = Vec::new();
        let mut seq = 1u8;
        let mut rest = &payload[..];
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            out.push(seq);
            out.extend_from_slice(&rest[..n]);
            seq = seq.wrapping_add(1);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                return out;
            }
        }
    }

    struct Server(io::Cursor<Vec<u8>>);
    impl Read for Server {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Uneven pieces, as a socket gives them.
            let n = buf.len().min(7777);
            self.0.read(&mut buf[..n])
        }
    }
    impl Write for Server {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_each_server_file_as_the_server_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let fde = event(15, 256, 0, &[9; 200], true);
        let row = event(30, 1000, 0, &[5; 3000], true);
        // An event longer than one packet (a 20 MiB row).
        let huge = event(30, 0, 0, &vec![3u8; MAX_PAYLOAD + 5000], true);
        let heartbeat = event(
            HEARTBEAT_LOG_EVENT,
            0,
            LOG_EVENT_ARTIFICIAL_F,
            b"mysql-bin.000001",
            true,
        );
        let end_rotate = rotate("mysql-bin.000002", false);
        let mut wire = Vec::new();
        for e in [
            rotate("mysql-bin.000001", true),
            fde.clone(),
            row.clone(),
            heartbeat,
            huge.clone(),
            end_rotate.clone(),
            rotate("mysql-bin.000002", true),
            fde.clone(),
            row.clone(),
        ] {
            wire.extend(packets(&e));
        }
        let conn = Conn::new(Server(io::Cursor::new(wire)), 64 * 1024);
        let writer = SpoolWriter::new(dir.path().to_path_buf(), Arc::new(AtomicBool::new(false)));
        let e = writer.run(conn);
        assert!(e.to_string().contains("closed the connection"), "{e}");
        let first = std::fs::read(dir.path().join("mysql-bin.000001")).unwrap();
        let want: Vec<u8> = [&MAGIC[..], &fde, &row, &huge, &end_rotate].concat();
        assert!(
            first == want,
            "first file differs ({} vs {} bytes)",
            first.len(),
            want.len()
        );
        let second = std::fs::read(dir.path().join("mysql-bin.000002")).unwrap();
        assert_eq!(second, [&MAGIC[..], &fde, &row].concat());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn hostile_or_broken_streams_are_named_errors() {
        let run = |events: &[Vec<u8>]| {
            let dir = tempfile::tempdir().unwrap();
            let wire: Vec<u8> = events.iter().flat_map(|e| packets(e)).collect();
            let conn = Conn::new(Server(io::Cursor::new(wire)), 64 * 1024);
            let e = SpoolWriter::new(dir.path().to_path_buf(), Arc::new(AtomicBool::new(false)))
                .run(conn)
                .to_string();
            let files = std::fs::read_dir(dir.path()).unwrap().count();
            (e, files)
        };
        // A rotate to a path outside the spool.
        let (e, files) = run(&[rotate("../../etc/cron.d/x.000001", true)]);
        assert!(e.contains("not a binlog file name"), "{e}");
        assert_eq!(files, 0);
        // An event before any file was named.
        let (e, _) = run(&[event(30, 100, 0, &[1; 10], true)]);
        assert!(e.contains("before the server named"), "{e}");
        // A header whose size disagrees with the packet.
        let mut lying = event(30, 100, 0, &[1; 10], true);
        lying[9] = 200;
        let (e, _) = run(&[rotate("mysql-bin.000001", true), lying]);
        assert!(e.contains("claiming 200 bytes"), "{e}");
        // An event longer than one packet whose header claims less than
        // what follows: refused at the packet that goes past it, not
        // written on.
        let mut long = event(30, 100, 0, &vec![1; MAX_PAYLOAD + 5000], true);
        long[9..13].copy_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
        let (e, _) = run(&[rotate("mysql-bin.000001", true), long]);
        assert!(e.contains("came in more"), "{e}");
    }

    #[test]
    fn an_err_packet_in_the_stream_is_the_servers_error() {
        let mut err = vec![0xFF];
        err.extend_from_slice(&1236u16.to_le_bytes());
        err.extend_from_slice(b"#HY000Could not find first log file name in binary log index file");
        let mut wire = (err.len() as u32).to_le_bytes()[..3].to_vec();
        wire.push(1);
        wire.extend_from_slice(&err);
        let dir = tempfile::tempdir().unwrap();
        let e = SpoolWriter::new(dir.path().to_path_buf(), Arc::new(AtomicBool::new(false)))
            .run(Conn::new(Server(io::Cursor::new(wire)), 4096));
        assert_eq!(
            e.to_string(),
            "ERROR 1236: Could not find first log file name in binary log index file"
        );
    }
}
