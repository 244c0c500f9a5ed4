//! The replication slot of a streaming `postgres_pitr` job as the server
//! sees it (how much WAL it holds, how far the receiver holding it has
//! flushed), read with one `psql` query a second, and what to do when the
//! server refuses the receiver.

use crate::config::JobConfig;
use crate::error::Result;
use crate::source::postgres::{psql, where_};
use crate::wal::names::Lsn;

/// What the server says about the slot and its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotView {
    pub retained: Option<i64>,
    pub active: bool,
    /// The walsender holding the slot is visible, but not its positions
    /// (the role lacks pg_read_all_stats).
    pub hidden: bool,
    pub flushed: Option<Lsn>,
    pub segment_bytes: u64,
}

/// Adds what to do for the refusals a misconfigured server gives.
pub(crate) fn hint(job: &JobConfig, said: &str) -> String {
    let user = job.user.as_deref().unwrap_or("the job's user");
    let extra = if said.contains("no pg_hba.conf entry for replication") {
        format!("; allow it in pg_hba.conf: host replication {user} <address> scram-sha-256")
    } else if said.contains("must be superuser or replication role")
        || said.contains("permission denied to start WAL sender")
        || said.contains("must have the REPLICATION attribute")
    {
        format!("; ALTER ROLE {user} REPLICATION")
    } else if said.contains("has already been removed") || said.contains("wal_status") {
        format!(
            "; the slot {} lost WAL the archive never got: WAL before this point cannot be restored. Drop the slot (SELECT pg_drop_replication_slot('{}')), restart the agent, and take a base backup now",
            job.slot, job.slot
        )
    } else if said.contains("number of requested standby connections exceeds")
        || said.contains("max_wal_senders")
    {
        "; raise max_wal_senders on the server".into()
    } else if said.contains("wal_level") {
        "; set wal_level = replica on the server".into()
    } else {
        String::new()
    };
    let said = if said.is_empty() { "no message" } else { said };
    format!("{said}{extra}")
}

/// The slot, its walsender and the segment size, in one query; `None`
/// when the slot does not exist (yet).
pub(crate) async fn query_slot(job_name: &str, job: &JobConfig) -> Result<Option<SlotView>> {
    // The slot name was checked against PostgreSQL's own rule (lower-case
    // letters, digits, '_'), so it is a safe literal.
    let sql = format!(
        "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint::text, ''), \
                s.active, coalesce(r.pid::text, ''), coalesce(r.state, ''), \
                coalesce(r.flush_lsn::text, ''), \
                (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') \
         FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
         WHERE s.slot_name = '{}'",
        job.slot
    );
    let out = psql(
        job,
        "postgres",
        &sql,
        &format!(
            "job {}: reading replication slot {} on PostgreSQL at {}",
            job_name,
            job.slot,
            where_(job)
        ),
    )
    .await?;
    Ok(parse_slot_row(&out))
}

fn parse_slot_row(out: &str) -> Option<SlotView> {
    let line = out.lines().find(|l| !l.trim().is_empty())?;
    let f: Vec<&str> = line.split('\t').collect();
    let [retained, active, pid, state, flush, size] = f[..] else {
        return None;
    };
    Some(SlotView {
        retained: retained.trim().parse().ok(),
        active: active.trim() == "t",
        hidden: !pid.trim().is_empty() && state.trim().is_empty(),
        flushed: Lsn::parse(flush).ok(),
        segment_bytes: size
            .trim()
            .parse()
            .ok()
            .filter(|n: &u64| n.is_power_of_two())
            .unwrap_or(crate::wal::names::DEFAULT_SEGMENT_BYTES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_rows_parse() {
        let v = parse_slot_row("1048576\tt\t4242\tstreaming\t0/3000148\t16777216\n").unwrap();
        assert_eq!(v.retained, Some(1048576));
        assert!(v.active && !v.hidden);
        assert_eq!(v.flushed, Some(Lsn(0x3000148)));
        assert_eq!(v.segment_bytes, 16 * 1024 * 1024);
        // A role without pg_read_all_stats sees the walsender's pid only.
        let v = parse_slot_row("0\tt\t4242\t\t\t16777216").unwrap();
        assert!(v.hidden && v.flushed.is_none());
        let v = parse_slot_row("\tf\t\t\t\t16777216").unwrap();
        assert_eq!(v.retained, None);
        assert!(!v.active && !v.hidden);
        assert!(parse_slot_row("").is_none());
    }
}
