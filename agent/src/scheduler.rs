//! Runs scheduled work inside the daemon: backup jobs, config-change
//! backups and drills (placeholder until the backup library lands).

use std::sync::Arc;

use steward_exporters::Collector;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::Subsystem;

/// Starts the scheduler for one configuration generation; stops when
/// `cancel` fires.
pub fn start(_config: &Config, _cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    Ok(Subsystem::default())
}

/// Collectors for the scheduler's metrics.
#[allow(dead_code)]
pub fn collectors() -> Vec<Arc<dyn Collector>> {
    Vec::new()
}
