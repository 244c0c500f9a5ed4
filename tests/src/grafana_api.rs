//! A local stand-in for Grafana's HTTP API, limited to what Steward uses:
//! the documented annotations contract (`POST`, `PATCH`, `GET
//! /api/annotations`), dashboard lookup by UID and bearer-token auth.
//! Grafana cannot be installed on the test machines; this server answers
//! like Grafana does, including what it rejects (401 without a valid token,
//! 403 for a Viewer token, 400 for bad JSON or an empty text, 404 for an
//! unknown annotation or dashboard) and what it silently accepts (an
//! unknown `dashboardUID` becomes an organization annotation).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// What a token may do, as Grafana's service-account roles decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Editor,
    Viewer,
}

/// One stored annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnnotation {
    pub id: u64,
    pub dashboard_uid: String,
    pub panel_id: i64,
    pub time: i64,
    pub time_end: i64,
    pub tags: Vec<String>,
    pub text: String,
}

/// One request as received (method, path with query, body).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<String, Role>,
    dashboards: HashMap<String, String>,
    annotations: Vec<StoredAnnotation>,
    next_id: u64,
    requests: Vec<Recorded>,
    /// Answers to give instead of the normal handling, in order.
    forced: Vec<(u16, String)>,
    delay: Duration,
}

/// A running fake Grafana on 127.0.0.1. Stops when dropped.
#[derive(Debug)]
pub struct GrafanaApi {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    match state.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl GrafanaApi {
    /// Starts the server with no tokens and no dashboards.
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            next_id: 1,
            ..Default::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    let _ = serve_connection(conn, &st);
                });
            }
        });
        Ok(GrafanaApi { port, state, stop })
    }

    /// The base URL to configure in Steward.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Accepts `token` as a service-account token with `role`.
    pub fn add_token(&self, token: &str, role: Role) {
        lock(&self.state).tokens.insert(token.to_string(), role);
    }

    /// Makes a dashboard with this UID exist.
    pub fn add_dashboard(&self, uid: &str, title: &str) {
        lock(&self.state)
            .dashboards
            .insert(uid.to_string(), title.to_string());
    }

    /// Delays every answer (to make clients time out).
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// The next request gets this status and JSON body instead of its
    /// normal answer (after auth), e.g. a 500 or a 400 Grafana may give.
    pub fn force_next(&self, status: u16, body: &str) {
        lock(&self.state).forced.push((status, body.to_string()));
    }

    /// Every stored annotation, oldest first.
    pub fn annotations(&self) -> Vec<StoredAnnotation> {
        lock(&self.state).annotations.clone()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// How many requests had this method.
    pub fn count(&self, method: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

impl Drop for GrafanaApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> anyhow::Result<Option<Request>> {
    let mut reader = BufReader::new(stream);
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
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

fn serve_connection(mut stream: TcpStream, state: &Mutex<State>) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Keep-alive: serve requests until the client closes.
    while let Some(req) = read_request(&stream)? {
        let delay = lock(state).delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let (status, body) = handle(&req, state);
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Error",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes())?;
        stream.flush()?;
    }
    Ok(())
}

fn message(status: u16, text: &str) -> (u16, String) {
    (status, json!({ "message": text }).to_string())
}

fn handle(req: &Request, state: &Mutex<State>) -> (u16, String) {
    let mut st = lock(state);
    st.requests.push(Recorded {
        method: req.method.clone(),
        target: req.target.clone(),
        authorization: req.headers.get("authorization").cloned(),
        body: String::from_utf8_lossy(&req.body).into_owned(),
    });
    let (path, query) = req
        .target
        .split_once('?')
        .unwrap_or((req.target.as_str(), ""));

    if path == "/api/health" {
        return (
            200,
            json!({"database": "ok", "version": "fake"}).to_string(),
        );
    }
    // Auth: a bearer service-account token Grafana knows.
    let role = req
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| st.tokens.get(t.trim()).copied());
    let Some(role) = role else {
        return message(401, "Unauthorized");
    };
    let writes = matches!(req.method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE");
    if writes && role == Role::Viewer {
        return (
            403,
            json!({
                "accessErrorId": "ACE0000000001",
                "message": "You'll need additional permissions to perform this action. Permissions needed: annotations:create",
                "title": "Access denied"
            })
            .to_string(),
        );
    }
    if !st.forced.is_empty() {
        return st.forced.remove(0);
    }

    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "dashboards", "uid", uid]) => match st.dashboards.get(*uid) {
            Some(title) => (
                200,
                json!({"dashboard": {"uid": uid, "title": title}, "meta": {}}).to_string(),
            ),
            None => message(404, "Dashboard not found"),
        },
        ("POST", ["api", "annotations"]) => create(&mut st, &req.body),
        ("PATCH", ["api", "annotations", id]) => patch(&mut st, id, &req.body),
        ("GET", ["api", "annotations"]) => list(&st, query),
        (_, ["api", "annotations", ..]) => message(405, "Method Not Allowed"),
        _ => message(404, "Not found"),
    }
}

/// Parses a JSON object body the way Grafana's binding does: invalid JSON
/// or a wrongly typed field is "bad request data".
fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, (u16, String)> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(message(400, "bad request data")),
    }
}

fn opt_i64(map: &serde_json::Map<String, Value>, key: &str) -> Result<Option<i64>, (u16, String)> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| message(400, "bad request data")),
    }
}

fn opt_tags(map: &serde_json::Map<String, Value>) -> Result<Option<Vec<String>>, (u16, String)> {
    match map.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| message(400, "bad request data"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(message(400, "bad request data")),
    }
}

fn opt_str(
    map: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, (u16, String)> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(message(400, "bad request data")),
    }
}

fn create(st: &mut State, body: &[u8]) -> (u16, String) {
    let result = (|| {
        let map = parse_object(body)?;
        let text = opt_str(&map, "text")?.unwrap_or_default();
        let tags = opt_tags(&map)?.unwrap_or_default();
        let time = opt_i64(&map, "time")?
            .filter(|t| *t > 0)
            .unwrap_or_else(now_ms);
        let time_end = opt_i64(&map, "timeEnd")?.filter(|t| *t > 0).unwrap_or(time);
        let panel_id = opt_i64(&map, "panelId")?.unwrap_or(0);
        let dashboard_uid = opt_str(&map, "dashboardUID")?.unwrap_or_default();
        if text.is_empty() {
            return Err(message(400, "Text field should not be empty"));
        }
        // Grafana silently drops an unknown dashboardUID: the annotation
        // becomes an organization annotation.
        let dashboard_uid = if st.dashboards.contains_key(&dashboard_uid) {
            dashboard_uid
        } else {
            String::new()
        };
        let id = st.next_id;
        st.next_id += 1;
        st.annotations.push(StoredAnnotation {
            id,
            dashboard_uid,
            panel_id,
            time,
            time_end,
            tags,
            text,
        });
        Ok((
            200,
            json!({"message": "Annotation added", "id": id}).to_string(),
        ))
    })();
    result.unwrap_or_else(|e| e)
}

fn patch(st: &mut State, id: &str, body: &[u8]) -> (u16, String) {
    let Ok(id) = id.parse::<u64>() else {
        return message(400, "annotationId is invalid");
    };
    let result = (|| {
        let map = parse_object(body)?;
        let text = opt_str(&map, "text")?;
        let tags = opt_tags(&map)?;
        let time = opt_i64(&map, "time")?;
        let time_end = opt_i64(&map, "timeEnd")?;
        let Some(a) = st.annotations.iter_mut().find(|a| a.id == id) else {
            return Err(message(404, "Could not find annotation to update"));
        };
        if let Some(t) = text {
            a.text = t;
        }
        if let Some(t) = tags {
            a.tags = t;
        }
        if let Some(t) = time.filter(|t| *t > 0) {
            a.time = t;
        }
        if let Some(t) = time_end.filter(|t| *t > 0) {
            a.time_end = t;
        }
        Ok(message(200, "Annotation patched"))
    })();
    result.unwrap_or_else(|e| e)
}

fn list(st: &State, query: &str) -> (u16, String) {
    let mut tags = Vec::new();
    let mut limit = 100usize;
    let mut from = i64::MIN;
    let mut to = i64::MAX;
    let mut dashboard_uid = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "tags" => tags.push(v),
            "limit" => limit = v.parse().unwrap_or(100),
            "from" => from = v.parse().unwrap_or(i64::MIN),
            "to" => to = v.parse().unwrap_or(i64::MAX),
            "dashboardUID" => dashboard_uid = Some(v),
            _ => {}
        }
    }
    let mut found: Vec<&StoredAnnotation> = st
        .annotations
        .iter()
        // Tags are ANDed (matchAny=false is the default).
        .filter(|a| tags.iter().all(|t| a.tags.contains(t)))
        .filter(|a| a.time_end >= from && a.time <= to)
        .filter(|a| dashboard_uid.as_ref().is_none_or(|d| &a.dashboard_uid == d))
        .collect();
    found.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
    found.truncate(limit);
    let items: Vec<Value> = found
        .into_iter()
        .map(|a| {
            json!({
                "id": a.id,
                "alertId": 0,
                "dashboardId": 0,
                "dashboardUID": a.dashboard_uid,
                "panelId": a.panel_id,
                "userId": 1,
                "newState": "",
                "prevState": "",
                "created": a.time,
                "updated": a.time,
                "time": a.time,
                "timeEnd": a.time_end,
                "text": a.text,
                "tags": a.tags,
                "login": "sa-steward",
                "email": "",
                "avatarUrl": "",
                "data": {}
            })
        })
        .collect();
    (200, Value::Array(items).to_string())
}
