//! Helper of `scripts/bench-telemetry` (not part of Steward):
//!
//! - `otlp_bench sink <port>`: an OTLP/HTTP receiver that counts log records
//!   (`POST /v1/logs`, gzip or not; counted on the wire, not decoded) and
//!   answers `GET /count`.
//! - `otlp_bench ceiling <file> <gzip|none> [parser]`: the raw ceiling on
//!   one thread: read + split lines + group them into records with the
//!   parser's default multiline start + parse (default `nginx_combined`) +
//!   encode OTLP records the way the tailer does, in batches of 2048
//!   records or 1 MiB (+ gzip level 1, the exporter's); prints lines,
//!   lines/s, bytes out and records.
//! - `otlp_bench generate <file> <records> [nginx|monolog|mysql_slow]`:
//!   writes nginx access-log lines, Laravel lines (~200 bytes, one in 50
//!   an exception with a 10-frame stack trace) or MariaDB slow-log entries
//!   (6 to 8 lines each).
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
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use steward_telemetry::config::ParserKind;
use steward_telemetry::parse::{parse_encoded, BodyPart};
use steward_telemetry::wire::{self, EncodedAttributes};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sink") => sink(args.get(2).and_then(|p| p.parse().ok()).unwrap_or(4318)),
        Some("ceiling") => ceiling(
            &args[2],
            args.get(3).map(String::as_str) == Some("gzip"),
            parser(args.get(4).map_or("nginx_combined", String::as_str))?,
        ),
        Some("generate") => match args.get(4).map_or("nginx", String::as_str) {
            "nginx" => generate(&args[2], args[3].parse()?),
            "monolog" => generate_monolog(&args[2], args[3].parse()?),
            "mysql_slow" => generate_slow(&args[2], args[3].parse()?),
            other => anyhow::bail!("no generator for {other}"),
        },
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

fn parser(name: &str) -> anyhow::Result<ParserKind> {
    Ok(serde_json::from_value(serde_json::Value::String(
        name.into(),
    ))?)
}

/// Laravel's `laravel.log`: ~200-byte lines, one record in 50 an error
/// with a 10-frame stack trace (as Monolog's LineFormatter writes it).
fn generate_monolog(path: &str, records: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let levels = ["INFO", "INFO", "DEBUG", "WARNING", "NOTICE"];
    for i in 0..records {
        let (m, s) = ((i / 60) % 60, i % 60);
        if i % 50 == 49 {
            write!(
                out,
                "[2026-12-04 17:{m:02}:{s:02}] production.ERROR: Order {i} failed {{\"userId\":{},\"exception\":\"[object] (RuntimeException(code: 0): Order {i} failed at /var/www/app/app/Services/Orders.php:88)\n[stacktrace]\n",
                i % 977
            )?;
            for f in 0..10 {
                writeln!(out, "#{f} /var/www/app/vendor/laravel/framework/src/Illuminate/Pipeline/Pipeline.php({}): Illuminate\\Pipeline\\Pipeline->{{closure}}()", 100 + f)?;
            }
            writeln!(out, "#10 {{main}}\n\"}}")?;
        } else {
            writeln!(
                out,
                "[2026-12-04 17:{m:02}:{s:02}] production.{}: Order {i} shipped to warehouse {} {{\"order_id\":{i},\"user_id\":{},\"trace_id\":\"4bf92f3577b34da6a3ce929d{:08x}\",\"span_id\":\"00f067aa{:08x}\"}}",
                levels[(i % 5) as usize],
                i % 13,
                i % 977,
                i,
                i
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// MariaDB slow-log entries (one in four with a three-line statement).
fn generate_slow(path: &str, records: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..records {
        if i % 10 == 0 {
            writeln!(
                out,
                "# Time: 261204 17:{:02}:{:02}",
                (i / 600) % 60,
                (i / 10) % 60
            )?;
        }
        writeln!(out, "# User@Host: app[app] @ localhost []\n# Thread_id: {}  Schema: shop  QC_hit: No\n# Query_time: 1.{:06}  Lock_time: 0.000{:03}  Rows_sent: {}  Rows_examined: {}\n# Rows_affected: 0  Bytes_sent: {}\nSET timestamp={};",
            i % 5000, i % 1_000_000, i % 1000, i % 50, i * 13 % 200_000, 60 + i % 900, 1_796_400_000 + i / 10)?;
        if i % 4 == 0 {
            writeln!(out, "SELECT o.id, o.total\nFROM orders o JOIN users u ON u.id = o.user_id\nWHERE u.email LIKE '%{i}%';")?;
        } else {
            writeln!(out, "SELECT * FROM order_items WHERE order_id = {i};")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn ceiling(path: &str, gzip: bool, kind: ParserKind) -> anyhow::Result<()> {
    let options = steward_telemetry::parse::Options::default();
    let start_re = steward_telemetry::parse::default_multiline_start(kind)
        .map(regex::Regex::new)
        .transpose()?;
    let start = Instant::now();
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    let mut attributes = EncodedAttributes::default();
    let mut records: Vec<u8> = Vec::new();
    let mut request: Vec<u8> = Vec::new();
    let mut compressed: Vec<u8> = Vec::new();
    let resource = Resource::default().encode_to_vec();
    let scope = InstrumentationScope {
        name: "steward.filelog".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut in_batch = 0usize;
    let mut lines = 0u64;
    let mut out_bytes = 0u64;
    let mut flush = |records: &mut Vec<u8>, out_bytes: &mut u64| {
        wire::put_logs_request(
            &mut request,
            &resource,
            &[wire::ScopePart {
                scope: &scope,
                records,
            }],
        );
        records.clear();
        if gzip {
            if let Ok(n) = wire::gzip_fast(&request, &mut compressed) {
                *out_bytes += n as u64;
            }
        } else {
            *out_bytes += request.len() as u64;
        }
    };
    let mut encode = |record: &[u8], records: &mut Vec<u8>| {
        let text = wire::text_of(record);
        let meta = parse_encoded(kind, &options, &text, &mut attributes);
        wire::put_log_record(
            records,
            &wire::RecordParts {
                time_unix_nano: meta.time_unix_nano,
                observed_time_unix_nano: 1,
                severity_number: meta.severity,
                severity_text: meta.severity_text,
                body: match &meta.body {
                    Some(BodyPart::Any(b)) => wire::Body::Any(b),
                    Some(BodyPart::Slice(r)) => wire::Body::Str(&text[r.clone()]),
                    None => wire::Body::Str(&text),
                },
                attributes: &attributes.0,
                trace_id: meta.trace_id.as_ref().map_or(&[], |t| &t[..]),
                span_id: meta.span_id.as_ref().map_or(&[], |t| &t[..]),
            },
        );
    };
    // Lines grouped into records as the tailer's assembler does.
    let mut pending: Vec<u8> = Vec::new();
    let mut n_records = 0u64;
    let mut record = |line: &[u8], records: &mut Vec<u8>| -> bool {
        let Some(re) = &start_re else {
            encode(line, records);
            n_records += 1;
            return true;
        };
        let starts = re.is_match(&String::from_utf8_lossy(line));
        let mut emitted = false;
        if starts && !pending.is_empty() {
            encode(&pending, records);
            n_records += 1;
            pending.clear();
            emitted = true;
        }
        if !pending.is_empty() {
            pending.push(b'\n');
        }
        pending.extend_from_slice(line);
        emitted
    };
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        while let Some(pos) = memchr::memchr(b'\n', data) {
            let emitted = if partial.is_empty() {
                record(&data[..pos], &mut records)
            } else {
                partial.extend_from_slice(&data[..pos]);
                let e = record(&partial, &mut records);
                partial.clear();
                e
            };
            data = &data[pos + 1..];
            lines += 1;
            in_batch += usize::from(emitted);
            // The exporter's defaults: 2048 records or 1 MiB.
            if in_batch == 2048 || records.len() >= 1 << 20 {
                flush(&mut records, &mut out_bytes);
                in_batch = 0;
            }
        }
        partial.extend_from_slice(data);
    }
    if !pending.is_empty() {
        encode(&pending, &mut records);
        n_records += 1;
    }
    flush(&mut records, &mut out_bytes);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} {:.0} {} {}",
        lines,
        lines as f64 / secs,
        out_bytes,
        n_records
    );
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
    // Counting by walking the wire format (not decoding into messages)
    // keeps the sink, on the other core, from being what is measured.
    if let Some(n) = count_log_records(&raw) {
        count.fetch_add(n, Ordering::Relaxed);
    }
    ExportLogsServiceResponse::default().encode_to_vec()
}

/// Calls `f` with (field number, bytes) of each length-delimited field of
/// a protobuf message; `None` if the message is malformed.
fn each_len_field(mut buf: &[u8], mut f: impl FnMut(u64, &[u8]) -> Option<()>) -> Option<()> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    while !buf.is_empty() {
        let tag = varint(&mut buf)?;
        match tag & 7 {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..)?,
            5 => buf = buf.get(4..)?,
            2 => {
                let len = varint(&mut buf)? as usize;
                f(tag >> 3, buf.get(..len)?)?;
                buf = buf.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(())
}

/// ExportLogsServiceRequest.resource_logs(1).scope_logs(2).log_records(2).
fn count_log_records(request: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    each_len_field(request, |field, resource_logs| {
        if field != 1 {
            return Some(());
        }
        each_len_field(resource_logs, |field, scope_logs| {
            if field != 2 {
                return Some(());
            }
            each_len_field(scope_logs, |field, _| {
                if field == 2 {
                    n += 1;
                }
                Some(())
            })
        })
    })?;
    Some(n)
}
