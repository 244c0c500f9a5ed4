//! The backup side's Redis connection: TCP (optionally TLS) or a unix
//! socket, AUTH (password or ACL user), and the few commands a snapshot
//! needs (INFO, REPLCONF, SYNC), each reply bounded so a peer that is not
//! Redis gets one clear error instead of an allocation or a hang. The
//! collector has its own client (exporters/src/redis); the two crates do
//! not depend on each other, and share only the TLS client side
//! (`steward-tls`).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::{Error, Result};

/// Longest status, error or length line accepted.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Largest bulk reply accepted (`INFO` is tens of kilobytes).
const MAX_BULK_BYTES: usize = 8 * 1024 * 1024;
/// Connecting and each command's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake takes milliseconds; a plain Redis port reads the
/// ClientHello as an unfinished command and never answers, which this
/// bound turns into an error saying so.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Redis server listens and who to be.
#[derive(Clone, Default)]
pub struct RedisEndpoint {
    pub host: String,
    pub port: u16,
    /// A unix socket, used instead of host and port when set.
    pub socket: Option<PathBuf>,
    /// ACL user (Redis 6+); the `default` user when unset.
    pub user: Option<String>,
    pub password: Option<String>,
    /// TLS over the TCP connection (`host`/`port` only).
    pub tls: Option<RedisTls>,
}

/// A job's TLS settings (its `tls_*` keys). The server's certificate is
/// always verified: against `ca_file`, else the web PKI roots.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name the certificate must carry; the endpoint's host when unset.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("RedisEndpoint")
            .field("at", &self.describe())
            .field("user", &self.user)
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisEndpoint {
    /// `127.0.0.1:6379`, `127.0.0.1:6380 over TLS` or the socket path,
    /// for messages.
    pub fn describe(&self) -> String {
        match (&self.socket, &self.tls) {
            (Some(s), _) => s.display().to_string(),
            (None, None) => format!("{}:{}", self.host, self.port),
            (None, Some(_)) => format!("{}:{} over TLS", self.host, self.port),
        }
    }
}

/// A byte stream to the server, TCP or unix.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
}

/// An open, authenticated connection.
pub struct Client {
    pub(crate) io: BufReader<Box<dyn Io>>,
    at: String,
    /// Over TLS: I/O errors may be the server's TLS alerts.
    tls: bool,
}

impl Client {
    /// A client over an already connected stream (tests).
    #[cfg(test)]
    pub(crate) fn over(io: Box<dyn Io>, at: &str) -> Self {
        Client {
            io: BufReader::with_capacity(256 * 1024, io),
            at: at.to_string(),
            tls: false,
        }
    }

    /// Connects and authenticates (when a password is set).
    pub async fn connect(endpoint: &RedisEndpoint) -> Result<Self> {
        let at = endpoint.describe();
        let io: Box<dyn Io> = match &endpoint.socket {
            Some(path) => {
                let s = tokio::time::timeout(REPLY_TIMEOUT, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| Error::Source(format!("connecting to Redis at {at}: timed out")))?
                    .map_err(|e| {
                        Error::Source(format!(
                            "cannot connect to Redis at {at}: {e}; check socket and that redis-server runs"
                        ))
                    })?;
                Box::new(s)
            }
            None => {
                let s = tokio::time::timeout(
                    REPLY_TIMEOUT,
                    tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
                )
                .await
                .map_err(|_| Error::Source(format!("connecting to Redis at {at}: timed out")))?
                .map_err(|e| {
                    Error::Source(format!(
                        "cannot connect to Redis at {at}: {e}; check host and port and that redis-server runs"
                    ))
                })?;
                let _ = s.set_nodelay(true);
                match &endpoint.tls {
                    None => Box::new(s),
                    Some(tls) => Box::new(tls_handshake(endpoint, tls, s, &at).await?),
                }
            }
        };
        let mut client = Client {
            io: BufReader::with_capacity(256 * 1024, io),
            at,
            tls: endpoint.tls.is_some() && endpoint.socket.is_none(),
        };
        if let Some(password) = &endpoint.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(u) = &endpoint.user {
                args.push(u.as_bytes());
            }
            args.push(password.as_bytes());
            match client.command(&args).await? {
                Reply::Status(_) => {}
                Reply::Error(e) => {
                    let who = endpoint.user.as_deref().unwrap_or("default");
                    return Err(Error::Source(format!(
                        "Redis at {} refused the password of user {who:?}: {}; check password (or password_file) and user",
                        client.at,
                        first_words(&e)
                    )));
                }
                other => return Err(client.unexpected("AUTH", &other)),
            }
        }
        Ok(client)
    }

    /// Where this connection goes, for messages.
    pub fn at(&self) -> &str {
        &self.at
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(args).await?;
        let at = self.at.clone();
        tokio::time::timeout(REPLY_TIMEOUT, self.read_reply())
            .await
            .map_err(|_| {
                Error::Source(format!(
                    "Redis at {at} did not answer {} within {}s",
                    String::from_utf8_lossy(args[0]),
                    REPLY_TIMEOUT.as_secs()
                ))
            })?
    }

    /// Sends one command without reading a reply.
    pub async fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let w = self.io.get_mut();
        w.write_all(&out).await.map_err(|e| self.io_error(e))?;
        self.io
            .get_mut()
            .flush()
            .await
            .map_err(|e| self.io_error(e))
    }

    /// `INFO` (default sections), as text.
    pub async fn info(&mut self) -> Result<String> {
        match self.command(&[b"INFO"]).await? {
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Error(e) if e.starts_with("NOAUTH") => Err(Error::Source(format!(
                "Redis at {} requires a password: set password (or password_file) on the job",
                self.at
            ))),
            Reply::Error(e) => Err(Error::Source(format!(
                "Redis at {} refused INFO: {}; the user needs +info",
                self.at,
                first_words(&e)
            ))),
            other => Err(self.unexpected("INFO", &other)),
        }
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        let hint = if self.tls {
            steward_tls::after_handshake_hint(&e)
        } else {
            ""
        };
        Error::Source(format!(
            "connection to Redis at {} failed: {e}{hint}",
            self.at
        ))
    }

    fn unexpected(&self, command: &str, reply: &Reply) -> Error {
        Error::Source(format!(
            "Redis at {} answered {command} with {}; is this a Redis server?",
            self.at,
            match reply {
                Reply::Status(s) => format!("+{}", first_words(s)),
                Reply::Error(s) => format!("-{}", first_words(s)),
                Reply::Int(n) => format!(":{n}"),
                Reply::Bulk(_) => "a bulk string".into(),
            }
        ))
    }

    /// Reads one `\r\n`-terminated line (without it), at most
    /// `MAX_LINE_BYTES`; a peer that is not Redis is named as such.
    pub async fn read_line(&mut self) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE_BYTES as u64 + 2)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| self.io_error(e))?;
        if n == 0 {
            return Err(Error::Source(format!(
                "Redis at {} closed the connection",
                self.at
            )));
        }
        if line.last() != Some(&b'\n') {
            return Err(self.not_redis(&line));
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// The error for bytes that are not RESP, quoting a short, escaped start.
    pub fn not_redis(&self, seen: &[u8]) -> Error {
        let start: String = seen
            .iter()
            .take(40)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        Error::Source(format!(
            "the server at {} does not speak the Redis protocol (it sent \"{start}\"); check host and port (or socket)",
            self.at
        ))
    }

    async fn read_reply(&mut self) -> Result<Reply> {
        let line = self.read_line().await?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(self.not_redis(&line));
        };
        let text = || String::from_utf8_lossy(rest).into_owned();
        match kind {
            b'+' => Ok(Reply::Status(text())),
            b'-' => Ok(Reply::Error(text())),
            b':' => text()
                .parse()
                .map(Reply::Int)
                .map_err(|_| self.not_redis(&line)),
            b'$' => {
                let len: i64 = text().parse().map_err(|_| self.not_redis(&line))?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = len as usize;
                if len > MAX_BULK_BYTES {
                    return Err(Error::Source(format!(
                        "Redis at {} announced a {len}-byte reply, more than the {MAX_BULK_BYTES} accepted; is this a Redis server?",
                        self.at
                    )));
                }
                let mut data = vec![0; len + 2];
                self.io
                    .read_exact(&mut data)
                    .await
                    .map_err(|e| self.io_error(e))?;
                if !data.ends_with(b"\r\n") {
                    return Err(self.not_redis(&data));
                }
                data.truncate(len);
                Ok(Reply::Bulk(Some(data)))
            }
            _ => Err(self.not_redis(&line)),
        }
    }
}

/// The TLS handshake over `tcp`: the job's CA, client certificate and
/// server name (its host unless `tls_server_name` is set), with the error
/// saying which setting to check.
async fn tls_handshake(
    endpoint: &RedisEndpoint,
    tls: &RedisTls,
    tcp: tokio::net::TcpStream,
    at: &str,
) -> Result<steward_tls::TlsStream<tokio::net::TcpStream>> {
    let files = steward_tls::TlsFiles {
        ca: tls.ca_file.as_deref(),
        cert: tls.cert_file.as_deref(),
        key: tls.key_file.as_deref(),
        server_name: tls.server_name.as_deref(),
    };
    let setup = |e: String| Error::Config(format!("TLS to Redis at {at}: {e}"));
    let config = steward_tls::client_config(&files).map_err(setup)?;
    let name = tls.server_name.as_deref().unwrap_or(&endpoint.host);
    let name = steward_tls::server_name(name).map_err(|e| {
        setup(format!(
            "host: {e}; set tls_server_name to the name in the server's certificate"
        ))
    })?;
    tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        steward_tls::handshake(config, name, tcp, "the job's host"),
    )
    .await
    .map_err(|_| {
        Error::Source(format!(
            "TLS handshake with Redis at {at}: no answer within {}s; is this port a TLS port (Redis's tls-port)? A plain Redis port takes the handshake for the start of a command and waits",
            TLS_HANDSHAKE_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| Error::Source(format!("cannot connect to Redis at {at}: {e}")))
}

/// The first few words of a server error, enough to say what it was.
fn first_words(s: &str) -> String {
    s.chars().take(200).collect()
}

/// What `INFO` says that a snapshot records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: String,
    /// `(db, keys, expires)` per non-empty database.
    pub keyspace: Vec<(u32, u64, u64)>,
}

/// Parses `INFO` text: `redis_version` and the `dbN:keys=..,expires=..` lines.
pub fn parse_info(text: &str) -> ServerInfo {
    let mut out = ServerInfo::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(v) = line.strip_prefix("redis_version:") {
            out.version = v.to_string();
        } else if let Some(rest) = line.strip_prefix("db") {
            let Some((n, fields)) = rest.split_once(':') else {
                continue;
            };
            let Ok(db) = n.parse::<u32>() else { continue };
            let mut keys = None;
            let mut expires = 0;
            for kv in fields.split(',') {
                match kv.split_once('=') {
                    Some(("keys", v)) => keys = v.parse().ok(),
                    Some(("expires", v)) => expires = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            if let Some(k) = keys {
                out.keyspace.push((db, k, expires));
            }
        }
    }
    out.keyspace.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_version_and_keyspace() {
        let info = parse_info(
            "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n# Keyspace\r\ndb3:keys=2,expires=1,avg_ttl=10\r\ndb0:keys=100,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(info.version, "7.0.15");
        assert_eq!(info.keyspace, vec![(0, 100, 0), (3, 2, 1)]);
    }
}
