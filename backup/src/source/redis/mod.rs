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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::manifest::{ObjectRole, RedisDbKeys, RedisInfo};
use crate::source::{PlannedObject, Source};
use crate::target::ByteReader;
use rdb::{Framing, RdbChecker};
use resp::{Client, RedisEndpoint, RedisTls, Reply};

/// The object name of the snapshot's RDB file.
pub const OBJECT_NAME: &str = "redis/dump.rdb.zst.age";
/// A transfer with no byte for this long has stalled (Redis's own
/// `repl-timeout` default); while a disk-based BGSAVE runs the server
/// sends a newline every second, so a live server never gets near it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Read size from the server; the pipeline reads 1 MiB chunks.
const READ_BYTES: usize = 256 * 1024;

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

#[async_trait]
impl Source for RdbSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn open(&mut self) -> Result<ByteReader> {
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
        let (reader, writer) = tokio::io::duplex(1024 * 1024);
        let at = client.at().to_string();
        let info = Arc::clone(&self.info);
        self.transfer = Some(tokio::spawn(async move {
            let summary = transfer(client, framing, writer).await?;
            if let Ok(mut slot) = info.lock() {
                if let Some(i) = slot.as_mut() {
                    i.rdb_bytes = summary.bytes;
                    i.rdb_version = summary.version;
                }
            }
            Ok(summary)
        }));
        tracing::debug!("{what}: transfer from {at} started");
        Ok(Box::pin(reader))
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

/// Copies the payload to `out`, checking its structure on the way.
async fn transfer(
    client: Client,
    framing: Framing,
    mut out: tokio::io::DuplexStream,
) -> Result<rdb::RdbSummary> {
    let at = client.at().to_string();
    let mut io = client.io;
    let mut checker = RdbChecker::new();
    let mut buf = vec![0u8; READ_BYTES];
    let mut received: u64 = 0;
    let mut held: Vec<u8> = Vec::new();
    let lost = |received: u64, why: String| {
        Error::Source(format!(
            "the transfer from Redis at {at} broke after {received} bytes: {why}; no snapshot was recorded (was redis-server restarted?)"
        ))
    };
    let write_err =
        |e: std::io::Error| Error::Source(format!("the backup pipeline stopped reading: {e}"));
    loop {
        let want = match &framing {
            Framing::Sized(total) => {
                let left = total - received;
                if left == 0 {
                    break;
                }
                left.min(READ_BYTES as u64) as usize
            }
            Framing::Mark(_) => READ_BYTES,
        };
        let n = match tokio::time::timeout(IDLE_TIMEOUT, io.read(&mut buf[..want])).await {
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
        let chunk = &buf[..n];
        match &framing {
            Framing::Sized(_) => {
                checker.update(chunk);
                out.write_all(chunk).await.map_err(write_err)?;
            }
            Framing::Mark(mark) => {
                if held.len() + n <= 2 * rdb::MARK_BYTES || n < rdb::MARK_BYTES {
                    held.extend_from_slice(chunk);
                    let (pass, end) = rdb::split_marked(&mut held, mark);
                    checker.update(&pass);
                    out.write_all(&pass).await.map_err(write_err)?;
                    if end {
                        break;
                    }
                } else {
                    // Everything held is payload now; the chunk's last
                    // MARK_BYTES may be the mark.
                    let cut = n - rdb::MARK_BYTES;
                    let before = std::mem::take(&mut held);
                    checker.update(&before);
                    out.write_all(&before).await.map_err(write_err)?;
                    checker.update(&chunk[..cut]);
                    out.write_all(&chunk[..cut]).await.map_err(write_err)?;
                    if &chunk[cut..] == mark.as_slice() {
                        break;
                    }
                    held.extend_from_slice(&chunk[cut..]);
                }
            }
        }
    }
    out.shutdown().await.map_err(write_err)?;
    checker.finish().map_err(|e| {
        Error::Source(format!(
            "the RDB received from Redis at {at} is not whole: {e}; no snapshot was recorded"
        ))
    })
}
