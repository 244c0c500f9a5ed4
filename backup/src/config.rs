//! `[backup]`: recipients, targets and jobs (placeholder until implemented).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {}

impl BackupConfig {
    /// Semantic checks; each message starts with the key it is about.
    pub fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}
