//! Helper of `scripts/bench-telemetry` (not part of Steward):
//!
//! - `otlp_bench sink <port>`: an OTLP/HTTP receiver that counts log records
//!   (`POST /v1/logs`, gzip or not) and answers `GET /count`.
//! - `otlp_bench ceiling <file> <gzip|none>`: the raw ceiling on one thread:
//!   read + split lines + parse (nginx combined) + build OTLP records +
//!   protobuf-encode in 2048-record batches (+ gzip level 1); prints lines/s.
//! - `otlp_bench generate <file> <lines>`: writes nginx access-log lines.
//! - `otlp_bench pipeline <telemetry.toml> <state dir>`: runs Steward's
//!   telemetry pipeline (the library the agent runs) on a two-thread Tokio
//!   runtime like the agent's, until SIGTERM; for machines where building
//!   the whole release agent takes too long.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use steward_telemetry::config::ParserKind;
use steward_telemetry::parse::{parse, string_value};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sink") => sink(args.get(2).and_then(|p| p.parse().ok()).unwrap_or(4318)),
        Some("ceiling") => ceiling(&args[2], args.get(3).map(String::as_str) == Some("gzip")),
        Some("generate") => generate(&args[2], args[3].parse()?),
        Some("pipeline") => pipeline(&args[2], &args[3]),
        _ => anyhow::bail!(
            "usage: otlp_bench sink <port> | ceiling <file> <gzip|none> | generate <file> <lines>"
        ),
    }
}

fn pipeline(config: &str, state: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    let table: toml::Table = toml::from_str(&text)?;
    let section = table
        .get("telemetry")
        .cloned()
        .unwrap_or(toml::Value::Table(Default::default()));
    let cfg: steward_telemetry::config::TelemetryConfig = section.try_into()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        let p = steward_telemetry::start(
            &cfg,
            steward_telemetry::StartOptions {
                state_dir: state.into(),
                host_name: "bench".into(),
            },
            cancel.clone(),
        )?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        cancel.cancel();
        let _ = p.task.await;
        Ok(())
    })
}

fn generate(path: &str, lines: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let methods = ["GET", "GET", "GET", "POST", "PUT"];
    let statuses = [200, 200, 200, 200, 301, 404, 500, 503];
    for i in 0..lines {
        writeln!(
            out,
            r#"10.0.{}.{} - - [23/Nov/2026:18:{:02}:{:02} +0000] "{} /shop/items/{}?page={} HTTP/1.1" {} {} "https://example.com/shop" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0" 0.{:03} 0.{:03}"#,
            i % 250,
            (i / 250) % 250,
            (i / 60) % 60,
            i % 60,
            methods[(i % 5) as usize],
            i,
            i % 7,
            statuses[(i % 8) as usize],
            1000 + i % 5000,
            i % 1000,
            (i * 7) % 1000,
        )?;
    }
    out.flush()?;
    Ok(())
}

fn ceiling(path: &str, gzip: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut partial: Vec<u8> = Vec::new();
    let mut batch: Vec<LogRecord> = Vec::with_capacity(2048);
    let mut lines = 0u64;
    let mut out_bytes = 0u64;
    let flush = |batch: &mut Vec<LogRecord>, out_bytes: &mut u64| {
        let req = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: std::mem::take(batch),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = req.encode_to_vec();
        if gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).ok();
            *out_bytes += enc.finish().map(|v| v.len()).unwrap_or(0) as u64;
        } else {
            *out_bytes += bytes.len() as u64;
        }
    };
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        while let Some(pos) = memchr::memchr(b'\n', data) {
            partial.extend_from_slice(&data[..pos]);
            data = &data[pos + 1..];
            let text = String::from_utf8_lossy(&partial).into_owned();
            partial.clear();
            let p = parse(ParserKind::NginxCombined, &text);
            batch.push(LogRecord {
                time_unix_nano: p.time_unix_nano,
                observed_time_unix_nano: 1,
                severity_number: p.severity,
                severity_text: p.severity_text.to_string(),
                body: Some(string_value(text)),
                attributes: p.attributes,
                ..Default::default()
            });
            lines += 1;
            if batch.len() == 2048 {
                flush(&mut batch, &mut out_bytes);
            }
        }
        partial.extend_from_slice(data);
    }
    flush(&mut batch, &mut out_bytes);
    let secs = start.elapsed().as_secs_f64();
    println!("{} {:.0} {}", lines, lines as f64 / secs, out_bytes);
    Ok(())
}

fn sink(port: u16) -> anyhow::Result<()> {
    let count = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = axum::Router::new()
            .route("/v1/logs", post(logs))
            .route(
                "/count",
                get(|State(c): State<Arc<AtomicU64>>| async move {
                    c.load(Ordering::Relaxed).to_string()
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(count);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn logs(State(count): State<Arc<AtomicU64>>, headers: HeaderMap, body: Bytes) -> Vec<u8> {
    let raw = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(body.as_ref()).read_to_end(&mut out);
        out
    } else {
        body.to_vec()
    };
    if let Ok(req) = ExportLogsServiceRequest::decode(raw.as_slice()) {
        let n: usize = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    ExportLogsServiceResponse::default().encode_to_vec()
}
