//! An OTLP upstream for the tests, built from the official proto
//! definitions (`opentelemetry-proto`): a tonic gRPC server and an HTTP
//! `/v1/logs` `/v1/traces` endpoint on free loopback ports. It can go down
//! (every connection cut), come back on the same ports, answer with
//! retryable or non-retryable errors or partial success, and it keeps every
//! record it accepted so tests count them by content.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accept and keep everything.
    Accept,
    /// gRPC UNAVAILABLE / HTTP 503 with Retry-After: 1 (retryable).
    Unavailable,
    /// gRPC INVALID_ARGUMENT / HTTP 400 (never retried).
    BadRequest,
    /// gRPC UNAUTHENTICATED / HTTP 401, as for an expired token.
    Unauthorized,
    /// Accept, keep, and report this many log records rejected.
    PartialReject(i64),
}

/// One received log record, flattened to strings.
#[derive(Debug, Clone)]
pub struct LogRecordSeen {
    pub body: String,
    pub severity: i32,
    pub severity_text: String,
    pub time_unix_nano: u64,
    /// Empty when the record belongs to no trace.
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    pub scope: BTreeMap<String, String>,
}

/// One received span.
#[derive(Debug, Clone)]
pub struct SpanSeen {
    pub name: String,
    pub trace_id: Vec<u8>,
    pub resource: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Shared {
    mode: Mutex<Mode>,
    logs: Mutex<Vec<LogRecordSeen>>,
    spans: Mutex<Vec<SpanSeen>>,
    /// Header name/value pairs of every request (lower-case names).
    headers: Mutex<Vec<(String, String)>>,
    /// Requests answered with an error.
    refused: Mutex<u64>,
}

/// The running sink. Dropping it stops it.
pub struct OtlpSink {
    pub grpc_port: u16,
    pub http_port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("grpc_port", &self.grpc_port)
            .field("http_port", &self.http_port)
            .finish()
    }
}

fn value_text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), value_text(&kv.value)))
        .collect()
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    /// The gRPC error the mode answers with, counted; `None` to accept.
    fn grpc_refusal(&self) -> Option<tonic::Status> {
        let status = match self.mode() {
            Mode::Unavailable => tonic::Status::unavailable("sink is in outage mode"),
            Mode::BadRequest => tonic::Status::invalid_argument("sink refuses everything"),
            Mode::Unauthorized => tonic::Status::unauthenticated("sink: token expired"),
            Mode::Accept | Mode::PartialReject(_) => return None,
        };
        self.refuse();
        Some(status)
    }

    fn record_headers(&self, pairs: Vec<(String, String)>) {
        self.headers.lock().unwrap().extend(pairs);
    }

    fn refuse(&self) {
        *self.refused.lock().unwrap() += 1;
    }

    fn keep_logs(&self, req: ExportLogsServiceRequest) {
        let mut out = self.logs.lock().unwrap();
        for rl in req.resource_logs {
            let resource = rl
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for sl in rl.scope_logs {
                let scope = sl.scope.map(|s| attrs(&s.attributes)).unwrap_or_default();
                for r in sl.log_records {
                    out.push(LogRecordSeen {
                        body: value_text(&r.body),
                        severity: r.severity_number,
                        severity_text: r.severity_text,
                        time_unix_nano: r.time_unix_nano,
                        trace_id: r.trace_id,
                        span_id: r.span_id,
                        attributes: attrs(&r.attributes),
                        resource: resource.clone(),
                        scope: scope.clone(),
                    });
                }
            }
        }
    }

    fn keep_spans(&self, req: ExportTraceServiceRequest) {
        let mut out = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(SpanSeen {
                        name: s.name,
                        trace_id: s.trace_id,
                        resource: resource.clone(),
                        attributes: attrs(&s.attributes),
                    });
                }
            }
        }
    }
}

struct Grpc(Arc<Shared>);

fn metadata_pairs(m: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    m.clone()
        .into_headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.record_headers(metadata_pairs(request.metadata()));
        if let Some(status) = self.0.grpc_refusal() {
            return Err(status);
        }
        let partial_success = match self.0.mode() {
            Mode::PartialReject(n) => Some(ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: "sink rejects some".into(),
            }),
            _ => None,
        };
        self.0.keep_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.record_headers(metadata_pairs(request.metadata()));
        if let Some(status) = self.0.grpc_refusal() {
            return Err(status);
        }
        self.0.keep_spans(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn http_body(headers: &HeaderMap, body: &Bytes) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/x-protobuf" {
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "protobuf only"));
    }
    match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .read_to_end(&mut out)
                .map_err(|_| (StatusCode::BAD_REQUEST, "bad gzip"))?;
            Ok(out)
        }
        _ => Ok(body.to_vec()),
    }
}

fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

fn refused(shared: &Shared) -> Option<Response> {
    match shared.mode() {
        Mode::Unavailable => {
            shared.refuse();
            Some(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                    "outage",
                )
                    .into_response(),
            )
        }
        Mode::BadRequest => {
            shared.refuse();
            Some((StatusCode::BAD_REQUEST, "refused").into_response())
        }
        Mode::Unauthorized => {
            shared.refuse();
            Some((StatusCode::UNAUTHORIZED, "token expired").into_response())
        }
        _ => None,
    }
}

async fn http_logs(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.record_headers(header_pairs(&headers));
    if let Some(r) = refused(&shared) {
        return r;
    }
    let raw = match http_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Ok(req) = ExportLogsServiceRequest::decode(raw.as_slice()) else {
        return (StatusCode::BAD_REQUEST, "not a logs request").into_response();
    };
    shared.keep_logs(req);
    let response = match shared.mode() {
        Mode::PartialReject(n) => ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: "sink rejects some".into(),
            }),
        },
        _ => ExportLogsServiceResponse::default(),
    };
    (
        [("content-type", "application/x-protobuf")],
        response.encode_to_vec(),
    )
        .into_response()
}

async fn http_traces(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.record_headers(header_pairs(&headers));
    if let Some(r) = refused(&shared) {
        return r;
    }
    let raw = match http_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Ok(req) = ExportTraceServiceRequest::decode(raw.as_slice()) else {
        return (StatusCode::BAD_REQUEST, "not a trace request").into_response();
    };
    shared.keep_spans(req);
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

impl OtlpSink {
    /// Starts accepting on two free loopback ports.
    pub fn start() -> anyhow::Result<OtlpSink> {
        let mut sink = OtlpSink {
            grpc_port: crate::free_port(),
            http_port: crate::free_port(),
            shared: Arc::new(Shared {
                mode: Mutex::new(Mode::Accept),
                logs: Mutex::new(Vec::new()),
                spans: Mutex::new(Vec::new()),
                headers: Mutex::new(Vec::new()),
                refused: Mutex::new(0),
            }),
            runtime: None,
        };
        sink.up()?;
        Ok(sink)
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Brings the servers (back) up on the same ports.
    pub fn up(&mut self) -> anyhow::Result<()> {
        if self.runtime.is_some() {
            return Ok(());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let shared = Arc::clone(&self.shared);
        let grpc_addr: SocketAddr = ([127, 0, 0, 1], self.grpc_port).into();
        let http_addr: SocketAddr = ([127, 0, 0, 1], self.http_port).into();
        let (grpc_listener, http_listener) = runtime.block_on(async {
            // The port may linger a moment after the previous runtime died.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let g = tokio::net::TcpListener::bind(grpc_addr).await;
                let h = tokio::net::TcpListener::bind(http_addr).await;
                match (g, h) {
                    (Ok(g), Ok(h)) => return Ok((g, h)),
                    (g, h) if Instant::now() > deadline => {
                        return Err(anyhow::anyhow!(
                            "sink cannot bind its ports: {:?} {:?}",
                            g.err(),
                            h.err()
                        ))
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })?;
        let grpc_shared = Arc::clone(&shared);
        runtime.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
            let _ = tonic::transport::Server::builder()
                .add_service(
                    LogsServiceServer::new(Grpc(Arc::clone(&grpc_shared)))
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .max_decoding_message_size(64 << 20),
                )
                .add_service(
                    TraceServiceServer::new(Grpc(grpc_shared))
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .max_decoding_message_size(64 << 20),
                )
                .serve_with_incoming(incoming)
                .await;
        });
        runtime.spawn(async move {
            let app = axum::Router::new()
                .route("/v1/logs", post(http_logs))
                .route("/otlp/v1/logs", post(http_logs))
                .route("/v1/traces", post(http_traces))
                .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
                .with_state(shared);
            let _ = axum::serve(http_listener, app).await;
        });
        self.runtime = Some(runtime);
        Ok(())
    }

    /// Goes down: listeners closed and every open connection cut.
    pub fn down(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Every log record accepted so far.
    pub fn logs(&self) -> Vec<LogRecordSeen> {
        self.shared.logs.lock().unwrap().clone()
    }

    pub fn log_count(&self) -> usize {
        self.shared.logs.lock().unwrap().len()
    }

    /// How many times each body arrived.
    pub fn bodies(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for r in self.shared.logs.lock().unwrap().iter() {
            *map.entry(r.body.clone()).or_insert(0) += 1;
        }
        map
    }

    pub fn spans(&self) -> Vec<SpanSeen> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// Header pairs of every request received (any mode).
    pub fn headers(&self) -> Vec<(String, String)> {
        self.shared.headers.lock().unwrap().clone()
    }

    /// Requests answered with an error.
    pub fn refused(&self) -> u64 {
        *self.shared.refused.lock().unwrap()
    }

    /// Waits until `pred` holds; returns whether it did within `timeout`.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&OtlpSink) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.down();
    }
}

/// A `steward agent` whose state directory outlives it, so tests can stop,
/// kill and restart it on the same queue and checkpoints.
#[derive(Debug)]
pub struct PersistentAgent {
    pub guard: Option<crate::ChildGuard>,
    pub port: u16,
    pub state_dir: std::path::PathBuf,
    pub config_path: std::path::PathBuf,
    pub log_path: std::path::PathBuf,
    config: String,
}

impl PersistentAgent {
    /// Starts steward with `config` (without `[agent]`) and a state
    /// directory under `dir`; waits for `/livez`.
    pub fn start(dir: &std::path::Path, config: &str) -> anyhow::Result<PersistentAgent> {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir)?;
        let mut agent = PersistentAgent {
            guard: None,
            port: 0,
            state_dir,
            config_path: dir.join("steward.toml"),
            log_path: dir.join("steward.log"),
            config: String::new(),
        };
        agent.restart_with(config)?;
        Ok(agent)
    }

    /// (Re)starts with a new configuration on the same state directory.
    pub fn restart_with(&mut self, config: &str) -> anyhow::Result<()> {
        self.config = config.to_string();
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(15));
        }
        self.port = crate::free_port();
        std::fs::write(
            &self.config_path,
            format!(
                "[agent]\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\nlog_level = \"info,steward_telemetry=debug\"\n{config}",
                self.port,
                self.state_dir.display()
            ),
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = std::process::Command::new(crate::steward_bin());
        cmd.arg("agent")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.guard = Some(crate::ChildGuard::spawn("steward", &mut cmd)?);
        if let Err(e) = crate::wait_for_http(self.port, "/livez", Duration::from_secs(30)) {
            anyhow::bail!("steward did not start: {e}\nlog:\n{}", self.log());
        }
        Ok(())
    }

    /// Restarts with the configuration last used.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let config = self.config.clone();
        self.restart_with(&config)
    }

    /// SIGTERM and wait; true if it exited 0.
    pub fn stop(&mut self) -> bool {
        match self.guard.take() {
            Some(mut g) => g.stop(Duration::from_secs(15)).is_some_and(|s| s.success()),
            None => true,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(|g| g.pid()).unwrap_or(0)
    }

    pub fn scrape(&self) -> anyhow::Result<String> {
        let (status, _, body) = crate::http_get(self.port, "/metrics", &[])?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(String::from_utf8(body)?)
    }

    /// The value of one sample (`name{labels}` exactly as exposed, or a
    /// bare name), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.scrape().ok()?;
        metric_in(&text, series)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Finds `series` (e.g. `steward_http_requests_total{source="a",method="GET",status="200"}`)
/// in exposition text.
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}
