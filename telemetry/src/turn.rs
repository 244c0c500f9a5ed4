//! A turn for each OTLP/gRPC request before tonic reads and decodes its
//! message: the concurrency bound (`max_concurrent_requests`) then bounds
//! the memory of messages being decoded too, as the HTTP receiver's turn
//! does. The request waits for its turn; it is not refused.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

/// Wraps a service so each call first takes a permit, held until the
/// response is ready.
#[derive(Clone)]
pub(crate) struct TurnLayer(pub(crate) Arc<Semaphore>);

impl<S> tower::Layer<S> for TurnLayer {
    type Service = Turn<S>;

    fn layer(&self, inner: S) -> Turn<S> {
        Turn {
            inner,
            permits: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Turn<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, R> tower::Service<R> for Turn<S>
where
    S: tower::Service<R> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule).
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let permits = Arc::clone(&self.permits);
        Box::pin(async move {
            // Closed only at shutdown: the request then runs without one.
            let _turn = permits.acquire_owned().await.ok();
            ready.call(request).await
        })
    }
}
