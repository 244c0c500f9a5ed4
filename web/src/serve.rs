//! The HTTP/1.1 server behind Steward's endpoints: TLS from the current
//! web configuration for each new connection, basic auth and the extra
//! headers on every request, a header-read timeout (which also bounds the
//! TLS handshake and the wait for the next keep-alive request) and an idle
//! timeout for connections that stop moving bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthResult;
use crate::WebHandle;

/// Connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From accept (or the end of the previous response) to the complete
    /// request header, TLS handshake included.
    pub header_read: Duration,
    /// A connection that moves no byte in either direction for this long is
    /// closed, whatever it is doing (a client that stops reading a
    /// response, a stalled upload).
    pub idle: Duration,
}

/// Open connections at once. A scraper needs one or two; the bound keeps a
/// flood of idle or slow connections (each held at most `header_read`)
/// from exhausting the agent's file descriptors, which its tailers and
/// backups need too. Past it, new connections are closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves `app` on `listener` until `stop` fires, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    web: WebHandle,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    serve_bounded(listener, app, web, timeouts, stop, MAX_CONNECTIONS).await
}

async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    web: WebHandle,
    timeouts: Timeouts,
    stop: CancellationToken,
    max_connections: usize,
) {
    let app = protect(app, web.clone(), BCRYPT_AT_ONCE);
    let open = Arc::new(Semaphore::new(max_connections));
    let mut refused: u64 = 0;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and alike: back off, don't spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            refused += 1;
            // Logged on the first refusal and every thousandth after, so a
            // flood does not flood the log too.
            if refused % 1000 == 1 {
                tracing::warn!(%peer, max_connections, refused, "too many open HTTP connections; closing new ones until some end");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The configuration at accept time serves the whole connection; a
        // reload (certificate rotation) applies to new connections.
        let tls = web.current().tls.clone();
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(tcp, app, timeouts, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(timeouts.header_read, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, app, timeouts, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, app: Router, timeouts: Timeouts, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: io,
        activity: Arc::clone(&activity),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("HTTP connection ended: {e}");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(timeouts.idle) => {
                tracing::debug!("closing a connection idle for {:?}", timeouts.idle);
                return;
            }
        }
    }
}

/// bcrypt checks running at once. Each costs tens of milliseconds of CPU
/// by design, so a flood of wrong passwords could starve the scrapes; past
/// this the request gets 503. Credentials verified before skip bcrypt (the
/// cache), so a scraper that got in once is not affected by a flood.
const BCRYPT_AT_ONCE: usize = 2;

/// `app` behind basic auth and the configured headers.
fn protect(app: Router, web: WebHandle, bcrypt_slots: usize) -> Router {
    let slots = Arc::new(Semaphore::new(bcrypt_slots));
    app.layer(axum::middleware::from_fn_with_state((web, slots), guard))
}

/// Basic auth (when users are configured) and the configured headers, on
/// every response including the 401.
async fn guard(
    State((web, bcrypt_slots)): State<(WebHandle, Arc<Semaphore>)>,
    request: Request,
    next: Next,
) -> Response {
    let current = web.current();
    let mut response = match &current.auth {
        None => next.run(request).await,
        Some(auth) => {
            let credentials = request
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let verdict = if credentials.is_none() {
                Some(AuthResult::Denied)
            } else if auth.is_cached(credentials.as_deref()) {
                Some(AuthResult::Allowed)
            } else if let Ok(slot) = Arc::clone(&bcrypt_slots).try_acquire_owned() {
                // bcrypt takes tens of milliseconds: not on an async worker.
                let auth = Arc::clone(auth);
                let verdict = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    auth.check(credentials.as_deref())
                })
                .await
                .unwrap_or(AuthResult::Denied);
                Some(verdict)
            } else {
                None
            };
            match verdict {
                Some(AuthResult::Allowed) => next.run(request).await,
                Some(AuthResult::Denied) => (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"))],
                    "Unauthorized\n",
                )
                    .into_response(),
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
                    "too many password checks at once; retry\n",
                )
                    .into_response(),
            }
        }
    };
    for (name, value) in &current.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let quiet = self.start.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    }
}

/// An I/O stream that records progress in an [`Activity`].
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::AsyncWriteExt;

    fn app() -> Router {
        Router::new().route("/big", get(|| async { "x".repeat(1 << 20) }))
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
        // A 1 KiB pipe: the 1 MiB response stalls once it is full.
        let (mut client, server) = tokio::io::duplex(1024);
        let timeouts = Timeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_millis(300),
        };
        let served = tokio::spawn(connection(
            server,
            app(),
            timeouts,
            CancellationToken::new(),
        ));
        client
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the stalled connection was not closed")
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        drop(client);
    }

    #[tokio::test]
    async fn connections_past_the_bound_are_closed_and_slots_come_back() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let timeouts = Timeouts {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(30),
        };
        let web = WebHandle::new(crate::WebRuntime::plain());
        tokio::spawn(serve_bounded(
            listener,
            app(),
            web,
            timeouts,
            stop.clone(),
            2,
        ));
        // Two silent connections hold both slots.
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("a connection past the bound was kept waiting")
            .unwrap_or(0);
        assert_eq!(n, 0, "a connection past the bound was served");
        // One ends: a new connection is served again.
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fourth = tokio::net::TcpStream::connect(addr).await.unwrap();
        fourth
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), fourth.read_exact(&mut head))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_after_the_header_read_timeout() {
        let (client, server) = tokio::io::duplex(1024);
        let timeouts = Timeouts {
            header_read: Duration::from_millis(300),
            idle: Duration::from_secs(30),
        };
        let started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            connection(server, app(), timeouts, CancellationToken::new()),
        )
        .await
        .expect("a connection that sent nothing was kept open");
        assert!(started.elapsed() >= Duration::from_millis(250));
        drop(client);
    }

    #[tokio::test]
    async fn password_checks_past_the_bound_get_503_and_verified_ones_pass() {
        use base64::Engine;
        use tower::ServiceExt;

        let hash = bcrypt::hash("pw", 4).unwrap();
        let web = WebHandle::new(crate::WebRuntime {
            auth: Some(Arc::new(
                crate::BasicAuth::new([("u".to_string(), hash)].into()).unwrap(),
            )),
            ..crate::WebRuntime::plain()
        });
        let basic = |password: &str| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("u:{password}"));
            axum::http::Request::get("/big")
                .header(header::AUTHORIZATION, format!("Basic {token}"))
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let status = |app: Router, request: axum::http::Request<axum::body::Body>| async move {
            match app.oneshot(request).await {
                Ok(response) => response.status(),
                Err(never) => match never {},
            }
        };
        let busy = protect(app(), web.clone(), 0);
        assert_eq!(status(busy.clone(), basic("pw")).await, 503);
        let open = protect(app(), web.clone(), 1);
        assert_eq!(status(open.clone(), basic("wrong")).await, 401);
        assert_eq!(status(open, basic("pw")).await, 200);
        // Verified once: no bcrypt, no slot needed.
        assert_eq!(status(busy.clone(), basic("pw")).await, 200);
        assert_eq!(status(busy.clone(), basic("wrong")).await, 503);
        let anonymous = axum::http::Request::get("/big")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(status(busy, anonymous).await, 401);
    }

    #[tokio::test]
    async fn activity_moves_the_idle_deadline() {
        let activity = Arc::new(Activity::new());
        let a = Arc::clone(&activity);
        let toucher = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(80)).await;
                a.touch();
            }
        });
        let started = Instant::now();
        activity.idle_for(Duration::from_millis(150)).await;
        // Touched every 80 ms for 400 ms, then quiet for 150 ms.
        assert!(started.elapsed() >= Duration::from_millis(500));
        toucher.await.unwrap();
    }
}
