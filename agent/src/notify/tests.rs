//! Delivery against local HTTP servers: retries on 5xx and refused
//! connections, `Retry-After` honoured, refusals final, the retry budget
//! bounded, a full queue dropping and counting, never blocking the caller.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;

use super::*;
use crate::config::notify::NotifierConfig;

/// A server answering each request with the next of `answers` (the last
/// one repeats) after `delay`; returns its URL and the bodies received.
async fn server(
    answers: Vec<(u16, Option<&'static str>)>,
    delay: Duration,
) -> (String, Arc<Mutex<Vec<(HeaderMap, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let n = Arc::new(AtomicUsize::new(0));
    let (s, answers) = (Arc::clone(&seen), Arc::new(answers));
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let (s, n, answers) = (Arc::clone(&s), Arc::clone(&n), Arc::clone(&answers));
            async move {
                s.lock().unwrap().push((headers, body));
                tokio::time::sleep(delay).await;
                let i = n.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
                let (status, retry_after) = answers[i];
                let mut h = HeaderMap::new();
                if let Some(r) = retry_after {
                    h.insert("retry-after", r.parse().unwrap());
                }
                (StatusCode::from_u16(status).unwrap(), h, "ok").into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/hook"), seen)
}

fn webhook(name: &str, url: &str, retry_for_secs: f64) -> NotifierConfig {
    let text = format!(
        "name = \"{name}\"\nkind = \"webhook\"\nwebhook_url = \"{url}\"\n\
         signing_secret = \"k\"\nretry_for_secs = {retry_for_secs}\ntimeout_secs = 2\n"
    );
    toml::from_str(&text).unwrap()
}

fn failure(job: &str) -> Event {
    Event::backup_not_run("web1", job, "schedule", &random_uuid(), "disk full")
}

/// Waits until `name` has `want` results (sent + failed + dropped).
async fn settled(name: &str, want: u64, within: Duration) -> metrics::Counts {
    let deadline = Instant::now() + within;
    loop {
        let c = metrics::counts(name);
        if c.sent + c.failed + c.dropped >= want || Instant::now() > deadline {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_delivery_id_and_a_fresh_signature() {
    let (url, seen) = server(vec![(500, None), (200, None)], Duration::ZERO).await;
    let n = Notifications::start_with(
        &[webhook("t-retry", &url, 10.0)],
        8,
        Duration::from_millis(1100),
    );
    n.notify(failure("db"));
    let c = settled("t-retry", 1, Duration::from_secs(10)).await;
    assert_eq!((c.sent, c.failed, c.retries), (1, 0, 1), "{c:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let h = |i: usize, k: &str| seen[i].0[k].to_str().unwrap().to_string();
    assert_eq!(h(0, "x-steward-delivery"), h(1, "x-steward-delivery"));
    // The retry came a second later: a new timestamp, a new signature.
    assert_ne!(h(0, "x-steward-timestamp"), h(1, "x-steward-timestamp"));
    assert_ne!(h(0, "x-steward-signature"), h(1, "x-steward-signature"));
    let ts: u64 = h(1, "x-steward-timestamp").parse().unwrap();
    assert_eq!(
        h(1, "x-steward-signature"),
        webhook::signature(b"k", ts, seen[1].1.as_bytes())
    );
}

#[tokio::test]
async fn a_429_waits_for_its_retry_after() {
    let (url, seen) = server(vec![(429, Some("2")), (200, None)], Duration::ZERO).await;
    let n = Notifications::start_with(
        &[webhook("t-429", &url, 30.0)],
        8,
        Duration::from_millis(10),
    );
    let started = Instant::now();
    n.notify(failure("db"));
    let c = settled("t-429", 1, Duration::from_secs(10)).await;
    assert_eq!(c.sent, 1, "{c:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_refusal_is_final_and_the_budget_bounds_retries() {
    let (url, seen) = server(vec![(400, None)], Duration::ZERO).await;
    let n = Notifications::start_with(
        &[webhook("t-400", &url, 30.0)],
        8,
        Duration::from_millis(10),
    );
    n.notify(failure("db"));
    let c = settled("t-400", 1, Duration::from_secs(10)).await;
    assert_eq!((c.failed, c.retries), (1, 0), "{c:?}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (url, seen) = server(vec![(503, None)], Duration::ZERO).await;
    let n = Notifications::start_with(
        &[webhook("t-503", &url, 1.0)],
        8,
        Duration::from_millis(100),
    );
    let started = Instant::now();
    n.notify(failure("db"));
    let c = settled("t-503", 1, Duration::from_secs(10)).await;
    assert_eq!(c.failed, 1, "{c:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // 100 + 200 + 400 ms of backoff fit in 1 s, 800 more do not.
    assert_eq!(seen.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_hanging_service_never_blocks_and_a_full_queue_drops() {
    let (url, _seen) = server(vec![(200, None)], Duration::from_secs(30)).await;
    let n = Notifications::start_with(
        &[webhook("t-full", &url, 0.0)],
        1,
        Duration::from_millis(10),
    );
    let started = Instant::now();
    for _ in 0..5 {
        n.notify(failure("db"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // One in flight (waiting for the 2 s timeout), one queued, three dropped.
    let c = metrics::counts("t-full");
    assert_eq!(c.dropped, 3, "{c:?}");
    let c = settled("t-full", 5, Duration::from_secs(10)).await;
    assert_eq!((c.failed, c.dropped), (2, 3), "{c:?}");
}

#[tokio::test]
async fn notifiers_get_only_what_they_report() {
    let (url, seen) = server(vec![(200, None)], Duration::ZERO).await;
    let mut only_db = webhook("t-filter", &url, 1.0);
    only_db.jobs = Some(vec!["db".into()]);
    only_db.on = Some(vec![Outcome::Failure]);
    only_db.drills = Some(false);
    let n = Notifications::start_with(&[only_db], 8, Duration::from_millis(10));
    n.notify(failure("files"));
    n.notify(Event::backup_start("web1", "db", "schedule", "r"));
    n.notify(Event::drill_not_run("web1", "r", "no key"));
    n.notify(failure("db"));
    let c = settled("t-filter", 1, Duration::from_secs(10)).await;
    assert_eq!(c.sent, 1, "{c:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&seen[0].1).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["job"].as_str()),
        (Some("backup.failure"), Some("db"))
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_and_never_names_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = webhook::Webhook::new(
        format!("http://127.0.0.1:{port}/SECRET-PATH")
            .parse()
            .unwrap(),
        None,
    );
    let req = channel.request(&failure("db"));
    let client = reqwest::Client::new();
    let policy = Policy {
        retry_for: Duration::from_millis(300),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    let mut retries = Vec::new();
    let result = deliver(&client, &channel, &req, &policy, |reason, msg, _| {
        retries.push(format!("{reason} {msg}"))
    })
    .await;
    let Delivery::Failed {
        reason,
        message,
        attempts,
    } = result
    else {
        panic!("{result:?}")
    };
    assert_eq!((reason, attempts), ("connect", 2));
    assert!(
        !message.contains("SECRET") && !message.contains(&port.to_string()),
        "{message}"
    );
    assert!(retries.iter().all(|r| !r.contains("SECRET")), "{retries:?}");
}
