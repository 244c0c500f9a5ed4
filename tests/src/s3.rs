//! A real S3 server on loopback: `moto_server` (PyPI `moto[server]`) on a
//! free port, plus raw HTTP helpers to create buckets and inspect objects
//! and unfinished multipart uploads exactly as the server sees them, and a
//! fault-injecting proxy that fails part uploads mid-stream.
//!
//! moto accepts any credentials and does not check signatures, so the
//! helpers send unsigned requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::process::{free_port, wait_for_http, ChildGuard};

/// Credentials the tests configure (moto accepts any).
pub const ACCESS_KEY_ID: &str = "steward-test-key";
pub const SECRET_ACCESS_KEY: &str = "steward-test-secret";
pub const REGION: &str = "us-east-1";

/// A running moto S3 server.
#[derive(Debug)]
pub struct S3Server {
    pub port: u16,
    guard: ChildGuard,
    pub dir: tempfile::TempDir,
}

/// `moto_server` from PATH or the Python user/script dirs.
pub fn moto_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join("moto_server");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    anyhow::bail!(
        "moto_server is not installed; install it with `python3 -m pip install 'moto[server]'` (listed in scripts/python-requirements.txt)"
    )
}

impl S3Server {
    pub fn start() -> anyhow::Result<Self> {
        let bin = moto_server_bin()?;
        let dir = tempfile::Builder::new().prefix("steward-moto-").tempdir()?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let guard = ChildGuard::spawn("moto_server", &mut cmd)?;
        let server = S3Server { port, guard, dir };
        wait_for_http(port, "/moto-api/", Duration::from_secs(60))
            .map_err(|e| anyhow::anyhow!("moto_server did not start: {e}\n{}", server.log()))?;
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Creates a bucket (with Object Lock enabled when asked).
    pub fn create_bucket(&self, bucket: &str, object_lock: bool) -> anyhow::Result<()> {
        let headers: &[(&str, &str)] = if object_lock {
            &[("x-amz-bucket-object-lock-enabled", "true")]
        } else {
            &[]
        };
        let (status, body) = request(self.port, "PUT", &format!("/{bucket}"), headers, b"")?;
        anyhow::ensure!(status == 200, "creating bucket {bucket}: {status} {body}");
        Ok(())
    }

    /// Keys in `bucket` under `prefix`.
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let (status, body) = request(
            self.port,
            "GET",
            &format!(
                "/{bucket}?list-type=2&max-keys=1000&prefix={}",
                encode(prefix)
            ),
            &[],
            b"",
        )?;
        anyhow::ensure!(status == 200, "listing {bucket}: {status} {body}");
        Ok(xml_values(&body, "Key"))
    }

    /// Keys of unfinished multipart uploads in `bucket`.
    pub fn list_uploads(&self, bucket: &str) -> anyhow::Result<Vec<String>> {
        let (status, body) = request(self.port, "GET", &format!("/{bucket}?uploads"), &[], b"")?;
        anyhow::ensure!(
            status == 200,
            "listing uploads of {bucket}: {status} {body}"
        );
        Ok(xml_values(&body, "Key"))
    }

    /// The bytes of an object.
    pub fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        let (status, body) =
            request_bytes(self.port, "GET", &format!("/{bucket}/{key}"), &[], b"")?;
        anyhow::ensure!(status == 200, "GET {bucket}/{key}: {status}");
        Ok(body)
    }

    /// Object Lock mode and retain-until date of an object, as headers.
    pub fn head(&self, bucket: &str, key: &str) -> anyhow::Result<String> {
        self.head_with(bucket, key, "")
    }

    /// The response headers of HEAD with `x-amz-checksum-mode: ENABLED`,
    /// which makes the store return the object's stored checksum.
    pub fn head_with_checksum(&self, bucket: &str, key: &str) -> anyhow::Result<String> {
        self.head_with(bucket, key, "x-amz-checksum-mode: ENABLED\r\n")
    }

    fn head_with(&self, bucket: &str, key: &str, extra: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.write_all(
            format!(
                "HEAD /{bucket}/{key} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/{REGION}/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `<tag>value</tag>` in an XML document.
pub fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].to_string());
        rest = &rest[j + close.len()..];
    }
    out
}

fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let (status, body) = request_bytes(port, method, path, headers, body)?;
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// One HTTP/1.0 request (connection closed by the server after the reply).
fn request_bytes(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    // moto does not check signatures, but treats requests without an
    // Authorization header as anonymous (403 on private objects).
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/{REGION}/s3/aws4_request, SignedHeaders=host, Signature=00\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header terminator from moto"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {head}"))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// A proxy in front of the S3 server that forwards requests unchanged
/// until `fail_after_parts` part uploads (`PUT ...?partNumber=`) went
/// through, then answers every further part upload with `500 InternalError`
/// without forwarding it. Everything else (create, abort, list) passes, so
/// the client's abort reaches the server.
#[derive(Debug)]
pub struct FaultyProxy {
    pub port: u16,
    pub parts_forwarded: Arc<AtomicUsize>,
    pub parts_failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultyProxy {
    pub fn start(upstream: u16, fail_after_parts: usize) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let parts_forwarded = Arc::new(AtomicUsize::new(0));
        let parts_failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (fwd, failed, stopping) = (parts_forwarded.clone(), parts_failed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (fwd, failed) = (fwd.clone(), failed.clone());
                        std::thread::spawn(move || {
                            let _ =
                                proxy_connection(client, upstream, fail_after_parts, &fwd, &failed);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(FaultyProxy {
            port,
            parts_forwarded,
            parts_failed,
            stop,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one request head; returns it and any body bytes read past it.
fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).to_string();
            return Ok(Some((head, buf[i + 4..].to_vec())));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Handles one request on a client connection over a fresh upstream
/// connection; the reply says `Connection: close`, so the client opens a new
/// connection for its next request.
fn proxy_connection(
    mut client: TcpStream,
    upstream: u16,
    fail_after: usize,
    forwarded: &AtomicUsize,
    failed: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    {
        let Some((head, mut body)) = read_head(&mut client)? else {
            return Ok(());
        };
        let request_line = head.lines().next().unwrap_or("").to_string();
        let length: usize = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while body.len() < length {
            let mut chunk = vec![0u8; (length - body.len()).min(1 << 20)];
            let n = client.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let is_part = request_line.starts_with("PUT ") && request_line.contains("partNumber=");
        if is_part && forwarded.load(Ordering::SeqCst) >= fail_after {
            failed.fetch_add(1, Ordering::SeqCst);
            let msg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected failure</Message></Error>";
            let reply = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
                msg.len()
            );
            client.write_all(reply.as_bytes())?;
            return Ok(());
        }
        if is_part {
            forwarded.fetch_add(1, Ordering::SeqCst);
        }
        // Forward with Connection: close so the reply ends at EOF.
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        let mut new_head = String::new();
        for line in head.split("\r\n") {
            if line.is_empty() {
                continue;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
                continue;
            }
            new_head.push_str(line);
            new_head.push_str("\r\n");
        }
        new_head.push_str("Connection: close\r\n\r\n");
        up.write_all(new_head.as_bytes())?;
        up.write_all(&body)?;
        let mut reply = Vec::new();
        up.read_to_end(&mut reply)?;
        // Tell the client this connection closes after the reply.
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(reply.len());
        let reply_head = String::from_utf8_lossy(&reply[..split]).to_string();
        let mut fixed = String::new();
        for line in reply_head.split("\r\n") {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
                continue;
            }
            fixed.push_str(line);
            fixed.push_str("\r\n");
        }
        fixed.push_str("Connection: close\r\n\r\n");
        client.write_all(fixed.as_bytes())?;
        if split + 4 <= reply.len() {
            client.write_all(&reply[split + 4..])?;
        }
        Ok(())
    }
}

impl S3Server {
    /// Replaces an object's bytes (one PUT).
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) -> anyhow::Result<()> {
        let (status, text) = request(self.port, "PUT", &format!("/{bucket}/{key}"), &[], body)?;
        anyhow::ensure!(status == 200, "PUT {bucket}/{key}: {status} {text}");
        Ok(())
    }
}

/// A proxy in front of the S3 server that forwards every request and
/// watches the ranged GETs (`Range:` header): how many, how many were in
/// flight at once, and, when asked, cuts the body of the Nth one (counted
/// from 0) off half-way, as a dropped connection would.
#[derive(Debug)]
pub struct RangeProxy {
    pub port: u16,
    /// Ranged GETs received.
    pub ranges: Arc<AtomicUsize>,
    /// The most ranged GETs in flight at once (received, reply not yet
    /// written to the client).
    pub peak_in_flight: Arc<AtomicUsize>,
    /// Ranged GETs whose body was cut.
    pub cut: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct RangeCounters {
    ranges: Arc<AtomicUsize>,
    in_flight: AtomicUsize,
    peak: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
}

impl RangeProxy {
    pub fn start(upstream: u16, cut_range: Option<usize>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let counters = Arc::new(RangeCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let proxy = RangeProxy {
            port,
            ranges: Arc::clone(&counters.ranges),
            peak_in_flight: Arc::clone(&counters.peak),
            cut: Arc::clone(&counters.cut),
            stop: Arc::clone(&stop),
        };
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let counters = Arc::clone(&counters);
                        std::thread::spawn(move || {
                            let _ = range_connection(client, upstream, cut_range, &counters);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(proxy)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for RangeProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Rewrites a message head to end the connection after this message.
fn closing_head(head: &str) -> String {
    let mut out = String::new();
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if line.is_empty() || lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn range_connection(
    mut client: TcpStream,
    upstream: u16,
    cut_range: Option<usize>,
    counters: &RangeCounters,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let Some((head, mut body)) = read_head(&mut client)? else {
        return Ok(());
    };
    let length: usize = header_value(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(1 << 20)];
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let ranged = head.starts_with("GET ") && header_value(&head, "range").is_some();
    let index = if ranged {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak.fetch_max(now, Ordering::SeqCst);
        Some(counters.ranges.fetch_add(1, Ordering::SeqCst))
    } else {
        None
    };
    let result = (|| {
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        up.write_all(closing_head(&head).as_bytes())?;
        up.write_all(&body)?;
        let mut reply = Vec::new();
        up.read_to_end(&mut reply)?;
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(reply.len());
        let reply_head = String::from_utf8_lossy(&reply[..split]).to_string();
        let payload = reply.get(split + 4..).unwrap_or(&[]);
        client.write_all(closing_head(&reply_head).as_bytes())?;
        if index.is_some() && index == cut_range {
            counters.cut.fetch_add(1, Ordering::SeqCst);
            client.write_all(&payload[..payload.len() / 2])?;
            return client.shutdown(std::net::Shutdown::Both);
        }
        client.write_all(payload)
    })();
    if ranged {
        counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    result
}

/// A TCP forwarder to the S3 server that can be switched off: while down
/// it closes every connection (open ones too), as a store that went away
/// (moto itself cannot be restarted on its port with its data).
pub struct SwitchProxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl SwitchProxy {
    pub fn start(upstream: u16) -> SwitchProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if let Ok(mut g) = o.lock() {
                    g.push(client.try_clone().unwrap());
                    g.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        SwitchProxy { port, down, open }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}
