//! Grafana annotations: the `[grafana]` section (config.rs), a client for
//! the annotations API (client.rs), the daemon's [`Annotator`] that marks
//! backup failures, restores and drills (annotator.rs), and its counters
//! (metrics.rs). Needs nothing of the agent but its own section and the
//! host name.

mod annotator;
mod client;
mod config;
mod kind;
mod metrics;

pub use annotator::{dedup_keep_order, Annotator};
pub use client::{now_ms, AnnotationPatch, GrafanaClient, GrafanaError, NewAnnotation};
pub use config::{check_dashboard_uid, resolve_token, GrafanaConfig, TOKEN_ENV, URL_ENV};
pub use kind::AnnotationKind;
pub use metrics::AnnotationCollector;
