//! PostgreSQL metrics with postgres_exporter 0.11's names, types and labels
//! (pg_up, pg_static, pg_settings_*, pg_stat_database*, pg_stat_activity,
//! pg_locks, pg_stat_replication, pg_replication_slots, pg_stat_archiver,
//! pg_database_size_bytes, pg_stat_bgwriter_* and on PostgreSQL 17 the
//! checkpointer view), plus postmaster start time and replication lag, over
//! one long-lived connection per target that is re-opened when lost.

mod collect;
mod config;
pub mod families;
mod session;

use std::sync::Arc;

use crate::collector::Collector;
use session::State;

pub use config::PostgresScrapeTarget;

/// Builds one collector per configured target. With several targets every
/// series carries `target="<name>"` so they stay distinct in one scrape.
pub fn collectors(targets: &[PostgresScrapeTarget]) -> Vec<Arc<dyn Collector>> {
    let several = targets.len() > 1;
    targets
        .iter()
        .map(|t| {
            Arc::new(PostgresCollector {
                server: t.fingerprint(),
                target: t.clone(),
                target_label: several.then(|| t.name.clone()),
                state: tokio::sync::Mutex::new(State::default()),
            }) as Arc<dyn Collector>
        })
        .collect()
}

/// Collects one PostgreSQL target.
pub struct PostgresCollector {
    target: PostgresScrapeTarget,
    server: String,
    target_label: Option<String>,
    state: tokio::sync::Mutex<State>,
}
