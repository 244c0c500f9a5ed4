//! The one extension point of notifications: a [`Channel`] turns an
//! [`Event`] into the HTTP request its service documents and explains the
//! service's refusals. Delivery, retries and counting are the same for
//! every channel (deliver.rs).

use reqwest::header::HeaderMap;

use super::event::Event;

/// One POST to a notification service. Not `Debug`: the URL is a secret
/// and must not end up in a log by a stray `{:?}`.
#[derive(Clone)]
pub struct Request {
    /// Where to send it. A secret: never logged or put in an error.
    pub url: reqwest::Url,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Headers that stay the same on every attempt.
    pub headers: Vec<(&'static str, String)>,
}

/// A notification service's protocol.
pub trait Channel: Send + Sync {
    /// The request that tells the service about `event`.
    fn request(&self, event: &Event) -> Request;

    /// Headers computed again on every attempt (a signature over a fresh
    /// timestamp), given the body.
    fn attempt_headers(&self, _body: &[u8]) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Sees every answer's headers (Healthchecks announces its body limit).
    fn observe(&self, _headers: &HeaderMap) {}

    /// What to tell the operator when the service refused the request for
    /// good (a 4xx other than 408/429): what it said and what to do.
    /// `body` is the service's answer, already shortened and cleaned.
    fn explain(&self, status: u16, body: &str) -> String {
        format!("the service refused the notification (HTTP {status}: {body:?}); check the notifier's URL and the service's documentation")
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `text` cut to `max` bytes with a visible marker when it had to be cut.
pub fn shorten(text: &str, max: usize) -> String {
    const MARK: &str = "\n[... truncated by steward]";
    if text.len() <= max {
        return text.to_string();
    }
    let keep = max.saturating_sub(MARK.len());
    format!("{}{MARK}", truncate_utf8(text, keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_respects_utf8_and_the_limit() {
        let s = "é".repeat(100);
        assert_eq!(truncate_utf8(&s, 3), "é");
        let cut = shorten(&s, 60);
        assert!(cut.len() <= 60, "{}", cut.len());
        assert!(cut.ends_with("truncated by steward]"));
        assert_eq!(shorten("short", 60), "short");
    }
}
