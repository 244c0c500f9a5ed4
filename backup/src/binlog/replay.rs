//! Restore to a point: pick the newest dump that is a base for the point,
//! restore it (restore/mysql.rs), then replay the shipped binlogs from the
//! dump's recorded position up to the point with `mariadb-binlog
//! --start-position P --stop-datetime T | mariadb`. The client is the
//! restore's own (`--binary-mode --local-infile=0 --sandbox`): binlogs come
//! from the bucket, and their statements are SQL for the server only.
//!
//! Segments are read through the checked stream into a private temporary
//! directory, file by file, one file ahead of the replay: each file is
//! replayed by its own `mariadb-binlog` into one client session while the
//! next is fetched. A segment that is missing or corrupt stops the fetch
//! there, what came before it is replayed (segments end on event
//! boundaries), and the error names the object and how far the data got.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::binlog::archive::{self, FileChain};
use crate::error::{Error, Result};
use crate::manifest::{BinlogPosition, JobKind};
use crate::restore::identity::Identities;
use crate::restore::mysql::{MysqlConnection, WithoutLines};
use crate::restore::stream::Progress;
use crate::restore::tool::{describe, enlarge_pipe, feed, find_tool, tail};
use crate::restore::{self, Check, Located};
use crate::target::StorageTarget;

/// How far to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Until {
    /// Every event before this time (the server's event timestamps).
    Time(DateTime<Utc>),
    /// Everything shipped.
    Latest,
    /// Up to this byte of this binlog file.
    Position { file: String, position: u64 },
}

impl Until {
    /// `latest`, RFC 3339 (`2026-12-04T15:30:00Z`, `...+01:00`) or
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub fn parse_time(text: &str) -> Result<Self> {
        let t = text.trim();
        if t == "latest" {
            return Ok(Until::Latest);
        }
        if let Ok(d) = DateTime::parse_from_rfc3339(t) {
            return Ok(Until::Time(d.with_timezone(&Utc)));
        }
        for f in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
                return Ok(Until::Time(n.and_utc()));
            }
        }
        Err(Error::Config(format!(
            "--to-time {text:?}: expected `latest`, RFC 3339 (2026-12-04T15:30:00Z) or 'YYYY-MM-DD HH:MM:SS' (UTC)"
        )))
    }

    /// `FILE:POS`, e.g. `mysql-bin.000042:1234`.
    pub fn parse_position(text: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "--to-position {text:?}: expected BINLOG_FILE:BYTE, e.g. mysql-bin.000042:1234 (see `mariadb-binlog` output for positions)"
            ))
        };
        let (file, pos) = text.trim().rsplit_once(':').ok_or_else(bad)?;
        if !super::is_valid_file_name(file) {
            return Err(bad());
        }
        Ok(Until::Position {
            file: file.to_string(),
            position: pos.parse().map_err(|_| bad())?,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Until::Time(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            Until::Latest => "the newest shipped binlog event".into(),
            Until::Position { file, position } => format!("{file}:{position}"),
        }
    }
}

/// The dump positions of a snapshot, when every dump has one.
fn positions(located: &crate::manifest::Manifest) -> Option<Vec<BinlogPosition>> {
    let dumps: Vec<_> = located
        .objects
        .iter()
        .filter(|o| o.role == crate::manifest::ObjectRole::MysqlDump)
        .collect();
    if dumps.is_empty() {
        return None;
    }
    dumps.iter().map(|o| o.binlog.clone()).collect()
}

fn before(p: &BinlogPosition, file: &str, position: u64) -> bool {
    match super::file_order(&p.file, file) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Equal => p.position <= position,
        std::cmp::Ordering::Greater => false,
    }
}

/// The snapshot to start from: `snapshot` if it is an id, else the newest
/// snapshot whose dumps all recorded a binlog position at or before
/// `until`.
pub async fn locate_base(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    snapshot: &str,
    until: &Until,
) -> Result<Located> {
    if snapshot != "latest" {
        let located = restore::locate(targets, host, job, snapshot).await?;
        check_base(&located, until)?;
        return Ok(located);
    }
    let entries = restore::list(targets, host, Some(job)).await?;
    let mut with_position = 0;
    let mut best = None;
    for e in entries.iter().rev() {
        if e.manifest.kind != JobKind::Mysql {
            continue;
        }
        let Some(ps) = positions(&e.manifest) else {
            continue;
        };
        with_position += 1;
        let fits = match until {
            Until::Latest => true,
            Until::Time(t) => ps.iter().all(|p| p.seen_at <= *t),
            Until::Position { file, position } => ps.iter().all(|p| before(p, file, *position)),
        };
        if fits {
            best = Some(e);
            break;
        }
    }
    let Some(entry) = best else {
        return Err(Error::NotFound(if with_position == 0 {
            format!(
                "job {job} (host {host}) has no MySQL snapshot with a binlog position; point-in-time recovery needs a dump taken with binlog = true on the job"
            )
        } else {
            let oldest = entries
                .iter()
                .filter_map(|e| positions(&e.manifest))
                .filter_map(|ps| ps.iter().map(|p| p.seen_at).max())
                .min()
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_default();
            format!(
                "no snapshot of job {job} is old enough for {}: the oldest dump with a binlog position is from {oldest}; choose a later point",
                until.describe()
            )
        }));
    };
    let target = targets
        .iter()
        .find(|t| t.name() == entry.target)
        .cloned()
        .ok_or_else(|| Error::Internal(format!("target {} vanished", entry.target)))?;
    let located = restore::locate(
        std::slice::from_ref(&target),
        host,
        job,
        &entry.manifest.snapshot_id,
    )
    .await?;
    check_base(&located, until)?;
    Ok(located)
}

fn check_base(located: &Located, until: &Until) -> Result<()> {
    let m = &located.manifest;
    let ps = positions(m).ok_or_else(|| {
        Error::Config(format!(
            "snapshot {} has no binlog position (its job did not have binlog = true); it cannot be rolled forward",
            m.snapshot_id
        ))
    })?;
    if let Until::Time(t) = until {
        if *t > Utc::now() {
            return Err(Error::Config(format!(
                "--to-time {} is in the future",
                until.describe()
            )));
        }
        if let Some(p) = ps.iter().find(|p| p.seen_at > *t) {
            return Err(Error::Config(format!(
                "snapshot {} was taken at {} (binlog {}:{}), after {}; choose an older snapshot or leave the snapshot out to pick one",
                m.snapshot_id,
                p.seen_at.format("%Y-%m-%d %H:%M:%S UTC"),
                p.file,
                p.position,
                until.describe()
            )));
        }
    }
    Ok(())
}

/// Replays the shipped binlogs onto database `into`, restored from the
/// dump of `source_db` in `located`. Returns the check to show.
pub async fn replay(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    conn: &MysqlConnection,
    source_db: &str,
    into: &str,
    until: &Until,
) -> Result<Check> {
    let m = &located.manifest;
    let from = m
        .objects
        .iter()
        .find(|o| o.database.as_deref() == Some(source_db))
        .and_then(|o| o.binlog.clone())
        .ok_or_else(|| {
            Error::Config(format!(
                "snapshot {}: the dump of {source_db} has no binlog position",
                m.snapshot_id
            ))
        })?;
    let target = Arc::clone(&located.target);
    let files = archive::list(target.as_ref(), &m.host, &m.job).await?;
    let mut chain = archive::chain_from(&files, &from).map_err(|e| {
        Error::NotFound(format!(
            "cannot roll snapshot {} forward on target {}: {e}",
            m.snapshot_id,
            target.name()
        ))
    })?;
    if let Until::Position { file, position } = until {
        let Some(i) = chain.iter().position(|c| c.file == *file) else {
            return Err(Error::NotFound(format!(
                "binlog {file} is not among the shipped binlogs after the dump's position {}:{} on target {}",
                from.file,
                from.position,
                target.name()
            )));
        };
        if chain[i].end < *position {
            return Err(Error::NotFound(format!(
                "binlog {file} is shipped only up to byte {}, before {position}",
                chain[i].end
            )));
        }
        chain.truncate(i + 1);
    }
    // File N is replayed while file N+1 is fetched (at most one ahead):
    // the fetch and check of a GB of binlog took seconds that the replay
    // waited out. One `mariadb-binlog` per file, all into one client
    // session, as concatenating their outputs is documented to be safe.
    let scratch = Scratch::create()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<FetchedFile>(1);
    let last = chain.len().saturating_sub(1);
    let plan = ReplayPlan {
        conn: conn.clone(),
        source_db: source_db.to_string(),
        into: into.to_string(),
        until: until.clone(),
        start: from.position,
    };
    let replaying = tokio::task::spawn_blocking(move || plan.run(rx));
    let mut fault = None;
    let mut newest_event = None;
    for (i, c) in chain.iter().enumerate() {
        let path = scratch.path().join(&c.file);
        let fetched = fetch_file(&target, identities, Arc::clone(&progress), c, &path).await;
        let (whole, err) = match fetched {
            Ok(last) => {
                newest_event = last.or(newest_event);
                (true, None)
            }
            Err((true, e)) => (false, Some(e)),
            Err((false, e)) => {
                fault = Some(e);
                break;
            }
        };
        let file = FetchedFile {
            path,
            first: i == 0,
            last: i == last && whole,
        };
        if tx.send(file).await.is_err() {
            // The replay stopped: it reached the point, or failed.
            break;
        }
        if let Some(e) = err {
            fault = Some(e);
            break;
        }
    }
    drop(tx);
    let replayed = replaying
        .await
        .map_err(|e| Error::Internal(format!("binlog replay task: {e}")))?;
    drop(scratch);
    if replayed.files == 0 {
        if let Some(e) = fault {
            return Err(e);
        }
    }
    replayed.result?;
    if replayed.files == 0 {
        return Err(Error::NotFound("no binlog to replay".into()));
    }
    let files_text = format!(
        "{} binlog file(s) from {}:{}",
        replayed.files, from.file, from.position
    );
    if let Some(e) = fault {
        return Err(Error::Integrity(format!(
            "{e}; database {into} holds the dump plus the binlogs before that object ({files_text}); restore to an earlier --to-time or from another target"
        )));
    }
    let newest = newest_event
        .map(|t: DateTime<Utc>| {
            format!(
                "; newest shipped event {}",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            )
        })
        .unwrap_or_default();
    Ok(Check::ok(
        "binlog replay",
        format!("{files_text} replayed up to {}{newest}", until.describe()),
    ))
}

/// Writes one binlog file from its segments. `Err((partial, e))`: a
/// segment failed; `partial` when the segments before it were written (a
/// usable prefix of the file, ending on an event boundary).
async fn fetch_file(
    target: &Arc<dyn StorageTarget>,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    chain: &FileChain,
    path: &Path,
) -> std::result::Result<Option<DateTime<Utc>>, (bool, Error)> {
    let out = crate::private_fs::create_options()
        .open(path)
        .map_err(|e| {
            (
                false,
                Error::Other(format!("cannot write {}: {e}", path.display())),
            )
        })?;
    let mut out = Some(out);
    let mut newest = None;
    for (n, seg) in chain.segments.iter().enumerate() {
        let meta = archive::read_meta(target.as_ref(), seg)
            .await
            .map_err(|e| (n > 0, e))?;
        progress.start(
            &format!("binlog {}", meta.object.name),
            Some(meta.object.stored_bytes),
        );
        let reader =
            archive::open_segment(Arc::clone(target), &meta, identities, Arc::clone(&progress))
                .await
                .map_err(|f| (n > 0, Error::from(f)))?;
        let slot = reader.fault_slot();
        let mut file = out
            .take()
            .ok_or_else(|| (n > 0, Error::Internal("binlog file handle".into())))?;
        let (file, copied) = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let r = std::io::copy(&mut reader, &mut file);
            (file, r)
        })
        .await
        .map_err(|e| (n > 0, Error::Internal(format!("binlog fetch task: {e}"))))?;
        progress.finish();
        if let Err(e) = copied {
            let err = match crate::restore::stream::take_fault(&slot) {
                Some(f) => Error::from(f),
                None => Error::Other(format!("reading binlog segment {}: {e}", meta.object.name)),
            };
            // Cut what this segment half-wrote: the file must end on the
            // previous segment's event boundary.
            let _ = file.set_len(seg.start);
            return Err((n > 0, err));
        }
        out = Some(file);
        newest = meta.last_event_at.or(newest);
    }
    Ok(newest)
}

/// One fetched binlog file for the replay.
struct FetchedFile {
    path: PathBuf,
    /// The chain's first file: replayed from the dump's position.
    first: bool,
    /// The chain's last file, fetched whole: a `--stop-position` applies.
    last: bool,
}

/// What the replay thread needs.
struct ReplayPlan {
    conn: MysqlConnection,
    source_db: String,
    into: String,
    until: Until,
    start: u64,
}

/// How a replay ended: how many files it replayed, and its verdict.
struct Replayed {
    files: usize,
    result: Result<()>,
}

impl ReplayPlan {
    /// `mariadb-binlog FILE | mariadb --database=into` for each file as it
    /// arrives, all into one client, both sides checked. Stops after the
    /// file in which `--stop-datetime` is reached, as one `mariadb-binlog`
    /// over all the files does (it stops at the first event at or after
    /// the time, and event times need not rise).
    fn run(self, files: tokio::sync::mpsc::Receiver<FetchedFile>) -> Replayed {
        let mut client = match self.conn.command() {
            Ok(c) => c,
            Err(e) => {
                return Replayed {
                    files: 0,
                    result: Err(e),
                }
            }
        };
        client.arg(format!("--database={}", self.into));
        let mut outputs = Outputs {
            plan: &self,
            files,
            current: None,
            replayed: 0,
            producer_error: None,
            done: false,
        };
        // The SQL goes through this process so the GTID sequence numbers of
        // the original server are left out: replayed onto the same server
        // (another database) or onto one with gtid_strict_mode they would be
        // out of order; the server numbers the replayed transactions itself.
        let slot = Arc::new(std::sync::Mutex::new(None));
        let fed = feed(
            &mut client,
            WithoutLines::new(&mut outputs, sets_gtid_seq_no),
            &slot,
        );
        let into = &self.into;
        let result = match (fed, outputs.producer_error.take()) {
            (_, Some(e)) => Err(Error::Integrity(format!(
                "replaying binlogs into {into}: {e}"
            ))),
            (Err(e), None) => Err(Error::Other(format!(
                "replaying binlogs into {into}: {}",
                Error::from(e)
            ))),
            (Ok(_), None) => Ok(()),
        };
        Replayed {
            files: outputs.replayed,
            result,
        }
    }

    /// `mariadb-binlog` for one file.
    fn producer(&self, file: &FetchedFile) -> Result<Command> {
        let tool = find_tool(
            self.conn.bin_dir.as_deref(),
            &["mariadb-binlog", "mysqlbinlog"],
        )?;
        let mut binlog = Command::new(tool);
        binlog
            .arg("--no-defaults")
            .arg("--verify-binlog-checksum")
            // Earlier restores into the same server may have logged older
            // GTIDs after newer ones; read on rather than stop.
            .arg("--skip-gtid-strict-mode")
            .arg(format!("--database={}", self.source_db));
        if file.first {
            binlog.arg(format!("--start-position={}", self.start));
        }
        if self.source_db != self.into {
            binlog.arg(format!("--rewrite-db={}->{}", self.source_db, self.into));
        }
        match &self.until {
            Until::Position { position, .. } if file.last => {
                binlog.arg(format!("--stop-position={position}"));
            }
            Until::Time(t) => {
                // The tool reads the time in its own time zone: make that UTC.
                binlog
                    .env("TZ", "UTC")
                    .arg(format!("--stop-datetime={}", t.format("%Y-%m-%d %H:%M:%S")));
            }
            _ => {}
        }
        binlog.arg("--").arg(&file.path);
        crate::source::command::without_secrets(&mut binlog);
        Ok(binlog)
    }

    /// Whether `mariadb-binlog --stop-datetime` stops within this file: an
    /// event in it, from where the replay of it starts, is at or after
    /// the time. The files after it are then neither fetched nor replayed
    /// (a file rotated in after the time would begin with an event of its
    /// rotation time, at which `mariadb-binlog` stops at once, so this
    /// saves their fetch and a run each; a restore to a time early in a
    /// long chain no longer fetches the whole chain).
    fn stops_in(&self, file: &FetchedFile) -> std::io::Result<bool> {
        let Until::Time(t) = &self.until else {
            return Ok(false);
        };
        let f = std::fs::File::open(&file.path)?;
        let from = if file.first { self.start.max(4) } else { 0 };
        let scan = super::complete_events_in_file(&f, from)?;
        Ok(scan.newest_event_time.is_some_and(|n| n >= t.timestamp()))
    }
}

/// The outputs of one `mariadb-binlog` per file, one after the other, as
/// one stream. A producer that fails ends the stream (what it wrote
/// before is replayed, as with one producer for all files) and is
/// reported after.
struct Outputs<'a> {
    plan: &'a ReplayPlan,
    files: tokio::sync::mpsc::Receiver<FetchedFile>,
    current: Option<Producing>,
    replayed: usize,
    producer_error: Option<String>,
    done: bool,
}

/// The `mariadb-binlog` whose output is being read.
struct Producing {
    child: std::process::Child,
    stdout: std::process::ChildStdout,
    stderr: std::thread::JoinHandle<String>,
    what: String,
    stops_here: bool,
}

impl Outputs<'_> {
    /// Waits for the next fetched file and starts its producer; `None`
    /// when there is none (or it could not start: `producer_error`).
    fn next_producer(&mut self) -> Option<Producing> {
        let file = self.files.blocking_recv()?;
        let started = (|| {
            let stops_here = self
                .plan
                .stops_in(&file)
                .map_err(|e| format!("reading {}: {e}", file.path.display()))?;
            let mut cmd = self.plan.producer(&file).map_err(|e| e.to_string())?;
            let what = describe(&cmd);
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run `{what}`: {e}"))?;
            let stderr = collect(child.stderr.take());
            let Some(stdout) = child.stdout.take() else {
                return Err("mariadb-binlog has no stdout".to_string());
            };
            enlarge_pipe(&stdout);
            Ok(Producing {
                child,
                stdout,
                stderr,
                what,
                stops_here,
            })
        })();
        match started {
            Ok(p) => {
                self.replayed += 1;
                Some(p)
            }
            Err(e) => {
                self.producer_error = Some(e);
                None
            }
        }
    }

    /// The current producer's output ended: checks how it exited.
    /// Returns whether the replay goes on with the next file.
    fn finish_current(&mut self) -> bool {
        let Some(mut p) = self.current.take() else {
            return true;
        };
        let status = p.child.wait();
        let err = p.stderr.join().unwrap_or_default();
        match status {
            Ok(s) if s.success() => !p.stops_here,
            Ok(s) => {
                self.producer_error = Some(format!("`{}` failed ({s}): {}", p.what, tail(&err)));
                false
            }
            Err(e) => {
                self.producer_error = Some(format!("`{}` did not finish: {e}", p.what));
                false
            }
        }
    }

    fn end(&mut self) {
        self.done = true;
        // The fetch sees the channel closed and stops.
        self.files.close();
    }
}

impl std::io::Read for Outputs<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.done {
            let Some(p) = self.current.as_mut() else {
                match self.next_producer() {
                    Some(p) => self.current = Some(p),
                    None => self.end(),
                }
                continue;
            };
            match p.stdout.read(buf) {
                Ok(0) => {
                    if !self.finish_current() {
                        self.end();
                    }
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    self.current = None;
                    self.producer_error = Some(format!("reading `mariadb-binlog` output: {e}"));
                    self.end();
                }
            }
        }
        Ok(0)
    }
}

impl Drop for Outputs<'_> {
    fn drop(&mut self) {
        // A replay that ends early (the client failed) leaves no producer.
        if let Some(mut p) = self.current.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// `mariadb-binlog` output's `SET @@session.gtid_seq_no=N` lines: the
/// original server's sequence numbers, which a second replay into the same
/// server would collide with.
fn sets_gtid_seq_no(line: &[u8]) -> bool {
    let rest = line
        .strip_prefix(b"/*M!100001 ")
        .or_else(|| line.strip_prefix(b"/*!100001 "));
    rest.is_some_and(|r| r.starts_with(b"SET @@session.gtid_seq_no="))
}

/// A private (0700) temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("steward-binlog-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::Other(format!(
                    "cannot create a scratch directory {} for the binlogs: {e}; set TMPDIR to a writable directory with room for them",
                    dir.display()
                ))
            })?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn collect<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut raw = Vec::new();
        if let Some(mut p) = pipe {
            let _ = std::io::Read::read_to_end(&mut p, &mut raw);
        }
        String::from_utf8_lossy(&raw).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_sequence_lines_are_left_out() {
        use std::io::Read;
        let sql = "/*M!100001 SET @@session.gtid_domain_id=0*//*!*/;\n/*M!100001 SET @@session.gtid_seq_no=5*//*!*/;\nINSERT INTO t VALUES ('/*M!100001 SET @@session.gtid_seq_no=1');\n";
        let mut out = String::new();
        WithoutLines::new(sql.as_bytes(), sets_gtid_seq_no)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(
            out,
            "/*M!100001 SET @@session.gtid_domain_id=0*//*!*/;\nINSERT INTO t VALUES ('/*M!100001 SET @@session.gtid_seq_no=1');\n"
        );
    }

    #[test]
    fn points_parse() {
        assert_eq!(Until::parse_time("latest").unwrap(), Until::Latest);
        let t = Until::parse_time("2026-12-04 15:30:00").unwrap();
        assert_eq!(t, Until::parse_time("2026-12-04T16:30:00+01:00").unwrap());
        assert!(Until::parse_time("yesterday").is_err());
        assert_eq!(
            Until::parse_position("mysql-bin.000042:1234").unwrap(),
            Until::Position {
                file: "mysql-bin.000042".into(),
                position: 1234
            }
        );
        assert!(Until::parse_position("../x:1").is_err());
        assert!(Until::parse_position("mysql-bin.000042").is_err());
    }
}
