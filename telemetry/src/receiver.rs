//! The loopback OTLP receiver (gRPC and HTTP/protobuf, logs and traces):
//! applications on the host send to localhost; what arrives is put in the
//! durable queue before it is acknowledged, and forwarded upstream from
//! there. A full disk answers UNAVAILABLE / 503 so the client retries.
//! Off loopback, a web-config file adds TLS and basic auth to both.
//! Requests are bounded in size (also while gunzipping) and in number at
//! once, and decoded on blocking threads: a local client sending large or
//! many requests cannot starve `/metrics` or the scheduler of the async
//! workers, nor run the agent out of memory.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use steward_web::auth::AuthResult;
use steward_web::{BasicAuth, Timeouts, WebHandle, WebRuntime};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;

use crate::parse::string_value;
use crate::queue::{Entry, Queue, QueueError, Signal};
use crate::stats::Stats;
use crate::turn::TurnLayer;

pub use crate::config::GRPC_ALPN;
pub const HTTP_ALPN: &[&[u8]] = &[b"http/1.1"];

/// Slow clients: a TLS handshake and a request header must arrive within
/// 10 s; a connection that moves nothing for 2 minutes is closed.
const TIMEOUTS: Timeouts = Timeouts {
    header_read: Duration::from_secs(10),
    idle: Duration::from_secs(120),
};

/// The web configuration of both listeners (one file, two ALPN lists).
pub struct ReceiverWeb {
    pub grpc: WebRuntime,
    pub http: WebRuntime,
}

/// Loads `telemetry.receiver.web_config_file` (plain without one).
pub fn web_runtimes(path: Option<&Path>) -> Result<ReceiverWeb, ReceiverError> {
    Ok(ReceiverWeb {
        grpc: WebRuntime::load_optional(path, GRPC_ALPN)?,
        http: WebRuntime::load_optional(path, HTTP_ALPN)?,
    })
}

/// Shared by both protocols.
#[derive(Clone)]
pub struct Intake {
    pub queue: Arc<Queue>,
    pub stats: Arc<Stats>,
    /// Added to every resource that lacks it.
    pub host_name: String,
    /// Largest request after gunzipping (`max_request_bytes`).
    pub max_request_bytes: usize,
    /// One permit per request being read and decoded, over both protocols
    /// (`max_concurrent_requests`).
    pub permits: Arc<Semaphore>,
}

/// Why a request was not queued; each protocol answers it its own way.
#[derive(Debug)]
enum Refusal {
    /// Larger than the receiver or the queue takes: the client must not
    /// send it again as it is.
    TooLarge(String),
    /// The queue cannot take it now (full disk, stopping): retry later.
    Unavailable(String),
}

impl From<QueueError> for Refusal {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::TooLarge { .. } => Refusal::TooLarge(e.to_string()),
            other => Refusal::Unavailable(other.to_string()),
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::TooLarge(m) => tonic::Status::resource_exhausted(m),
            Refusal::Unavailable(m) => tonic::Status::unavailable(m),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::TooLarge(m) => {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("{m}\n")).into_response()
            }
            Refusal::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                format!("{m}\n"),
            )
                .into_response(),
        }
    }
}

impl Intake {
    /// Waits for a turn to decode a request.
    async fn turn(&self) -> Result<SemaphorePermit<'_>, Refusal> {
        self.permits
            .acquire()
            .await
            .map_err(|_| Refusal::Unavailable("the OTLP receiver is stopping".into()))
    }
}

pub(crate) fn fill_resource(resource: &mut Option<Resource>, host: &str) {
    let r = resource.get_or_insert_with(Resource::default);
    if !r.attributes.iter().any(|a| a.key == "host.name") {
        r.attributes.push(KeyValue {
            key: "host.name".into(),
            value: Some(string_value(host)),
            ..Default::default()
        });
    }
}

impl Intake {
    fn logs(&self, mut req: ExportLogsServiceRequest) -> Result<(), Refusal> {
        let items: usize = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        for r in &mut req.resource_logs {
            fill_resource(&mut r.resource, &self.host_name);
        }
        self.put(Signal::Logs, items, req.encode_to_vec())
    }

    fn traces(&self, mut req: ExportTraceServiceRequest) -> Result<(), Refusal> {
        let items: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        for r in &mut req.resource_spans {
            fill_resource(&mut r.resource, &self.host_name);
        }
        self.put(Signal::Traces, items, req.encode_to_vec())
    }

    fn put(&self, signal: Signal, items: usize, payload: Vec<u8>) -> Result<(), Refusal> {
        if items == 0 {
            return Ok(());
        }
        self.queue.append(&Entry {
            signal,
            items: items as u32,
            positions: Vec::new(),
            payload,
        })?;
        self.stats
            .items_received
            .add(&[signal.as_str()], items as u64);
        Ok(())
    }
}

struct Grpc(Intake);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        // The turn was taken before the message was decoded (TurnLayer).
        let intake = self.0.clone();
        let req = request.into_inner();
        off_the_async_workers(move || intake.logs(req)).await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let intake = self.0.clone();
        let req = request.into_inner();
        off_the_async_workers(move || intake.traces(req)).await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Runs `work` (gunzip, decode, re-encode, append: milliseconds to
/// seconds for a large request) on a blocking thread.
async fn off_the_async_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(Refusal::Unavailable(format!("the request failed: {e}"))))
}

/// Why a receiver cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// `key` is the `telemetry.receiver` option that chose the address.
    #[error("cannot listen on {addr} for the OTLP receiver: {error}; choose another telemetry.receiver.{key} or set telemetry.receiver.enabled = false")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        error: std::io::Error,
    },
    #[error("cannot set up the OTLP receiver socket on {addr}: {error}")]
    Socket {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("telemetry.receiver.web_config_file: {0}")]
    WebConfig(#[from] steward_web::WebConfigError),
}

/// Binds the gRPC listener now (so a taken port is a startup error) and
/// returns the serving future.
pub fn serve_grpc(
    addr: SocketAddr,
    intake: Intake,
    web: WebRuntime,
    cancel: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send, ReceiverError> {
    let listener = bind(addr, "grpc_listen")?;
    // tonic checks the limit on the message and while gunzipping it.
    let max = intake.max_request_bytes;
    let permits = Arc::clone(&intake.permits);
    let logs = LogsServiceServer::new(Grpc(intake.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let traces = TraceServiceServer::new(Grpc(intake))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    let check = grpc_auth(web.auth.clone());
    let router = tonic::transport::Server::builder()
        .layer(TurnLayer(permits))
        .layer(tower::util::MapResponseLayer::new(oversize_is_not_retried))
        .add_service(InterceptedService::new(logs, check.clone()))
        .add_service(InterceptedService::new(traces, check));
    Ok(async move {
        let result = match web.tls {
            None => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router
                    .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                    .await
            }
            Some(acceptor) => {
                let incoming = tls_incoming(listener, acceptor, cancel.clone());
                router
                    .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!("OTLP gRPC receiver on {addr} failed: {e}");
        }
    })
}

/// tonic answers a message over `max_decoding_message_size` with
/// OUT_OF_RANGE, which OTLP clients retry, forever; RESOURCE_EXHAUSTED
/// without RetryInfo tells them to drop it. The handlers never answer
/// OUT_OF_RANGE themselves, so only that limit is rewritten.
fn oversize_is_not_retried(
    mut response: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let status = response.headers_mut().get_mut("grpc-status");
    if let Some(code) = status.filter(|v| *v == "11") {
        *code = header::HeaderValue::from_static("8");
    }
    response
}

/// The gRPC check of `basic_auth_users` (every call passes without users).
/// bcrypt runs on the calling worker, once per credential: successes are
/// cached.
fn grpc_auth(
    auth: Option<Arc<BasicAuth>>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let Some(auth) = &auth else {
            return Ok(request);
        };
        let credentials = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        match auth.check(credentials) {
            AuthResult::Allowed => Ok(request),
            AuthResult::Denied => Err(tonic::Status::unauthenticated(
                "basic auth with a user of the receiver's web_config_file is required",
            )),
        }
    }
}

type TlsIncoming =
    Pin<Box<dyn futures::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send>>;

/// Accepted connections after their TLS handshake, each handshake in its
/// own task and bounded in time, so one slow client holds up no other.
fn tls_incoming(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
) -> TlsIncoming {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("OTLP gRPC accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TIMEOUTS.header_read, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "OTLP gRPC TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "OTLP gRPC TLS handshake timed out"),
                }
            });
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn bind(addr: SocketAddr, key: &'static str) -> Result<tokio::net::TcpListener, ReceiverError> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|error| ReceiverError::Bind {
        addr,
        key,
        error,
    })?;
    std_listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
        .map_err(|error| ReceiverError::Socket { addr, error })
}

/// Binds the HTTP listener now and returns the serving future.
pub fn serve_http(
    addr: SocketAddr,
    intake: Intake,
    web: WebRuntime,
    cancel: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send, ReceiverError> {
    let listener = bind(addr, "http_listen")?;
    let max = intake.max_request_bytes;
    let intake = Arc::new(intake);
    let app = Router::new()
        .route("/v1/logs", post(http_logs))
        .route("/v1/traces", post(http_traces))
        // The turn is taken before the body is read, so waiting requests
        // hold a connection, not their bodies.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&intake),
            one_turn,
        ))
        .layer(DefaultBodyLimit::max(max))
        .with_state(intake);
    Ok(steward_web::serve(
        listener,
        app,
        WebHandle::new(web),
        TIMEOUTS,
        cancel,
    ))
}

/// Lets a request in once it has a turn (`max_concurrent_requests`).
async fn one_turn(State(intake): State<Arc<Intake>>, request: Request, next: Next) -> Response {
    match intake.turn().await {
        Ok(_turn) => next.run(request).await,
        Err(r) => r.into_response(),
    }
}

/// The protobuf body, gunzipped if needed (stopping as soon as it inflates
/// past `max` bytes); an error response otherwise.
pub(crate) fn body_bytes(
    headers: &HeaderMap,
    body: &Bytes,
    max: usize,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Steward's OTLP receiver accepts Content-Type: application/x-protobuf\n".to_string(),
        ));
    }
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad gzip body: {e}\n")))?;
            if out.len() > max {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the gzip body inflates past telemetry.receiver.max_request_bytes ({max} bytes)\n"),
                ));
            }
            Ok(out)
        }
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding {other:?}; use gzip or none\n"),
        )),
    }
}

fn protobuf_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-protobuf")], bytes).into_response()
}

/// Gunzips, decodes and queues one HTTP request on a blocking thread.
async fn http_export(
    intake: Arc<Intake>,
    headers: HeaderMap,
    body: Bytes,
    signal: Signal,
) -> Response {
    let work = move || -> Result<Response, Refusal> {
        let raw = match body_bytes(&headers, &body, intake.max_request_bytes) {
            Ok(b) => b,
            Err(r) => return Ok(r.into_response()),
        };
        let bad = |what: &str| (StatusCode::BAD_REQUEST, format!("body is not an {what}\n"));
        Ok(match signal {
            Signal::Logs => match ExportLogsServiceRequest::decode(raw.as_slice()) {
                Ok(req) => {
                    intake.logs(req)?;
                    protobuf_response(ExportLogsServiceResponse::default().encode_to_vec())
                }
                Err(_) => bad("ExportLogsServiceRequest").into_response(),
            },
            Signal::Traces => match ExportTraceServiceRequest::decode(raw.as_slice()) {
                Ok(req) => {
                    intake.traces(req)?;
                    protobuf_response(ExportTraceServiceResponse::default().encode_to_vec())
                }
                Err(_) => bad("ExportTraceServiceRequest").into_response(),
            },
        })
    };
    match off_the_async_workers(work).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn http_logs(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    http_export(intake, headers, body, Signal::Logs).await
}

async fn http_traces(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    http_export(intake, headers, body, Signal::Traces).await
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;
    use crate::queue::QueueOptions;

    const MAX: usize = 64 * 1024;

    fn intake(dir: &std::path::Path) -> Intake {
        let (queue, _) = Queue::open(QueueOptions {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 30,
            segment_bytes: 1 << 26,
            fsync_interval: Duration::from_secs(1),
        })
        .unwrap();
        Intake {
            queue,
            stats: Arc::new(Stats::default()),
            host_name: "test-host".into(),
            max_request_bytes: MAX,
            permits: Arc::new(Semaphore::new(2)),
        }
    }

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// One log record whose body is `body_bytes` long.
    fn logs_request(body_bytes: usize) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(string_value("a".repeat(body_bytes))),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    async fn post_logs(addr: SocketAddr, body: Vec<u8>, gzipped: bool) -> reqwest::StatusCode {
        let mut req = reqwest::Client::new()
            .post(format!("http://{addr}/v1/logs"))
            .header("content-type", "application/x-protobuf")
            .body(body);
        if gzipped {
            req = req.header("content-encoding", "gzip");
        }
        req.send().await.unwrap().status()
    }

    #[tokio::test]
    async fn http_refuses_oversized_bodies_and_gzip_bombs_with_413() {
        let dir = tempfile::tempdir().unwrap();
        let intake = intake(dir.path());
        let queue = Arc::clone(&intake.queue);
        let addr = free_addr();
        let cancel = CancellationToken::new();
        let web = web_runtimes(None).unwrap().http;
        tokio::spawn(serve_http(addr, intake, web, cancel.clone()).unwrap());

        let fits = logs_request(1000).encode_to_vec();
        assert_eq!(post_logs(addr, fits.clone(), false).await, 200);
        assert_eq!(post_logs(addr, gzip(&fits), true).await, 200);
        let big = logs_request(MAX + 1).encode_to_vec();
        assert_eq!(post_logs(addr, big.clone(), false).await, 413);
        // 10 MiB that gzips to a few KiB: refused while inflating.
        let bomb = gzip(&logs_request(10 << 20).encode_to_vec());
        assert!(bomb.len() < MAX);
        assert_eq!(post_logs(addr, bomb, true).await, 413);
        assert_eq!(queue.depth().0, 2, "only the two that fit are queued");
        cancel.cancel();
    }

    #[tokio::test]
    async fn grpc_refuses_oversized_messages_and_gzip_bombs() {
        let dir = tempfile::tempdir().unwrap();
        let intake = intake(dir.path());
        let queue = Arc::clone(&intake.queue);
        let addr = free_addr();
        let cancel = CancellationToken::new();
        let web = web_runtimes(None).unwrap().grpc;
        tokio::spawn(serve_grpc(addr, intake, web, cancel.clone()).unwrap());
        let mut client = None;
        for _ in 0..50 {
            match LogsServiceClient::connect(format!("http://{addr}")).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let plain = client.expect("the receiver listens");
        let mut gzipped = plain.clone().send_compressed(CompressionEncoding::Gzip);
        let mut plain = plain;

        plain.export(logs_request(1000)).await.unwrap();
        let code = plain
            .export(logs_request(MAX + 1))
            .await
            .unwrap_err()
            .code();
        // Not OUT_OF_RANGE (tonic's own answer), which OTLP clients retry.
        assert_eq!(code, tonic::Code::ResourceExhausted);
        let code = gzipped
            .export(logs_request(10 << 20))
            .await
            .unwrap_err()
            .code();
        assert_eq!(code, tonic::Code::ResourceExhausted);
        assert_eq!(queue.depth().0, 1);
        cancel.cancel();
    }

    /// A gRPC message is read and decoded only once it has a turn: with
    /// the only turn held, even an oversized message gets no answer (it
    /// would be refused at once if tonic decoded it first).
    #[tokio::test]
    async fn grpc_messages_are_decoded_only_once_they_have_a_turn() {
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(dir.path());
        intake.permits = Arc::new(Semaphore::new(1));
        let permits = Arc::clone(&intake.permits);
        let addr = free_addr();
        let cancel = CancellationToken::new();
        let web = web_runtimes(None).unwrap().grpc;
        tokio::spawn(serve_grpc(addr, intake, web, cancel.clone()).unwrap());
        let mut client = None;
        for _ in 0..50 {
            match LogsServiceClient::connect(format!("http://{addr}")).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let mut client = client.expect("the receiver listens");
        let held = Arc::clone(&permits).acquire_owned().await.unwrap();
        let waiting = tokio::spawn(async move { client.export(logs_request(MAX + 1)).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "the message was handled without a turn"
        );
        drop(held);
        let code = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("answered once the turn is free")
            .unwrap()
            .unwrap_err()
            .code();
        assert_eq!(code, tonic::Code::ResourceExhausted);
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_slow_client_holds_one_turn_and_the_others_wait_for_it() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let mut intake = intake(dir.path());
        intake.permits = Arc::new(Semaphore::new(1));
        let addr = free_addr();
        let cancel = CancellationToken::new();
        let web = web_runtimes(None).unwrap().http;
        tokio::spawn(serve_http(addr, intake, web, cancel.clone()).unwrap());
        let fits = logs_request(100).encode_to_vec();
        assert_eq!(post_logs(addr, fits.clone(), false).await, 200);

        // Headers and a tenth of the body, then nothing: it has the turn.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            fits.len()
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        slow.write_all(&fits[..fits.len() / 10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting = tokio::spawn(post_logs(addr, fits.clone(), false));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "a second request waits for the turn"
        );
        slow.write_all(&fits[fits.len() / 10..]).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("served once the slow one is done")
            .unwrap();
        assert_eq!(status, 200);
        cancel.cancel();
    }
}
