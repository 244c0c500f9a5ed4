//! Physical base backups: `pg_basebackup -D - -Ft -X none` streamed through
//! the pipeline. WAL is not in the tar: the job's archive holds it, and the
//! manifest records where the backup starts and ends in it
//! ([`PgBaseInfo`]), read from `pg_basebackup -v` once it exited 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::manifest::{ObjectRole, PgBaseInfo};
use crate::source::command::{tool_version, CommandSource};
use crate::source::postgres::{command, psql, tool, where_};
use crate::source::{PlannedObject, Source};
use crate::target::ByteReader;
use crate::wal::names::{segment_name, Lsn};
use crate::wal::tar_watch::{Watch, Watched};

/// The object name of the base backup inside its snapshot.
pub const BASE_OBJECT: &str = "postgres/base.tar.zst.age";

/// What a base backup run needs before streaming.
#[derive(Debug)]
pub struct BasePlan {
    pub object: PlannedObject,
    /// Filled when `pg_basebackup` finished whole.
    pub info: Arc<Mutex<Option<PgBaseInfo>>>,
    pub tools: BTreeMap<String, String>,
}

/// Server facts read before the backup.
struct ServerFacts {
    segment_bytes: u64,
    version_num: u32,
    system_identifier: String,
}

async fn server_facts(job_name: &str, job: &JobConfig) -> Result<ServerFacts> {
    let at = where_(job);
    let out = psql(
        job,
        "postgres",
        "SELECT current_setting('archive_mode'), \
                (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
                current_setting('server_version_num'), \
                (SELECT system_identifier FROM pg_control_system())",
        &format!("job {job_name}: reading the WAL settings of PostgreSQL at {at}"),
    )
    .await?;
    let fields: Vec<&str> = out.trim().split('\t').collect();
    let [archive_mode, segment, version, system] = fields[..] else {
        return Err(Error::Source(format!(
            "job {job_name}: unexpected answer from PostgreSQL at {at}: {out:?}"
        )));
    };
    // With `streaming` the agent's receiver brings the WAL (the backup's
    // end forces a segment switch, which it archives like the rest).
    if archive_mode == "off" && !job.streaming {
        return Err(Error::Config(format!(
            "job {job_name}: archive_mode is off on PostgreSQL at {at}; a base backup is useless without its WAL: \
             set archive_mode = on and archive_command = 'steward wal push {job_name} %p' and restart the server, \
             or set streaming = true on the job"
        )));
    }
    let parse_err = |what: &str, v: &str| {
        Error::Source(format!(
            "job {job_name}: PostgreSQL at {at} reports {what} {v:?}, not a number"
        ))
    };
    Ok(ServerFacts {
        segment_bytes: segment
            .parse()
            .map_err(|_| parse_err("wal_segment_size", segment))?,
        version_num: version
            .parse()
            .map_err(|_| parse_err("server_version_num", version))?,
        system_identifier: system.to_string(),
    })
}

/// Checks the server and prepares the `pg_basebackup` stream of one run.
pub async fn plan(job_name: &str, job: &JobConfig, snapshot_id: &str) -> Result<BasePlan> {
    let facts = server_facts(job_name, job).await?;
    let label = format!("steward {job_name} {snapshot_id}");
    let mut c = command(job, "pg_basebackup");
    // -X none: WAL comes from the archive (a tar on stdout cannot carry a
    // WAL stream anyway). A fast checkpoint starts the backup at once
    // instead of at the next scheduled checkpoint.
    c.args(["-D", "-", "--format=tar", "--wal-method=none"])
        .args(["--checkpoint=fast", "--label", &label]);
    let info = Arc::new(Mutex::new(None));
    let source = BaseSource {
        inner: CommandSource::new(
            format!(
                "job {job_name}: pg_basebackup of PostgreSQL at {}",
                where_(job)
            ),
            c,
        ),
        label,
        facts,
        info: Arc::clone(&info),
        watch: Arc::new(Mutex::new(Watch::default())),
    };
    let mut tools = BTreeMap::new();
    if let Some(v) = tool_version(&tool(job, "pg_basebackup")).await {
        tools.insert("pg_basebackup".to_string(), v);
    }
    Ok(BasePlan {
        object: PlannedObject {
            name: BASE_OBJECT.to_string(),
            role: ObjectRole::PostgresBaseTar,
            database: None,
            source: Box::new(source),
        },
        info,
        tools,
    })
}

struct BaseSource {
    inner: CommandSource,
    label: String,
    facts: ServerFacts,
    info: Arc<Mutex<Option<PgBaseInfo>>>,
    watch: Arc<Mutex<Watch>>,
}

#[async_trait]
impl Source for BaseSource {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn open(&mut self) -> Result<ByteReader> {
        let inner = self.inner.open().await?;
        Ok(Box::pin(Watched {
            inner,
            watch: Arc::clone(&self.watch),
        }))
    }

    /// Whole only when `pg_basebackup` exited 0 and said where the backup
    /// starts and ends.
    async fn finish(&mut self) -> Result<()> {
        self.inner.finish().await?;
        let (label, tail, saw_manifest) = match self.watch.lock() {
            Ok(w) => (
                String::from_utf8_lossy(&w.seen.label).to_string(),
                String::from_utf8_lossy(&w.seen.manifest_tail).to_string(),
                w.seen.saw_manifest,
            ),
            Err(_) => Default::default(),
        };
        let what = self.inner.describe();
        let (start, timeline) = parse_label(&label).ok_or_else(|| {
            Error::Source(format!(
                "{what}: the backup holds no readable backup_label (START WAL LOCATION, START TIMELINE): not a base backup"
            ))
        })?;
        let stop = parse_manifest_end(&tail).ok_or_else(|| {
            Error::Source(format!(
                "{what}: {}; PostgreSQL 13 or later writes it with the WAL range a restore needs",
                if saw_manifest {
                    "the backup_manifest holds no WAL-Ranges end"
                } else {
                    "the backup holds no backup_manifest"
                }
            ))
        })?;
        let seg = self.facts.segment_bytes;
        let info = PgBaseInfo {
            label: self.label.clone(),
            timeline,
            start_lsn: start.to_string(),
            stop_lsn: stop.to_string(),
            start_wal: segment_name(timeline, start.position(seg), seg),
            stop_wal: segment_name(timeline, stop.position(seg), seg),
            wal_segment_bytes: seg,
            server_version_num: self.facts.version_num,
            system_identifier: self.facts.system_identifier.clone(),
        };
        if let Ok(mut slot) = self.info.lock() {
            *slot = Some(info);
        }
        Ok(())
    }
}

/// `START WAL LOCATION: 0/2000028 (file ...)` and `START TIMELINE: 1`
/// from `backup_label`.
fn parse_label(label: &str) -> Option<(Lsn, u32)> {
    let mut start = None;
    let mut timeline = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            start = Some(Lsn::parse(rest.split_whitespace().next()?).ok()?);
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            timeline = Some(rest.trim().parse().ok()?);
        }
    }
    Some((start?, timeline?))
}

/// The last `"End-LSN": "X/Y"` of `backup_manifest` (its `WAL-Ranges`).
fn parse_manifest_end(tail: &str) -> Option<Lsn> {
    let (_, rest) = tail.rsplit_once("\"End-LSN\"")?;
    let value = rest.split('"').nth(1)?;
    Lsn::parse(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_the_label_and_the_manifest() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
            CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n\
            START TIME: 2026-12-04 15:59:29 UTC\nLABEL: steward db x\nSTART TIMELINE: 1\n";
        let (start, tl) = parse_label(label).unwrap();
        assert_eq!((start.to_string(), tl), ("0/2000028".into(), 1));
        assert!(parse_label("LABEL: x\n").is_none());
        let tail = "{ \"Path\": \"x\" } ],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\"Manifest-Checksum\": \"ab\"}\n";
        assert_eq!(parse_manifest_end(tail).unwrap().to_string(), "0/2000100");
        assert!(parse_manifest_end("{}").is_none());
    }
}
