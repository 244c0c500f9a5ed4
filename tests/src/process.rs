//! Child processes, free ports, readiness waits and the `steward` binary.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released for the service).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_tcp(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// A minimal HTTP/1.0 GET on loopback: returns (status, headers, body).
/// No client library so the harness checks exactly what is on the wire.
pub fn http_get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP header terminator in response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {head}"))?;
    Ok((status, head, body))
}

/// Waits until `GET path` answers 200.
pub fn wait_for_http(port: u16, path: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(port, path, &[]) {
            Ok((200, _, _)) => return Ok(()),
            Ok((s, _, _)) => last = format!("status {s}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("GET 127.0.0.1:{port}{path} not ready after {timeout:?}: {last}")
}

/// Kills (SIGTERM, then SIGKILL) and reaps its child on drop.
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Option<Child>,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(ChildGuard {
            child: Some(child),
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGHUP`) to the child.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Stops with SIGTERM and waits up to `timeout`; SIGKILL after that.
    pub fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        self.signal_pid(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL now, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal_pid(&self, pid: u32, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The `steward` binary of this checkout, built on first use so a plain
/// `cargo test` never runs a stale binary.
pub fn steward_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("STEWARD_BIN") {
            return PathBuf::from(p);
        }
        // Test binaries live in <target>/debug/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--quiet",
                "-p",
                "steward-agent",
                "--bin",
                "steward",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(workspace)
            .status()
            .expect("cannot run cargo to build steward");
        assert!(status.success(), "building the steward binary failed");
        profile_dir.join("steward")
    })
    .clone()
}

/// A running `steward agent` with its own config file and state directory.
#[derive(Debug)]
pub struct StewardAgent {
    pub guard: ChildGuard,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl StewardAgent {
    /// Starts `steward agent` with `config` (TOML without `[agent]`: the
    /// harness writes `[agent]` with a free port and a temp state dir; pass
    /// `extra_agent` lines to add keys to it). Waits for `/livez`.
    pub fn start(config: &str, extra_agent: &str) -> anyhow::Result<Self> {
        Self::start_with_env(config, extra_agent, &[])
    }

    pub fn start_with_env(
        config: &str,
        extra_agent: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let agent = Self::spawn(config, extra_agent, env, &[])?;
        if let Err(e) = wait_for_http(agent.port, "/livez", Duration::from_secs(30)) {
            anyhow::bail!("steward did not start: {e}\nlog:\n{}", agent.log());
        }
        Ok(agent)
    }

    /// Starts `steward agent` with extra command-line `args` (such as
    /// `--web.config.file`) and waits until its port accepts connections:
    /// with TLS or basic auth on, a plain `/livez` would not answer 200.
    pub fn start_with_args(config: &str, extra_agent: &str, args: &[&str]) -> anyhow::Result<Self> {
        let agent = Self::spawn(config, extra_agent, &[], args)?;
        if let Err(e) = wait_for_tcp(agent.port, Duration::from_secs(30)) {
            anyhow::bail!("steward did not start: {e}\nlog:\n{}", agent.log());
        }
        Ok(agent)
    }

    /// Starts `steward agent` with `env` and returns at once, without
    /// waiting for any port: for tests that watch the startup itself.
    pub fn spawn_with_env(
        config: &str,
        extra_agent: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn(config, extra_agent, env, &[])
    }

    fn spawn(
        config: &str,
        extra_agent: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state)?;
        let config_path = dir.path().join("steward.toml");
        std::fs::write(
            &config_path,
            format!(
                "[agent]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{}\"\n{extra_agent}\n{config}",
                state.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("steward.log"))?;
        let mut cmd = Command::new(steward_bin());
        cmd.arg("agent")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let guard = ChildGuard::spawn("steward", &mut cmd)?;
        Ok(StewardAgent {
            guard,
            port,
            dir,
            config_path,
        })
    }

    /// One scrape of `/metrics` as text.
    pub fn scrape(&self) -> anyhow::Result<String> {
        let (status, _, body) = http_get(self.port, "/metrics", &[])?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        Ok(String::from_utf8(body)?)
    }

    /// Everything steward wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("steward.log")).unwrap_or_default()
    }
}
