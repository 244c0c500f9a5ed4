//! A throwaway PostgreSQL server: `initdb` in a temp dir, `postgres` on a free
//! loopback port with password (scram) auth over TCP, stopped on drop.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! cluster belongs to the system user `steward-test` (created if missing) and
//! the server is started through `setpriv`, which execs in place: the guarded
//! pid is the postmaster itself, so signals reach it directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{free_port, ChildGuard};

/// The OS user that owns test clusters when the suite runs as root.
pub const TEST_OS_USER: &str = "steward-test";

/// Superuser name created by `initdb`.
pub const SUPERUSER: &str = "postgres";

/// A running PostgreSQL cluster. Connect over TCP on `127.0.0.1:port` as
/// `superuser`/`password`, or over the unix socket in `socket_dir`.
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    pub superuser: String,
    pub password: String,
    /// `PGDATA` of the cluster.
    pub data_dir: PathBuf,
    /// Directory of the unix socket (`.s.PGSQL.<port>`).
    pub socket_dir: PathBuf,
    /// Directory holding `postgres`, `psql`, `pg_dump`, `pg_basebackup`, ...
    pub bin_dir: PathBuf,
    /// Extra `-c name=value` settings given at start (kept for restarts).
    settings: Vec<(String, String)>,
    guard: Option<ChildGuard>,
    /// Owns every file of the cluster; removed after the server stopped.
    pub dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a fresh cluster with default settings.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a fresh cluster with extra server settings, e.g.
    /// `&[("wal_level", "replica"), ("archive_mode", "on")]`.
    pub fn start_with(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bin_dir = pg_bin_dir()?;
        let dir = tempfile::Builder::new().prefix("steward-pg-").tempdir()?;
        let owner = test_owner()?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("sock");
        std::fs::create_dir_all(&socket_dir)?;
        let password = format!("pg-test-{}-{}", std::process::id(), free_port());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if let Some(o) = &owner {
            chown_tree(dir.path(), o)?;
        }

        let out = as_owner(&owner, &bin_dir.join("initdb"))
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run initdb in {}: {e}", bin_dir.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&pwfile);

        let mut pg = Postgres {
            port: free_port(),
            superuser: SUPERUSER.to_string(),
            password,
            data_dir,
            socket_dir,
            bin_dir,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            guard: None,
            dir,
        };
        pg.start_server()?;
        Ok(pg)
    }

    /// `postgres://user:password@127.0.0.1:port/postgres`.
    pub fn dsn(&self) -> String {
        self.dsn_for("postgres")
    }

    /// DSN of another database on this server.
    pub fn dsn_for(&self, dbname: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{dbname}",
            self.superuser, self.password, self.port
        )
    }

    /// Runs SQL through `psql` (TCP, password auth) in database `postgres`
    /// and returns its unaligned, tuples-only output, trimmed.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_db("postgres", sql)
    }

    /// As [`Postgres::psql`] in database `dbname`.
    pub fn psql_db(&self, dbname: &str, sql: &str) -> anyhow::Result<String> {
        let out = self
            .command("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-d", dbname, "-c", sql])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "psql on port {} failed for {sql:?}: {}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A command for a client binary of this installation (`psql`,
    /// `pg_dump`, `pg_basebackup`, ...) with `PGHOST`/`PGPORT`/`PGUSER`/
    /// `PGPASSWORD` set for this server over TCP.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.superuser)
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", "postgres")
            .env("PGCONNECT_TIMEOUT", "5");
        cmd
    }

    /// Pid of the postmaster (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(|g| g.pid()).unwrap_or(0)
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Fast shutdown (SIGINT: disconnects clients, checkpoints) and waits.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.signal(libc::SIGINT);
            wait_exit(&mut guard, Duration::from_secs(15));
            guard.kill();
        }
    }

    /// SIGKILL of the postmaster, as a crash would; its backends notice the
    /// dead postmaster and exit on their own.
    pub fn kill(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.kill();
        }
    }

    /// Starts the server again on the same port and data directory (after
    /// [`Postgres::stop`] or [`Postgres::kill`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // After a crash, orphaned backends may hold the shared memory
            // segment for a moment: the postmaster then refuses to start.
            match self.start_server() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let owner = test_owner()?;
        let log_path = self.dir.path().join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = as_owner(&owner, &self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
            .args(["-c", "max_connections=50"]);
        for (k, v) in &self.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut guard = ChildGuard::spawn("postgres", &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = guard.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    guard.child = None;
                    anyhow::bail!(
                        "postgres exited at start ({status}); log {}:\n{}",
                        log_path.display(),
                        self.log()
                    );
                }
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                self.guard = Some(guard);
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("postgres not ready after 60s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_exit(guard: &mut ChildGuard, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match guard.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                guard.child = None;
                return;
            }
        }
    }
}

/// The newest installed `/usr/lib/postgresql/<major>/bin` (or `$STEWARD_PG_BIN`).
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("STEWARD_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut majors: Vec<u32> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    majors.sort_unstable();
    let major = majors.into_iter().rev().find(|m| {
        root.join(m.to_string())
            .join("bin")
            .join("postgres")
            .exists()
    });
    match major {
        Some(m) => Ok(root.join(m.to_string()).join("bin")),
        None => anyhow::bail!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
             install the Debian package postgresql (see scripts/apt-packages.txt) \
             or set STEWARD_PG_BIN"
        ),
    }
}

/// Uid/gid the cluster runs as, or None when the tests are not root.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// When running as root: the `steward-test` system user (created once).
pub fn test_owner() -> anyhow::Result<Option<Owner>> {
    static OWNER: OnceLock<Result<Option<Owner>, String>> = OnceLock::new();
    OWNER
        .get_or_init(|| resolve_owner().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn resolve_owner() -> anyhow::Result<Option<Owner>> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let lookup = || -> Option<Owner> {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id")
                .arg(flag)
                .arg(TEST_OS_USER)
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        Some(Owner {
            uid: id("-u")?,
            gid: id("-g")?,
        })
    };
    if let Some(o) = lookup() {
        return Ok(Some(o));
    }
    // Several test binaries may race here; "already exists" (9) is fine.
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            TEST_OS_USER,
        ])
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run useradd to create {TEST_OS_USER}: {e}"))?;
    lookup().map(Some).ok_or_else(|| {
        anyhow::anyhow!("cannot create system user {TEST_OS_USER} (useradd: {status})")
    })
}

fn effective_uid() -> anyhow::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Uid line in /proc/self/status"))
}

/// Gives `path` and everything below it to `owner`.
pub fn chown_tree(path: &Path, owner: &Owner) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    Ok(())
}

/// A command that runs `program` as `owner` (via `setpriv`, which execs in
/// place) or as ourselves when `owner` is None.
pub fn as_owner(owner: &Option<Owner>, program: &Path) -> Command {
    match owner {
        Some(o) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", o.uid))
                .arg(format!("--regid={}", o.gid))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            // HOME of root is not readable for the test user.
            cmd.env("HOME", "/tmp");
            cmd
        }
        None => Command::new(program),
    }
}
