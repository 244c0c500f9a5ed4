//! The HTTP server: `/metrics` (text 0.0.4, gzip, `collect[]`/`exclude[]`),
//! `/livez`, `/readyz`, `/health` (JSON status of every collector), served
//! with the web configuration (TLS, basic auth) and limits of `crate::web`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use steward_exporters::{exposition, ScrapeOptions};
use steward_web::{InFlight, WebHandle};
use tokio_util::sync::CancellationToken;

use crate::generation::Shared;

/// Time kept back from Prometheus' scrape timeout for encoding and the
/// network, so a slow collector is cut before Prometheus gives up.
const SCRAPE_MARGIN: Duration = Duration::from_millis(500);

pub fn router(shared: Arc<Shared>) -> Router {
    let limit: crate::web::ScrapeLimit = (Arc::clone(&shared), Arc::new(InFlight::default()));
    Router::new()
        .route("/", get(index))
        .route(
            "/metrics",
            get(metrics).layer(from_fn_with_state(limit, crate::web::scrape_limit)),
        )
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/health", get(health))
        .with_state(shared)
}

/// Serves until `stop` fires. The timeouts are the ones of the starting
/// configuration; `web` is swapped on reload.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    web: WebHandle,
    stop: CancellationToken,
) {
    let timeouts = shared.generation().config.agent.http.timeouts();
    steward_web::serve(listener, router(shared), web, timeouts, stop).await;
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>Steward</title></head><body><h1>Steward</h1>\
         <ul><li><a href=\"/metrics\">/metrics</a></li><li><a href=\"/health\">/health</a></li>\
         <li><a href=\"/livez\">/livez</a></li><li><a href=\"/readyz\">/readyz</a></li></ul></body></html>\n",
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Ready once a configuration generation is running, which is the case
    // as soon as the server accepts connections.
    let _ = shared.generation();
    "ok\n"
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let generation = shared.generation();
    let statuses = generation.scraper.statuses();
    let subsystems = generation.health.states();
    let healthy = statuses.iter().all(|s| s.success) && subsystems.iter().all(|s| s.up);
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "subsystems": subsystems,
        "collectors": statuses,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&body).unwrap_or_default() + "\n",
    )
        .into_response()
}

async fn metrics(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let generation = shared.generation();
    let (include, exclude) = parse_filters(query.as_deref().unwrap_or(""));
    let timeout = scrape_timeout(
        &headers,
        generation.config.agent.scrape_timeout_secs,
        generation.config.agent.http.max_scrape_timeout_secs,
    );
    let span = crate::spans::scrape_span();
    let output = tracing::Instrument::instrument(
        generation.scraper.scrape(&ScrapeOptions {
            include,
            exclude,
            timeout,
        }),
        span.clone(),
    )
    .await;
    crate::spans::record_scrape(&span, &output.families);
    let text = exposition::encode(&output.families);
    let wants_gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(exposition::CONTENT_TYPE),
    );
    if wants_gzip {
        // zlib-rs at level 1 (the telemetry path's encoder): 82 us for a
        // 50 KB node scrape where the C zlib flate2 links here takes 295 us,
        // for a body 18% larger (11 KB instead of 9.4 KB); the compact
        // settings halve the encoder's memory at every scrape.
        let mut body = Vec::new();
        if let Ok(n) = steward_telemetry::wire::gzip_compact(text.as_bytes(), &mut body) {
            body.truncate(n);
            response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            return (StatusCode::OK, response_headers, body).into_response();
        }
    }
    (StatusCode::OK, response_headers, text).into_response()
}

/// The scrape budget: Prometheus' `X-Prometheus-Scrape-Timeout-Seconds`
/// (at most `max_secs`) minus a margin, else the configured default.
fn scrape_timeout(headers: &HeaderMap, default_secs: f64, max_secs: f64) -> Duration {
    let header_secs = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0);
    match header_secs {
        Some(secs) => {
            let total =
                Duration::try_from_secs_f64(secs.min(max_secs)).unwrap_or(Duration::from_secs(10));
            if total > SCRAPE_MARGIN * 2 {
                total - SCRAPE_MARGIN
            } else {
                total.mul_f64(0.8)
            }
        }
        None => Duration::from_secs_f64(default_secs),
    }
}

/// Parses node_exporter's `collect[]=a&exclude[]=b` filters.
fn parse_filters(query: &str) -> (Vec<String>, Vec<String>) {
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "collect[]" => include.push(value.into_owned()),
            "exclude[]" => exclude.push(value.into_owned()),
            _ => {}
        }
    }
    (include, exclude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_with_encoding() {
        let (i, e) = parse_filters("collect%5B%5D=cpu&collect[]=meminfo&exclude[]=hw%6Don&x=1&%");
        assert_eq!(i, vec!["cpu", "meminfo"]);
        assert_eq!(e, vec!["hwmon"]);
    }

    #[test]
    fn timeout_from_header_with_margin() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_static("10"),
        );
        assert_eq!(scrape_timeout(&h, 3.0, 60.0), Duration::from_millis(9500));
        assert_eq!(
            scrape_timeout(&HeaderMap::new(), 3.0, 60.0),
            Duration::from_secs(3)
        );
        // A client asking for more than the cap gets the cap.
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_static("3600"),
        );
        assert_eq!(scrape_timeout(&h, 3.0, 20.0), Duration::from_millis(19500));
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            HeaderValue::from_static("junk"),
        );
        assert_eq!(scrape_timeout(&h, 3.0, 60.0), Duration::from_secs(3));
    }
}
