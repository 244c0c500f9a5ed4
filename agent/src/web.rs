//! Exposing the agent's HTTP server safely: `[agent.http]` (timeouts, the
//! scrape bound and the cap on Prometheus' scrape timeout header), the
//! web-config file from `--web.config.file` or `agent.web_config_file`, and
//! the middleware that refuses scrapes past the bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use steward_web::{InFlight, WebConfigError, WebRuntime};

use crate::config::http::ALPN;
use crate::config::Config;
use crate::generation::Shared;

/// The web-config file in force: `--web.config.file` over
/// `agent.web_config_file`.
pub fn web_config_path(config: &Config, flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| config.agent.web_config_file.clone())
}

/// Loads the web configuration in force (plain HTTP without a file).
pub fn load(config: &Config, flag: Option<&Path>) -> Result<WebRuntime, WebConfigError> {
    WebRuntime::load_optional(web_config_path(config, flag).as_deref(), ALPN)
}

/// The state of [`scrape_limit`].
pub type ScrapeLimit = (Arc<Shared>, Arc<InFlight>);

/// Refuses a scrape past `agent.http.max_concurrent_scrapes` with 503.
pub async fn scrape_limit(
    State((shared, in_flight)): State<ScrapeLimit>,
    request: Request,
    next: Next,
) -> Response {
    let max = shared.generation().config.agent.http.max_concurrent_scrapes;
    match in_flight.try_enter(max) {
        Some(_slot) => next.run(request).await,
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!(
                "{max} scrapes are already running (agent.http.max_concurrent_scrapes); \
                 this one is refused rather than queued\n"
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::http::HttpConfig;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        assert!(HttpConfig::default().validate().is_empty());
        let bad = HttpConfig {
            header_read_timeout_secs: 0.0,
            idle_timeout_secs: 30.0,
            max_concurrent_scrapes: 0,
            max_scrape_timeout_secs: f64::NAN,
        };
        let errors = bad.validate();
        assert!(
            errors[0].starts_with("http.header_read_timeout_secs"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("http.max_scrape_timeout_secs"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with("http.max_concurrent_scrapes"),
            "{errors:?}"
        );
        let idle = HttpConfig {
            idle_timeout_secs: 30.0,
            ..HttpConfig::default()
        };
        assert!(idle.validate()[0].starts_with("http.idle_timeout_secs: 30 must exceed"));
    }

    #[test]
    fn flag_overrides_the_config_file_key() {
        let mut config = Config::default();
        assert_eq!(web_config_path(&config, None), None);
        config.agent.web_config_file = Some(PathBuf::from("/etc/steward/web.yml"));
        assert_eq!(
            web_config_path(&config, Some(Path::new("/tmp/w.yml"))),
            Some(PathBuf::from("/tmp/w.yml"))
        );
        assert_eq!(
            web_config_path(&config, None),
            Some(PathBuf::from("/etc/steward/web.yml"))
        );
    }
}
