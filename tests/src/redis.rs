//! A throwaway redis-server on a free loopback port and a unix socket in a
//! temp dir (no persistence, optional password), `redis-cli` against it, and
//! the Debian `prometheus-redis-exporter` (redis_exporter 1.45) pointed at
//! it as the anchor to compare with.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::nginx::find_bin;
use crate::process::{free_port, wait_for_http, ChildGuard};

/// A running redis-server.
#[derive(Debug)]
pub struct Redis {
    pub port: u16,
    /// Unix socket serving the same server.
    pub socket: PathBuf,
    /// `requirepass`, when started with one.
    pub password: Option<String>,
    _guard: ChildGuard,
    pub dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server without a password.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_password(None)
    }

    /// Starts redis-server; with `password`, clients must AUTH.
    pub fn start_with_password(password: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with_conf(password, "")
    }

    /// Starts redis-server with a TLS port besides the plain one (which
    /// `cli` keeps using): `cert`/`key` its certificate, `ca` the CA of the
    /// client certificates it requires when `auth_clients`. Returns the
    /// server and its TLS port.
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        auth_clients: bool,
    ) -> anyhow::Result<(Self, u16)> {
        Self::start_tls_with_password(cert, key, ca, auth_clients, None)
    }

    /// [`Redis::start_tls`] with `requirepass` on both ports.
    pub fn start_tls_with_password(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        auth_clients: bool,
        password: Option<&str>,
    ) -> anyhow::Result<(Self, u16)> {
        let tls_port = free_port();
        let conf = format!(
            "tls-port {tls_port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients {}\n",
            cert.display(),
            key.display(),
            ca.display(),
            if auth_clients { "yes" } else { "no" }
        );
        Ok((Self::start_with_conf(password, &conf)?, tls_port))
    }

    /// Starts redis-server with `extra` lines appended to its configuration.
    pub fn start_with_conf(password: Option<&str>, extra: &str) -> anyhow::Result<Self> {
        let bin = find_bin(&["redis-server"], &["/usr/bin/redis-server"]).ok_or_else(|| {
            anyhow::anyhow!(
                "redis-server is not installed; install the Debian package redis-server (scripts/apt-packages.txt)"
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("steward-redis-")
            .tempdir()?;
        let port = free_port();
        let socket = dir.path().join("redis.sock");
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nunixsocket {}\nunixsocketperm 700\ndir {}\nsave \"\"\nappendonly no\ndaemonize no\nlogfile {}\n",
            socket.display(),
            dir.path().display(),
            dir.path().join("redis.log").display()
        );
        if let Some(p) = password {
            conf.push_str(&format!("requirepass {p}\n"));
        }
        conf.push_str(extra);
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf)?;
        let guard = ChildGuard::spawn(
            "redis-server",
            Command::new(bin)
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        let redis = Redis {
            port,
            socket,
            password: password.map(str::to_string),
            _guard: guard,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match redis.cli(&["PING"]) {
                Ok(out) if out.trim() == "PONG" => return Ok(redis),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                other => anyhow::bail!(
                    "redis-server did not start: {other:?}\nredis.log:\n{}",
                    std::fs::read_to_string(redis.dir.path().join("redis.log")).unwrap_or_default()
                ),
            }
        }
    }

    /// Runs `redis-cli` with `args` against this server; returns stdout.
    /// The password goes through REDISCLI_AUTH, never the command line.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null());
        if let Some(p) = &self.password {
            cmd.env("REDISCLI_AUTH", p);
        }
        let out = cmd.output().map_err(|e| {
            anyhow::anyhow!("cannot run redis-cli (Debian package redis-tools): {e}")
        })?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// The Debian prometheus-redis-exporter scraping one Redis.
pub struct RedisExporter {
    pub port: u16,
    _guard: ChildGuard,
}

impl RedisExporter {
    /// Starts the exporter on `redis`; `extra` are more flags (such as
    /// `--check-single-keys=...`).
    pub fn start(redis: &Redis, extra: &[&str]) -> anyhow::Result<Self> {
        let bin = find_bin(&["prometheus-redis-exporter"], &[]).ok_or_else(|| {
            anyhow::anyhow!(
                "prometheus-redis-exporter is not installed; install the Debian package of that name (scripts/apt-packages.txt)"
            )
        })?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--redis.addr={}", redis.url()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &redis.password {
            cmd.env("REDIS_PASSWORD", p);
        }
        let guard = ChildGuard::spawn("prometheus-redis-exporter", &mut cmd)?;
        wait_for_http(port, "/metrics", Duration::from_secs(15))?;
        Ok(RedisExporter {
            port,
            _guard: guard,
        })
    }

    pub fn scrape(&self) -> anyhow::Result<String> {
        let (status, _, body) = crate::process::http_get(self.port, "/metrics", &[])?;
        anyhow::ensure!(status == 200, "exporter /metrics answered {status}");
        Ok(String::from_utf8(body)?)
    }
}
