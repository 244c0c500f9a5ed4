//! `[telemetry]`: log sources, OTLP receiver, queue and exporter
//! (placeholder until implemented).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {}

impl TelemetryConfig {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}
