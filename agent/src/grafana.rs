//! Grafana annotations client (deployments, backup failures, restores,
//! drills). Placeholder until implemented.

use serde::{Deserialize, Serialize};

/// `[grafana]`: where annotations go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaConfig {
    /// Base URL, e.g. `http://127.0.0.1:3000`. Unset: no annotations.
    #[serde(default)]
    pub url: Option<String>,
    /// Service-account token (or `token_file`, or `${GRAFANA_TOKEN}`).
    #[serde(default)]
    pub token: Option<String>,
}

impl GrafanaConfig {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}
