//! WAL streaming of `postgres_pitr` jobs (`streaming = true`) against a
//! real PostgreSQL 15 with `archive_mode = off`, so every WAL byte a
//! restore gets came through the agent's `pg_receivewal` and its deltas:
//! marker rows written until PostgreSQL is killed (-9) come back from the
//! bucket by `restore` (latest) within the flush interval (the measured
//! RPO is printed); a SIGKILL of the agent mid-stream leaves no gap after
//! it restarts (its orphaned receiver is stopped, the spooled segments the
//! server already dropped are shipped); the slot's retained WAL is
//! exported.
//!
//! The agent runs as the test's user; the restored servers run as the
//! unprivileged test user, so before a restore the environment (binary
//! copy, config, key, store) is given to that user, whose
//! `restore_command` reads it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use steward_tests::backup_env::{BackupEnv, HOST};
use steward_tests::postgres::{as_owner, chown_tree, test_owner, Postgres};
use steward_tests::promtext::Scrape;
use steward_tests::{free_port, steward_bin, ChildGuard};

/// The flush interval the tests configure.
const FLUSH_SECS: u64 = 2;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A backup environment with a private steward binary the server's user
/// can run (restore_command), and a fixed agent port.
struct Env {
    env: BackupEnv,
    bin: PathBuf,
    port: u16,
}

impl Env {
    fn new(pg: &Postgres) -> Env {
        let env = BackupEnv::new();
        let bin = env.dir.path().join("bin").join("steward");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(steward_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let text = env
            .config_text(&format!(
                "[backup.jobs.db]\nkind = \"postgres_pitr\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\nbin_dir = \"{}\"\nstreaming = true\nstream_flush_secs = {FLUSH_SECS}\n",
                pg.port,
                pg.superuser,
                pg.password,
                pg.bin_dir.display()
            ))
            .replace("listen = \"127.0.0.1:1\"", &format!("listen = \"127.0.0.1:{port}\""));
        std::fs::write(&env.config, text).unwrap();
        Env { env, bin, port }
    }

    fn steward(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", s(&self.env.config)];
        all.extend_from_slice(args);
        Command::new(&self.bin)
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .expect("run steward")
    }

    /// An empty directory owned by the server's user, for a restored cluster.
    fn data_dir(&self, name: &str) -> PathBuf {
        let d = self.env.dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    /// Restores `latest` into a new data directory and starts it; the
    /// agent must be stopped (the environment changes owner).
    fn restore_latest(&self, pg: &Postgres, name: &str) -> Restored {
        let dir = self.data_dir(name);
        if let Some(owner) = test_owner().unwrap() {
            chown_tree(self.env.dir.path(), &owner).unwrap();
        }
        let port = free_port();
        let out = self.steward(&[
            "restore",
            "db",
            "-i",
            s(&self.env.key),
            "--to",
            s(&dir),
            "--start-port",
            &port.to_string(),
            "--quiet",
        ]);
        let restored = Restored {
            pg: pg.bin_dir.clone(),
            dir,
            port,
            password: pg.password.clone(),
        };
        assert!(out.status.success(), "restore latest: {}", text(&out));
        restored
    }
}

/// `steward agent` on the environment's config, restartable.
struct Agent {
    guard: ChildGuard,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn start(env: &Env) -> Agent {
        let log = env.env.dir.path().join("agent.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(steward_bin());
        cmd.arg("agent")
            .arg("--config")
            .arg(&env.env.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let guard = ChildGuard::spawn("steward", &mut cmd).unwrap();
        steward_tests::wait_for_http(env.port, "/livez", Duration::from_secs(30)).unwrap();
        Agent {
            guard,
            port: env.port,
            log,
        }
    }

    fn scrape(&self) -> Scrape {
        let (_, _, body) = steward_tests::http_get(self.port, "/metrics", &[]).unwrap();
        Scrape::parse(&String::from_utf8_lossy(&body))
    }

    fn metric(&self, name: &str) -> f64 {
        self.scrape()
            .series_of(name)
            .map(|(_, v)| v)
            .next()
            .unwrap_or(f64::NAN)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Agent) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what} not reached in {limit:?}; agent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until WAL up to the server's current position is on the
    /// targets.
    fn wait_shipped(&self, pg: &Postgres) {
        let lsn = lsn_bytes(&pg.psql("SELECT pg_current_wal_flush_lsn()").unwrap());
        self.wait_for(
            &format!("shipped up to {lsn}"),
            Duration::from_secs(60),
            |a| a.metric("steward_wal_stream_shipped_lsn_bytes") >= lsn as f64,
        );
    }
}

fn lsn_bytes(lsn: &str) -> u64 {
    let (hi, lo) = lsn.trim().split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// A restored server: stopped when dropped.
struct Restored {
    pg: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
}

impl Restored {
    fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.pg.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-d", "postgres", "-c", sql])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &self.password)
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let owner = test_owner().unwrap();
        let _ = as_owner(&owner, &self.pg.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Inserts marker `n` in its own transaction, committed durably (the
/// harness runs the server with synchronous_commit off, under which a
/// commit returns before its WAL is flushed, and so before any replica
/// can have it).
fn marker(pg: &Postgres, n: u32) {
    pg.psql(&format!(
        "SET synchronous_commit = on; INSERT INTO markers VALUES ({n}, clock_timestamp())"
    ))
    .unwrap();
}

fn base_backup(env: &Env, pg: &Postgres) {
    let run = env.steward(&["backup", "run", "db", "--quiet"]);
    assert!(
        run.status.success(),
        "base backup: {}\n{}",
        text(&run),
        pg.log()
    );
}

#[test]
fn restore_latest_gets_the_streamed_tail_within_the_flush_interval() {
    let mut pg = Postgres::start().expect("postgres starts");
    let env = Env::new(&pg);
    let spool = env.env.state.join("wal-stream").join("db").join("spool");
    let mut agent = Agent::start(&env);
    agent.wait_for("streaming up", Duration::from_secs(60), |a| {
        a.metric("steward_wal_stream_up") == 1.0
    });
    base_backup(&env, &pg);
    pg.psql("CREATE TABLE markers (n int primary key, at timestamptz)")
        .unwrap();
    // The segments the backup completed are archived first (16 MiB each
    // through an unoptimized build on a shared machine): measure from a
    // streamer that has caught up, as it is under steady writes.
    agent.wait_shipped(&pg);

    // Markers under way until the host is lost: the agent and its
    // receiver are killed (nothing more leaves the host), then the server.
    // The newest segment is never complete, so whatever of it comes back
    // was streamed as deltas.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(FLUSH_SECS * 4) {
        n += 1;
        marker(&pg, n);
        std::thread::sleep(Duration::from_millis(50));
    }
    let lost_at = now();
    let receiver = receivers(&spool);
    agent.guard.kill();
    for pid in receiver {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    pg.kill();
    let log = agent.log();
    assert!(!log.contains(&pg.password), "the password is never logged");
    let deltas = std::fs::read_dir(
        env.env
            .store
            .join(HOST)
            .join("db")
            .join("wal")
            .join("stream"),
    )
    .map(|d| d.count())
    .unwrap_or(0);
    assert!(deltas >= 1, "no delta shipped; agent log:\n{log}");

    let restored = env.restore_latest(&pg, "latest");
    let row = restored.psql("SELECT count(*), max(n), extract(epoch FROM max(at)) FROM markers");
    let f: Vec<&str> = row.split('|').collect();
    let (count, max): (u32, u32) = (f[0].parse().unwrap(), f[1].parse().unwrap());
    let newest: f64 = f[2].parse().unwrap();
    assert_eq!(count, max, "markers 1..={max} all there, no hole: {row}");
    let rpo = lost_at - newest;
    println!(
        "offsite RPO with streaming: {rpo:.2} s (stream_flush_secs = {FLUSH_SECS}; marker {max} of {n} restored; {deltas} delta object(s) in the bucket)"
    );
    assert!(
        rpo <= FLUSH_SECS as f64 + 3.0,
        "the last marker restored was committed {rpo:.2} s before the host was lost, more than the flush interval ({FLUSH_SECS} s) + 3 s; agent log:\n{log}"
    );
}

/// Processes running `pg_receivewal` into `spool`.
fn receivers(spool: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"pg_receivewal"))
            && args.contains(&spool.as_os_str().as_encoded_bytes())
        {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_sigkilled_agent_resumes_from_the_slot_without_a_gap() {
    let pg = Postgres::start().expect("postgres starts");
    let env = Env::new(&pg);
    let spool = env.env.state.join("wal-stream").join("db").join("spool");
    let mut agent = Agent::start(&env);
    agent.wait_for("streaming up", Duration::from_secs(60), |a| {
        a.metric("steward_wal_stream_up") == 1.0
    });
    base_backup(&env, &pg);
    pg.psql("CREATE TABLE markers (n int primary key, at timestamptz)")
        .unwrap();
    pg.psql("CREATE TABLE filler (x text)").unwrap();
    let fill = |pg: &Postgres| {
        // About 4 MB of WAL, then a new segment.
        pg.psql(
            "INSERT INTO filler SELECT repeat(md5(g::text), 30) FROM generate_series(1, 3000) g",
        )
        .unwrap();
        pg.psql("SELECT pg_switch_wal()").unwrap();
    };
    let mut n = 0;
    for _ in 0..3 {
        n += 1;
        marker(&pg, n);
        fill(&pg);
    }
    n += 1;
    marker(&pg, n);
    agent.wait_shipped(&pg);
    let segments = agent.metric("steward_wal_stream_segments_total");
    assert!(segments >= 3.0, "complete segments archived: {segments}");
    let mine = receivers(&spool);
    assert_eq!(mine.len(), 1, "one receiver: {mine:?}");

    // Mid-stream: the agent dies, its receiver (SIGKILL does not reach
    // children) goes on confirming WAL to the slot, and the server,
    // after a checkpoint, drops the segments the slot no longer holds:
    // only the spool has them now.
    let shipped_before = agent.metric("steward_wal_stream_shipped_lsn_bytes");
    agent.guard.kill();
    for _ in 0..3 {
        n += 1;
        marker(&pg, n);
        fill(&pg);
    }
    n += 1;
    marker(&pg, n);
    std::thread::sleep(Duration::from_secs(1));
    pg.psql("CHECKPOINT").unwrap();
    let oldest_on_server = pg
        .psql("SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
        .unwrap();
    let shipped_seg = format!(
        "00000001{:08X}{:08X}",
        (shipped_before as u64 >> 32),
        ((shipped_before as u64) & 0xffff_ffff) >> 24
    );
    assert!(
        oldest_on_server > shipped_seg,
        "the server dropped WAL the archive does not have yet (oldest on the server {oldest_on_server}, shipped up to {shipped_seg})"
    );
    let orphan = receivers(&spool);
    assert_eq!(orphan, mine, "the receiver outlived the agent");

    let agent = Agent::start(&env);
    agent.wait_for("streaming up again", Duration::from_secs(60), |a| {
        a.metric("steward_wal_stream_up") == 1.0
    });
    let now_running = receivers(&spool);
    assert_eq!(now_running.len(), 1, "{now_running:?}");
    assert_ne!(now_running, orphan, "the orphaned receiver was stopped");
    n += 1;
    marker(&pg, n);
    agent.wait_shipped(&pg);
    let retained = agent
        .scrape()
        .series_of("steward_wal_stream_slot_retained_bytes")
        .map(|(series, v)| (series.label("slot").map(str::to_string), v))
        .next();
    let (slot, retained) = retained.expect("slot lag exported");
    assert_eq!(slot.as_deref(), Some("steward"));
    assert!(
        (0.0..16.0 * 1024.0 * 1024.0).contains(&retained),
        "a streaming slot holds less than a segment: {retained}"
    );
    drop(agent);

    // The chain from the base backup to the newest segment has no gap,
    // and restore brings every marker back.
    let out = env.steward(&["backup", "verify", "db", "-i", s(&env.env.key), "--quiet"]);
    assert!(out.status.success(), "verify: {}", text(&out));
    let restored = env.restore_latest(&pg, "after-kill");
    assert_eq!(
        restored.psql("SELECT count(*), max(n) FROM markers"),
        format!("{n}|{n}")
    );
}
