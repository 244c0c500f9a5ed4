//! Wires the telemetry library (log tailing, OTLP receiver, durable queue,
//! export) into the daemon, and Steward's own spans into it: one span layer
//! is installed at startup (see logging.rs) and follows whichever
//! configuration generation runs.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use steward_telemetry::spans::{QueueSpanExporter, SpanSink};
use steward_telemetry::StartOptions;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::Config;
use crate::daemon::Subsystem;

/// The process-wide span sink and SDK provider behind the span layer.
struct SelfTraces {
    sink: Arc<SpanSink>,
    provider: SdkTracerProvider,
}

static SELF_TRACES: OnceLock<SelfTraces> = OnceLock::new();

fn self_traces() -> &'static SelfTraces {
    SELF_TRACES.get_or_init(|| {
        let sink = Arc::new(SpanSink::default());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(QueueSpanExporter::new(Arc::clone(&sink)))
            .build();
        SelfTraces { sink, provider }
    })
}

/// The `tracing` layer that turns Steward's own INFO+ spans into
/// OpenTelemetry spans. They go nowhere until telemetry runs.
pub fn span_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let tracer = self_traces().provider.tracer("steward");
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target().starts_with("steward") && *meta.level() <= tracing::Level::INFO
        }))
}

/// Starts telemetry for one configuration generation; stops when `cancel`
/// fires. With no `[telemetry.exporter]` nothing starts and no port is bound.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let section = &config.telemetry;
    if !section.is_enabled() {
        return Ok(Subsystem::default());
    }
    let span = tracing::info_span!("telemetry_start", sources = section.sources.len());
    let _entered = span.enter();
    let pipeline = steward_telemetry::start(
        section,
        StartOptions {
            state_dir: config.agent.state_dir.clone(),
            host_name: config.agent.effective_hostname(),
        },
        cancel.clone(),
    )?;
    let traces = self_traces();
    if section.self_traces {
        traces
            .sink
            .connect(Arc::clone(&pipeline.queue), &pipeline.resource);
    }
    let sink = Arc::clone(&traces.sink);
    let provider = traces.provider.clone();
    let pipeline_task = pipeline.task;
    // Spans still buffered go to this generation's queue before it closes.
    let task = tokio::spawn(async move {
        cancel.cancelled().await;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
        })
        .await;
        sink.disconnect();
        let _ = pipeline_task.await;
    });
    Ok(Subsystem {
        collectors: vec![pipeline.collector],
        tasks: vec![task],
    })
}
