//! Healthchecks pings, as its Pinging API documents: `POST <ping-url>/start`
//! when a run starts, `POST <ping-url>` on success, `POST <ping-url>/fail`
//! on failure, each with `?rid=<run id>` so Healthchecks pairs start and end
//! (and measures the run), and the run's outcome as a plain-text body cut
//! to the body limit (Healthchecks keeps only the first `PING_BODY_LIMIT`
//! bytes and announces that limit in a `Ping-Body-Limit` header).

use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::header::HeaderMap;

use super::channel::{shorten, Channel, Request};
use super::event::Event;
use crate::config::notify::Outcome;

pub struct Healthchecks {
    /// The check's ping URL (UUID or ping key + slug), query kept.
    url: reqwest::Url,
    /// `body_limit_bytes`.
    configured_limit: usize,
    /// The server's `Ping-Body-Limit`, once seen (0: not yet).
    announced_limit: AtomicUsize,
}

impl Healthchecks {
    pub fn new(url: reqwest::Url, body_limit_bytes: usize) -> Self {
        Healthchecks {
            url,
            configured_limit: body_limit_bytes,
            announced_limit: AtomicUsize::new(0),
        }
    }

    /// The body limit in force: the configured one, lowered to the server's.
    pub fn body_limit(&self) -> usize {
        match self.announced_limit.load(Ordering::Relaxed) {
            0 => self.configured_limit,
            n => n.min(self.configured_limit),
        }
    }

    /// The ping URL for `outcome` with the run id.
    fn ping_url(&self, outcome: Outcome, run_id: &str) -> reqwest::Url {
        let mut url = self.url.clone();
        let suffix = match outcome {
            Outcome::Start => Some("start"),
            Outcome::Success => None,
            Outcome::Failure => Some("fail"),
        };
        if let Some(suffix) = suffix {
            let path = format!("{}/{suffix}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        url.query_pairs_mut().append_pair("rid", run_id);
        url
    }
}

impl Channel for Healthchecks {
    fn request(&self, event: &Event) -> Request {
        let mut text = event.summary.clone();
        for line in event.details() {
            text.push('\n');
            text.push_str(&line);
        }
        text.push('\n');
        Request {
            url: self.ping_url(event.outcome, &event.run_id),
            content_type: "text/plain; charset=utf-8",
            body: shorten(&text, self.body_limit()).into_bytes(),
            headers: Vec::new(),
        }
    }

    fn observe(&self, headers: &HeaderMap) {
        if let Some(n) = headers
            .get("ping-body-limit")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n >= 100)
        {
            self.announced_limit.store(n, Ordering::Relaxed);
        }
    }

    fn explain(&self, status: u16, body: &str) -> String {
        match status {
            404 => "Healthchecks knows no check at this ping URL (HTTP 404 not found): copy the check's ping URL again (with a slug URL, add ?create=1 to have it created)".into(),
            409 => "Healthchecks has several checks with this slug (HTTP 409 ambiguous slug): give the check a unique slug or use its UUID ping URL".into(),
            _ => format!("Healthchecks refused the ping (HTTP {status}: {body:?}); check the ping URL"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_follow_the_documented_paths_and_keep_the_query() {
        let hc = Healthchecks::new(
            "https://hc.example/ping/KEY/db-backup?create=1"
                .parse()
                .unwrap(),
            10_000,
        );
        let u = hc.ping_url(Outcome::Start, "r1");
        assert_eq!(u.path(), "/ping/KEY/db-backup/start");
        assert_eq!(u.query(), Some("create=1&rid=r1"));
        assert_eq!(
            hc.ping_url(Outcome::Failure, "r1").path(),
            "/ping/KEY/db-backup/fail"
        );
        assert_eq!(
            hc.ping_url(Outcome::Success, "r1").path(),
            "/ping/KEY/db-backup"
        );
    }

    #[test]
    fn the_server_limit_lowers_the_body_limit() {
        let hc = Healthchecks::new("https://hc.example/ping/u".parse().unwrap(), 10_000);
        let mut h = HeaderMap::new();
        h.insert("ping-body-limit", "500".parse().unwrap());
        hc.observe(&h);
        assert_eq!(hc.body_limit(), 500);
        let why = "x".repeat(5000);
        let e = Event::backup_not_run("web1", "db", "schedule", "r", &why);
        let req = hc.request(&e);
        assert!(req.body.len() <= 500, "{}", req.body.len());
        assert!(req.url.path().ends_with("/fail"));
    }
}
