//! Steward's own spans: the `tracing` layer that turns them into
//! OpenTelemetry spans (installed once at startup, see logging.rs), one
//! constructor and one recorder per kind of work, and [`CommandSpans`] for
//! one-shot commands. Names are `steward.<work>`; attributes are
//! `steward.*` plus OpenTelemetry's `otel.status_code` on failure. Created
//! here so the call sites (server, scheduler, commands) stay one line each.
//! The daemon's telemetry subsystem (telemetry.rs) connects the sink to
//! whichever configuration generation runs.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use steward_backup::report::{RunReport, RunStatus};
use steward_telemetry::spans::{QueueSpanExporter, SpanSink};
use tracing::field::Empty;
use tracing::Span;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::config::Config;

/// The process-wide span sink and SDK provider behind the span layer.
pub struct SelfTraces {
    pub sink: Arc<SpanSink>,
    pub provider: SdkTracerProvider,
}

static SELF_TRACES: OnceLock<SelfTraces> = OnceLock::new();

/// The one span sink and provider of this process, made on first use.
pub fn self_traces() -> &'static SelfTraces {
    SELF_TRACES.get_or_init(|| {
        let sink = Arc::new(SpanSink::default());
        // Steward makes a few spans a minute (one per scrape, one per
        // backup): 256 queued between exports is plenty, and the SDK's
        // default of 2048 preallocates 750 KB of channel slots.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(256)
            .build();
        let processor = BatchSpanProcessor::builder(QueueSpanExporter::new(Arc::clone(&sink)))
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
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
    let traces = self_traces();
    let tracer = traces.provider.tracer("steward");
    let sink = Arc::clone(&traces.sink);
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(
            // Per span, not cached per callsite: no OpenTelemetry span is
            // built while telemetry is off, and a reload can turn it on.
            tracing_subscriber::filter::dynamic_filter_fn(move |_, _| sink.is_active())
                .with_callsite_filter(|meta| {
                    if meta.target().starts_with("steward") && *meta.level() <= tracing::Level::INFO
                    {
                        tracing::subscriber::Interest::sometimes()
                    } else {
                        tracing::subscriber::Interest::never()
                    }
                }),
        )
}

/// One `/metrics` scrape; see [`record_scrape`].
pub fn scrape_span() -> Span {
    tracing::info_span!(
        "steward.scrape",
        steward.collectors = Empty,
        steward.collector_failures = Empty,
        steward.failed_collectors = Empty,
        otel.status_code = Empty,
    )
}

/// Collectors run and failed, from the `*_scrape_collector_success` samples.
pub fn record_scrape(span: &Span, families: &[steward_exporters::MetricFamily]) {
    let mut run = 0u64;
    let mut failed: Vec<&str> = Vec::new();
    for f in families
        .iter()
        .filter(|f| f.name.ends_with("_scrape_collector_success"))
    {
        for s in &f.samples {
            run += 1;
            if s.value == 0.0 {
                let name = s.labels.iter().find(|(k, _)| k == "collector");
                failed.push(name.map(|(_, v)| v.as_str()).unwrap_or("?"));
            }
        }
    }
    span.record("steward.collectors", run);
    span.record("steward.collector_failures", failed.len() as u64);
    if !failed.is_empty() {
        span.record("steward.failed_collectors", failed.join(",").as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// One backup run of `job`; `trigger` is the run's reason (`schedule`,
/// `config-change`, `cli`, or what `--reason` said). See [`record_backup`].
pub fn backup_span(job: &str, trigger: &str) -> Span {
    tracing::info_span!(
        "steward.backup",
        steward.job = %job,
        steward.trigger = %trigger,
        steward.job.kind = Empty,
        steward.snapshot.id = Empty,
        steward.targets = Empty,
        steward.source_bytes = Empty,
        steward.stored_bytes = Empty,
        steward.outcome = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    )
}

/// How a backup run ended: `None` when it was interrupted.
pub fn record_backup<E: std::fmt::Display>(span: &Span, result: Option<&Result<RunReport, E>>) {
    match result {
        None => fail(span, "interrupted", "interrupted by shutdown or reload"),
        Some(Err(e)) => fail(span, "not_run", &e.to_string()),
        Some(Ok(r)) => {
            span.record("steward.job.kind", r.kind.as_str());
            span.record("steward.snapshot.id", r.snapshot_id.as_str());
            let targets: Vec<&str> = r.targets.iter().map(|t| t.target.as_str()).collect();
            span.record("steward.targets", targets.join(",").as_str());
            span.record("steward.source_bytes", r.source_bytes);
            span.record("steward.stored_bytes", r.stored_bytes);
            match r.status {
                RunStatus::Success | RunStatus::Unchanged => {
                    span.record("steward.outcome", r.status.as_str());
                }
                RunStatus::Partial | RunStatus::Failed => fail(
                    span,
                    r.status.as_str(),
                    r.error.as_deref().unwrap_or("see the run report"),
                ),
            }
        }
    }
}

/// Marks `span` failed (`otel.status_code = ERROR`) with `outcome`.
pub fn fail(span: &Span, outcome: &str, message: &str) {
    span.record("steward.outcome", outcome);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", message);
}

/// The span of a one-shot command (`steward restore`, `steward drill`);
/// the command records its own `steward.*` fields.
pub fn command_span(name: &'static str) -> Span {
    match name {
        "restore" => tracing::info_span!(
            "steward.restore",
            steward.job = Empty,
            steward.snapshot.id = Empty,
            steward.target = Empty,
            steward.bytes = Empty,
            steward.outcome = Empty,
            otel.status_code = Empty,
            otel.status_message = Empty,
        ),
        _ => tracing::info_span!(
            "steward.drill",
            steward.jobs = Empty,
            steward.outcome = Empty,
            otel.status_code = Empty,
            otel.status_message = Empty,
        ),
    }
}

/// Spans of a one-shot command. A command has no pipeline (the agent's
/// queue belongs to the agent), so its spans are kept in memory and sent
/// before it exits: to the local agent's OTLP receiver when one is
/// configured (its durable queue then carries them), else straight to the
/// upstream. Without `[telemetry.exporter]` (or with `self_traces = false`)
/// this does nothing.
pub struct CommandSpans {
    destinations: Vec<(String, steward_telemetry::export::Exporter)>,
}

impl CommandSpans {
    pub fn start(config: &Config) -> Option<CommandSpans> {
        let section = &config.telemetry;
        let upstream = section.exporter.as_ref()?;
        if !section.self_traces {
            return None;
        }
        let mut destinations = Vec::new();
        if section.receiver.enabled {
            let mut local = upstream.clone();
            local.endpoint = format!("http://{}", section.receiver.http_listen);
            local.protocol = steward_telemetry::config::Protocol::Http;
            local.compression = steward_telemetry::config::Compression::None;
            local.traces_path = "/v1/traces".into();
            local.headers.clear();
            local.token = None;
            local.ca_file = None;
            local.timeout_secs = 5;
            match steward_telemetry::export::Exporter::new(&local) {
                Ok(e) => destinations.push((local.endpoint.clone(), e)),
                Err(e) => tracing::debug!("local OTLP receiver unusable for spans: {e}"),
            }
        }
        match steward_telemetry::export::Exporter::new(upstream) {
            Ok(e) => destinations.push((upstream.endpoint.clone(), e)),
            Err(e) => tracing::warn!("spans of this command will not be exported: {e}"),
        }
        let resource = steward_telemetry::pipeline::resource_attributes(
            section,
            &config.agent.effective_hostname(),
        );
        self_traces().sink.buffer(&resource);
        Some(CommandSpans { destinations })
    }

    /// Flushes the spans ended so far and sends them; a few quick retries,
    /// then a warning (a command does not wait minutes for its spans).
    pub async fn finish(self) {
        let provider = self_traces().provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        let sink = &self_traces().sink;
        for (items, payload) in sink.take_buffered() {
            let mut sent = false;
            'attempts: for attempt in 0..3 {
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
                }
                for (endpoint, exporter) in &self.destinations {
                    match exporter
                        .send(steward_telemetry::queue::Signal::Traces, &payload)
                        .await
                    {
                        steward_telemetry::export::Outcome::Accepted { .. } => {
                            sent = true;
                            break 'attempts;
                        }
                        other => tracing::debug!(%endpoint, "spans not accepted: {other:?}"),
                    }
                }
            }
            if !sent {
                tracing::warn!(
                    spans = items,
                    "could not export this command's spans; check telemetry.exporter"
                );
            }
        }
        sink.disconnect();
    }
}

/// How a one-shot command ended, from its result and exit code.
pub fn record_command(span: &Span, result: &anyhow::Result<std::process::ExitCode>) {
    match result {
        Ok(code) if *code == std::process::ExitCode::SUCCESS => {
            span.record("steward.outcome", "success");
        }
        Ok(_) => fail(span, "failed", "the command reported failure"),
        Err(e) => fail(span, "failed", &format!("{e:#}")),
    }
}

/// How a scheduled drill ended: the jobs drilled, and the problems found.
pub fn record_drill(span: &Span, result: &anyhow::Result<steward_backup::drill::DrillReport>) {
    match result {
        Ok(report) => {
            let jobs: Vec<&str> = report.jobs.iter().map(|j| j.job.as_str()).collect();
            span.record("steward.jobs", jobs.join(",").as_str());
            if report.success {
                span.record("steward.outcome", "success");
            } else {
                let problems: Vec<String> = report
                    .jobs
                    .iter()
                    .filter(|j| !j.success())
                    .map(|j| format!("{}: {}", j.job, j.problems().join("; ")))
                    .collect();
                fail(span, "failed", &problems.join(" | "));
            }
        }
        Err(e) => fail(span, "not_run", &format!("{e:#}")),
    }
}
