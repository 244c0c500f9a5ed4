//! Notifications of backups and drills that do not depend on the
//! monitoring stack: Healthchecks pings, Slack incoming webhooks and a
//! generic JSON webhook (`[[notify]]`, config/notify.rs).
//!
//! A backup never waits for a notifier: [`Notifications::notify`] puts the
//! event on each interested notifier's bounded queue and returns (a full
//! queue drops the event and counts it); one task per notifier sends its
//! queue in order (a start ping before its end ping) with retries
//! (deliver.rs). The tasks outlive a reload, so an event queued just before
//! one is still sent; they end once their queue is empty and no generation
//! holds it any more.

mod channel;
mod deliver;
mod event;
mod healthchecks;
mod metrics;
mod slack;
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use event::{random_uuid, Event};
pub use metrics::NotifyCollector;

use crate::config::notify::{check_url, NotifierConfig, NotifierKind, Outcome};
use channel::Channel;
use deliver::{deliver, Delivery, Policy};
use event::Subject;

/// Events waiting per notifier before new ones are dropped. A day of
/// 5-minute backups with a start and an end each is 576 events; a service
/// down that long has made its point.
const QUEUE: usize = 256;

/// The configured notifiers of one generation: cheap to clone, never fails
/// or blocks its caller.
#[derive(Clone, Default)]
pub struct Notifications {
    notifiers: Arc<Vec<Notifier>>,
    /// The sender tasks, for [`Notifications::finish`].
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the URLs are secrets.
        let names: Vec<&str> = self.notifiers.iter().map(|n| n.name.as_str()).collect();
        f.debug_struct("Notifications")
            .field("notifiers", &names)
            .finish()
    }
}

/// One notifier: what it reports and the queue of its sender task.
struct Notifier {
    name: String,
    outcomes: Vec<Outcome>,
    config: NotifierConfig,
    queue: mpsc::Sender<Event>,
}

impl Notifications {
    /// Starts a sender task per `[[notify]]` entry (on the current tokio
    /// runtime). Entries that fail to build (validated configurations do
    /// not) are logged and left out.
    pub fn start(configs: &[NotifierConfig]) -> Self {
        Self::start_with(configs, QUEUE, Duration::from_secs(1))
    }

    fn start_with(configs: &[NotifierConfig], queue: usize, first_backoff: Duration) -> Self {
        let mut notifiers = Vec::new();
        let mut tasks = Vec::new();
        for config in configs {
            match build(config) {
                Ok((channel, client)) => {
                    metrics::register(&config.name, config.kind.as_str());
                    let (tx, rx) = mpsc::channel(queue);
                    let policy = Policy {
                        retry_for: Duration::from_secs_f64(config.retry_for_secs),
                        first_backoff,
                        max_backoff: Duration::from_secs(60),
                    };
                    tasks.push(tokio::spawn(send_loop(
                        config.name.clone(),
                        channel,
                        client,
                        policy,
                        rx,
                    )));
                    notifiers.push(Notifier {
                        name: config.name.clone(),
                        outcomes: config.outcomes(),
                        config: config.clone(),
                        queue: tx,
                    });
                }
                Err(e) => tracing::warn!(notifier = %config.name, "notifier not started: {e}"),
            }
        }
        Notifications {
            notifiers: Arc::new(notifiers),
            tasks: Arc::new(Mutex::new(tasks)),
        }
    }

    /// For a command about to exit: closes the queues and waits at most
    /// `limit` for what they hold to be sent (or given up). Returns how
    /// many notifiers were still sending when the time ran out.
    pub async fn finish(self, limit: Duration) -> usize {
        let tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        drop(self);
        let deadline = tokio::time::Instant::now() + limit;
        let mut unfinished = 0;
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                unfinished += 1;
            }
        }
        unfinished
    }

    /// Queues `event` for every notifier that reports it; never waits.
    pub fn notify(&self, event: Event) {
        for n in self.notifiers.iter() {
            let wanted = n.outcomes.contains(&event.outcome)
                && match &event.subject {
                    Subject::Backup { job } => n.config.reports_job(job),
                    Subject::Drill => n.config.reports_drills(),
                };
            if !wanted {
                continue;
            }
            if let Err(e) = n.queue.try_send(event.clone()) {
                metrics::count(&n.name, |c| c.dropped += 1);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "its queue is full (the service has been failing for a while)"
                    }
                    mpsc::error::TrySendError::Closed(_) => "its sender stopped",
                };
                tracing::warn!(notifier = %n.name, event = %event.name(), "notification dropped: {why}");
            }
        }
    }
}

/// The channel and HTTP client of one entry.
fn build(config: &NotifierConfig) -> Result<(Box<dyn Channel>, reqwest::Client), String> {
    let url = check_url(config.url().unwrap_or_default())?;
    let channel: Box<dyn Channel> = match config.kind {
        NotifierKind::Healthchecks => Box::new(healthchecks::Healthchecks::new(
            url,
            config.body_limit_bytes,
        )),
        NotifierKind::Slack => Box::new(slack::Slack::new(url)),
        NotifierKind::Webhook => {
            Box::new(webhook::Webhook::new(url, config.signing_secret.as_deref()))
        }
    };
    let timeout = Duration::from_secs_f64(config.timeout_secs);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("steward/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", e.without_url()))?;
    Ok((channel, client))
}

/// Sends one notifier's queue in order until every sender is gone.
async fn send_loop(
    name: String,
    channel: Box<dyn Channel>,
    client: reqwest::Client,
    policy: Policy,
    mut queue: mpsc::Receiver<Event>,
) {
    while let Some(event) = queue.recv().await {
        let request = channel.request(&event);
        let kind = event.name();
        let result = deliver(&client, channel.as_ref(), &request, &policy, |reason, message, wait| {
            metrics::count(&name, |c| c.retries += 1);
            tracing::info!(notifier = %name, event = %kind, reason, "notification not accepted yet ({message}); retrying in {wait:?}");
        })
        .await;
        match result {
            Delivery::Sent { attempts } => {
                // Logged before counted: whoever sees the count finds the line.
                tracing::debug!(notifier = %name, event = %kind, attempts, "notification sent");
                metrics::count(&name, |c| c.sent += 1);
            }
            Delivery::Failed {
                attempts,
                reason,
                message,
            } => {
                tracing::warn!(notifier = %name, event = %kind, attempts, reason, "notification not sent: {message}");
                metrics::count(&name, |c| c.failed += 1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
