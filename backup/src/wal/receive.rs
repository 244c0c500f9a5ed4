//! WAL streaming for one `postgres_pitr` job with `streaming = true`:
//! `pg_receivewal --slot S --synchronous` runs as a supervised child into
//! a private spool (`<state_dir>/wal-stream/<job>/spool`), and once a
//! second (or when a delta falls due, if sooner) this loop asks the
//! server how far the receiver has flushed
//! (`pg_stat_replication.flush_lsn` of the walsender holding the slot:
//! with `--synchronous` it reports each fsync at once) and ships:
//!
//! - every complete segment and timeline history file in the spool,
//!   through the same content-addressed path as `wal push` (so
//!   `archive_command` may archive the same files: identical pushes
//!   succeed), then removes its deltas and the spool file;
//! - the segment being written: the flushed bytes not shipped yet, as a
//!   delta object ([`crate::wal::stream`]), once `stream_flush_secs`
//!   passed since the previous delta's end was read (not since its upload
//!   finished: the RPO under steady writes is the interval plus one
//!   upload), or 8 MiB wait. Upload volume is the
//!   WAL written, compressed, twice at most (deltas, then the segment).
//!
//! Only flushed bytes are read (never bytes the receiver may be writing;
//! once it has exited under the agent's eyes, usually because the server
//! stopped, the rest of what it wrote), and the state file (`state.json`: bytes shipped of each open segment)
//! moves on only once every target holds a delta. The spool is never
//! cleared: the slot lets the server drop WAL the receiver confirmed, so
//! after a crash or SIGKILL the complete segments waiting there are
//! shipped first, and `pg_receivewal` resumes from the newest spool file
//! (no gap). A receiver left running by a killed agent is stopped first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::io::AsyncReadExt;

use crate::config::JobConfig;
use crate::error::{Error, Result};
use crate::pipeline::{store_object, ByteCounters, PipelineSettings, StoredHash};
use crate::source::command::without_secrets;
use crate::source::memory::MemorySource;
use crate::source::postgres::{command, tool, where_};
use crate::target::StorageTarget;
use crate::wal::archive;
use crate::wal::names::{Lsn, WalKind, WalName};
use crate::wal::slot::{hint, query_slot};
use crate::wal::stream;

/// Flushed bytes waiting that trigger a delta before the interval.
const EARLY_SHIP_BYTES: u64 = 8 * 1024 * 1024;
const POLL: Duration = Duration::from_secs(1);
/// A wake-up this close to a delta's due time counts as on time (timers
/// are not exact to the microsecond; a miss would cost a whole poll).
const WAKE_SLACK: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// `application_name` of the receiver's connection.
const APP_NAME: &str = "steward_wal_stream";

/// What one job's streamer needs.
pub struct StreamOptions {
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
#[derive(Debug)]
pub struct StreamStats {
    /// The receiver runs and holds the slot.
    pub up: AtomicBool,
    /// WAL bytes the slot keeps on the server (current LSN - restart_lsn);
    /// -1 while unknown (server unreachable, no slot yet).
    pub slot_retained_bytes: AtomicI64,
    /// Newest LSN the receiver flushed (0: none yet).
    pub received_lsn: AtomicU64,
    /// Unix time at which `received_lsn` last moved.
    pub received_at: AtomicI64,
    /// Everything before this LSN is on every target.
    pub shipped_lsn: AtomicU64,
    pub last_shipped_at: AtomicI64,
    /// Unix time at which everything received was shipped.
    pub caught_up_at: AtomicI64,
    pub deltas: AtomicU64,
    pub delta_bytes: AtomicU64,
    pub segments: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub failures: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Default for StreamStats {
    fn default() -> Self {
        StreamStats {
            up: AtomicBool::new(false),
            slot_retained_bytes: AtomicI64::new(-1),
            received_lsn: AtomicU64::new(0),
            received_at: AtomicI64::new(0),
            shipped_lsn: AtomicU64::new(0),
            last_shipped_at: AtomicI64::new(0),
            caught_up_at: AtomicI64::new(0),
            deltas: AtomicU64::new(0),
            delta_bytes: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

impl StreamStats {
    fn fail(&self, job: &str, e: &Error, retry: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(job = %job, "WAL streaming: {e}; retrying in {}s", retry.as_secs());
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// Bytes shipped of each open segment (file name -> offset).
type State = BTreeMap<String, u64>;

fn job_dir(state_dir: &Path, job: &str) -> PathBuf {
    state_dir.join("wal-stream").join(job)
}

fn load_state(dir: &Path) -> State {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<State>(&t).ok())
        .map(|s| {
            s.into_iter()
                .filter(|(k, _)| WalName::parse(k).is_ok_and(|w| w.kind == WalKind::Partial))
                .collect()
        })
        .unwrap_or_default()
}

fn save_state(dir: &Path, job: &str, state: &State) -> Result<()> {
    let tmp = dir.join("state.json.tmp");
    let json = serde_json::to_vec(state).unwrap_or_default();
    crate::private_fs::write(&tmp, &json)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, dir.join("state.json")))
        .map_err(|e| Error::Local {
            doing: format!("job {job}: writing the WAL streaming state"),
            path: dir.join("state.json"),
            source: e,
            hint: "; check that the state directory is writable".into(),
        })
}

/// The running `pg_receivewal`.
struct Receiver {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
    started: Instant,
}

/// Streams until the future is dropped (the agent drops it on shutdown or
/// reload; the child is killed with it, and the state file names only
/// shipped bytes, so a drop at any point is safe).
pub async fn run(opts: StreamOptions, stats: Arc<StreamStats>) {
    let job = opts.job_name.clone();
    let dir = job_dir(&opts.state_dir, &job);
    let spool = dir.join("spool");
    let mut backoff = Duration::from_secs(1);
    while let Err(e) = crate::private_fs::create_dir_all(&spool) {
        let e = Error::Local {
            doing: format!("job {job}: creating the WAL spool directory"),
            path: spool.clone(),
            source: e,
            hint: "; check that the state directory is writable".into(),
        };
        stats.fail(&job, &e, backoff);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    if reap_stale_receiver(&dir, &spool) {
        // Its walsender holds the slot until it notices the close.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut state = load_state(&dir);
    let mut receiver: Option<Receiver> = None;
    let mut next_start = Instant::now();
    backoff = Duration::from_secs(1);
    let mut ship_at = Instant::now();
    let mut ship_backoff = Duration::from_secs(1);
    let mut last_delta: Option<Instant> = None;
    let interval = Duration::from_secs(opts.job.stream_flush_secs.max(1));
    let mut warned_hidden = false;
    // The receiver exited while this agent watched it: nothing writes
    // the spool, and what it wrote is whole (a crash of the machine would
    // have restarted the agent too).
    let mut settled = false;
    loop {
        if receiver.is_none() && Instant::now() >= next_start {
            match start_receiver(&opts, &dir, &spool).await {
                Ok(r) => {
                    receiver = Some(r);
                    settled = false;
                }
                Err(e) => {
                    stats.fail(&job, &e, backoff);
                    next_start = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let nap = next_nap(last_delta, Instant::now(), interval);
        let exited = match receiver.as_mut() {
            Some(r) => tokio::select! {
                status = r.child.wait() => Some(status),
                _ = tokio::time::sleep(nap) => None,
            },
            None => {
                tokio::time::sleep(nap).await;
                None
            }
        };
        if let Some(status) = exited {
            settled = true;
            let r = receiver.take().expect("receiver ran");
            stats.up.store(false, Ordering::Relaxed);
            if r.started.elapsed() > Duration::from_secs(120) {
                backoff = Duration::from_secs(1);
            }
            let said = r.stderr.await.unwrap_or_default();
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            let e = Error::Source(format!(
                "job {job}: pg_receivewal stopped streaming from PostgreSQL at {} ({status}): {}",
                where_(&opts.job),
                hint(&opts.job, &said)
            ));
            stats.fail(&job, &e, backoff);
            next_start = Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }

        // The flushed position read below is at least this recent: a
        // delta made of it carries the WAL flushed up to this moment.
        let polled_at = Instant::now();
        let view = match query_slot(&opts.job_name, &opts.job).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(job = %job, "WAL streaming: reading the slot: {e}");
                None
            }
        };
        let retained = view.as_ref().and_then(|v| v.retained).unwrap_or(-1);
        stats.slot_retained_bytes.store(retained, Ordering::Relaxed);
        // Positions count only while our receiver holds the slot: a new
        // walsender reports nothing until the receiver's first fsync.
        let flushed = match (&receiver, &view) {
            (Some(_), Some(v)) if v.active => v.flushed,
            _ => None,
        };
        stats.up.store(
            receiver.is_some() && view.as_ref().is_some_and(|v| v.active),
            Ordering::Relaxed,
        );
        if !warned_hidden && receiver.is_some() && view.as_ref().is_some_and(|v| v.hidden) {
            warned_hidden = true;
            let e = Error::Config(format!(
                "job {job}: the role {} cannot see the receiver's positions in pg_stat_replication: GRANT pg_monitor TO {}",
                opts.job.user.as_deref().unwrap_or("of the job"),
                opts.job.user.as_deref().unwrap_or("the job's user")
            ));
            stats.fail(&job, &e, Duration::from_secs(1));
        }
        if let Some(lsn) = flushed {
            if stats.received_lsn.fetch_max(lsn.0, Ordering::Relaxed) < lsn.0 {
                stats
                    .received_at
                    .store(Utc::now().timestamp(), Ordering::Relaxed);
            }
        }
        let segment_bytes = view
            .as_ref()
            .map(|v| v.segment_bytes)
            .unwrap_or(crate::wal::names::DEFAULT_SEGMENT_BYTES);
        if Instant::now() >= ship_at {
            let mut ship = Shipper {
                opts: &opts,
                stats: &stats,
                dir: &dir,
                spool: &spool,
                state: &mut state,
                segment_bytes,
                last_delta: &mut last_delta,
                polled_at,
                interval,
                settled,
            };
            match ship.ship(flushed).await {
                Ok(()) => ship_backoff = Duration::from_secs(1),
                Err(e) => {
                    stats.fail(&job, &e, ship_backoff);
                    ship_at = Instant::now() + ship_backoff;
                    ship_backoff = (ship_backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let received = stats.received_lsn.load(Ordering::Relaxed);
        if received > 0 && stats.shipped_lsn.load(Ordering::Relaxed) >= received {
            stats
                .caught_up_at
                .store(Utc::now().timestamp(), Ordering::Relaxed);
        }
    }
}

async fn start_receiver(opts: &StreamOptions, dir: &Path, spool: &Path) -> Result<Receiver> {
    let job = &opts.job_name;
    let at = where_(&opts.job);
    let program = tool(&opts.job, "pg_receivewal");
    let spawn_err = |e: std::io::Error| {
        Error::Source(format!(
            "job {job}: cannot run {}: {e}; install postgresql-client or set bin_dir on the job",
            program.display()
        ))
    };
    // The slot first (kept when it exists): from then on the server keeps
    // every WAL file the receiver has not confirmed.
    let mut create = command(&opts.job, "pg_receivewal");
    create
        .args(["--create-slot", "--if-not-exists", "--slot", &opts.job.slot])
        .env("PGAPPNAME", APP_NAME);
    without_secrets(create.as_std_mut());
    create.stdin(Stdio::null()).kill_on_drop(true);
    let out = create.output().await.map_err(spawn_err)?;
    if !out.status.success() {
        return Err(Error::Source(format!(
            "job {job}: creating replication slot {} on PostgreSQL at {at}: {}",
            opts.job.slot,
            hint(&opts.job, String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    let mut cmd = command(&opts.job, "pg_receivewal");
    cmd.arg("--directory")
        .arg(spool)
        .args(["--slot", &opts.job.slot, "--synchronous", "--no-loop"])
        .env("PGAPPNAME", APP_NAME);
    without_secrets(cmd.as_std_mut());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(pid) = child.id() {
        let _ = crate::private_fs::write(&dir.join("receiver.pid"), pid.to_string().as_bytes());
    }
    let stderr = child.stderr.take();
    let stderr = tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(64 * 1024).read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).trim().to_string()
    });
    tracing::info!(job = %job, "WAL streaming: pg_receivewal follows PostgreSQL at {at} through slot {}", opts.job.slot);
    Ok(Receiver {
        child,
        stderr,
        started: Instant::now(),
    })
}

/// Kills the receiver a previous agent started, if it still runs: the
/// pid file names it, and it is ours only if its command line is
/// `pg_receivewal` writing into this job's spool. True when one was.
fn reap_stale_receiver(dir: &Path, spool: &Path) -> bool {
    let pid_file = dir.join("receiver.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.first().is_some_and(|a| a.ends_with(b"pg_receivewal"))
        && args.contains(&spool.as_os_str().as_encoded_bytes());
    let _ = std::fs::remove_file(&pid_file);
    match rustix::process::Pid::from_raw(pid).filter(|_| ours) {
        Some(p) => {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            tracing::info!("stopped pg_receivewal {pid} left by a previous agent");
            true
        }
        None => false,
    }
}

/// One round of shipping from the spool.
struct Shipper<'a> {
    opts: &'a StreamOptions,
    stats: &'a StreamStats,
    dir: &'a Path,
    spool: &'a Path,
    state: &'a mut State,
    segment_bytes: u64,
    /// When the previous delta's end was read off the server.
    last_delta: &'a mut Option<Instant>,
    /// When this round's flushed position was asked for.
    polled_at: Instant,
    interval: Duration,
    /// No receiver runs (it exited under our eyes): the newest partial
    /// may be shipped to its written end without the server's word (the
    /// server is often what stopped it; its last seconds are shipped).
    settled: bool,
}

impl Shipper<'_> {
    async fn ship(&mut self, flushed: Option<Lsn>) -> Result<()> {
        let (complete, partial) = spool_files(self.spool);
        // Complete files first, in order: they are what the server may
        // already have removed.
        for name in &complete {
            self.push_complete(name).await?;
        }
        let newest_timeline = partial.iter().map(|w| w.timeline).max().unwrap_or(0);
        let newest = partial.last().map(|w| w.to_string());
        for name in &partial {
            let written = if self.settled && newest.as_deref() == Some(name.as_str()) {
                let path = self.spool.join(name.as_str());
                tokio::task::spawn_blocking(move || written_end(&path))
                    .await
                    .ok()
                    .flatten()
            } else {
                None
            };
            self.ship_partial(name, flushed, written, name.timeline < newest_timeline)
                .await?;
        }
        Ok(())
    }

    async fn push_complete(&mut self, name: &WalName) -> Result<()> {
        let job = &self.opts.job_name;
        let path = self.spool.join(name.as_str());
        let targets: Vec<(String, Result<Arc<dyn StorageTarget>>)> = self
            .opts
            .targets
            .iter()
            .map(|t| (t.name().to_string(), Ok(Arc::clone(t))))
            .collect();
        let report = archive::push(&path, &self.opts.host, job, &targets, &self.opts.settings)
            .await
            .map_err(|e| Error::Other(format!("job {job}: streamed {e}")))?;
        if name.kind == WalKind::Segment {
            for t in &self.opts.targets {
                stream::delete_segment(t.as_ref(), &self.opts.host, job, name.as_str()).await?;
            }
            let end = (name.position(self.segment_bytes) + 1) * self.segment_bytes;
            self.stats.shipped_lsn.fetch_max(end, Ordering::Relaxed);
            self.stats.segments.fetch_add(1, Ordering::Relaxed);
        }
        let stored: u64 = report
            .targets
            .iter()
            .map(|(_, p)| match p {
                archive::Pushed::Stored(n) => *n,
                archive::Pushed::AlreadyThere => 0,
            })
            .sum();
        self.stats.stored_bytes.fetch_add(stored, Ordering::Relaxed);
        self.stats
            .last_shipped_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        let _ = std::fs::remove_file(&path);
        if self
            .state
            .remove(&format!("{}.partial", name.as_str()))
            .is_some()
        {
            save_state(self.dir, job, self.state)?;
        }
        tracing::debug!(job = %job, "WAL streaming: {name} archived");
        Ok(())
    }

    /// Ships the flushed, unshipped bytes of a `.partial` file. A partial
    /// of an older timeline (the server was promoted) is shipped to its
    /// end, then dropped from the spool.
    async fn ship_partial(
        &mut self,
        name: &WalName,
        flushed: Option<Lsn>,
        written: Option<u64>,
        old: bool,
    ) -> Result<()> {
        let job = self.opts.job_name.clone();
        let seg = self.segment_bytes;
        let segment = name.as_str().trim_end_matches(".partial").to_string();
        let position = name.position(seg);
        let path = self.spool.join(name.as_str());
        let len = std::fs::symlink_metadata(&path)
            .map(|m| m.len())
            .unwrap_or(0);
        let mut offset = match self.state.get(name.as_str()) {
            Some(o) => *o,
            None => match self.opts.targets.first() {
                Some(t) => stream::covered(t.as_ref(), &self.opts.host, &job, &segment).await,
                None => 0,
            },
        };
        let safe = match flushed {
            Some(f) if f.position(seg) == position => f.0 % seg,
            Some(f) if f.position(seg) > position && old => seg,
            _ => written.unwrap_or(0),
        };
        let end = safe.min(len);
        self.stats
            .shipped_lsn
            .fetch_max(position * seg + offset, Ordering::Relaxed);
        if end > offset {
            let waiting = end - offset;
            let due = delta_due(*self.last_delta, Instant::now(), self.interval)
                || waiting >= EARLY_SHIP_BYTES
                || old;
            if !due {
                return Ok(());
            }
            self.ship_delta(&path, &segment, offset, end).await?;
            offset = end;
            *self.last_delta = Some(self.polled_at);
            self.state.insert(name.to_string(), offset);
            save_state(self.dir, &job, self.state)?;
            self.stats
                .shipped_lsn
                .fetch_max(position * seg + offset, Ordering::Relaxed);
        }
        if old && offset >= seg {
            let _ = std::fs::remove_file(&path);
            self.state.remove(name.as_str());
            save_state(self.dir, &job, self.state)?;
        }
        Ok(())
    }

    async fn ship_delta(&mut self, path: &Path, segment: &str, start: u64, end: u64) -> Result<()> {
        let job = &self.opts.job_name;
        let read_path = path.to_path_buf();
        let data = tokio::task::spawn_blocking(move || read_range(&read_path, start, end))
            .await
            .map_err(|e| Error::Internal(format!("WAL read task: {e}")))?
            .map_err(|e| {
                Error::Source(format!(
                    "job {job}: reading the spooled WAL {}: {e}",
                    path.display()
                ))
            })?;
        let mut source = MemorySource::new(
            format!("job {job}: WAL {segment} bytes {start}..{end}"),
            Bytes::from(data),
        );
        let key = stream::delta_key(
            &self.opts.host,
            job,
            segment,
            start,
            end,
            self.segment_bytes,
            source.hash(),
        );
        let outcome = store_object(
            &mut source,
            &self.opts.settings,
            &self.opts.targets,
            &key,
            Arc::new(ByteCounters::default()),
            // No manifest records WAL objects: the key holds their hash.
            StoredHash::Skip,
        )
        .await;
        let streamed = outcome.stream.map_err(|e| {
            Error::Other(format!(
                "job {job}: storing WAL {segment} bytes {start}..{end}: {e}"
            ))
        })?;
        let failed: Vec<String> = outcome
            .targets
            .iter()
            .filter_map(|(t, r)| r.as_ref().err().map(|e| format!("target {t}: {e}")))
            .collect();
        if !failed.is_empty() {
            return Err(Error::Other(format!(
                "job {job}: storing WAL {segment} bytes {start}..{end}: {}",
                failed.join("; ")
            )));
        }
        self.stats.deltas.fetch_add(1, Ordering::Relaxed);
        self.stats
            .delta_bytes
            .fetch_add(end - start, Ordering::Relaxed);
        self.stats
            .stored_bytes
            .fetch_add(streamed.stored_bytes, Ordering::Relaxed);
        self.stats
            .last_shipped_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        tracing::debug!(job = %job, "WAL streaming: {segment} bytes {start}..{end} shipped");
        Ok(())
    }
}

/// Whether the open segment's waiting bytes make a delta now: `interval`
/// has passed since the previous delta's end was read off the server.
/// Counted from that read, not from the end of its upload: the upload's
/// seconds would otherwise add to every cycle, and so to the RPO.
fn delta_due(last_read: Option<Instant>, now: Instant, interval: Duration) -> bool {
    last_read.is_none_or(|t| now + WAKE_SLACK >= t + interval)
}

/// How long the loop sleeps before its next look at the server: a poll,
/// or less when the next delta falls due sooner, so that deltas go every
/// `interval` under steady writes and not at the first poll after it.
/// Once that moment has passed (no write since), a plain poll.
fn next_nap(last_read: Option<Instant>, now: Instant, interval: Duration) -> Duration {
    match last_read.map(|t| t + interval) {
        Some(due) if due > now => (due - now).min(POLL),
        _ => POLL,
    }
}

/// Complete files (segments, history) and `.partial` files in the spool,
/// each sorted; anything else (pg_receivewal's temporary files) is left.
fn spool_files(spool: &Path) -> (Vec<WalName>, Vec<WalName>) {
    let mut complete = Vec::new();
    let mut partial = Vec::new();
    for e in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Some(name) = e.file_name().to_str().and_then(|n| WalName::parse(n).ok()) else {
            continue;
        };
        match name.kind {
            WalKind::Segment | WalKind::History => complete.push(name),
            WalKind::Partial => partial.push(name),
            WalKind::Backup => {}
        }
    }
    complete.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    partial.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    (complete, partial)
}

/// Where the data of a spooled `.partial` ends: pg_receivewal creates it
/// zero-filled to the segment size and writes WAL from the start, so this
/// is just past its last non-zero byte (zeros the WAL itself ends with
/// come back as the fill on restore).
fn written_end(path: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .ok()?;
    let mut end = f.metadata().ok()?.len();
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start)).ok()?;
        f.read_exact(chunk).ok()?;
        if let Some(i) = chunk.iter().rposition(|b| *b != 0) {
            return Some(start + i as u64 + 1);
        }
        end = start;
    }
    Some(0)
}

/// Bytes `start..end` of a spooled file (never through a symlink).
fn read_range(path: &Path, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut data = vec![0u8; (end - start) as usize];
    f.read_exact(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_falls_due_an_interval_after_the_previous_read_not_after_its_upload() {
        let interval = Duration::from_secs(3);
        let read = Instant::now();
        // The previous delta's upload took 800 ms; the next one is due
        // 3 s after its bytes were read all the same.
        assert!(!delta_due(
            Some(read),
            read + Duration::from_millis(2900),
            interval
        ));
        assert!(delta_due(Some(read), read + interval, interval));
        assert!(delta_due(
            Some(read),
            read + interval - Duration::from_millis(5),
            interval
        ));
        assert!(delta_due(None, read, interval));
    }

    #[test]
    fn the_loop_wakes_when_the_next_delta_falls_due() {
        let interval = Duration::from_secs(3);
        let read = Instant::now();
        assert_eq!(
            next_nap(Some(read), read + Duration::from_millis(2700), interval),
            Duration::from_millis(300)
        );
        assert_eq!(
            next_nap(Some(read), read + Duration::from_millis(500), interval),
            POLL
        );
        // Due already (nothing was written since): no busy loop.
        assert_eq!(
            next_nap(Some(read), read + Duration::from_secs(10), interval),
            POLL
        );
        assert_eq!(next_nap(None, read, interval), POLL);
    }

    #[test]
    fn the_written_end_is_past_the_last_non_zero_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000000010000000000000006.partial");
        let mut data = vec![0u8; 300 * 1024];
        data[10] = 1;
        data[130 * 1024 + 7] = 9;
        std::fs::write(&path, &data).unwrap();
        assert_eq!(written_end(&path), Some(130 * 1024 + 8));
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        assert_eq!(written_end(&path), Some(0));
    }

    #[test]
    fn spool_listing_sorts_and_skips_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "000000010000000000000005",
            "000000010000000000000004",
            "000000010000000000000006.partial",
            "00000002.history",
            "notes.txt",
            "000000010000000000000006.partial.tmp",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let (complete, partial) = spool_files(dir.path());
        let c: Vec<&str> = complete.iter().map(|w| w.as_str()).collect();
        assert_eq!(
            c,
            [
                "000000010000000000000004",
                "000000010000000000000005",
                "00000002.history"
            ]
        );
        assert_eq!(partial.len(), 1);
    }
}
