//! nginx metrics compatible with the anchor exporter (placeholder until implemented).

use serde::{Deserialize, Serialize};

/// One `[[nginx]]` entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxTarget {
    /// Name of this target, used as a label and in `/health`.
    #[serde(default)]
    pub name: String,
}

impl NginxTarget {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds one collector per configured target.
pub fn collectors(_targets: &[NginxTarget]) -> Vec<std::sync::Arc<dyn crate::Collector>> {
    Vec::new()
}
