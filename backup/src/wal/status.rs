//! What the WAL archive of a job holds on one target, as the agent exports
//! it: a cheap listing (no object is read but the base backups'
//! manifests). Synchronous `wal push` runs are separate processes of the
//! PostgreSQL user with nowhere the agent owns to write; instead of a state
//! file they would have to share, the archive itself is read: it is what a
//! restore will find, whoever pushed (sync, async, another host's agent).

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::target::StorageTarget;
use crate::wal::archive;
use crate::wal::names::{WalKind, WalName};

/// One target's WAL archive of one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStatus {
    /// Archived files (segments, history, backup labels, partials).
    pub files: u64,
    /// Their stored (compressed, encrypted) bytes.
    pub stored_bytes: u64,
    /// The newest segment by position (timeline, then segment number).
    pub newest_segment: Option<String>,
    /// When it was stored, as the target reports.
    pub newest_stored_at: Option<DateTime<Utc>>,
    /// Whether the chain from the newest base backup to the newest segment
    /// is whole; `None` without a base backup on this target.
    pub chain_ok: Option<bool>,
    /// The first missing segment when it is not.
    pub missing: Option<String>,
}

/// Lists `host`/`job`'s archive on `target` and checks the newest base
/// backup's chain.
pub async fn status(target: &dyn StorageTarget, host: &str, job: &str) -> Result<ArchiveStatus> {
    let archived = archive::list(target, host, job).await?;
    let mut st = ArchiveStatus {
        files: archived.len() as u64,
        stored_bytes: archived.iter().map(|w| w.stored_bytes).sum(),
        ..ArchiveStatus::default()
    };
    // Keys sort by name: timeline, then position.
    if let Some(newest) = archived
        .iter()
        .filter(|w| w.name.kind == WalKind::Segment)
        .max_by(|a, b| a.name.as_str().cmp(b.name.as_str()))
    {
        st.newest_segment = Some(newest.name.to_string());
        st.newest_stored_at = newest.modified;
    }
    let filter = crate::catalog::Filter {
        host: Some(host.to_string()),
        job: Some(job.to_string()),
    };
    let newest_base = crate::catalog::list(target, &filter)
        .await?
        .into_iter()
        .filter_map(|e| e.manifest.postgres_base)
        .next_back();
    if let Some(base) = newest_base {
        let names: Vec<WalName> = archived.into_iter().map(|w| w.name).collect();
        let chain = crate::wal::chain::check(&base, &names);
        st.chain_ok = Some(chain.missing.is_none());
        st.missing = chain.missing;
    }
    Ok(st)
}
