//! Slack incoming webhooks, as Slack documents them: a JSON `POST` with
//! `text` (the notification's fallback) and `blocks` (header, section with
//! the details, context), within Slack's limits (150 characters in a
//! header, 3000 in a section) and with `&`, `<`, `>` escaped so an error
//! message cannot become a link or a mention. Slack answers `200 ok`, or a
//! status with a short error code (`invalid_payload`, `no_service`, ...).

use serde_json::json;

use super::channel::{shorten, truncate_utf8, Channel, Request};
use super::event::Event;
use crate::config::notify::Outcome;

/// Slack's limit on a section block's text.
const SECTION_MAX: usize = 3000;
/// Slack's limit on a header block's text.
const HEADER_MAX: usize = 150;

pub struct Slack {
    url: reqwest::Url,
}

impl Slack {
    pub fn new(url: reqwest::Url) -> Self {
        Slack { url }
    }
}

/// Escapes the three characters Slack's `mrkdwn` reads as control.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message for `event`: `{"text": ..., "blocks": [...]}`.
pub fn message(event: &Event) -> serde_json::Value {
    let icon = match event.outcome {
        Outcome::Start => ":arrow_forward:",
        Outcome::Success => ":white_check_mark:",
        Outcome::Failure => ":x:",
    };
    let title = match (event.job(), event.outcome) {
        (Some(job), Outcome::Start) => format!("Backup {job} started on {}", event.host),
        (Some(job), Outcome::Success) => format!("Backup {job} succeeded on {}", event.host),
        (Some(job), Outcome::Failure) => format!("Backup {job} FAILED on {}", event.host),
        (None, Outcome::Start) => format!("Drill started on {}", event.host),
        (None, Outcome::Success) => format!("Drill passed on {}", event.host),
        (None, Outcome::Failure) => format!("Drill FAILED on {}", event.host),
    };
    let header = format!("{icon} {title}");
    let mut details = escape(&event.summary);
    let lines = event.details();
    if !lines.is_empty() {
        details.push_str("\n```");
        for l in &lines {
            details.push('\n');
            details.push_str(&escape(l));
        }
        details.push_str("\n```");
    }
    let details = if details.chars().count() > SECTION_MAX {
        // Shorten by bytes (safe: fewer bytes is never more characters),
        // then close the code block the cut may have opened.
        let mut s = shorten(&details, SECTION_MAX - 4);
        if s.matches("```").count() % 2 == 1 {
            s.push_str("\n```");
        }
        s
    } else {
        details
    };
    let mut context = format!("host `{}`", escape(&event.host));
    if let Some(job) = event.job() {
        context.push_str(&format!(" · job `{}`", escape(job)));
    }
    context.push_str(&format!(
        " · {} · steward {}",
        event.time,
        env!("CARGO_PKG_VERSION")
    ));
    json!({
        "text": format!("{icon} {}", escape(&event.summary)),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate_utf8(&header, HEADER_MAX), "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": details}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}
        ]
    })
}

impl Channel for Slack {
    fn request(&self, event: &Event) -> Request {
        Request {
            url: self.url.clone(),
            content_type: "application/json",
            body: message(event).to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    fn explain(&self, status: u16, body: &str) -> String {
        let code = body.trim();
        let hint = match code {
            "no_service" | "no_team" | "invalid_token" => {
                "the webhook URL is wrong or was revoked: create a new incoming webhook and set webhook_url"
            }
            "channel_not_found" | "channel_is_archived" => {
                "the webhook's channel is gone or archived: create a webhook for a live channel"
            }
            "action_prohibited" => "the workspace's admins restrict this webhook: ask them, or use another channel",
            "invalid_payload" | "invalid_blocks" | "invalid_blocks_format" | "no_text" => {
                "Slack could not read the message; this is a bug in steward, please report it with the agent's version"
            }
            _ => "check webhook_url and Slack's status page",
        };
        format!("Slack refused the message (HTTP {status} {code:?}): {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_escape_and_stay_within_slack_limits() {
        let why = format!("<!channel> & {}", "y".repeat(5000));
        let e = Event::backup_not_run("web1", "db", "schedule", "r", &why);
        let m = message(&e);
        let text = m["text"].as_str().unwrap();
        assert!(text.contains("&lt;!channel&gt; &amp;"), "{text}");
        let header = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(header.len() <= HEADER_MAX && header.contains("Backup db FAILED on web1"));
        let section = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(section.chars().count() <= SECTION_MAX, "{}", section.len());
        assert!(!section.contains("<!channel>"));
        assert_eq!(section.matches("```").count() % 2, 0, "{section}");
        assert!(m["blocks"][2]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("job `db`"));
    }
}
