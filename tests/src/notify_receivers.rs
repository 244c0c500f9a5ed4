//! Local stand-ins for the services `[[notify]]` talks to, each following
//! its documented contract, refusals included:
//!
//! - [`HealthchecksServer`]: Healthchecks' Pinging API (`/ping/<uuid>`,
//!   `/start`, `/fail`, `/log`, `/<exit-status>`; HEAD, GET, POST; `rid`
//!   must be a UUID; `404 not found` for an unknown check, `400 invalid url
//!   format` for an exit status over 255; the body kept up to its
//!   `PING_BODY_LIMIT` and announced in `Ping-Body-Limit`).
//! - [`SlackServer`]: Slack incoming webhooks (`200 ok`; `400
//!   invalid_payload` for a body that is not a JSON message with `text` or
//!   `blocks`, `400 invalid_blocks` for blocks over Slack's limits, `404
//!   no_service` for an unknown webhook URL).
//! - [`WebhookReceiver`]: a receiver of Steward's documented JSON webhook
//!   that checks the HMAC-SHA256 signature as the README tells receivers to
//!   (`401` on a missing, stale or wrong signature).
//!
//! None of these services can run on the test machines; each fake can also
//! be told to fail the next requests (`force`) or to answer slowly.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request as received, with the status it was answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A query parameter's (percent-decoded) value.
    pub fn param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// An answer: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, String);

#[derive(Default)]
struct CoreState {
    requests: Vec<Received>,
    forced: VecDeque<Answer>,
    delay: Duration,
}

/// The HTTP/1.1 plumbing the fakes share: a thread per connection,
/// keep-alive, every request recorded.
struct Core {
    port: u16,
    state: Arc<Mutex<CoreState>>,
    stop: Arc<AtomicBool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Core {
    fn start(
        handler: impl Fn(&Received) -> Answer + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(CoreState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, handler) = (Arc::clone(&state), Arc::clone(&stop), Arc::new(handler));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, handler) = (Arc::clone(&st), Arc::clone(&handler));
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, handler.as_ref());
                });
            }
        });
        Ok(Core { port, state, stop })
    }

    fn requests(&self) -> Vec<Received> {
        lock(&self.state).requests.clone()
    }

    fn force(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        lock(&self.state).forced.push_back((
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body.to_string(),
        ));
    }

    fn set_delay(&self, d: Duration) {
        lock(&self.state).delay = d;
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(reader: &mut BufReader<&TcpStream>) -> anyhow::Result<Option<Received>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Ok(Some(Received {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
        status: 0,
    }))
}

fn serve(
    stream: TcpStream,
    state: &Mutex<CoreState>,
    handler: &(dyn Fn(&Received) -> Answer + Send + Sync),
) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(&stream);
    while let Some(mut req) = read_request(&mut reader)? {
        let (delay, forced) = {
            let mut st = lock(state);
            (st.delay, st.forced.pop_front())
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let (status, headers, body) = forced.unwrap_or_else(|| handler(&req));
        req.status = status;
        lock(state).requests.push(req.clone());
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\n",
            reason(status),
            if req.method == "HEAD" { 0 } else { body.len() }
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut w = &stream;
        w.write_all(head.as_bytes())?;
        if req.method != "HEAD" {
            w.write_all(body.as_bytes())?;
        }
        w.flush()?;
        if req
            .headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn text(status: u16, body: &str) -> Answer {
    (
        status,
        vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body.into(),
    )
}

/// Whether `s` is a UUID as Healthchecks' URL routes accept it.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A counter-based UUID for fixtures (unique within the process).
fn fixture_uuid(prefix: u32) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix:08x}-{:04x}-4{:03x}-8000-{n:012x}",
        nanos & 0xffff,
        nanos >> 20
    )
}

/// One ping Healthchecks recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    /// `success`, `start`, `fail`, `log`, or `exit <n>`.
    pub action: String,
    pub rid: Option<String>,
    pub method: String,
    /// What Healthchecks stores: the first `PING_BODY_LIMIT` bytes.
    pub body: String,
}

/// A fake Healthchecks ping server.
pub struct HealthchecksServer {
    core: Core,
    checks: Arc<Mutex<HashMap<String, Vec<Ping>>>>,
    pub body_limit: usize,
}

impl HealthchecksServer {
    /// Starts a server that stores and announces `body_limit` body bytes
    /// (`PING_BODY_LIMIT`; healthchecks.io uses 100 kB, self-hosted 10 kB).
    pub fn start(body_limit: usize) -> anyhow::Result<Self> {
        let checks: Arc<Mutex<HashMap<String, Vec<Ping>>>> = Arc::default();
        let c = Arc::clone(&checks);
        let core = Core::start(move |req| ping(req, &c, body_limit))?;
        Ok(HealthchecksServer {
            core,
            checks,
            body_limit,
        })
    }

    /// Creates a check; returns its ping URL.
    pub fn add_check(&self) -> String {
        let uuid = fixture_uuid(0x5eed);
        lock(&self.checks).insert(uuid.clone(), Vec::new());
        format!("http://127.0.0.1:{}/ping/{uuid}", self.core.port)
    }

    /// The pings of the check with this ping URL, oldest first.
    pub fn pings(&self, ping_url: &str) -> Vec<Ping> {
        let uuid = ping_url.rsplit('/').next().unwrap_or("");
        lock(&self.checks).get(uuid).cloned().unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.core.requests()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.core.port)
    }
}

fn ping(req: &Received, checks: &Mutex<HashMap<String, Vec<Ping>>>, limit: usize) -> Answer {
    if !matches!(req.method.as_str(), "HEAD" | "GET" | "POST") {
        return text(405, "");
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let (uuid, action) = match segments.as_slice() {
        ["ping", uuid] => (*uuid, "success".to_string()),
        ["ping", uuid, a @ ("start" | "fail" | "log")] => (*uuid, a.to_string()),
        ["ping", uuid, n] if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            match n.parse::<u32>() {
                Ok(code) if code <= 255 => (*uuid, format!("exit {code}")),
                _ => return text(400, "invalid url format"),
            }
        }
        _ => return text(404, "not found"),
    };
    if !is_uuid(uuid) {
        return text(404, "not found");
    }
    let rid = req.param("rid");
    if rid.as_deref().is_some_and(|r| !is_uuid(r)) {
        return text(400, "invalid uuid format");
    }
    let mut checks = lock(checks);
    let Some(pings) = checks.get_mut(uuid) else {
        return text(404, "not found");
    };
    let body = &req.body[..req.body.len().min(limit)];
    pings.push(Ping {
        action,
        rid,
        method: req.method.clone(),
        body: String::from_utf8_lossy(body).into_owned(),
    });
    let (status, mut headers, body) = text(200, "OK");
    headers.push(("Ping-Body-Limit".into(), limit.to_string()));
    (status, headers, body)
}

/// A fake Slack incoming-webhook endpoint.
pub struct SlackServer {
    core: Core,
    hooks: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

impl SlackServer {
    pub fn start() -> anyhow::Result<Self> {
        let hooks: Arc<Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
        let h = Arc::clone(&hooks);
        let core = Core::start(move |req| slack(req, &h))?;
        Ok(SlackServer { core, hooks })
    }

    /// Creates an incoming webhook; returns its URL (the secret).
    pub fn add_webhook(&self) -> String {
        let secret = fixture_uuid(0x51ac).replace('-', "");
        let path = format!("/services/T0STEWARD/B0NOTIFY/{secret}");
        lock(&self.hooks).insert(path.clone(), Vec::new());
        format!("http://127.0.0.1:{}{path}", self.core.port)
    }

    /// The messages the webhook with this URL posted, oldest first.
    pub fn messages(&self, url: &str) -> Vec<Value> {
        let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}"));
        path.and_then(|p| lock(&self.hooks).get(&p).cloned())
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.core.requests()
    }

    /// The next request gets this answer instead (e.g. `500 rollup_error`,
    /// `429` with `Retry-After`).
    pub fn force(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.core.force(status, headers, body);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.core.port)
    }
}

/// Slack's limits on what Steward sends.
fn check_blocks(blocks: &[Value]) -> bool {
    let text_len = |v: &Value| v.as_str().map(|s| s.chars().count());
    blocks.len() <= 50
        && blocks.iter().all(|b| match b["type"].as_str() {
            Some("header") => {
                b["text"]["type"] == "plain_text"
                    && text_len(&b["text"]["text"]).is_some_and(|n| (1..=150).contains(&n))
            }
            Some("section") => {
                matches!(b["text"]["type"].as_str(), Some("mrkdwn" | "plain_text"))
                    && text_len(&b["text"]["text"]).is_some_and(|n| (1..=3000).contains(&n))
            }
            Some("context") => b["elements"].as_array().is_some_and(|e| {
                !e.is_empty()
                    && e.len() <= 10
                    && e.iter()
                        .all(|x| text_len(&x["text"]).is_some_and(|n| n >= 1))
            }),
            Some("divider") => true,
            _ => false,
        })
}

fn slack(req: &Received, hooks: &Mutex<HashMap<String, Vec<Value>>>) -> Answer {
    let mut hooks = lock(hooks);
    let Some(messages) = hooks.get_mut(&req.path) else {
        return text(404, "no_service");
    };
    if req.method != "POST" {
        return text(405, "invalid_method");
    }
    let content_type = req.headers.get("content-type").cloned().unwrap_or_default();
    let parsed: Option<Value> = if content_type.starts_with("application/json") {
        serde_json::from_slice(&req.body).ok()
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(&req.body)
            .find(|(k, _)| k == "payload")
            .and_then(|(_, v)| serde_json::from_str(&v).ok())
    } else {
        None
    };
    let Some(msg) = parsed.filter(Value::is_object) else {
        return text(400, "invalid_payload");
    };
    let has_text = msg["text"].as_str().is_some_and(|t| !t.trim().is_empty());
    let blocks = msg["blocks"].as_array();
    if !has_text && blocks.is_none_or(Vec::is_empty) {
        return text(400, "invalid_payload");
    }
    if let Some(b) = blocks {
        if !check_blocks(b) {
            return text(400, "invalid_blocks");
        }
    }
    messages.push(msg);
    text(200, "ok")
}

/// A receiver of Steward's generic JSON webhook.
pub struct WebhookReceiver {
    core: Core,
}

/// The most clock skew the receiver accepts in `X-Steward-Timestamp`.
pub const SIGNATURE_TOLERANCE_SECS: u64 = 300;

impl WebhookReceiver {
    /// Starts a receiver at `/hook` that, with `secret`, accepts only
    /// correctly signed, fresh requests.
    pub fn start(secret: Option<&str>) -> anyhow::Result<Self> {
        let secret = secret.map(|s| s.as_bytes().to_vec());
        let core = Core::start(move |req| receive(req, secret.as_deref()))?;
        Ok(WebhookReceiver { core })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.core.port)
    }

    /// Every request, accepted or not.
    pub fn requests(&self) -> Vec<Received> {
        self.core.requests()
    }

    /// The payloads of the accepted requests, oldest first.
    pub fn accepted(&self) -> Vec<Value> {
        self.core
            .requests()
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| serde_json::from_slice(&r.body).ok())
            .collect()
    }

    pub fn force(&self, status: u16, headers: &[(&str, &str)], body: &str) {
        self.core.force(status, headers, body);
    }

    /// Answers every request only after `d` (a hanging receiver).
    pub fn set_delay(&self, d: Duration) {
        self.core.set_delay(d);
    }
}

/// What the README tells a receiver to check.
pub fn signature_ok(secret: &[u8], timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(raw) = hex::decode(hex_sig) else {
        return false;
    };
    mac.verify_slice(&raw).is_ok()
}

fn receive(req: &Received, secret: Option<&[u8]>) -> Answer {
    if req.path != "/hook" {
        return text(404, "not found");
    }
    if req.method != "POST" {
        return text(405, "");
    }
    if let Some(secret) = secret {
        let ts = req
            .headers
            .get("x-steward-timestamp")
            .cloned()
            .unwrap_or_default();
        let sig = req
            .headers
            .get("x-steward-signature")
            .cloned()
            .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let fresh = ts
            .parse::<u64>()
            .is_ok_and(|t| t.abs_diff(now) <= SIGNATURE_TOLERANCE_SECS);
        if !fresh || !signature_ok(secret, &ts, &sig, &req.body) {
            return text(401, "bad signature");
        }
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(v) if v.is_object() => text(200, "accepted"),
        _ => text(400, "body is not a JSON object"),
    }
}
