//! A throwaway PHP-FPM master (Debian `php-fpmX.Y`, started with `-n -F -R`)
//! with two pools: `www` on a unix socket (static, 2 workers, status at
//! `/status`) and `api` on a loopback TCP port (dynamic, status at
//! `/fpm-status`). Restartable on the same socket and port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::nginx::{find_bin, running_as_root};
use crate::process::{free_port, ChildGuard};

/// Workers of the static `www` pool.
pub const WWW_CHILDREN: u32 = 2;

/// A running PHP-FPM master.
#[derive(Debug)]
pub struct PhpFpm {
    /// Unix socket of pool `www`; status path `/status`.
    pub www_socket: PathBuf,
    /// TCP port of pool `api` on 127.0.0.1; status path `/fpm-status`.
    pub api_port: u16,
    guard: Option<ChildGuard>,
    pub dir: tempfile::TempDir,
}

impl PhpFpm {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("steward-fpm-").tempdir()?;
        let www_socket = dir.path().join("www.sock");
        let api_port = free_port();
        let d = dir.path().display();
        let user = if running_as_root() {
            "user = root\ngroup = root\n"
        } else {
            ""
        };
        let conf = format!(
            "[global]
pid = {d}/php-fpm.pid
error_log = {d}/php-fpm.log
daemonize = no

[www]
{user}listen = {sock}
listen.mode = 0666
pm = static
pm.max_children = {WWW_CHILDREN}
pm.status_path = /status
ping.path = /ping

[api]
{user}listen = 127.0.0.1:{api_port}
pm = dynamic
pm.max_children = 3
pm.start_servers = 1
pm.min_spare_servers = 1
pm.max_spare_servers = 2
pm.status_path = /fpm-status
",
            sock = www_socket.display()
        );
        std::fs::write(dir.path().join("php-fpm.conf"), conf)?;
        let mut fpm = PhpFpm {
            www_socket,
            api_port,
            guard: None,
            dir,
        };
        fpm.boot()?;
        Ok(fpm)
    }

    fn boot(&mut self) -> anyhow::Result<()> {
        let bin = php_fpm_bin()?;
        let _ = std::fs::remove_file(&self.www_socket);
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("stderr.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.args(["-n", "-F", "-y"])
            .arg(d.join("php-fpm.conf"))
            .arg("-p")
            .arg(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if running_as_root() {
            cmd.arg("-R");
        }
        self.guard = Some(ChildGuard::spawn("php-fpm", &mut cmd)?);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let unix_ready = std::os::unix::net::UnixStream::connect(&self.www_socket).is_ok();
            let tcp_ready = std::net::TcpStream::connect(("127.0.0.1", self.api_port)).is_ok();
            if unix_ready && tcp_ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "php-fpm ({}) did not start within 15s\nlog:\n{}\nstderr:\n{}",
                    bin.display(),
                    std::fs::read_to_string(d.join("php-fpm.log")).unwrap_or_default(),
                    std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the master (SIGTERM; it stops its workers and removes sockets).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(10));
        }
    }

    /// Starts it again on the same socket and port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.boot()
    }

    /// `unix://<www.sock>;/status` in the anchor's syntax.
    pub fn www_scrape_uri(&self) -> String {
        format!("unix://{};/status", self.www_socket.display())
    }

    /// `tcp://127.0.0.1:<port>/fpm-status`
    pub fn api_scrape_uri(&self) -> String {
        format!("tcp://127.0.0.1:{}/fpm-status", self.api_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("php-fpm.log")).unwrap_or_default()
    }

    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest `php-fpmX.Y` installed (Debian names it by version).
pub fn php_fpm_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = find_bin(&["php-fpm"], &[]) {
        return Ok(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/sbin")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("php-fpm"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        anyhow::anyhow!(
            "no php-fpm binary in PATH or /usr/sbin; install the Debian package php-fpm (scripts/apt-packages.txt)"
        )
    })
}
