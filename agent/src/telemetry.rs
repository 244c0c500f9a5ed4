//! Wires the telemetry library (log tailing, OTLP receiver and export) into
//! the daemon (placeholder until the library lands).

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::Subsystem;

/// Starts telemetry for one configuration generation; stops when `cancel`
/// fires.
pub fn start(_config: &Config, _cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    Ok(Subsystem::default())
}
