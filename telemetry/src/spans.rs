//! Steward's own spans (backups, restores, drills, scrapes): an
//! OpenTelemetry SDK span exporter that writes into the durable queue of the
//! running telemetry pipeline, so they travel like everything else. The
//! agent installs it once (with `tracing-opentelemetry`) and points it at
//! each configuration generation's queue; without one, spans are dropped.
//! A one-shot command (no running pipeline, no queue of its own to write)
//! buffers its spans instead and sends them itself before it exits.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;

use crate::queue::{Entry, Queue, Signal};

enum Destination {
    Queue(Arc<Queue>),
    /// Encoded `ExportTraceServiceRequest`s and their span counts.
    Buffer(Vec<(u32, Vec<u8>)>),
}

struct Target {
    destination: Destination,
    resource: opentelemetry_sdk::Resource,
}

fn resource_of(attributes: &[(String, String)]) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(
            attributes
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}

/// Where exported spans go; empty when telemetry is off.
#[derive(Default)]
pub struct SpanSink {
    target: Mutex<Option<Target>>,
    /// Whether spans go anywhere: read on every span start (see
    /// [`SpanSink::is_active`]), so an atomic rather than the lock.
    active: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanSink")
    }
}

impl SpanSink {
    /// Sends spans to `queue` with these resource attributes from now on.
    pub fn connect(&self, queue: Arc<Queue>, attributes: &[(String, String)]) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(Target {
                destination: Destination::Queue(queue),
                resource: resource_of(attributes),
            });
            self.set_active(true);
        }
    }

    /// Whether spans have a destination now. The agent's tracing layer
    /// checks this before building an OpenTelemetry span at all, so a host
    /// without telemetry pays nothing per scrape for its spans.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks spans as wanted before [`SpanSink::connect`]: a span that
    /// starts before its destination exists (telemetry's own start) is
    /// still exported when it ends after the connection.
    pub fn activate(&self) {
        self.set_active(true);
    }

    fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::Relaxed);
    }

    /// Keeps spans in memory from now on, for [`SpanSink::take_buffered`].
    pub fn buffer(&self, attributes: &[(String, String)]) {
        if let Ok(mut t) = self.target.lock() {
            *t = Some(Target {
                destination: Destination::Buffer(Vec::new()),
                resource: resource_of(attributes),
            });
            self.set_active(true);
        }
    }

    /// The buffered requests (span count, encoded request), emptied.
    pub fn take_buffered(&self) -> Vec<(u32, Vec<u8>)> {
        let mut guard = match self.target.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match guard.as_mut().map(|t| &mut t.destination) {
            Some(Destination::Buffer(b)) => std::mem::take(b),
            _ => Vec::new(),
        }
    }

    /// Stops sending (spans are dropped until the next `connect`).
    pub fn disconnect(&self) {
        if let Ok(mut t) = self.target.lock() {
            *t = None;
            self.set_active(false);
        }
    }

    fn write(&self, spans: Vec<SpanData>) {
        let mut guard = match self.target.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(target) = guard.as_mut() else { return };
        let items = spans.len() as u32;
        if items == 0 {
            return;
        }
        let resource = ResourceAttributesWithSchema::from(&target.resource);
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        };
        let payload = request.encode_to_vec();
        match &mut target.destination {
            Destination::Queue(queue) => {
                let entry = Entry {
                    signal: Signal::Traces,
                    items,
                    positions: Vec::new(),
                    payload,
                };
                if let Err(e) = queue.append(&entry) {
                    // Not through tracing: this runs inside the span pipeline.
                    eprintln!("steward: cannot queue own spans: {e}");
                }
            }
            Destination::Buffer(b) => b.push((items, payload)),
        }
    }
}

/// The SDK exporter; hand it to `SdkTracerProvider::builder().with_batch_exporter`.
#[derive(Debug, Clone)]
pub struct QueueSpanExporter {
    sink: Arc<SpanSink>,
}

impl QueueSpanExporter {
    pub fn new(sink: Arc<SpanSink>) -> Self {
        QueueSpanExporter { sink }
    }
}

impl SpanExporter for QueueSpanExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.sink.write(batch);
        std::future::ready(Ok(()))
    }
}
