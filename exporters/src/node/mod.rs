//! Host metrics with node_exporter's names, types and labels, read from
//! /proc, /sys and system calls.

use serde::{Deserialize, Serialize};

/// `[node]`: host metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Export host metrics at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { enabled: true }
    }
}

impl NodeConfig {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

fn default_true() -> bool {
    true
}

/// Builds the enabled node collectors.
pub fn collectors(_config: &NodeConfig) -> Vec<std::sync::Arc<dyn crate::Collector>> {
    Vec::new()
}
