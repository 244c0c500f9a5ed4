//! Redis jobs: an RDB snapshot taken over the replication protocol, as
//! `redis-cli --rdb` does, so Steward needs no access to the server's data
//! directory: connect, AUTH, `INFO` (version and key counts per database
//! at snapshot time), `REPLCONF capa eof` and `REPLCONF rdb-only 1`, `SYNC`,
//! then the payload in either framing (`$<len>` after a disk-based BGSAVE,
//! `$EOF:<mark>` when diskless) streams into the pipeline. The stream is
//! whole only when its RDB structure and CRC-64 check out
//! ([`rdb::RdbChecker`]): a server restarted or a connection dropped
//! mid-transfer makes `finish` fail, and no snapshot is recorded.

pub mod rdb;
pub mod resp;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use tokio::io::AsyncReadExt;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::manifest::{ObjectRole, RedisDbKeys, RedisInfo};
use crate::source::{ChunkReceiver, PlannedObject, Source};
use crate::target::ByteReader;
use rdb::{Framing, RdbChecker};
use resp::{Client, RedisEndpoint, RedisTls, Reply};

/// The object name of the snapshot's RDB file.
pub const OBJECT_NAME: &str = "redis/dump.rdb.zst.age";
/// A transfer with no byte for this long has stalled (Redis's own
/// `repl-timeout` default); while a disk-based BGSAVE runs the server
/// sends a newline every second, so a live server never gets near it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes per buffer: reads from the server fill a fresh buffer this
/// large, which then goes to the pipeline as it is (no copy).
const CHUNK_BYTES: usize = 256 * 1024;
/// Filled buffers waiting for the pipeline (1 MiB): while they wait, the
/// socket's own buffer takes the server's writes.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The job's server: `socket`, else `host` (127.0.0.1) and `port` (6379),
/// over TLS with `tls = true`.
pub fn endpoint(job: &JobConfig) -> RedisEndpoint {
    RedisEndpoint {
        host: job.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
        port: job.port.unwrap_or(6379),
        socket: job.socket.clone(),
        user: job.user.clone(),
        password: job.password.clone(),
        tls: job.tls.then(|| RedisTls {
            ca_file: job.tls_ca_file.clone(),
            cert_file: job.tls_cert_file.clone(),
            key_file: job.tls_key_file.clone(),
            server_name: job.tls_server_name.clone(),
        }),
    }
}

/// A Redis job's one object and where its facts land.
pub struct RedisPlan {
    pub object: PlannedObject,
    /// Filled by the source: version and key counts when the transfer
    /// started, RDB size once it ended whole.
    pub info: Arc<Mutex<Option<RedisInfo>>>,
}

pub fn plan(job_name: &str, job: &JobConfig) -> RedisPlan {
    let source = RdbSource::new(job_name, endpoint(job));
    let info = Arc::clone(&source.info);
    RedisPlan {
        object: PlannedObject {
            name: OBJECT_NAME.to_string(),
            role: ObjectRole::RedisRdb,
            database: None,
            source: Box::new(source),
        },
        info,
    }
}

/// The RDB stream of one server.
pub struct RdbSource {
    description: String,
    endpoint: RedisEndpoint,
    info: Arc<Mutex<Option<RedisInfo>>>,
    transfer: Option<tokio::task::JoinHandle<Result<rdb::RdbSummary>>>,
}

impl RdbSource {
    pub fn new(job_name: &str, endpoint: RedisEndpoint) -> Self {
        RdbSource {
            description: format!(
                "job {job_name}: RDB snapshot of Redis at {}",
                endpoint.describe()
            ),
            endpoint,
            info: Arc::new(Mutex::new(None)),
            transfer: None,
        }
    }
}

impl RdbSource {
    /// Connects, asks for the RDB and starts the task that reads it into
    /// the returned receiver.
    async fn start(&mut self) -> Result<ChunkReceiver> {
        let what = self.description.clone();
        let fail = |e: Error| Error::Source(format!("{what}: {e}"));
        let mut client = Client::connect(&self.endpoint).await.map_err(fail)?;
        let server = resp::parse_info(&client.info().await.map_err(fail)?);
        if server.version.is_empty() {
            return Err(fail(Error::Source(format!(
                "the INFO of {} has no redis_version; is this a Redis server?",
                client.at()
            ))));
        }
        if let Ok(mut slot) = self.info.lock() {
            *slot = Some(RedisInfo {
                version: server.version.clone(),
                rdb_bytes: 0,
                rdb_version: 0,
                keyspace: (server.keyspace.iter())
                    .map(|&(db, keys, expires)| RedisDbKeys { db, keys, expires })
                    .collect(),
            });
        }
        // Diskless transfers need `capa eof`; `rdb-only` (Redis 7+) tells
        // the server no command stream follows. Older servers refuse the
        // latter, which changes nothing for one RDB.
        for args in [
            &[&b"REPLCONF"[..], b"capa", b"eof"][..],
            &[b"REPLCONF", b"rdb-only", b"1"],
        ] {
            match client.command(args).await.map_err(fail)? {
                Reply::Error(e) if e.starts_with("NOPERM") || e.starts_with("NOAUTH") => {
                    return Err(fail(Error::Source(format!(
                        "Redis at {} refused REPLCONF: {e}; the job's user needs `+replconf +sync +info` (ACL SETUSER)",
                        client.at()
                    ))))
                }
                _ => {}
            }
        }
        client.send(&[b"SYNC"]).await.map_err(fail)?;
        let framing = read_announcement(&mut client).await.map_err(fail)?;
        let (chunks_tx, chunks) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let at = client.at().to_string();
        let info = Arc::clone(&self.info);
        self.transfer = Some(tokio::spawn(async move {
            let summary = transfer(client, framing, chunks_tx).await?;
            if let Ok(mut slot) = info.lock() {
                if let Some(i) = slot.as_mut() {
                    i.rdb_bytes = summary.bytes;
                    i.rdb_version = summary.version;
                }
            }
            Ok(summary)
        }));
        tracing::debug!("{what}: transfer from {at} started");
        Ok(chunks)
    }
}

#[async_trait]
impl Source for RdbSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn open(&mut self) -> Result<ByteReader> {
        let chunks = self.start().await?;
        let stream = futures::stream::unfold(chunks, |mut chunks| async move {
            chunks
                .recv()
                .await
                .map(|b| (Ok::<_, std::io::Error>(b), chunks))
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }

    async fn open_chunks(&mut self) -> Result<Option<ChunkReceiver>> {
        self.start().await.map(Some)
    }

    async fn finish(&mut self) -> Result<()> {
        let Some(handle) = self.transfer.take() else {
            return Err(Error::Source(format!(
                "{}: the transfer never started",
                self.description
            )));
        };
        match handle.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::Source(format!("{}: {e}", self.description))),
            Err(e) => Err(Error::Internal(format!(
                "{}: transfer task failed: {e}",
                self.description
            ))),
        }
    }
}

/// Reads past the keep-alive newlines to the `$...` line after `SYNC`.
async fn read_announcement(client: &mut Client) -> Result<Framing> {
    loop {
        let line = tokio::time::timeout(IDLE_TIMEOUT, client.read_line())
            .await
            .map_err(|_| {
                Error::Source(format!(
                    "Redis at {} sent nothing for {}s after SYNC",
                    client.at(),
                    IDLE_TIMEOUT.as_secs()
                ))
            })??;
        if line.is_empty() {
            continue; // "\n" while the server prepares the RDB.
        }
        if let Some(e) = line.strip_prefix(b"-") {
            let e = String::from_utf8_lossy(e);
            return Err(Error::Source(format!(
                "Redis at {} refused SYNC: {e}; the job's user needs `+sync +replconf +info`, and a replica cannot serve SYNC while it is not connected to its master",
                client.at()
            )));
        }
        return rdb::parse_announcement(&line).ok_or_else(|| client.not_redis(&line));
    }
}

/// Reads the payload into buffers for `out`, checking its structure on
/// the way. Each buffer is filled up to [`CHUNK_BYTES`] before it goes
/// on: fewer, fuller hand-offs than one per socket read. With the `$EOF:`
/// framing the last [`rdb::MARK_BYTES`] bytes received may be the end
/// mark, so they start the next buffer instead of going on.
async fn transfer(
    client: Client,
    framing: Framing,
    out: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<rdb::RdbSummary> {
    let at = client.at().to_string();
    // Past what the reply parser already read ahead, read the connection
    // itself: through the BufReader, reads smaller than its buffer would
    // land in it first and be copied out.
    let pending = client.io.buffer().to_vec();
    let mut io = std::io::Cursor::new(pending).chain(client.io.into_inner());
    let mut checker = RdbChecker::new();
    let mut received: u64 = 0;
    let mut carry: Vec<u8> = Vec::new();
    let lost = |received: u64, why: String| {
        Error::Source(format!(
            "the transfer from Redis at {at} broke after {received} bytes: {why}; no snapshot was recorded (was redis-server restarted?)"
        ))
    };
    let stopped = || Error::Source("the backup pipeline stopped reading".into());
    'chunks: loop {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES + rdb::MARK_BYTES);
        buf.extend_from_slice(&carry);
        carry.clear();
        let mut ended = false;
        while buf.len() < CHUNK_BYTES {
            let room = CHUNK_BYTES + rdb::MARK_BYTES - buf.len();
            let want = match &framing {
                Framing::Sized(total) => {
                    let left = total - received;
                    if left == 0 {
                        ended = true;
                        break;
                    }
                    left.min(room as u64) as usize
                }
                Framing::Mark(_) => room,
            };
            let mut window = (&mut buf).limit(want);
            let read = io.read_buf(&mut window);
            let n = match tokio::time::timeout(IDLE_TIMEOUT, read).await {
                Err(_) => {
                    return Err(lost(
                        received,
                        format!("nothing arrived for {}s", IDLE_TIMEOUT.as_secs()),
                    ))
                }
                Ok(Err(e)) => return Err(lost(received, e.to_string())),
                Ok(Ok(0)) => return Err(lost(received, "the server closed the connection".into())),
                Ok(Ok(n)) => n,
            };
            received += n as u64;
            if let Framing::Mark(mark) = &framing {
                if buf.ends_with(mark) {
                    buf.truncate(buf.len() - mark.len());
                    ended = true;
                    break;
                }
            }
        }
        if let (Framing::Mark(_), false) = (&framing, ended) {
            let keep = buf.len().min(rdb::MARK_BYTES);
            carry.extend_from_slice(&buf[buf.len() - keep..]);
            buf.truncate(buf.len() - keep);
        }
        if !buf.is_empty() {
            checker.update(&buf);
            out.send(buf.freeze()).await.map_err(|_| stopped())?;
        }
        if ended {
            break 'chunks;
        }
    }
    drop(out);
    checker.finish().map_err(|e| {
        Error::Source(format!(
            "the RDB received from Redis at {at} is not whole: {e}; no snapshot was recorded"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crc_fast::{CrcAlgorithm, Digest};
    use tokio::io::AsyncWriteExt;

    /// A valid RDB of about `len` bytes: header, body, EOF opcode, CRC-64.
    fn rdb(len: usize) -> Vec<u8> {
        let mut v = b"REDIS0011".to_vec();
        v.extend((0..len).map(|i| (i * 7 % 251) as u8 | 1));
        v.push(0xFF);
        let mut d = Digest::new(CrcAlgorithm::Crc64Redis);
        d.update(&v);
        v.extend_from_slice(&d.finalize().to_le_bytes());
        v
    }

    /// Runs `transfer` over an in-memory connection on which `stream` is
    /// written `piece` bytes at a time; returns what reached the pipeline.
    async fn through(stream: Vec<u8>, framing: Framing, piece: usize) -> Result<Vec<u8>> {
        let (server, ours) = tokio::io::duplex(64 * 1024);
        let client = Client::over(Box::new(ours), "test");
        let writer = tokio::spawn(async move {
            let mut server = server;
            for p in stream.chunks(piece) {
                if server.write_all(p).await.is_err() {
                    return;
                }
            }
            // Keep the connection open, as Redis does after the payload.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(CHUNKS_IN_FLIGHT);
        let collect = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(b) = rx.recv().await {
                assert!(b.len() <= CHUNK_BYTES + rdb::MARK_BYTES);
                got.extend_from_slice(&b);
            }
            got
        });
        // As after the announcement line: the client has read ahead.
        let mut client = client;
        tokio::io::AsyncBufReadExt::fill_buf(&mut client.io)
            .await
            .unwrap();
        assert!(!client.io.buffer().is_empty());
        let summary = transfer(client, framing, tx).await;
        writer.abort();
        let got = collect.await.unwrap();
        summary.map(|s| {
            assert_eq!(s.bytes, got.len() as u64);
            got
        })
    }

    #[tokio::test]
    async fn the_end_mark_is_found_across_reads_and_buffers_and_not_passed_on() {
        let mark = b"0123456789abcdef0123456789abcdef01234567".to_vec();
        let payload = rdb(3 * CHUNK_BYTES + 1000);
        // Pieces that split the mark, and a buffer boundary inside it.
        for piece in [7, 4096, CHUNK_BYTES - 20, 1 << 20] {
            let mut stream = payload.clone();
            stream.extend_from_slice(&mark);
            let got = through(stream, Framing::Mark(mark.clone()), piece)
                .await
                .unwrap();
            assert!(got == payload, "piece size {piece}");
        }
        // A payload that ends just short of a full buffer: the buffer
        // fills with the payload's end and the mark's first bytes, which
        // must be held back and found with the rest in the next one.
        let payload = rdb(CHUNK_BYTES - 28);
        assert_eq!(payload.len(), CHUNK_BYTES - 10);
        let mut stream = payload.clone();
        stream.extend_from_slice(&mark);
        let got = through(stream, Framing::Mark(mark.clone()), 64 * 1024)
            .await
            .unwrap();
        assert!(got == payload);
    }

    #[tokio::test]
    async fn a_sized_payload_ends_at_its_length_and_passes_nothing_after() {
        let payload = rdb(CHUNK_BYTES + 123);
        let mut stream = payload.clone();
        // A server that is not in rdb-only mode goes on with commands.
        stream.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let got = through(stream, Framing::Sized(payload.len() as u64), 5000)
            .await
            .unwrap();
        assert!(got == payload);
    }

    #[tokio::test]
    async fn a_damaged_payload_is_refused() {
        let mark = [b'm'; 40].to_vec();
        let mut payload = rdb(1000);
        payload[500] ^= 0x10;
        let mut stream = payload.clone();
        stream.extend_from_slice(&mark);
        let e = through(stream, Framing::Mark(mark), 100)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not whole"), "{e}");
    }
}
