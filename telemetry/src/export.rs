//! The OTLP exporter: takes records from the durable queue, sends them over
//! gRPC or HTTP/protobuf (gzip, TLS, headers), retries what the OTLP spec
//! says is retryable (forever: the queue bounds what is kept), and only
//! then acknowledges them, which advances the file checkpoints.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use crate::checkpoint::Checkpoints;
use crate::config::{Compression, ExporterConfig, Protocol};
use crate::queue::{Delivery, Queue, Signal};
use crate::stats::Stats;

/// How one export attempt ended.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted; `rejected` items were refused for good (partial success).
    Accepted { rejected: u64, message: String },
    /// Try again, after `after` if the upstream said so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Never retried (e.g. 400 / INVALID_ARGUMENT): the data is dropped.
    Fatal { reason: String },
}

enum Transport {
    Grpc {
        channel: Channel,
        metadata: Vec<(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )>,
    },
    Http {
        client: reqwest::Client,
        logs_url: String,
        traces_url: String,
    },
}

/// A configured exporter; cheap to share between workers.
pub struct Exporter {
    transport: Transport,
    compression: Compression,
    timeout: Duration,
    endpoint: String,
    /// gzip output buffers, one per concurrent send.
    gzip_buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

fn header_pairs(cfg: &ExporterConfig) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = cfg
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if let Some(token) = &cfg.token {
        let value = if cfg.token_scheme.is_empty() {
            token.clone()
        } else {
            format!("{} {token}", cfg.token_scheme)
        };
        pairs.push(("authorization".into(), value));
    }
    pairs
}

/// Why an exporter cannot be built from its configuration. Each message
/// names the key to fix; none echoes a header value (it may be a token).
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("telemetry.exporter.ca_file: cannot read {}: {error}", path.display())]
    ReadCa {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("telemetry.exporter.ca_file: not a PEM certificate: {0}")]
    BadCa(String),
    #[error("telemetry.exporter.endpoint: {0}")]
    Endpoint(String),
    #[error("telemetry.exporter: TLS setup failed: {0}")]
    Tls(String),
    /// `what` names the protocol's rule the header name breaks.
    #[error("telemetry.exporter.headers: {name:?} is not a valid {what}")]
    HeaderName { name: String, what: &'static str },
    #[error("telemetry.exporter.headers: the value of {name:?} is not valid{why}")]
    HeaderValue { name: String, why: &'static str },
    #[error("telemetry.exporter: cannot build the HTTP client: {0}")]
    Client(String),
}

impl Exporter {
    /// Builds the client; connects lazily so a down upstream does not stop
    /// Steward from starting.
    pub fn new(cfg: &ExporterConfig) -> Result<Exporter, ExporterError> {
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let ca = match &cfg.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|error| ExporterError::ReadCa {
                path: path.clone(),
                error,
            })?),
            None => None,
        };
        let endpoint = cfg.endpoint.trim_end_matches('/').to_string();
        let transport = match cfg.protocol {
            Protocol::Grpc => {
                let mut ep = Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| ExporterError::Endpoint(e.to_string()))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(timeout)
                    .tcp_nodelay(true);
                if endpoint.starts_with("https://") {
                    let mut tls = ClientTlsConfig::new().with_webpki_roots();
                    if let Some(pem) = &ca {
                        tls = tls.ca_certificate(Certificate::from_pem(pem));
                    }
                    ep = ep
                        .tls_config(tls)
                        .map_err(|e| ExporterError::Tls(e.to_string()))?;
                }
                let mut metadata = Vec::new();
                for (k, v) in header_pairs(cfg) {
                    let key = MetadataKey::from_bytes(k.as_bytes()).map_err(|_| {
                        ExporterError::HeaderName {
                            name: k.clone(),
                            what: "gRPC metadata key",
                        }
                    })?;
                    // Never echo the value: it may be a token.
                    let value = MetadataValue::try_from(v.as_str()).map_err(|_| {
                        ExporterError::HeaderValue {
                            name: k.clone(),
                            why: " ASCII",
                        }
                    })?;
                    metadata.push((key, value));
                }
                Transport::Grpc {
                    channel: ep.connect_lazy(),
                    metadata,
                }
            }
            Protocol::Http => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in header_pairs(cfg) {
                    let name =
                        reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                            ExporterError::HeaderName {
                                name: k.clone(),
                                what: "header name",
                            }
                        })?;
                    let mut value = reqwest::header::HeaderValue::from_str(&v).map_err(|_| {
                        ExporterError::HeaderValue {
                            name: k.clone(),
                            why: "",
                        }
                    })?;
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
                let mut builder = reqwest::Client::builder()
                    .default_headers(headers)
                    .timeout(timeout)
                    .connect_timeout(Duration::from_secs(5))
                    .user_agent(concat!("steward/", env!("CARGO_PKG_VERSION")));
                if let Some(pem) = &ca {
                    let cert = reqwest::Certificate::from_pem(pem)
                        .map_err(|e| ExporterError::BadCa(e.to_string()))?;
                    builder = builder.add_root_certificate(cert);
                }
                Transport::Http {
                    client: builder
                        .build()
                        .map_err(|e| ExporterError::Client(e.to_string()))?,
                    logs_url: format!("{endpoint}{}", cfg.logs_path),
                    traces_url: format!("{endpoint}{}", cfg.traces_path),
                }
            }
        };
        Ok(Exporter {
            transport,
            compression: cfg.compression,
            timeout,
            endpoint,
            gzip_buffers: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn take_gzip_buffer(&self) -> Vec<u8> {
        match self.gzip_buffers.lock() {
            Ok(mut pool) => pool.pop().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn return_gzip_buffer(&self, buf: Vec<u8>) {
        if let Ok(mut pool) = self.gzip_buffers.lock() {
            if pool.len() < 4 {
                pool.push(buf);
            }
        }
    }

    /// One attempt to send an encoded request.
    pub async fn send(&self, signal: Signal, payload: &[u8]) -> Outcome {
        match &self.transport {
            Transport::Grpc { channel, metadata } => {
                self.send_grpc(channel, metadata, signal, payload).await
            }
            Transport::Http {
                client,
                logs_url,
                traces_url,
            } => {
                let url = match signal {
                    Signal::Logs => logs_url,
                    Signal::Traces => traces_url,
                };
                self.send_http(client, url, signal, payload).await
            }
        }
    }

    async fn send_grpc(
        &self,
        channel: &Channel,
        metadata: &[(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )],
        signal: Signal,
        payload: &[u8],
    ) -> Outcome {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        if self.compression == Compression::Gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc = grpc.max_decoding_message_size(4 * 1024 * 1024);
        if let Err(e) = grpc.ready().await {
            return Outcome::Retry {
                reason: format!("connect to {}: {e}", self.endpoint),
                after: None,
            };
        }
        let mut request = tonic::Request::new(Bytes::copy_from_slice(payload));
        request.set_timeout(self.timeout);
        for (k, v) in metadata {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        let result = match signal {
            Signal::Logs => grpc
                .unary(
                    request,
                    PathAndQuery::from_static(
                        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                    ),
                    RawCodec::<ExportLogsServiceResponse>::default(),
                )
                .await
                .map(|r| {
                    let p = r.into_inner().partial_success.unwrap_or_default();
                    (p.rejected_log_records.max(0) as u64, p.error_message)
                }),
            Signal::Traces => grpc
                .unary(
                    request,
                    PathAndQuery::from_static(
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    ),
                    RawCodec::<ExportTraceServiceResponse>::default(),
                )
                .await
                .map(|r| {
                    let p = r.into_inner().partial_success.unwrap_or_default();
                    (p.rejected_spans.max(0) as u64, p.error_message)
                }),
        };
        match result {
            Ok((rejected, message)) => Outcome::Accepted { rejected, message },
            Err(status) => classify_grpc(&status),
        }
    }

    async fn send_http(
        &self,
        client: &reqwest::Client,
        url: &str,
        signal: Signal,
        payload: &[u8],
    ) -> Outcome {
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        request = match self.compression {
            Compression::Gzip => {
                // A reused buffer (not zeroed per batch); the body is a
                // copy of the compressed bytes only.
                let mut buf = self.take_gzip_buffer();
                let n = match crate::wire::gzip_fast(payload, &mut buf) {
                    Ok(n) => n,
                    Err(e) => return Outcome::Fatal { reason: e },
                };
                let body = Bytes::copy_from_slice(&buf[..n]);
                self.return_gzip_buffer(buf);
                request
                    .header(reqwest::header::CONTENT_ENCODING, "gzip")
                    .body(body)
            }
            Compression::None => request.body(payload.to_vec()),
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() { "timeout" } else { "connect" };
                return Outcome::Retry {
                    reason: format!("http_{kind}"),
                    after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if (200..300).contains(&status) {
            let body = response.bytes().await.unwrap_or_default();
            let (rejected, message) = match signal {
                Signal::Logs => ExportLogsServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_log_records.max(0) as u64, p.error_message)),
                Signal::Traces => ExportTraceServiceResponse::decode(body.as_ref())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map(|p| (p.rejected_spans.max(0) as u64, p.error_message)),
            }
            .unwrap_or((0, String::new()));
            return Outcome::Accepted { rejected, message };
        }
        let reason = format!("http_{status}");
        // 401/403: an expired or revoked token is an outage to wait out,
        // not bad data to drop.
        if matches!(status, 401 | 403 | 429 | 502 | 503 | 504) {
            Outcome::Retry {
                reason,
                after: retry_after,
            }
        } else {
            Outcome::Fatal { reason }
        }
    }
}

/// A refusal of the credentials (logged loudly: retrying alone will not
/// fix it).
fn is_credentials(reason: &str) -> bool {
    matches!(
        reason,
        "http_401" | "http_403" | "grpc_unauthenticated" | "grpc_permissiondenied"
    )
}

/// The OTLP spec's retryable gRPC codes; RESOURCE_EXHAUSTED only when the
/// server says when to retry (RetryInfo).
fn classify_grpc(status: &tonic::Status) -> Outcome {
    // A status with a local cause (connection refused or cut mid-request)
    // is not the upstream's answer: always retry it.
    if std::error::Error::source(status).is_some() {
        return Outcome::Retry {
            reason: "grpc_transport".into(),
            after: None,
        };
    }
    let code = status.code();
    let reason = format!("grpc_{}", format!("{code:?}").to_ascii_lowercase());
    let retry = match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Cancelled => true,
        // Credentials, not data: kept queued until the token is fixed.
        Code::Unauthenticated | Code::PermissionDenied => true,
        Code::ResourceExhausted => {
            memchr::memmem::find(status.details(), b"google.rpc.RetryInfo").is_some()
        }
        _ => false,
    };
    if retry {
        Outcome::Retry {
            reason,
            after: None,
        }
    } else {
        Outcome::Fatal {
            reason: format!("{reason}: {}", status.message()),
        }
    }
}

/// Sends already-encoded protobuf bytes (the queue holds them encoded) and
/// decodes the response with prost.
struct RawCodec<R>(PhantomData<R>);

impl<R> Default for RawCodec<R> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

struct RawEncoder;
struct ProstDecoder<R>(PhantomData<R>);

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl<R: Message + Default> Decoder for ProstDecoder<R> {
    type Item = R;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, tonic::Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("cannot decode the export response: {e}")))
    }
}

impl<R: Message + Default + Send + 'static> Codec for RawCodec<R> {
    type Encode = Bytes;
    type Decode = R;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder<R>;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstDecoder<R> {
        ProstDecoder(PhantomData)
    }
}

/// What a worker needs.
pub struct Worker {
    pub exporter: Arc<Exporter>,
    pub queue: Arc<Queue>,
    pub checkpoints: Arc<Checkpoints>,
    pub stats: Arc<Stats>,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Worker {
    /// Sends queue records until `cancel`; a record being sent at cancel
    /// stays in the queue (sent again next start: in flight = the only
    /// possible duplicates).
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let delivery = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                d = self.queue.next() => match d { Some(d) => d, None => return },
            };
            if !self.deliver(&delivery, &cancel).await {
                return;
            }
        }
    }

    /// Sends one record until it is accepted or given up; false on cancel.
    async fn deliver(&self, d: &Delivery, cancel: &CancellationToken) -> bool {
        let mut backoff = self.initial_backoff;
        let signal = d.entry.signal.as_str();
        loop {
            // A request already on the wire is given a moment to finish at
            // stop, so a clean stop or reload does not send it twice.
            let send = self.exporter.send(d.entry.signal, &d.entry.payload);
            tokio::pin!(send);
            let outcome = tokio::select! {
                o = &mut send => o,
                _ = cancel.cancelled() => {
                    match tokio::time::timeout(Duration::from_secs(2), &mut send).await {
                        Ok(o @ Outcome::Accepted { .. }) => o,
                        _ => return false,
                    }
                }
            };
            match outcome {
                Outcome::Accepted { rejected, message } => {
                    let items = d.entry.items as u64;
                    self.stats
                        .items_sent
                        .add(&[signal], items.saturating_sub(rejected));
                    self.stats
                        .bytes_sent
                        .add(&[signal], d.entry.payload.len() as u64);
                    if rejected > 0 {
                        // Partial success is not retried (OTLP spec).
                        self.stats.items_dropped.add(&["rejected"], rejected);
                        tracing::warn!(
                            signal,
                            rejected,
                            "upstream rejected part of a batch: {message}"
                        );
                    }
                    self.done(d);
                    return true;
                }
                Outcome::Fatal { reason } => {
                    let short = reason.split(':').next().unwrap_or(&reason).to_string();
                    self.stats.export_errors.add(&[&short], 1);
                    self.stats
                        .items_dropped
                        .add(&["non_retryable"], d.entry.items as u64);
                    tracing::error!(
                        signal,
                        items = d.entry.items,
                        "upstream refused a batch and it cannot be retried ({reason}); dropped. Check the exporter endpoint, paths and credentials"
                    );
                    self.done(d);
                    return true;
                }
                Outcome::Retry { reason, after } => {
                    self.stats.export_errors.add(&[&reason], 1);
                    self.stats.export_retries.fetch_add(1, Ordering::Relaxed);
                    let wait = after
                        .unwrap_or(backoff)
                        .min(self.max_backoff.max(Duration::from_secs(1)) * 4);
                    if is_credentials(&reason) {
                        tracing::warn!(signal, %reason, ?wait, "the upstream refuses Steward's credentials; batches stay queued and are retried. Check telemetry.exporter's token or headers");
                    } else {
                        tracing::debug!(signal, %reason, ?wait, "export failed; retrying");
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
                        _ = tokio::time::sleep(jitter(wait)) => {}
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                    if !self.queue.is_in_flight(d.id) {
                        // Dropped (and counted) to keep the queue bound.
                        return true;
                    }
                }
            }
        }
    }

    fn done(&self, d: &Delivery) {
        // Checkpoints follow the queue's acknowledged order, never ahead.
        for p in self.queue.ack(d.id, d.entry.items) {
            self.checkpoints.advance(p.file_id, p.offset);
        }
    }
}

/// ±20% so many agents do not retry in step.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + (nanos % 1000) as f64 / 1000.0 * 0.4;
    d.mul_f64(factor)
}
