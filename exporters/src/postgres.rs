//! postgres metrics compatible with the anchor exporter (placeholder until implemented).

use serde::{Deserialize, Serialize};

/// One `[[postgres]]` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// Name of this target, used as a label and in `/health`.
    #[serde(default)]
    pub name: String,
}

impl PostgresTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds one collector per configured target.
pub fn collectors(_targets: &[PostgresTarget]) -> Vec<std::sync::Arc<dyn crate::Collector>> {
    Vec::new()
}
