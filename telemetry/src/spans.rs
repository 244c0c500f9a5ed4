//! Steward's own spans (backups, restores, drills, scrapes): an
//! OpenTelemetry SDK span exporter that writes into the durable queue of the
//! running telemetry pipeline, so they travel like everything else. The
//! agent installs it once (with `tracing-opentelemetry`) and points it at
//! each configuration generation's queue; without one, spans are dropped.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;

use crate::queue::{Entry, Queue, Signal};

struct Target {
    queue: Arc<Queue>,
    resource: opentelemetry_sdk::Resource,
}

/// Where exported spans go; empty when telemetry is off.
#[derive(Default)]
pub struct SpanSink {
    target: Mutex<Option<Target>>,
}

impl std::fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanSink")
    }
}

impl SpanSink {
    /// Sends spans to `queue` with these resource attributes from now on.
    pub fn connect(&self, queue: Arc<Queue>, attributes: &[(String, String)]) {
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes(
                attributes
                    .iter()
                    .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        if let Ok(mut t) = self.target.lock() {
            *t = Some(Target { queue, resource });
        }
    }

    /// Stops sending (spans are dropped until the next `connect`).
    pub fn disconnect(&self) {
        if let Ok(mut t) = self.target.lock() {
            *t = None;
        }
    }

    fn write(&self, spans: Vec<SpanData>) {
        let guard = match self.target.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(target) = guard.as_ref() else { return };
        let items = spans.len() as u32;
        if items == 0 {
            return;
        }
        let resource = ResourceAttributesWithSchema::from(&target.resource);
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        };
        let entry = Entry {
            signal: Signal::Traces,
            items,
            positions: Vec::new(),
            payload: request.encode_to_vec(),
        };
        if let Err(e) = target.queue.append(&entry) {
            // Not through tracing: this runs inside the span pipeline.
            eprintln!("steward: cannot queue own spans: {e}");
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
