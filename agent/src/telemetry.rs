//! The daemon's telemetry subsystem: starts the telemetry library's
//! pipeline (log tailing, OTLP receiver, durable queue, export) for one
//! configuration generation and connects Steward's own spans (spans.rs) to
//! its queue while it runs.

use std::sync::Arc;

use steward_telemetry::StartOptions;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;
use crate::spans::self_traces;

/// Starts telemetry for one configuration generation; stops when `cancel`
/// fires. With no `[telemetry.exporter]` nothing starts and no port is bound.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let section = &config.telemetry;
    if !section.is_enabled() {
        return Ok(Subsystem::default());
    }
    let traces = self_traces();
    // A reload starts the new generation while the old one still runs:
    // a failed start must not cut the old one's spans off.
    let was_active = traces.sink.is_active();
    if section.self_traces {
        traces.sink.activate();
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
    )
    .inspect_err(|_| {
        if !was_active {
            traces.sink.disconnect();
        }
    })?;
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
