//! A throwaway MariaDB server: `mariadb-install-db` in a temp dir, `mariadbd`
//! on a free loopback port and a private unix socket, with a root password
//! (no socket-only auth), stopped on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, ChildGuard};

/// A running MariaDB server. `root`/`root_password` works over TCP
/// (`127.0.0.1:port`) and over `socket`.
#[derive(Debug)]
pub struct Mariadb {
    pub port: u16,
    pub socket: PathBuf,
    pub root_password: String,
    pub data_dir: PathBuf,
    guard: Option<ChildGuard>,
    /// Extra server options (binary logging).
    extra: Vec<String>,
    /// Owns every file of the server; removed after it stopped.
    pub dir: tempfile::TempDir,
}

impl Mariadb {
    /// Initialises a data directory and starts the server.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// A server writing row-based binary logs (`mysql-bin.*` in the data
    /// directory), as point-in-time recovery needs.
    pub fn start_with_binlog() -> anyhow::Result<Self> {
        Self::start_with(&[
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--server-id=1",
        ])
    }

    /// Starts with extra `mariadbd` options.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let install_db = tool_path("mariadb-install-db")?;
        tool_path("mariadbd")?;
        tool_path("mariadb")?;
        let dir = tempfile::Builder::new()
            .prefix("steward-mariadb-")
            .tempdir()?;
        let data_dir = dir.path().join("data");
        // Its own temporary directory (mariadbd's default is $TMPDIR or
        // /tmp): installs running at the same time in one /tmp saw their
        // internal temporary tables vanish and aborted.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp)?;
        let out = Command::new(install_db)
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data_dir.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run mariadb-install-db: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = Mariadb {
            port: free_port(),
            socket: dir.path().join("mysqld.sock"),
            root_password: format!("maria-test-{}-{}", std::process::id(), free_port()),
            data_dir,
            guard: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        db.start_server()?;
        // Fresh root has no password: set one and allow root over TCP
        // (skip-name-resolve makes TCP clients match '127.0.0.1', not
        // 'localhost').
        let pw = db.root_password.replace('\'', "''");
        db.mysql_with(
            None,
            &format!(
                "ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}';\
                 CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\
                 ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}';\
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\
                 FLUSH PRIVILEGES;"
            ),
        )?;
        Ok(db)
    }

    /// `mysql://root:password@127.0.0.1:port/`.
    pub fn dsn(&self) -> String {
        format!(
            "mysql://root:{}@127.0.0.1:{}/",
            self.root_password, self.port
        )
    }

    /// Runs SQL as root through the `mariadb` client over the socket;
    /// returns tab-separated rows without column names, trimmed.
    pub fn mysql(&self, sql: &str) -> anyhow::Result<String> {
        self.mysql_with(Some(&self.root_password), sql)
    }

    fn mysql_with(&self, password: Option<&str>, sql: &str) -> anyhow::Result<String> {
        let mut cmd = self.command("mariadb");
        cmd.args(["-N", "-B", "-e", sql]);
        if password.is_none() {
            // Before the first ALTER USER root has no password yet.
            cmd.env_remove("MYSQL_PWD");
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        anyhow::ensure!(
            out.status.success(),
            "mariadb client on port {} failed for {sql:?}: {}",
            self.port,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A command for a client tool (`mariadb`, `mariadb-dump`, ...) that
    /// connects as root over the socket; the password travels in
    /// `MYSQL_PWD`, not on the command line.
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool_path(tool).unwrap_or_else(|_| PathBuf::from(tool)));
        cmd.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--user=root")
            .env("MYSQL_PWD", &self.root_password);
        cmd
    }

    /// Pid of mariadbd (0 while stopped).
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(|g| g.pid()).unwrap_or(0)
    }

    /// The server error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mariadb.err")).unwrap_or_default()
    }

    /// Clean shutdown (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.stop(Duration::from_secs(30));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.kill();
        }
    }

    /// Starts the server again on the same port, socket and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_server()
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new(tool_path("mariadbd")?);
        cmd.env("TMPDIR", self.dir.path().join("tmp"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadb.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.dir.path().join("mariadb.err").display()
            ))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=100",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = ChildGuard::spawn("mariadbd", &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = guard.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    guard.child = None;
                    anyhow::bail!("mariadbd exited at start ({status}); log:\n{}", self.log());
                }
            }
            if self.socket.exists()
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                self.guard = Some(guard);
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("mariadbd not ready after 60s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where `tool` is: on PATH or in /usr/sbin (mariadbd lives there, which is
/// not on every user's PATH); a clear error when it is not installed.
pub fn tool_path(tool: &str) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/sbin"));
    if let Some(found) = dirs.iter().map(|d| d.join(tool)).find(|p| p.exists()) {
        return Ok(found);
    }
    anyhow::bail!("{tool} not found: install the Debian packages mariadb-server and mariadb-client (see scripts/apt-packages.txt)")
}
