//! The WAL archive of every `postgres_pitr` job as the agent sees it: one
//! task lists each target's archive every [`INTERVAL`] and checks the
//! newest base backup's chain (steward_backup::wal::status); the
//! `steward_wal_archive_*` and `steward_wal_chain_ok` metrics are the last
//! look. Sync pushes need no state of their own for this (see that
//! module's doc); async pushes add the spool's figures (walspool.rs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use steward_backup::manifest::JobKind;
use steward_backup::target;
use steward_backup::wal::status::{self, ArchiveStatus};
use steward_exporters::{CollectContext, CollectError, Collected, Collector, MetricFamily};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::generation::Subsystem;

/// How often each archive is listed (one LIST of the WAL and one of the
/// job's manifests per target).
const INTERVAL: Duration = Duration::from_secs(60);

/// The last look per (job, target): `Err` when the listing failed.
type Looks = Mutex<BTreeMap<(String, String), std::result::Result<ArchiveStatus, String>>>;

/// Starts one watcher over every `postgres_pitr` job; none, no task.
pub fn start(config: &Config, cancel: CancellationToken) -> anyhow::Result<Subsystem> {
    let backup = Arc::new(config.backup.clone());
    let jobs: Vec<(String, Vec<String>)> = backup
        .jobs
        .iter()
        .filter(|(_, j)| j.kind == JobKind::PostgresPitr)
        .map(|(n, j)| (n.clone(), j.target_names()))
        .collect();
    if jobs.is_empty() {
        return Ok(Subsystem::default());
    }
    let host = config.agent.effective_hostname();
    let looks: Arc<Looks> = Arc::default();
    let task = {
        let looks = Arc::clone(&looks);
        tokio::spawn(async move {
            let work = async {
                loop {
                    for (job, targets) in &jobs {
                        for (name, opened) in target::open_all(&backup, targets).await {
                            let look = match opened {
                                Ok(t) => status::status(t.as_ref(), &host, job)
                                    .await
                                    .map_err(|e| e.to_string()),
                                Err(e) => Err(e.to_string()),
                            };
                            if let Err(e) = &look {
                                tracing::warn!(job = %job, target = %name, "listing the WAL archive failed: {e}");
                            }
                            if let Ok(mut g) = looks.lock() {
                                g.insert((job.clone(), name), look);
                            }
                        }
                    }
                    tokio::time::sleep(INTERVAL).await;
                }
            };
            tokio::select! {
                _ = work => {}
                _ = cancel.cancelled() => {}
            }
        })
    };
    Ok(Subsystem {
        collectors: vec![Arc::new(WatchCollector { looks }) as Arc<dyn Collector>],
        tasks: vec![task],
    })
}

struct WatchCollector {
    looks: Arc<Looks>,
}

#[async_trait]
impl Collector for WatchCollector {
    fn name(&self) -> &str {
        "wal_archive"
    }

    async fn collect(&self, _ctx: CollectContext) -> Result<Collected, CollectError> {
        let looks = self.looks.lock().map(|g| g.clone()).unwrap_or_default();
        Ok(families(&looks).into())
    }
}

fn families(
    looks: &BTreeMap<(String, String), std::result::Result<ArchiveStatus, String>>,
) -> Vec<MetricFamily> {
    let gauge = |name: &str, help: &str| MetricFamily::gauge(name, help);
    let mut ok = gauge(
        "steward_wal_archive_check_success",
        "1 when the last listing of the job's WAL archive on the target succeeded.",
    );
    let mut files = gauge(
        "steward_wal_archive_files",
        "Files in the job's WAL archive on the target (segments, history, backup labels).",
    );
    let mut bytes = gauge(
        "steward_wal_archive_stored_bytes",
        "Stored (compressed, encrypted) bytes of the job's WAL archive on the target.",
    );
    let mut newest = gauge(
        "steward_wal_archive_newest_timestamp_seconds",
        "When the newest WAL segment of the job's archive was stored on the target (Unix time).",
    );
    let mut chain = gauge(
        "steward_wal_chain_ok",
        "1 when every segment from the newest base backup's start to the newest archived one is on the target, 0 when one is missing (restores stop before it).",
    );
    for ((job, target), look) in looks {
        let l = [("job", job.clone()), ("target", target.clone())];
        let Ok(st) = look else {
            ok.push(l, 0.0);
            continue;
        };
        ok.push(l.clone(), 1.0);
        files.push(l.clone(), st.files as f64);
        bytes.push(l.clone(), st.stored_bytes as f64);
        if let Some(at) = st.newest_stored_at {
            newest.push(l.clone(), at.timestamp() as f64);
        }
        if let Some(c) = st.chain_ok {
            chain.push(l, f64::from(u8::from(c)));
        }
    }
    vec![ok, files, bytes, newest, chain]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_listing_exports_only_its_failure() {
        let mut looks = BTreeMap::new();
        looks.insert(
            ("pg".to_string(), "s3".to_string()),
            Err("down".to_string()),
        );
        looks.insert(
            ("pg".to_string(), "local".to_string()),
            Ok(ArchiveStatus {
                files: 3,
                stored_bytes: 100,
                chain_ok: Some(false),
                ..ArchiveStatus::default()
            }),
        );
        let fams = families(&looks);
        let count = |name: &str| {
            fams.iter()
                .find(|f| f.name == name)
                .map(|f| f.samples.len())
                .unwrap()
        };
        assert_eq!(count("steward_wal_archive_check_success"), 2);
        assert_eq!(count("steward_wal_archive_files"), 1);
        assert_eq!(count("steward_wal_chain_ok"), 1);
        assert_eq!(count("steward_wal_archive_newest_timestamp_seconds"), 0);
    }
}
