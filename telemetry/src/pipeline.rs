//! Assembles one running telemetry pipeline from the configuration:
//! queue + checkpoints, exporter workers, the receiver, the tailer thread,
//! the fsync cadence; and stops it in order on cancel (tailer flushes into
//! the queue, queue and checkpoints are synced).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use steward_exporters::Collector;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{CheckpointError, Checkpoints};
use crate::config::TelemetryConfig;
use crate::export::{Exporter, ExporterError, Worker};
use crate::parse::string_value;
use crate::queue::{Queue, QueueError, QueueOptions};
use crate::receiver::{self, Intake, ReceiverError};
use crate::stats::{AccessMetrics, Stats, TelemetryCollector};
use crate::tail::{TailContext, Tailer};

/// Why telemetry cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("telemetry.exporter: not configured")]
    NoExporter,
    #[error("cannot create {}: {error}; check agent.state_dir", dir.display())]
    StateDir { dir: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Checkpoints(#[from] CheckpointError),
    #[error(transparent)]
    Exporter(#[from] ExporterError),
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
}

/// What the agent knows that the section does not.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub state_dir: PathBuf,
    pub host_name: String,
}

/// A running pipeline.
pub struct Pipeline {
    /// Self metrics and access-log request metrics.
    pub collector: Arc<dyn Collector>,
    /// Completes once everything is flushed and stopped after `cancel`.
    pub task: JoinHandle<()>,
    /// For the agent's own spans.
    pub queue: Arc<Queue>,
    /// Resource attributes of what Steward itself produces.
    pub resource: Vec<(String, String)>,
}

/// The resource attributes of what Steward itself produces: `service.name`,
/// `host.name`, `deployment.environment.name`, then `[telemetry.resource]`.
pub fn resource_attributes(cfg: &TelemetryConfig, host_name: &str) -> Vec<(String, String)> {
    let mut resource = vec![
        ("service.name".to_string(), cfg.service_name.clone()),
        ("host.name".to_string(), host_name.to_string()),
    ];
    if !cfg.environment.is_empty() {
        resource.push((
            "deployment.environment.name".into(),
            cfg.environment.clone(),
        ));
    }
    for (k, v) in &cfg.resource {
        resource.retain(|(key, _)| key != k);
        resource.push((k.clone(), v.clone()));
    }
    resource
}

/// Starts telemetry. Binds the receiver ports now, so a taken port is a
/// start error naming the key to change. Must run inside a Tokio runtime.
pub fn start(
    cfg: &TelemetryConfig,
    opts: StartOptions,
    cancel: CancellationToken,
) -> Result<Pipeline, StartError> {
    let exporter_cfg = cfg.exporter.as_ref().ok_or(StartError::NoExporter)?;
    let base = opts.state_dir.join("telemetry");
    crate::queue::private_dir(&base).map_err(|error| StartError::StateDir {
        dir: base.clone(),
        error,
    })?;
    let (queue, recovered) = Queue::open(QueueOptions {
        dir: cfg.queue.dir.clone().unwrap_or_else(|| base.join("queue")),
        max_bytes: cfg.queue.max_bytes,
        segment_bytes: cfg.queue.segment_bytes,
        fsync_interval: Duration::from_millis(cfg.queue.fsync_interval_ms),
    })?;
    if recovered.records > 0 {
        tracing::info!(
            records = recovered.items,
            "telemetry queue holds data from the previous run; sending it first"
        );
    }
    let (checkpoints, existed) = Checkpoints::load(&base.join("checkpoints.json"))?;
    let checkpoints = Arc::new(checkpoints);
    let stats = Arc::new(Stats::default());
    let access = Arc::new(AccessMetrics::default());
    let exporter = Arc::new(Exporter::new(exporter_cfg)?);

    let resource = resource_attributes(cfg, &opts.host_name);

    let intake = Intake {
        queue: Arc::clone(&queue),
        stats: Arc::clone(&stats),
        host_name: opts.host_name.clone(),
        max_request_bytes: cfg.receiver.max_request_bytes,
        permits: Arc::new(tokio::sync::Semaphore::new(
            cfg.receiver.max_concurrent_requests,
        )),
    };
    let stop_receivers = CancellationToken::new();
    let mut receivers: Vec<JoinHandle<()>> = Vec::new();
    if cfg.receiver.enabled {
        let web = receiver::web_runtimes(cfg.receiver.web_config_file.as_deref())?;
        let describe = web.http.describe();
        let grpc = receiver::serve_grpc(
            cfg.receiver.grpc_listen,
            intake.clone(),
            web.grpc,
            stop_receivers.clone(),
        )?;
        let http = receiver::serve_http(
            cfg.receiver.http_listen,
            intake,
            web.http,
            stop_receivers.clone(),
        )?;
        receivers.push(tokio::spawn(grpc));
        receivers.push(tokio::spawn(http));
        tracing::info!(
            grpc = %cfg.receiver.grpc_listen,
            http = %cfg.receiver.http_listen,
            web = %describe,
            "OTLP receiver listening"
        );
    }

    let stop_workers = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..exporter_cfg.concurrency {
        let worker = Worker {
            exporter: Arc::clone(&exporter),
            queue: Arc::clone(&queue),
            checkpoints: Arc::clone(&checkpoints),
            stats: Arc::clone(&stats),
            initial_backoff: Duration::from_millis(exporter_cfg.retry_initial_backoff_ms),
            max_backoff: Duration::from_secs(exporter_cfg.retry_max_backoff_secs),
        };
        workers.push(tokio::spawn(worker.run(stop_workers.clone())));
    }

    let syncer = {
        let queue = Arc::clone(&queue);
        let checkpoints = Arc::clone(&checkpoints);
        let stop = stop_workers.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(queue.fsync_interval());
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let q = Arc::clone(&queue);
                let c = Arc::clone(&checkpoints);
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = q.sync() {
                        tracing::error!("{e}");
                    }
                    if let Err(e) = c.save() {
                        tracing::error!("{e}");
                    }
                })
                .await;
            }
        })
    };

    let tail_stop = Arc::new(AtomicBool::new(false));
    let tailer = if cfg.sources.is_empty() {
        None
    } else {
        let common: Vec<KeyValue> = resource
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(string_value(v.clone())),
                ..Default::default()
            })
            .collect();
        let tailer = Tailer::new(
            TailContext {
                queue: Arc::clone(&queue),
                checkpoints: Arc::clone(&checkpoints),
                stats: Arc::clone(&stats),
                access: Arc::clone(&access),
                resource: common,
                service_name: cfg.service_name.clone(),
                queued: recovered.positions,
                first_start: !existed,
                poll_interval: Duration::from_millis(cfg.poll_interval_ms),
                max_batch_records: exporter_cfg.max_batch_records,
                max_batch_bytes: exporter_cfg.max_batch_bytes,
                batch_timeout: Duration::from_millis(exporter_cfg.batch_timeout_ms),
            },
            &cfg.sources,
        );
        let stop = Arc::clone(&tail_stop);
        Some(tokio::task::spawn_blocking(move || tailer.run(stop)))
    };

    let collector: Arc<dyn Collector> = Arc::new(TelemetryCollector {
        stats,
        access,
        queue: Arc::clone(&queue),
    });

    let task = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            cancel.cancelled().await;
            // Producers first, so what they hold reaches the queue.
            tail_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            stop_receivers.cancel();
            if let Some(t) = tailer {
                let _ = t.await;
            }
            for mut r in receivers {
                // Clients keeping connections open must not hold the ports:
                // a reload binds them again right after.
                if tokio::time::timeout(Duration::from_secs(3), &mut r)
                    .await
                    .is_err()
                {
                    r.abort();
                    let _ = r.await;
                }
            }
            // Records being sent stay unacknowledged: sent again next time.
            stop_workers.cancel();
            for w in workers {
                let _ = tokio::time::timeout(Duration::from_secs(3), w).await;
            }
            let _ = syncer.await;
            let _ = tokio::task::spawn_blocking(move || {
                queue.close();
                if let Err(e) = checkpoints.save() {
                    tracing::error!("{e}");
                }
            })
            .await;
            tracing::info!("telemetry stopped");
        })
    };

    Ok(Pipeline {
        collector,
        task,
        queue,
        resource,
    })
}
