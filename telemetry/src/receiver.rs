//! The loopback OTLP receiver (gRPC and HTTP/protobuf, logs and traces):
//! applications on the host send to localhost; what arrives is put in the
//! durable queue before it is acknowledged, and forwarded upstream from
//! there. A full disk answers UNAVAILABLE / 503 so the client retries.
//! Off loopback, a web-config file adds TLS and basic auth to both.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
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
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;

use crate::parse::string_value;
use crate::queue::{Entry, Queue, Signal};
use crate::stats::Stats;

/// The collector's defaults: 4 MiB gRPC messages, 20 MiB HTTP bodies.
const GRPC_MAX: usize = 4 * 1024 * 1024;
const HTTP_MAX: usize = 20 * 1024 * 1024;

/// What each listener speaks over TLS.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
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
}

fn fill_resource(resource: &mut Option<Resource>, host: &str) {
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
    fn logs(&self, mut req: ExportLogsServiceRequest) -> Result<(), String> {
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

    fn traces(&self, mut req: ExportTraceServiceRequest) -> Result<(), String> {
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

    fn put(&self, signal: Signal, items: usize, payload: Vec<u8>) -> Result<(), String> {
        if items == 0 {
            return Ok(());
        }
        self.queue
            .append(&Entry {
                signal,
                items: items as u32,
                positions: Vec::new(),
                payload,
            })
            .map_err(|e| e.to_string())?;
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
        self.0
            .logs(request.into_inner())
            .map_err(tonic::Status::unavailable)?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .traces(request.into_inner())
            .map_err(tonic::Status::unavailable)?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
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
    let logs = LogsServiceServer::new(Grpc(intake.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(GRPC_MAX);
    let traces = TraceServiceServer::new(Grpc(intake))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(GRPC_MAX);
    let check = grpc_auth(web.auth.clone());
    let router = tonic::transport::Server::builder()
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
    let app = Router::new()
        .route("/v1/logs", post(http_logs))
        .route("/v1/traces", post(http_traces))
        .layer(DefaultBodyLimit::max(HTTP_MAX))
        .with_state(Arc::new(intake));
    Ok(steward_web::serve(
        listener,
        app,
        WebHandle::new(web),
        TIMEOUTS,
        cancel,
    ))
}

/// The protobuf body, gunzipped if needed; an error response otherwise.
fn body_bytes(headers: &HeaderMap, body: &Bytes) -> Result<Vec<u8>, (StatusCode, String)> {
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
                .take(HTTP_MAX as u64 * 8)
                .read_to_end(&mut out)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad gzip body: {e}\n")))?;
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

async fn http_logs(State(intake): State<Arc<Intake>>, headers: HeaderMap, body: Bytes) -> Response {
    let raw = match body_bytes(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Ok(req) = ExportLogsServiceRequest::decode(raw.as_slice()) else {
        return (
            StatusCode::BAD_REQUEST,
            "body is not an ExportLogsServiceRequest\n",
        )
            .into_response();
    };
    match intake.logs(req) {
        Ok(()) => protobuf_response(ExportLogsServiceResponse::default().encode_to_vec()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{e}\n"),
        )
            .into_response(),
    }
}

async fn http_traces(
    State(intake): State<Arc<Intake>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = match body_bytes(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let Ok(req) = ExportTraceServiceRequest::decode(raw.as_slice()) else {
        return (
            StatusCode::BAD_REQUEST,
            "body is not an ExportTraceServiceRequest\n",
        )
            .into_response();
    };
    match intake.traces(req) {
        Ok(()) => protobuf_response(ExportTraceServiceResponse::default().encode_to_vec()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("{e}\n"),
        )
            .into_response(),
    }
}
