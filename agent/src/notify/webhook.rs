//! The generic JSON webhook: one `POST` per event with the payload
//! documented in the README (`schema = "steward.notification.v1"`), and,
//! with a `signing_secret`, an HMAC-SHA256 signature a receiver checks
//! before trusting the body:
//!
//! ```text
//! X-Steward-Timestamp: <unix seconds of this attempt>
//! X-Steward-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! ```
//!
//! The timestamp is signed too, so a receiver can refuse replays older than
//! a few minutes; it and the signature are made again on each retry, while
//! `X-Steward-Delivery` stays the same (receivers deduplicate on it).

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::channel::{Channel, Request};
use super::event::{random_uuid, Event};

/// The `schema` field of every payload.
pub const SCHEMA: &str = "steward.notification.v1";

pub struct Webhook {
    url: reqwest::Url,
    secret: Option<Vec<u8>>,
}

impl Webhook {
    pub fn new(url: reqwest::Url, secret: Option<&str>) -> Self {
        Webhook {
            url,
            secret: secret.map(|s| s.as_bytes().to_vec()),
        }
    }
}

/// The JSON body for `event`.
pub fn payload(event: &Event) -> serde_json::Value {
    let mut body = json!({
        "schema": SCHEMA,
        "event": event.name(),
        "outcome": event.outcome.as_str(),
        "host": event.host,
        "job": event.job(),
        "time": event.time,
        "run_id": event.run_id,
        "summary": event.summary,
        "details": event.details(),
        "steward_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(b) = &event.backup {
        body["backup"] = serde_json::to_value(b).unwrap_or_default();
    }
    if let Some(d) = &event.drill {
        body["drill"] = serde_json::to_value(d).unwrap_or_default();
    }
    body
}

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Channel for Webhook {
    fn request(&self, event: &Event) -> Request {
        Request {
            url: self.url.clone(),
            content_type: "application/json",
            body: payload(event).to_string().into_bytes(),
            headers: vec![
                ("x-steward-event", event.name()),
                ("x-steward-delivery", random_uuid()),
            ],
        }
    }

    fn attempt_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let Some(secret) = &self.secret else {
            return Vec::new();
        };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        vec![
            ("x-steward-timestamp", ts.to_string()),
            ("x-steward-signature", signature(secret, ts, body)),
        ]
    }

    fn explain(&self, status: u16, body: &str) -> String {
        let hint = match status {
            401 | 403 => "the receiver refused the signature or credentials: check signing_secret on both sides",
            404 | 410 => "the receiver has no endpoint at this URL: check webhook_url",
            413 => "the receiver refused the body size",
            _ => "check the receiver's log",
        };
        format!("the webhook receiver refused the notification (HTTP {status}: {body:?}): {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a reference computed independently (Python's `hmac`):
    /// `hmac.new(b"Jefe", b'1700000000.{"event":"backup.failure"}', sha256)`.
    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        let body = br#"{"event":"backup.failure"}"#;
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, body),
            "sha256=fffdc27be913d481e0ac076f113de9394d629853355d0d4f2ec4f112159038fa"
        );
        assert_ne!(
            signature(b"Jefe", 1_700_000_001, body),
            signature(b"Jefe", 1_700_000_000, body)
        );
    }

    #[test]
    fn payload_follows_the_documented_schema() {
        let e = Event::backup_not_run("web1", "db", "schedule", "rid-1", "lock held");
        let p = payload(&e);
        assert_eq!(p["schema"], SCHEMA);
        assert_eq!(p["event"], "backup.failure");
        assert_eq!(p["outcome"], "failure");
        assert_eq!(p["job"], "db");
        assert_eq!(p["run_id"], "rid-1");
        assert_eq!(p["backup"]["status"], "not_run");
        assert!(p.get("drill").is_none());
        let d = payload(&Event::drill_start("web1", "r"));
        assert_eq!(d["job"], serde_json::Value::Null);
        let w = Webhook::new("http://127.0.0.1/x".parse().unwrap(), None);
        assert!(w.attempt_headers(b"{}").is_empty());
    }
}
