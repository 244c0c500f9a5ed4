//! WAL retention: after snapshot retention, the archived segments and the
//! streamed deltas that no base backup still on the target needs. Apart
//! from `archive` and `stream`, which it both calls, so neither imports
//! the other for it.

use crate::target::StorageTarget;
use crate::wal::names::WalName;
use crate::Result;

/// Removes the archived WAL that no base backup still on `target` needs
/// (called after snapshot retention). Nothing is removed when the target
/// holds no base backup. Returns the keys removed.
pub async fn prune(target: &dyn StorageTarget, host: &str, job: &str) -> Result<Vec<String>> {
    let filter = crate::catalog::Filter {
        host: Some(host.to_string()),
        job: Some(job.to_string()),
    };
    let kept: Vec<crate::manifest::PgBaseInfo> = crate::catalog::list(target, &filter)
        .await?
        .into_iter()
        .filter_map(|e| e.manifest.postgres_base)
        .collect();
    let archived = crate::wal::archive::list(target, host, job).await?;
    let names: Vec<WalName> = archived.iter().map(|w| w.name.clone()).collect();
    let gone: std::collections::BTreeSet<&str> = crate::wal::chain::prunable(&kept, &names)
        .into_iter()
        .map(WalName::as_str)
        .collect();
    let mut removed = Vec::new();
    for w in archived.iter().filter(|w| gone.contains(w.name.as_str())) {
        target.delete(&w.key).await?;
        removed.push(w.key.clone());
    }
    removed.extend(crate::wal::stream::prune(target, host, job, &kept).await?);
    Ok(removed)
}
