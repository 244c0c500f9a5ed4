//! A minimal FastCGI client: one responder request per connection, enough
//! to ask a PHP-FPM pool for its status page without a web server.
//!
//! The decoder is separate from the I/O so it can be fuzzed: it accepts any
//! bytes and either completes, waits for more, or names what is wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION_1: u8 = 1;
const BEGIN_REQUEST: u8 = 1;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;
const STDERR: u8 = 7;
const ROLE_RESPONDER: u16 = 1;
const REQUEST_ID: u16 = 1;
const HEADER_LEN: usize = 8;

/// Where a pool listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(std::path::PathBuf),
    /// `host:port`
    Tcp(String),
}

/// What the application answered: its stdout (CGI headers and body), its
/// stderr, and the status of the end-request record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Response {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub app_status: u32,
    pub protocol_status: u8,
}

/// Incremental decoder of the records answering request 1.
#[derive(Debug)]
pub struct ResponseDecoder {
    buf: Vec<u8>,
    response: Response,
    done: bool,
    limit: usize,
}

impl ResponseDecoder {
    /// `limit`: the most stdout+stderr bytes accepted.
    pub fn new(limit: usize) -> Self {
        ResponseDecoder {
            buf: Vec::new(),
            response: Response::default(),
            done: false,
            limit,
        }
    }

    /// Feeds bytes; `Ok(true)` once the end-request record arrived.
    pub fn push(&mut self, data: &[u8]) -> Result<bool, String> {
        if self.done {
            return Ok(true);
        }
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while self.buf.len() - at >= HEADER_LEN {
            let h = &self.buf[at..at + HEADER_LEN];
            let (version, kind) = (h[0], h[1]);
            let id = u16::from_be_bytes([h[2], h[3]]);
            let content_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let padding = usize::from(h[6]);
            if version != VERSION_1 {
                return Err(format!(
                    "not a FastCGI answer (record version {version}); is this the PHP-FPM pool socket?"
                ));
            }
            let total = HEADER_LEN + content_len + padding;
            if self.buf.len() - at < total {
                break;
            }
            let content = &self.buf[at + HEADER_LEN..at + HEADER_LEN + content_len];
            if id == REQUEST_ID {
                match kind {
                    STDOUT => self.response.stdout.extend_from_slice(content),
                    STDERR => self.response.stderr.extend_from_slice(content),
                    END_REQUEST => {
                        if content.len() < 5 {
                            return Err("truncated FastCGI end-request record".into());
                        }
                        self.response.app_status =
                            u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                        self.response.protocol_status = content[4];
                        self.done = true;
                    }
                    // Management records and unknown types are not ours.
                    _ => {}
                }
            }
            at += total;
            if self.response.stdout.len() + self.response.stderr.len() > self.limit {
                return Err(format!(
                    "the answer is larger than {} bytes; not a status page",
                    self.limit
                ));
            }
            if self.done {
                break;
            }
        }
        self.buf.drain(..at);
        Ok(self.done)
    }

    pub fn finish(self) -> Result<Response, String> {
        if !self.done {
            return Err("the connection closed before the FastCGI request ended".into());
        }
        if self.response.protocol_status != 0 {
            return Err(format!(
                "PHP-FPM refused the request (FastCGI protocol status {}: {})",
                self.response.protocol_status,
                match self.response.protocol_status {
                    1 => "cannot multiplex connections",
                    2 => "overloaded",
                    3 => "unknown role",
                    _ => "unknown",
                }
            ));
        }
        Ok(self.response)
    }
}

/// Encodes one name-value pair of a PARAMS stream.
fn encode_pair(out: &mut Vec<u8>, name: &str, value: &str) {
    for len in [name.len(), value.len()] {
        if len < 128 {
            out.push(len as u8);
        } else {
            out.extend_from_slice(&((len as u32) | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(value.as_bytes());
}

fn record(out: &mut Vec<u8>, kind: u8, content: &[u8]) {
    // Content over 65535 bytes is split; params here are far smaller.
    for chunk in content.chunks(u16::MAX as usize) {
        out.extend_from_slice(&[VERSION_1, kind]);
        out.extend_from_slice(&REQUEST_ID.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(chunk);
    }
    if content.is_empty() {
        out.extend_from_slice(&[VERSION_1, kind]);
        out.extend_from_slice(&REQUEST_ID.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
}

/// The bytes of a complete request with `params` and an empty body.
pub fn encode_request(params: &BTreeMap<&str, String>) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let mut begin = Vec::with_capacity(8);
    begin.extend_from_slice(&ROLE_RESPONDER.to_be_bytes());
    // flags 0: the server closes the connection after the answer, so a
    // pool worker is never held by an idle status connection.
    begin.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    record(&mut out, BEGIN_REQUEST, &begin);
    let mut pairs = Vec::with_capacity(256);
    for (name, value) in params {
        encode_pair(&mut pairs, name, value);
    }
    record(&mut out, PARAMS, &pairs);
    record(&mut out, PARAMS, &[]);
    record(&mut out, STDIN, &[]);
    out
}

/// Sends one request and reads the answer, all within `timeout`.
pub async fn request(
    address: &Address,
    params: &BTreeMap<&str, String>,
    timeout: Duration,
    limit: usize,
) -> Result<Response, String> {
    let run = async {
        match address {
            Address::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
                exchange(stream, params, limit).await
            }
            Address::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
                let _ = stream.set_nodelay(true);
                exchange(stream, params, limit).await
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("no complete answer within {timeout:?} (all pool workers busy?)"))?
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    params: &BTreeMap<&str, String>,
    limit: usize,
) -> Result<Response, String> {
    stream
        .write_all(&encode_request(params))
        .await
        .map_err(|e| format!("cannot send the FastCGI request: {e}"))?;
    let mut decoder = ResponseDecoder::new(limit);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the FastCGI answer: {e}"))?;
        if n == 0 || decoder.push(&buf[..n])? {
            break;
        }
    }
    decoder.finish()
}

/// Splits CGI output into its `Status` code (200 when absent) and body.
pub fn split_cgi(stdout: &[u8]) -> Result<(u16, &[u8]), String> {
    let (head, body) = match find(stdout, b"\r\n\r\n") {
        Some(i) => (&stdout[..i], &stdout[i + 4..]),
        None => match find(stdout, b"\n\n") {
            Some(i) => (&stdout[..i], &stdout[i + 2..]),
            None => return Err("the answer has no CGI header block".into()),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut status = 200;
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("status") {
                status = value
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad CGI Status header {:?}", line.trim()))?;
            }
        }
    }
    Ok((status, body))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(stdout: &[u8], padding: u8) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&[1, STDOUT, 0, 1]);
        out.extend_from_slice(&(stdout.len() as u16).to_be_bytes());
        out.extend_from_slice(&[padding, 0]);
        out.extend_from_slice(stdout);
        out.extend(std::iter::repeat_n(0, padding as usize));
        out.extend_from_slice(&[1, END_REQUEST, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out
    }

    #[test]
    fn decodes_in_any_split() {
        let bytes = answer(b"Status: 200\r\n\r\n{}", 3);
        for split in 0..bytes.len() {
            let mut d = ResponseDecoder::new(1024);
            let done = d.push(&bytes[..split]).unwrap();
            assert!(!done || split == bytes.len());
            assert!(d.push(&bytes[split..]).unwrap());
            let r = d.finish().unwrap();
            assert_eq!(r.stdout, b"Status: 200\r\n\r\n{}");
        }
    }

    #[test]
    fn rejects_non_fastcgi_and_truncation() {
        let mut d = ResponseDecoder::new(1024);
        assert!(d.push(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        let mut d = ResponseDecoder::new(1024);
        let bytes = answer(b"x", 0);
        d.push(&bytes[..10]).unwrap();
        assert!(d.finish().unwrap_err().contains("closed before"));
        let mut d = ResponseDecoder::new(4);
        assert!(d.push(&answer(b"0123456789", 0)).is_err());
    }

    #[test]
    fn encodes_long_pairs() {
        let mut out = Vec::new();
        encode_pair(&mut out, "A", &"v".repeat(300));
        assert_eq!(out[0], 1);
        assert_eq!(&out[1..5], &(300u32 | 0x8000_0000).to_be_bytes());
        let params: BTreeMap<&str, String> = [("QUERY_STRING", "json&full".to_string())].into();
        let req = encode_request(&params);
        assert_eq!(&req[..2], &[1, BEGIN_REQUEST]);
        assert!(req.ends_with(&[1, STDIN, 0, 1, 0, 0, 0, 0]));
    }

    #[test]
    fn cgi_status() {
        assert_eq!(
            split_cgi(b"Status: 404 Not Found\r\nContent-type: text/html\r\n\r\nFile not found.\n")
                .unwrap(),
            (404, &b"File not found.\n"[..])
        );
        assert_eq!(
            split_cgi(b"Content-type: application/json\r\n\r\n{}").unwrap(),
            (200, &b"{}"[..])
        );
        assert!(split_cgi(b"Status: abc\r\n\r\n").is_err());
        assert!(split_cgi(b"no header").is_err());
    }
}
