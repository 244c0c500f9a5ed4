//! Binlog shipping for one job: the follower (`super::follower`, or
//! `mariadb-binlog --read-from-remote-server --raw --stop-never` when the
//! server wants a login it does not speak) copies the server's binlogs
//! into a private spool directory,
//! and every second this loop looks at what it wrote. A file the server
//! has moved on from (a later file exists) is shipped to its end as the
//! file's last segment; the open file's complete events are shipped as a
//! segment once `binlog_flush_interval_secs` passed since the last one (or
//! 16 MiB are waiting), so upload volume follows what the server writes
//! and a quiet server's last transaction is off the host within the
//! interval (`super::segment`). The state file (`super::state`) moves
//! on per target only once the target holds a segment and its metadata;
//! the follower starts again at the least advanced target's file after a
//! restart or a lost connection, and bytes a target already has are
//! skipped for it: no gap, no duplicate. A file purged on the server
//! before it was shipped is a gap: counted, logged, shipping goes on from
//! the oldest file the server still has, and a full dump is requested.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::AsyncReadExt;

use super::follower::{Follower, WireError};
use super::segment::{later_files, ship_available};
pub use super::state::{
    clear_gap, load_state, pending_gap, Pos, ShipStats, ShipperOptions, State, GAP_REASON,
};
use super::state::{job_dir, mark_gap, pos_order, save_state};
use crate::binlog::archive;
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::source::mysql;

/// Unshipped bytes of the open binlog that trigger a segment before the
/// flush interval: bounds the segment size (and so restore granularity)
/// under heavy writes.
const EARLY_SHIP_BYTES: u64 = 16 * 1024 * 1024;
/// How often the spool is looked at.
const POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Follows and ships until the future is dropped (the agent drops it on
/// shutdown or reload; the child is killed with it, and the state file
/// only ever names shipped bytes, so a drop at any point is safe).
pub async fn run(opts: ShipperOptions, stats: Arc<ShipStats>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let result = follow(&opts, &stats).await;
        stats.following.store(false, Ordering::Relaxed);
        if let Err(e) = result {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(job = %opts.job_name, "binlog shipping: {e}; retrying in {}s", backoff.as_secs());
            stats.set_error(Some(e.to_string()));
        }
        if started.elapsed() > Duration::from_secs(120) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// `SHOW BINARY LOGS`: the files the server still has, oldest first.
pub async fn server_binlogs(job_name: &str, job: &JobConfig) -> Result<Vec<(String, u64)>> {
    let at = mysql::where_(job);
    let out = mysql::query(
        job,
        "SHOW BINARY LOGS",
        &format!("job {job_name}: listing the binary logs of MySQL at {at}"),
    )
    .await
    .map_err(|e| grant_hint(job, e))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let name = parts.next()?.trim();
            let size = parts.next()?.trim().parse().ok()?;
            super::is_valid_file_name(name).then(|| (name.to_string(), size))
        })
        .collect())
}

/// Adds the GRANT to run when the server said a privilege is missing.
fn grant_hint(job: &JobConfig, e: Error) -> Error {
    let text = e.to_string();
    if text.contains("You are not using binary logging") {
        return Error::Source(format!(
            "{text}; binlog = true needs the server started with log_bin (and binlog_format = ROW)"
        ));
    }
    if !text.contains("Access denied") && !text.contains("privilege") {
        return e;
    }
    let user = job.user.as_deref().unwrap_or("the job's user");
    Error::Source(format!(
        "{text}; binlog shipping needs the REPLICATION SLAVE privilege to read binary logs and BINLOG MONITOR (MariaDB 10.5+; REPLICATION CLIENT on MySQL) to list them: GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'host'"
    ))
}

/// Where to start when there is no state file: after what the first
/// target already holds, else the file of the newest dump's position if
/// the server still has it, else the server's current file.
async fn initial_state(opts: &ShipperOptions, server: &[(String, u64)]) -> Result<Option<State>> {
    if let Some(t) = opts.targets.first() {
        let files = archive::list(t.as_ref(), &opts.host, &opts.job_name).await?;
        if let Some((file, segs)) = files.last() {
            let state = match archive::chain_file(file, segs) {
                Ok(c) if c.complete => super::next_file(file).map(|f| State::at(f, 0)),
                Ok(c) => Some(State::at(file.clone(), c.end)),
                Err(_) => Some(State::at(file.clone(), 0)),
            };
            if state.is_some() {
                return Ok(state);
            }
        }
        if let Ok(Some(latest)) =
            crate::catalog::latest(t.as_ref(), &opts.host, &opts.job_name).await
        {
            let oldest = latest
                .manifest
                .objects
                .iter()
                .filter_map(|o| o.binlog.as_ref())
                .map(|p| p.file.clone())
                .min_by(|a, b| super::file_order(a, b));
            if let Some(f) = oldest.filter(|f| server.iter().any(|(s, _)| s == f)) {
                return Ok(Some(State::at(f, 0)));
            }
        }
    }
    Ok(server.last().map(|(f, _)| State::at(f.clone(), 0)))
}

/// One connection's worth of following: returns when the follower exits.
async fn follow(opts: &ShipperOptions, stats: &ShipStats) -> Result<()> {
    let job = &opts.job_name;
    let dir = job_dir(&opts.state_dir, job);
    let spool = dir.join("spool");
    crate::private_fs::create_dir_all(&spool).map_err(|e| Error::Local {
        doing: format!("job {job}: creating the binlog spool directory"),
        path: spool.clone(),
        source: e,
        hint: "; check that the state directory is writable".into(),
    })?;
    let server = server_binlogs(job, &opts.job).await?;
    let mut state = match load_state(&opts.state_dir, job) {
        Some(s) => s,
        None => match initial_state(opts, &server).await? {
            Some(s) => s,
            None => {
                return Err(Error::Source(format!(
                    "job {job}: MySQL at {} lists no binary log; binlog = true needs log_bin on",
                    mysql::where_(&opts.job)
                )))
            }
        },
    };
    if !server.iter().any(|(f, _)| *f == state.file) {
        // Not there: purged before it was shipped (or the server's logs
        // were reset). Go on from the next file the server has.
        let next = server
            .iter()
            .find(|(f, _)| super::file_order(f, &state.file).is_gt())
            .or(server.first())
            .map(|(f, _)| f.clone());
        let Some(next) = next else {
            return Err(Error::Source(format!(
                "job {job}: MySQL at {} lists no binary log",
                mysql::where_(&opts.job)
            )));
        };
        let expected_next = state.offset == 0
            && server
                .last()
                .is_some_and(|(last, _)| super::file_order(last, &state.file).is_lt());
        if !expected_next {
            stats.gaps.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                job = %job,
                "binlog gap: {} (from byte {}) is no longer on the server, it was purged before it was shipped; shipping goes on from {next}, and point-in-time recovery across the gap needs a dump taken after it: the agent takes one now (reason {GAP_REASON})",
                state.file, state.offset
            );
            let gap = format!(
                "binlog gap: {} from byte {} was purged before it was shipped",
                state.file, state.offset
            );
            // Before the state moves on: a crash in between finds the gap
            // again rather than losing the request for a dump.
            mark_gap(&opts.state_dir, job, &gap)?;
            stats.set_error(Some(gap));
            // Targets already past the purged file keep their place.
            let old = std::mem::replace(&mut state, State::at(next, 0));
            let start = state.of("");
            state.targets = (old.targets.into_iter())
                .filter(|(_, p)| pos_order(p, &start).is_gt())
                .collect();
            save_state(&opts.state_dir, job, &state)?;
        }
    }
    stats.set_position(&state);
    // A follower left running by an agent that was killed (SIGKILL does
    // not reach children) would keep a connection and write on.
    reap_stale_follower(&dir);
    clear_spool(&spool);

    let mut following = start_following(opts, &dir, &spool, &state.file).await?;
    tracing::info!(job = %job, "binlog shipping: following MySQL at {} from {} byte {} ({})", mysql::where_(&opts.job), state.file, state.offset, following.name());
    stats.following.store(true, Ordering::Relaxed);
    stats.set_error(None);

    let interval = Duration::from_secs(opts.job.binlog_flush_interval_secs.max(1));
    let mut last_ship = Instant::now();
    let mut down = HashMap::new();
    loop {
        let exited = tokio::select! {
            why = following.stopped() => Some(why),
            _ = tokio::time::sleep(POLL) => None,
        };
        let waiting = unshipped(&spool, &state);
        stats
            .unshipped_bytes
            .store(waiting.bytes, Ordering::Relaxed);
        let due = waiting.closed
            || waiting.bytes >= EARLY_SHIP_BYTES
            || (waiting.bytes > 0 && last_ship.elapsed() >= interval)
            || (exited.is_some() && waiting.bytes > 0);
        if due {
            ship_available(opts, stats, &spool, &mut state, &mut down).await?;
            last_ship = Instant::now();
            let left = unshipped(&spool, &state);
            stats.unshipped_bytes.store(left.bytes, Ordering::Relaxed);
        }
        if stats.unshipped_bytes.load(Ordering::Relaxed) == 0 {
            stats
                .caught_up_at
                .store(Utc::now().timestamp(), Ordering::Relaxed);
        }
        if let Some(why) = exited {
            let e = Error::Source(format!(
                "job {job}: {} stopped following MySQL at {}: {why}",
                following.name(),
                mysql::where_(&opts.job),
            ));
            return Err(grant_hint(&opts.job, e));
        }
    }
}

/// What follows the server: Steward's own replication client, or
/// `mariadb-binlog` when the server wants an authentication the client
/// does not speak.
enum Following {
    Native(Follower),
    Tool {
        name: String,
        child: tokio::process::Child,
        stderr: Option<tokio::task::JoinHandle<String>>,
    },
}

impl Following {
    fn name(&self) -> &str {
        match self {
            Following::Native(_) => "the binlog follower",
            Following::Tool { name, .. } => name,
        }
    }

    /// Waits until the follower stops; what it said.
    async fn stopped(&mut self) -> String {
        match self {
            Following::Native(f) => f.stopped().await.to_string(),
            Following::Tool { child, stderr, .. } => {
                let status = match child.wait().await {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                let said = match stderr.take() {
                    Some(t) => t.await.unwrap_or_default(),
                    None => String::new(),
                };
                format!("({status}) {said}")
            }
        }
    }
}

async fn start_following(
    opts: &ShipperOptions,
    dir: &Path,
    spool: &Path,
    file: &str,
) -> Result<Following> {
    let job = &opts.job_name;
    let why = match Follower::start(&opts.job, spool, file).await {
        Ok(f) => return Ok(Following::Native(f)),
        Err(WireError::Unsupported(why)) => why,
        Err(e) => {
            let e = Error::Source(format!(
                "job {job}: following the binary logs of MySQL at {}: {e}",
                mysql::where_(&opts.job)
            ));
            return Err(grant_hint(&opts.job, e));
        }
    };
    let (name, mut child) =
        mysql::spawn_remote_binlog(job, &opts.job, &["--stop-never".into()], spool, file)?;
    tracing::info!(job = %job, "binlog shipping: {why}; following with {name} instead");
    if let Some(pid) = child.id() {
        let _ = crate::private_fs::write(&dir.join("follower.pid"), pid.to_string().as_bytes());
    }
    let stderr = child.stderr.take().map(|s| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = s.take(64 * 1024).read_to_end(&mut text).await;
            String::from_utf8_lossy(&text).trim().to_string()
        })
    });
    Ok(Following::Tool {
        name,
        child,
        stderr,
    })
}

/// Kills the follower a previous agent started, if it still runs: the
/// pid file names it, and it is ours only if its command line is a
/// binlog client writing into this job's spool.
fn reap_stale_follower(dir: &Path) {
    let pid_file = dir.join("follower.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let spool = dir.join("spool");
    if cmdline.contains("--read-from-remote-server")
        && cmdline.contains(&format!("--result-file={}/", spool.display()))
    {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            tracing::info!("stopped binlog follower {pid:?} left by a previous agent");
        }
    }
    let _ = std::fs::remove_file(&pid_file);
}

fn clear_spool(spool: &Path) {
    if let Ok(rd) = std::fs::read_dir(spool) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

struct Waiting {
    bytes: u64,
    closed: bool,
}

fn unshipped(spool: &Path, state: &State) -> Waiting {
    let size = std::fs::symlink_metadata(spool.join(&state.file))
        .map(|m| m.len())
        .unwrap_or(0);
    let later = later_files(spool, &state.file);
    let later_bytes: u64 = later
        .iter()
        .filter_map(|f| std::fs::symlink_metadata(spool.join(f)).ok())
        .map(|m| m.len())
        .sum();
    Waiting {
        bytes: size.saturating_sub(state.offset) + later_bytes,
        closed: !later.is_empty(),
    }
}
