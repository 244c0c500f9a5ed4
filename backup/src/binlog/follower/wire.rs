//! The pieces of the MySQL client/server protocol the follower speaks:
//! packets, the handshake with `mysql_native_password`, text commands.
//! Nothing else (no result sets, no TLS, no other auth plugins): a server
//! that asks for more gets [`WireError::Unsupported`], and the shipper
//! runs `mariadb-binlog` instead.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Payload of a full packet: a message this long goes on in the next one.
pub(super) const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Handshake-phase messages (greeting, OK, ERR, auth switch) are small;
/// a server sending more is not one we understand.
const SMALL_MESSAGE_LIMIT: usize = 64 * 1024;

// Capability flags (include/mysql_com.h).
const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_LONG_FLAG: u32 = 4;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;

/// utf8mb4_general_ci, what `mariadb-binlog` announces.
const CHARSET_UTF8MB4: u8 = 45;
const NATIVE_PASSWORD: &str = "mysql_native_password";

/// What went wrong on the connection.
#[derive(Debug)]
pub(crate) enum WireError {
    /// Connecting, reading or writing failed (server gone, timeout).
    Io(io::Error),
    /// The server answered with an ERR packet.
    Server { code: u16, message: String },
    /// The server wants something the follower does not speak (an auth
    /// plugin other than `mysql_native_password`).
    Unsupported(String),
    /// The server sent something that is not the protocol.
    Protocol(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the server closed the connection")
            }
            // A socket read timeout is EAGAIN on Linux: "Resource
            // temporarily unavailable" would name nothing.
            WireError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                f.write_str(
                    "the server sent nothing, not even a heartbeat, within the read timeout: the connection or the server is gone",
                )
            }
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Server { code, message } => write!(f, "ERROR {code}: {message}"),
            WireError::Unsupported(what) => f.write_str(what),
            WireError::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// A TCP or unix-socket connection.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<Stream> {
        use std::net::ToSocketAddrs;
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
        for addr in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(Stream::Tcp(s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub(crate) fn connect_unix(path: &std::path::Path) -> io::Result<Stream> {
        UnixStream::connect(path).map(Stream::Unix)
    }

    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Ends the connection both ways: a read blocked on it returns.
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    pub(crate) fn set_timeouts(&self, read: Option<Duration>) -> io::Result<()> {
        let write = Some(Duration::from_secs(30));
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
        }
    }

    fn is_unix(&self) -> bool {
        matches!(self, Stream::Unix(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection with its read buffer: packets are parsed in place, and a
/// packet longer than the buffer is handed out in pieces.
pub(crate) struct Conn<S = Stream> {
    stream: S,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Sequence number of the next packet this side writes.
    seq: u8,
}

impl<S: Read + Write> Conn<S> {
    pub(crate) fn new(stream: S, buffer_bytes: usize) -> Self {
        Conn {
            stream,
            buf: vec![0; buffer_bytes.max(64)].into_boxed_slice(),
            start: 0,
            end: 0,
            seq: 0,
        }
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    /// Bytes read from the socket and not yet consumed.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Whether a whole packet (header and payload) is already buffered.
    pub(crate) fn has_whole_packet(&self) -> bool {
        let b = self.buffered();
        b.len() >= 4
            && b.len() - 4 >= usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
    }

    /// Makes at least `n` bytes (at most the buffer's size) buffered.
    pub(crate) fn fill(&mut self, n: usize) -> io::Result<()> {
        debug_assert!(n <= self.buf.len());
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end - self.start < n {
            let got = self.stream.read(&mut self.buf[self.end..])?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += got;
        }
        Ok(())
    }

    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads a packet header: the payload's length.
    pub(crate) fn header(&mut self) -> io::Result<usize> {
        self.fill(4)?;
        let h = &self.buf[self.start..self.start + 4];
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        self.seq = h[3].wrapping_add(1);
        self.consume(4);
        Ok(len)
    }

    /// Up to `max` bytes (at least one) of the packet being read.
    pub(crate) fn piece(&mut self, max: usize) -> io::Result<&[u8]> {
        self.fill(1)?;
        let n = max.min(self.end - self.start);
        let from = self.start;
        self.consume(n);
        Ok(&self.buf[from..from + n])
    }

    /// Appends `len` bytes of the packet being read to `out`.
    pub(crate) fn read_into(&mut self, mut len: usize, out: &mut Vec<u8>) -> io::Result<()> {
        while len > 0 {
            let piece = self.piece(len)?;
            len -= piece.len();
            out.extend_from_slice(piece);
        }
        Ok(())
    }

    /// The rest of a message whose first packet's header (`first_len`)
    /// was read: its payload and any continuation packets, at most
    /// `limit` bytes.
    pub(crate) fn rest_of_message(
        &mut self,
        mut len: usize,
        limit: usize,
    ) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(len.min(limit));
        loop {
            if out.len() + len > limit {
                return Err(WireError::Protocol(format!(
                    "a message of over {limit} bytes where a short one was expected"
                )));
            }
            self.read_into(len, &mut out)?;
            if len < MAX_PAYLOAD {
                return Ok(out);
            }
            len = self.header()?;
        }
    }

    /// A whole short message (handshake, OK, ERR).
    pub(crate) fn message(&mut self) -> Result<Vec<u8>, WireError> {
        let len = self.header()?;
        self.rest_of_message(len, SMALL_MESSAGE_LIMIT)
    }

    /// Writes one packet with the next sequence number.
    fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        debug_assert!(payload.len() < MAX_PAYLOAD);
        let len = payload.len() as u32;
        let mut packet = Vec::with_capacity(4 + payload.len());
        packet.extend_from_slice(&len.to_le_bytes()[..3]);
        packet.push(self.seq);
        packet.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&packet)
    }

    /// Sends a command (a new sequence starts at 0).
    pub(crate) fn command(&mut self, payload: &[u8]) -> io::Result<()> {
        self.seq = 0;
        self.write_packet(payload)
    }

    /// `COM_QUERY` of a statement that returns no rows (`SET ...`).
    pub(crate) fn execute(&mut self, sql: &str) -> Result<(), WireError> {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql.as_bytes());
        self.command(&payload)?;
        expect_ok(&self.message()?)
    }
}

impl Conn<Stream> {
    /// The handshake: the server's greeting, the login as `user` with
    /// `mysql_native_password`, an auth switch to it if the server asks.
    pub(crate) fn login(&mut self, user: &str, password: Option<&str>) -> Result<(), WireError> {
        let greeting = Greeting::parse(&self.message()?)?;
        for needed in [CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION] {
            if greeting.capabilities & needed == 0 {
                return Err(WireError::Unsupported(format!(
                    "the server ({}) does not speak protocol 4.1 authentication",
                    greeting.version
                )));
            }
        }
        let capabilities = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | (greeting.capabilities & CLIENT_PLUGIN_AUTH);
        let token = native_password(password.unwrap_or(""), &greeting.scramble);
        let mut response = Vec::with_capacity(64 + user.len());
        response.extend_from_slice(&capabilities.to_le_bytes());
        response.extend_from_slice(&(256u32 * 1024 * 1024).to_le_bytes());
        response.push(CHARSET_UTF8MB4);
        response.extend_from_slice(&[0; 23]);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.push(token.len() as u8);
        response.extend_from_slice(&token);
        if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            response.extend_from_slice(NATIVE_PASSWORD.as_bytes());
            response.push(0);
        }
        self.write_packet(&response)?;
        let mut switched = false;
        loop {
            let reply = self.message()?;
            match reply.first() {
                Some(0x00) => return Ok(()),
                Some(0xFF) => return Err(server_error(&reply)),
                Some(0xFE) if !switched => {
                    // Auth switch: plugin name, NUL, the new scramble.
                    let rest = &reply[1..];
                    let name_end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                    let plugin = String::from_utf8_lossy(&rest[..name_end]).to_string();
                    if plugin == "mysql_clear_password" && !self.stream.is_unix() {
                        return Err(WireError::Unsupported(
                            "the server asks for the password in clear text over TCP (mysql_clear_password), which the follower refuses".into(),
                        ));
                    }
                    if plugin != NATIVE_PASSWORD {
                        return Err(WireError::Unsupported(format!(
                            "the server asks for the {plugin} authentication plugin"
                        )));
                    }
                    let data = rest.get(name_end + 1..).unwrap_or_default();
                    let scramble = data.strip_suffix(&[0]).unwrap_or(data);
                    let token = native_password(password.unwrap_or(""), scramble);
                    self.write_packet(&token)?;
                    switched = true;
                }
                Some(0x01) => {
                    return Err(WireError::Unsupported(
                        "the server asks for more authentication data (caching_sha2_password full authentication)".into(),
                    ))
                }
                _ => {
                    return Err(WireError::Protocol(
                        "unexpected reply to the login".into(),
                    ))
                }
            }
        }
    }
}

/// What the follower needs from the server's first packet.
#[derive(Debug)]
struct Greeting {
    version: String,
    capabilities: u32,
    scramble: Vec<u8>,
}

impl Greeting {
    fn parse(p: &[u8]) -> Result<Greeting, WireError> {
        let bad = || WireError::Protocol("a malformed server greeting".into());
        if p.first() == Some(&0xFF) {
            return Err(server_error(p));
        }
        if p.first() != Some(&10) {
            return Err(WireError::Unsupported(format!(
                "server greeting version {} (10 expected): not a MySQL/MariaDB server?",
                p.first().copied().unwrap_or(0)
            )));
        }
        let version_end = 1 + p[1..].iter().position(|&b| b == 0).ok_or_else(bad)?;
        let version = String::from_utf8_lossy(&p[1..version_end]).to_string();
        let mut at = version_end + 1 + 4; // NUL, connection id
        let part1 = p.get(at..at + 8).ok_or_else(bad)?.to_vec();
        at += 8 + 1; // filler
        let low = u16::from_le_bytes(
            p.get(at..at + 2)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        at += 2;
        let mut capabilities = u32::from(low);
        let mut scramble = part1;
        if p.len() > at {
            at += 1 + 2; // charset, status
            let high = u16::from_le_bytes(
                p.get(at..at + 2)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            );
            capabilities |= u32::from(high) << 16;
            at += 2;
            let data_len = usize::from(*p.get(at).ok_or_else(bad)?);
            at += 1 + 10; // reserved
            if capabilities & CLIENT_SECURE_CONNECTION != 0 {
                let len = data_len.saturating_sub(8).max(13);
                let part2 = p.get(at..at + len).ok_or_else(bad)?;
                // 12 bytes of scramble and a NUL.
                scramble.extend_from_slice(&part2[..12]);
            }
        }
        Ok(Greeting {
            version,
            capabilities,
            scramble,
        })
    }
}

/// `mysql_native_password`: SHA1(password) XOR SHA1(scramble +
/// SHA1(SHA1(password))); empty for an empty password.
pub(crate) fn native_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mix = h.finalize();
    stage1.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

pub(crate) fn expect_ok(reply: &[u8]) -> Result<(), WireError> {
    match reply.first() {
        Some(0x00) => Ok(()),
        Some(0xFF) => Err(server_error(reply)),
        _ => Err(WireError::Protocol("expected OK".into())),
    }
}

/// An ERR packet: 0xFF, code, `#` and SQL state (protocol 4.1), message.
pub(crate) fn server_error(p: &[u8]) -> WireError {
    let code = p
        .get(1..3)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .unwrap_or(0);
    let mut message = p.get(3..).unwrap_or_default();
    if message.first() == Some(&b'#') && message.len() >= 6 {
        message = &message[6..];
    }
    WireError::Server {
        code,
        message: String::from_utf8_lossy(message).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_matches_the_documented_algorithm() {
        // SHA1("secret") and SHA1(SHA1("secret")) are fixed; the token
        // XORed with SHA1(scramble + stage2) gives stage1 back, which is
        // how the server checks it.
        use sha1::{Digest, Sha1};
        let scramble = b"abcdefghijklmnopqrst";
        let token = native_password("secret", scramble);
        assert_eq!(token.len(), 20);
        let stage1 = Sha1::digest(b"secret");
        let stage2 = Sha1::digest(stage1);
        assert_eq!(
            hex::encode(stage2),
            // SELECT PASSWORD('secret') without the leading '*'.
            "14e65567abdb5135d0cfd9a70b3032c179a49ee7"
        );
        let mut h = Sha1::new();
        h.update(scramble);
        h.update(stage2);
        let mix = h.finalize();
        let back: Vec<u8> = token.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(back, stage1.to_vec());
        assert!(native_password("", scramble).is_empty());
    }

    /// An in-memory server side: what it will send, what it got.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }
    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // One byte at a time: every piece boundary gets exercised.
            let n = buf.len().min(1);
            self.input.read(&mut buf[..n])
        }
    }
    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn messages_span_packets_and_err_packets_read_back() {
        let big = vec![7u8; MAX_PAYLOAD + 10];
        let mut wire = packet(0, &big[..MAX_PAYLOAD]);
        wire.extend(packet(1, &big[MAX_PAYLOAD..]));
        let mut err = vec![0xFF, 0x15, 0x04, b'#'];
        err.extend_from_slice(b"28000Access denied for user");
        wire.extend(packet(0, &err));
        let mut conn = Conn::new(
            Script {
                input: io::Cursor::new(wire),
                sent: Vec::new(),
            },
            4096,
        );
        let len = conn.header().unwrap();
        assert_eq!(len, MAX_PAYLOAD);
        assert_eq!(conn.rest_of_message(len, usize::MAX).unwrap(), big);
        let reply = conn.message().unwrap();
        let e = expect_ok(&reply).unwrap_err();
        assert_eq!(e.to_string(), "ERROR 1045: Access denied for user");
        // Past the end: the connection closed.
        assert!(matches!(conn.message(), Err(WireError::Io(_))));
        // A read timeout says what it means.
        struct Silent;
        impl Read for Silent {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        impl Write for Silent {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let e = Conn::new(Silent, 4096).message().unwrap_err().to_string();
        assert!(e.contains("not even a heartbeat"), "{e}");
        // A short-message reader refuses a long one.
        let mut conn = Conn::new(
            Script {
                input: io::Cursor::new(packet(0, &vec![0; SMALL_MESSAGE_LIMIT + 1])),
                sent: Vec::new(),
            },
            4096,
        );
        assert!(matches!(conn.message(), Err(WireError::Protocol(_))));
    }

    #[test]
    fn greeting_gives_the_twenty_byte_scramble() {
        let mut g = vec![10];
        g.extend_from_slice(b"10.11.19-MariaDB\0");
        g.extend_from_slice(&7u32.to_le_bytes());
        g.extend_from_slice(b"ABCDEFGH\0");
        let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
        g.extend_from_slice(&(caps as u16).to_le_bytes());
        g.push(45);
        g.extend_from_slice(&2u16.to_le_bytes());
        g.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"IJKLMNOPQRST\0");
        g.extend_from_slice(b"mysql_native_password\0");
        let parsed = Greeting::parse(&g).unwrap();
        assert_eq!(parsed.scramble, b"ABCDEFGHIJKLMNOPQRST");
        assert_eq!(parsed.version, "10.11.19-MariaDB");
        assert_eq!(parsed.capabilities, caps);
        assert!(Greeting::parse(&g[..20]).is_err());
        assert!(Greeting::parse(b"\x09junk").is_err());
    }
}
