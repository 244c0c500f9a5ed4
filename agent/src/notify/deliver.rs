//! Sends one [`Request`] with retries: a timeout, a refused connection, a
//! 5xx or 408 is retried with exponential backoff, a 429 no sooner than its
//! `Retry-After`, all within `retry_for` (plus one request's timeout);
//! anything else the service refuses is final. Redirects are not followed:
//! the URL carries the credential and must not be replayed to another host.
//! Nothing here logs or returns the URL.

use std::time::Duration;

use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;

use super::channel::{Channel, Request};

/// How long and how often to retry.
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry_for: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

/// How a notification ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent {
        attempts: u32,
    },
    Failed {
        attempts: u32,
        /// `rejected`, `redirect`, `rate_limited`, `server_error`,
        /// `timeout` or `connect`.
        reason: &'static str,
        message: String,
    },
}

/// The most answer bytes read to explain a refusal.
const ANSWER_MAX: usize = 300;

/// A service's answer as one short printable line.
async fn short_answer(mut resp: reqwest::Response) -> String {
    let mut raw = Vec::new();
    while raw.len() < ANSWER_MAX {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c),
            _ => break,
        }
    }
    raw.truncate(ANSWER_MAX);
    String::from_utf8_lossy(&raw)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// `Retry-After` in seconds (the HTTP-date form falls back to backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// The error and its causes, without the URL reqwest would print.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Sends `req` until it is accepted, refused for good, or `policy.retry_for`
/// is spent. `on_retry(reason, wait)` is called before each wait.
pub async fn deliver(
    client: &reqwest::Client,
    channel: &dyn Channel,
    req: &Request,
    policy: &Policy,
    mut on_retry: impl FnMut(&'static str, &str, Duration),
) -> Delivery {
    let deadline = Instant::now() + policy.retry_for;
    let mut backoff = policy.first_backoff;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut builder = client
            .post(req.url.clone())
            .header(CONTENT_TYPE, req.content_type)
            .body(req.body.clone());
        for (k, v) in req
            .headers
            .iter()
            .chain(&channel.attempt_headers(&req.body))
        {
            builder = builder.header(*k, v);
        }
        let (reason, message, wait) = match builder.send().await {
            Ok(resp) => {
                channel.observe(resp.headers());
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    return Delivery::Sent { attempts };
                }
                let after = retry_after(resp.headers());
                let answer = short_answer(resp).await;
                match status {
                    429 => (
                        "rate_limited",
                        format!("rate limited (HTTP 429 {answer:?})"),
                        after,
                    ),
                    408 | 500..=599 => (
                        "server_error",
                        format!("HTTP {status} {answer:?}"),
                        None,
                    ),
                    300..=399 => {
                        return Delivery::Failed {
                            attempts,
                            reason: "redirect",
                            message: format!("the service answered with a redirect (HTTP {status}); redirects are not followed so the URL's secret never reaches another host: configure the final URL"),
                        }
                    }
                    _ => {
                        return Delivery::Failed {
                            attempts,
                            reason: "rejected",
                            message: channel.explain(status, &answer),
                        }
                    }
                }
            }
            Err(e) if e.is_timeout() => ("timeout", "no answer in time".to_string(), None),
            Err(e) => ("connect", describe(e), None),
        };
        let wait = wait.unwrap_or(backoff);
        if Instant::now() + wait > deadline {
            return Delivery::Failed {
                attempts,
                reason,
                message: format!(
                    "{message}; gave up after {attempts} attempt{} (retry_for_secs = {})",
                    if attempts == 1 { "" } else { "s" },
                    policy.retry_for.as_secs_f64()
                ),
            };
        }
        on_retry(reason, &message, wait);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}
