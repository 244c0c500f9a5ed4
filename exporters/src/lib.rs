//! Prometheus collectors for a web application host: the host itself (node),
//! nginx, PHP-FPM, MySQL/MariaDB, PostgreSQL, Redis and HTTP/TLS probes.
//!
//! This crate is a library with no CLI and no global state. The agent builds
//! collectors from configuration, hands them to a [`scrape::Scraper`] and
//! serves the text it encodes. Every collector implements the one small
//! [`collector::Collector`] trait.

pub mod collector;
pub mod exposition;
pub mod metrics;
pub mod scrape;

pub use collector::{CollectContext, CollectError, Collected, Collector};
pub use metrics::{Labels, MetricFamily, MetricType, Sample};
pub use scrape::{CollectorStatus, ScrapeOptions, ScrapeOutput, Scraper};

pub mod mysql;
pub mod nginx;
pub mod node;
pub mod phpfpm;
pub mod postgres;
pub mod probe;
pub mod redis;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
