//! Binlog shipping for one job: `mariadb-binlog --read-from-remote-server
//! --raw --stop-never` follows the server into a private spool directory,
//! and every second this loop looks at what it wrote. A file the server
//! has moved on from (a later file exists) is shipped to its end as the
//! file's last segment; the open file's complete events are shipped as a
//! segment once `binlog_flush_interval_secs` passed since the last one (or
//! 16 MiB are waiting), so upload volume follows what the server writes
//! and a quiet server's last transaction is off the host within the
//! interval. Segments go through the backup pipeline (zstd -> age -> every
//! target of the job), then their metadata; only when every target has
//! both does the state file (`<state_dir>/binlog/<job>/state.json`: next
//! file and byte to ship) move on. After a restart or a lost connection
//! the follower starts again at the state's file and the bytes already
//! shipped are skipped: no gap, no duplicate. A file purged on the server
//! before it was shipped is a gap: counted, logged, and shipping goes on
//! from the oldest file the server still has.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::binlog::archive::{self, SegmentMeta};
use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::manifest::{ObjectEntry, ObjectRole};
use crate::pipeline::{store_object, ByteCounters, PipelineSettings};
use crate::source::command::without_secrets;
use crate::source::{mysql, Source};
use crate::target::{ByteReader, StorageTarget};

/// Unshipped bytes of the open binlog that trigger a segment before the
/// flush interval: bounds the segment size (and so restore granularity)
/// under heavy writes.
const EARLY_SHIP_BYTES: u64 = 16 * 1024 * 1024;
/// How often the spool is looked at.
const POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What one job's shipper needs.
pub struct ShipperOptions {
    pub job_name: String,
    pub job: JobConfig,
    /// Host segment of the keys.
    pub host: String,
    pub state_dir: PathBuf,
    /// The job's targets, opened.
    pub targets: Vec<Arc<dyn StorageTarget>>,
    pub settings: PipelineSettings,
}

/// Live figures for metrics; the agent reads them at scrape time.
#[derive(Debug, Default)]
pub struct ShipStats {
    pub segments: AtomicU64,
    /// Binlog files shipped to their end.
    pub files: AtomicU64,
    /// Binlog bytes shipped (before compression).
    pub bytes: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub failures: AtomicU64,
    pub gaps: AtomicU64,
    /// The follower is connected and running.
    pub following: AtomicBool,
    /// Unix time of the last shipped segment (0: none yet).
    pub last_shipped_at: AtomicI64,
    /// Unix time (server clock) of the newest shipped event.
    pub last_event_at: AtomicI64,
    /// Unix time at which everything the follower had received was
    /// shipped; `now - this` is the shipping lag.
    pub caught_up_at: AtomicI64,
    /// Bytes received from the server and not shipped yet.
    pub unshipped_bytes: AtomicU64,
    /// Next file and byte to ship.
    pub position: Mutex<Option<(String, u64)>>,
    pub last_error: Mutex<Option<String>>,
}

impl ShipStats {
    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
    fn set_position(&self, state: &State) {
        if let Ok(mut g) = self.position.lock() {
            *g = Some((state.file.clone(), state.offset));
        }
    }
}

/// Where shipping stands: the next byte every target still needs (the
/// follower starts there and the spool keeps everything from there on),
/// and where each target is: a target that is down falls behind while
/// the others go on, and catches up from its own position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub file: String,
    pub offset: u64,
    /// Per target; a target not named is at `file`/`offset`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, Pos>,
}

/// A position in the binlogs: the next byte to ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub file: String,
    pub offset: u64,
}

fn pos_order(a: &Pos, b: &Pos) -> std::cmp::Ordering {
    super::file_order(&a.file, &b.file).then(a.offset.cmp(&b.offset))
}

impl State {
    pub fn at(file: impl Into<String>, offset: u64) -> State {
        State {
            file: file.into(),
            offset,
            targets: BTreeMap::new(),
        }
    }

    /// Where `target` is.
    pub fn of(&self, target: &str) -> Pos {
        self.targets.get(target).cloned().unwrap_or(Pos {
            file: self.file.clone(),
            offset: self.offset,
        })
    }

    /// `moved` reached `to`; the common position becomes the least
    /// advanced of `all` (the job's targets; others are forgotten).
    fn advance(&mut self, moved: &[String], to: &Pos, all: &[String]) {
        let mut next: BTreeMap<String, Pos> = all.iter().map(|t| (t.clone(), self.of(t))).collect();
        for t in moved {
            next.insert(t.clone(), to.clone());
        }
        if let Some(min) = next.values().min_by(|a, b| pos_order(a, b)).cloned() {
            self.file = min.file;
            self.offset = min.offset;
        }
        next.retain(|_, p| p.file != self.file || p.offset != self.offset);
        self.targets = next;
    }
}

fn job_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("binlog").join(job)
}

/// The state file of `job`, if one was written.
pub fn load_state(state_dir: &Path, job: &str) -> Option<State> {
    let text = std::fs::read(job_dir(state_dir, job).join("state.json")).ok()?;
    let s: State = serde_json::from_slice(&text).ok()?;
    super::is_valid_file_name(&s.file).then_some(s)
}

fn save_state(state_dir: &Path, job: &str, state: &State) -> Result<()> {
    let dir = job_dir(state_dir, job);
    let tmp = dir.join("state.json.tmp");
    let json = serde_json::to_vec(state).unwrap_or_default();
    crate::private_fs::write(&tmp, &json)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dir.join("state.json")))
        .map_err(|e| Error::Local {
            doing: format!("job {job}: writing the binlog shipping state"),
            path: dir.join("state.json"),
            source: e,
            hint: "; check that the state directory is writable".into(),
        })
}

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

/// The reason of the full dump a gap asks for.
pub const GAP_REASON: &str = "binlog-gap";

fn gap_path(state_dir: &Path, job: &str) -> PathBuf {
    job_dir(state_dir, job).join("gap-pending")
}

/// Records that `job` needs a fresh full dump because of a gap; the
/// agent's scheduler takes it ([`pending_gap`], [`clear_gap`]). A file,
/// so the request outlives a restart of the agent.
fn mark_gap(state_dir: &Path, job: &str, what: &str) -> Result<()> {
    let path = gap_path(state_dir, job);
    crate::private_fs::write(&path, what.as_bytes()).map_err(|e| Error::Local {
        doing: format!("job {job}: recording a binlog gap"),
        path,
        source: e,
        hint: "; check that the state directory is writable".into(),
    })
}

/// The gap `job` still needs a full dump for, if any.
pub fn pending_gap(state_dir: &Path, job: &str) -> Option<String> {
    std::fs::read_to_string(gap_path(state_dir, job)).ok()
}

/// Clears the request once a dump was taken after it, unless another gap
/// replaced it meanwhile (`seen` is what [`pending_gap`] said before the
/// dump started).
pub fn clear_gap(state_dir: &Path, job: &str, seen: &str) {
    if pending_gap(state_dir, job).as_deref() == Some(seen) {
        let _ = std::fs::remove_file(gap_path(state_dir, job));
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

    let tool = mysql::find_tool(&opts.job, &["mariadb-binlog", "mysqlbinlog"]);
    let mut cmd = mysql::command(&opts.job, &tool);
    cmd.args(["--read-from-remote-server", "--raw", "--stop-never"])
        .arg(format!("--result-file={}/", spool.display()))
        .arg(&state.file);
    without_secrets(cmd.as_std_mut());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        Error::Source(format!(
            "job {job}: cannot run {}: {e}; install mariadb-client or set bin_dir on the job",
            tool.display()
        ))
    })?;
    if let Some(pid) = child.id() {
        let _ = crate::private_fs::write(&dir.join("follower.pid"), pid.to_string().as_bytes());
    }
    let stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(64 * 1024).read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).trim().to_string()
    });
    tracing::info!(job = %job, "binlog shipping: following MySQL at {} from {} byte {}", mysql::where_(&opts.job), state.file, state.offset);
    stats.following.store(true, Ordering::Relaxed);
    stats.set_error(None);

    let interval = Duration::from_secs(opts.job.binlog_flush_interval_secs.max(1));
    let mut last_ship = Instant::now();
    let mut down = HashMap::new();
    loop {
        let exited = tokio::select! {
            status = child.wait() => Some(status),
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
        if let Some(status) = exited {
            let said = stderr_task.await.unwrap_or_default();
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            let e = Error::Source(format!(
                "job {job}: {} stopped following MySQL at {} ({status}): {said}",
                tool.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                mysql::where_(&opts.job),
            ));
            return Err(grant_hint(&opts.job, e));
        }
    }
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

/// Spool files after `file` (the follower moved on from it).
fn later_files(spool: &Path, file: &str) -> Vec<String> {
    spool_files(spool, |n| super::file_order(n, file).is_gt())
}

/// Binlog files in the spool that `keep` selects, in server order.
fn spool_files(spool: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(spool)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| super::is_valid_file_name(n) && keep(n))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| super::file_order(a, b));
    out
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

/// Ships every closed file to its end and the open file's complete
/// events to every target, targets at the same position together (one
/// compression and encryption for all of them). A target that fails stays
/// where it is, is counted as a failure and left alone for `retry`, and
/// the others go on; only a failure to read the spool is an error.
async fn ship_available(
    opts: &ShipperOptions,
    stats: &ShipStats,
    spool: &Path,
    state: &mut State,
    down: &mut HashMap<String, Instant>,
) -> Result<()> {
    let all: Vec<String> = opts.targets.iter().map(|t| t.name().to_string()).collect();
    let retry = Duration::from_secs(opts.job.binlog_flush_interval_secs.clamp(5, 60));
    let mut groups: Vec<(Pos, Vec<Arc<dyn StorageTarget>>)> = Vec::new();
    for t in &opts.targets {
        if down.get(t.name()).is_some_and(|at| at.elapsed() < retry) {
            continue;
        }
        let p = state.of(t.name());
        match groups.iter_mut().find(|(q, _)| *q == p) {
            Some((_, g)) => g.push(Arc::clone(t)),
            None => groups.push((p, vec![Arc::clone(t)])),
        }
    }
    for (pos, targets) in groups {
        for (t, e) in ship_group(opts, stats, spool, state, &all, pos, targets).await? {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(job = %opts.job_name, "binlog shipping to target {t}: {e}; the other targets go on, this one is tried again in {}s", retry.as_secs());
            stats.set_error(Some(format!("target {t}: {e}")));
            down.insert(t, Instant::now());
        }
    }
    // Files every target has to their end leave the spool.
    for f in spool_files(spool, |n| super::file_order(n, &state.file).is_lt()) {
        stats.files.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(spool.join(f));
    }
    Ok(())
}

/// Ships from `pos` on to `targets` (all at `pos`), segment by segment,
/// saving the state after each; returns the targets that failed.
async fn ship_group(
    opts: &ShipperOptions,
    stats: &ShipStats,
    spool: &Path,
    state: &mut State,
    all: &[String],
    mut pos: Pos,
    mut targets: Vec<Arc<dyn StorageTarget>>,
) -> Result<Vec<(String, String)>> {
    let mut failed = Vec::new();
    while !targets.is_empty() {
        let path = spool.join(&pos.file);
        if !path.exists() {
            break;
        }
        let later = later_files(spool, &pos.file);
        let from = pos.offset;
        let scan_path = path.clone();
        let scan = tokio::task::spawn_blocking(move || -> std::io::Result<super::EventScan> {
            use std::io::{Seek, SeekFrom};
            let mut f = std::fs::File::open(&scan_path)?;
            f.seek(SeekFrom::Start(from))?;
            super::complete_events(std::io::BufReader::with_capacity(256 * 1024, f), from)
        })
        .await
        .map_err(|e| Error::Internal(format!("binlog scan task: {e}")))?
        .map_err(|e| {
            Error::Source(format!(
                "job {}: reading the spooled binlog {}: {e}",
                opts.job_name,
                path.display()
            ))
        })?;
        let closed = !later.is_empty();
        if scan.end == from && !closed {
            break;
        }
        let segment = Segment {
            path: &path,
            file: &pos.file,
            start: from,
            end: scan.end,
            last: closed,
            last_event_time: scan.last_event_time,
        };
        let refused = ship_segment(opts, stats, &targets, &segment).await?;
        targets.retain(|t| !refused.iter().any(|(n, _)| n == t.name()));
        failed.extend(refused);
        if targets.is_empty() {
            break;
        }
        pos = if closed {
            Pos {
                file: later[0].clone(),
                offset: 0,
            }
        } else {
            Pos {
                file: pos.file.clone(),
                offset: scan.end,
            }
        };
        let moved: Vec<String> = targets.iter().map(|t| t.name().to_string()).collect();
        state.advance(&moved, &pos, all);
        save_state(&opts.state_dir, &opts.job_name, state)?;
        stats.set_position(state);
        if state.targets.is_empty() {
            // On every target now.
            stats
                .last_shipped_at
                .store(Utc::now().timestamp(), Ordering::Relaxed);
            if let Some(t) = scan.last_event_time {
                stats.last_event_at.fetch_max(t, Ordering::Relaxed);
            }
        }
        if !closed {
            break;
        }
    }
    Ok(failed)
}

/// One segment to ship: bytes `start..end` of a spooled file.
struct Segment<'a> {
    path: &'a Path,
    file: &'a str,
    start: u64,
    end: u64,
    /// The file's last segment (the server moved on).
    last: bool,
    last_event_time: Option<i64>,
}

/// Stores one segment and then its metadata on `targets`; returns the
/// targets that refused either (an `Err` only when the segment could not
/// be read or the archive holds another file of that name).
async fn ship_segment(
    opts: &ShipperOptions,
    stats: &ShipStats,
    targets: &[Arc<dyn StorageTarget>],
    seg: &Segment<'_>,
) -> Result<Vec<(String, String)>> {
    let job = &opts.job_name;
    let Segment {
        path,
        file,
        start,
        end,
        last,
        last_event_time,
    } = *seg;
    let created = file_created(path);
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut live: Vec<Arc<dyn StorageTarget>> = Vec::new();
    for t in targets {
        match start {
            0 => match refuse_another_incarnation(opts, t.as_ref(), file, created).await? {
                Ok(()) => live.push(Arc::clone(t)),
                Err(e) => refused.push((t.name().to_string(), e)),
            },
            _ => live.push(Arc::clone(t)),
        }
    }
    if live.is_empty() {
        return Ok(refused);
    }
    let name = archive::object_name(file, start, end);
    let key = format!("{}{name}", archive::prefix(&opts.host, job));
    let mut source = RangeSource {
        path: path.to_path_buf(),
        start,
        len: end - start,
        read: Arc::new(AtomicU64::new(0)),
    };
    let counters = Arc::new(ByteCounters::default());
    let outcome = store_object(&mut source, &opts.settings, &live, &key, counters).await;
    let stream = outcome.stream.map_err(|e| {
        Error::Source(format!(
            "job {job}: shipping binlog {file} bytes {start}..{end}: {e}"
        ))
    })?;
    for (t, r) in &outcome.targets {
        if let Err(e) = r {
            refused.push((
                t.clone(),
                format!("binlog {file} bytes {start}..{end}: {e}"),
            ));
        }
    }
    live.retain(|t| !refused.iter().any(|(n, _)| n == t.name()));
    let meta = SegmentMeta {
        file: file.to_string(),
        start,
        end,
        last,
        object: ObjectEntry {
            name,
            role: ObjectRole::Binlog,
            database: None,
            plaintext_bytes: stream.plaintext_bytes,
            plaintext_sha256: stream.plaintext_sha256,
            stored_bytes: stream.stored_bytes,
            stored_sha256: stream.stored_sha256,
            compression: "zstd".into(),
            encryption: "age".into(),
            binlog: None,
        },
        last_event_at: last_event_time.and_then(|t| DateTime::from_timestamp(t, 0)),
        file_created: created,
        shipped_at: Utc::now(),
        host: opts.host.clone(),
        job: job.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
    let meta_key = archive::meta_key(&opts.host, job, file, start, end, last);
    let mut stored = 0;
    for t in &live {
        match t.put_bytes(&meta_key, json.clone()).await {
            Ok(_) => stored += 1,
            Err(e) => refused.push((
                t.name().to_string(),
                format!("writing the metadata of binlog {file} bytes {start}..{end}: {e}"),
            )),
        }
    }
    if stored > 0 {
        stats.segments.fetch_add(1, Ordering::Relaxed);
        stats.bytes.fetch_add(end - start, Ordering::Relaxed);
        stats
            .stored_bytes
            .fetch_add(stream.stored_bytes * stored, Ordering::Relaxed);
        tracing::debug!(job = %job, "binlog {file} bytes {start}..{end} shipped to {stored} target(s){}", if last { " (end of file)" } else { "" });
    }
    Ok(refused)
}

/// The time of a binlog file's first event (bytes 4..8), when readable.
fn file_created(path: &Path) -> Option<i64> {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    (&head[..4] == super::MAGIC)
        .then(|| i64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]])))
}

/// Before the first bytes of `file` are shipped: if the archive already
/// holds a file of that name created at another time, the server's logs
/// were reset (RESET MASTER, or a new server restored from the backups)
/// and shipping it would mix two different files under one name, which
/// replays would read as one. Refused, saying what to do.
/// `Ok(Err(..))`: the target could not be asked (it is down).
async fn refuse_another_incarnation(
    opts: &ShipperOptions,
    target: &dyn StorageTarget,
    file: &str,
    created: Option<i64>,
) -> Result<std::result::Result<(), String>> {
    let Some(created) = created else {
        return Ok(Ok(()));
    };
    let files = match archive::list(target, &opts.host, &opts.job_name).await {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let Some((_, segments)) = files.iter().find(|(f, _)| f == file) else {
        return Ok(Ok(()));
    };
    let Some(first) = segments.first() else {
        return Ok(Ok(()));
    };
    let meta = match archive::read_meta(target, first).await {
        Ok(m) => m,
        Err(e) => return Ok(Err(e.to_string())),
    };
    match meta.file_created {
        Some(old) if old != created => Err(Error::Source(format!(
            "job {}: binlog {file} is already in the archive on target {} from another server or before its logs were reset (that file was created at {}, this one at {}); shipping stops so the two are not mixed: move {} aside (dumps taken before the reset keep needing it) or give the job a new name",
            opts.job_name,
            target.name(),
            DateTime::from_timestamp(old, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
            DateTime::from_timestamp(created, 0).map(|t| t.to_rfc3339()).unwrap_or_default(),
            archive::prefix(&opts.host, &opts.job_name),
        ))),
        _ => Ok(Ok(())),
    }
}

/// Bytes `start..start+len` of a spooled binlog, checked to be all there.
struct RangeSource {
    path: PathBuf,
    start: u64,
    len: u64,
    read: Arc<AtomicU64>,
}

#[async_trait]
impl Source for RangeSource {
    fn describe(&self) -> String {
        format!("spooled binlog {}", self.path.display())
    }

    async fn open(&mut self) -> Result<ByteReader> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        let file = options.open(&self.path).map_err(|e| {
            Error::Source(format!(
                "cannot open the spooled binlog {}: {e}",
                self.path.display()
            ))
        })?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(self.start))
            .await
            .map_err(|e| Error::Source(format!("seeking in {}: {e}", self.path.display())))?;
        let counter = Arc::clone(&self.read);
        let reader = tokio_util::io::InspectReader::new(file.take(self.len), move |b: &[u8]| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        Ok(Box::pin(reader))
    }

    async fn finish(&mut self) -> Result<()> {
        let read = self.read.load(Ordering::Relaxed);
        if read != self.len {
            return Err(Error::Source(format!(
                "the spooled binlog {} gave {read} of {} bytes",
                self.path.display(),
                self.len
            )));
        }
        Ok(())
    }
}
