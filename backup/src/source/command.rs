//! A source that is a command's standard output (`pg_dump`, `mariadb-dump`):
//! `finish` checks the exit status, and optionally that the stream ends with
//! a completion trailer, and reports the command's stderr on failure.

use std::collections::VecDeque;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::source::Source;
use crate::target::ByteReader;

/// How much of stderr and of the stream's tail is kept for messages and
/// trailer checks.
const TAIL_BYTES: usize = 4096;

/// A command whose stdout is the backup stream.
pub struct CommandSource {
    description: String,
    program: String,
    command: Option<Command>,
    child: Option<Child>,
    stderr: Option<tokio::task::JoinHandle<Vec<u8>>>,
    /// When set, the stream must end with a line containing this text
    /// (`-- Dump completed` for mysqldump/mariadb-dump).
    trailer: Option<String>,
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl CommandSource {
    /// `command` must not have stdout/stderr configured; `description`
    /// names what it dumps (no secrets: passwords go in the environment).
    pub fn new(description: impl Into<String>, command: Command) -> Self {
        let program = command.as_std().get_program().to_string_lossy().to_string();
        CommandSource {
            description: description.into(),
            program,
            command: Some(command),
            child: None,
            stderr: None,
            trailer: None,
            tail: Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_BYTES))),
        }
    }

    /// Requires the stream to end with `trailer` (checked in `finish`).
    pub fn with_trailer(mut self, trailer: impl Into<String>) -> Self {
        self.trailer = Some(trailer.into());
        self
    }
}

#[async_trait]
impl Source for CommandSource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn open(&mut self) -> Result<ByteReader> {
        let mut command = self
            .command
            .take()
            .ok_or_else(|| Error::Other(format!("{} was already started", self.description)))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            Error::Source(format!(
                "{}: cannot run {}: {e}; install it or set bin_dir on the job",
                self.description, self.program
            ))
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Other("child stdout missing".into()))?;
        if let Some(mut stderr) = child.stderr.take() {
            self.stderr = Some(tokio::spawn(async move {
                // Keep the tail only: a chatty tool must not grow memory.
                let mut kept: VecDeque<u8> = VecDeque::with_capacity(TAIL_BYTES);
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    for &b in &buf[..n] {
                        if kept.len() == TAIL_BYTES {
                            kept.pop_front();
                        }
                        kept.push_back(b);
                    }
                }
                kept.into_iter().collect()
            }));
        }
        self.child = Some(child);
        let reader: ByteReader = if self.trailer.is_some() {
            Box::pin(TailKeeper {
                inner: stdout,
                tail: Arc::clone(&self.tail),
            })
        } else {
            Box::pin(stdout)
        };
        Ok(reader)
    }

    async fn finish(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::Source(format!(
                "{} was never started",
                self.description
            )));
        };
        let status = child.wait().await.map_err(|e| {
            Error::Source(format!(
                "{}: waiting for {}: {e}",
                self.description, self.program
            ))
        })?;
        let stderr = match self.stderr.take() {
            Some(h) => h.await.unwrap_or_default(),
            None => Vec::new(),
        };
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        let said = if stderr.is_empty() {
            String::new()
        } else {
            format!(": {}", last_lines(&stderr, 5))
        };
        if !status.success() {
            let how = match status.code() {
                Some(code) => format!("exited with status {code}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("was killed by signal {}", status.signal().unwrap_or(0))
                }
            };
            return Err(Error::Source(format!(
                "{}: {} {how}{said}",
                self.description, self.program
            )));
        }
        if let Some(trailer) = &self.trailer {
            let tail: Vec<u8> = self
                .tail
                .lock()
                .map(|t| t.iter().copied().collect())
                .unwrap_or_default();
            let tail = String::from_utf8_lossy(&tail);
            if !tail.contains(trailer.as_str()) {
                return Err(Error::Source(format!(
                    "{}: {} exited 0 but its output does not end with {trailer:?}: the dump is truncated{said}",
                    self.description, self.program
                )));
            }
        }
        Ok(())
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Passes bytes through and keeps the last [`TAIL_BYTES`] of them.
struct TailKeeper<R> {
    inner: R,
    tail: Arc<Mutex<VecDeque<u8>>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for TailKeeper<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            if let Ok(mut tail) = self.tail.lock() {
                let skip = new.len().saturating_sub(TAIL_BYTES);
                for &b in &new[skip..] {
                    if tail.len() == TAIL_BYTES {
                        tail.pop_front();
                    }
                    tail.push_back(b);
                }
            }
        }
        poll
    }
}

/// The first line a tool prints for `--version`, e.g.
/// `pg_dump (PostgreSQL) 15.8`; `None` when it cannot run.
pub async fn tool_version(program: &std::path::Path) -> Option<String> {
    let out = Command::new(program).arg("--version").output().await.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// Runs a short query tool (psql, mariadb) and returns its stdout, or an
/// error with the tool's stderr.
pub async fn run_capture(what: &str, mut command: Command) -> Result<String> {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let program = command.as_std().get_program().to_string_lossy().to_string();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
        .await
        .map_err(|_| Error::Source(format!("{what}: {program} did not answer within 120s")))?
        .map_err(|e| {
            Error::Source(format!(
                "{what}: cannot run {program}: {e}; install it or set bin_dir on the job"
            ))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Source(format!(
            "{what}: {program} failed ({}): {}",
            out.status,
            last_lines(stderr.trim(), 5)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}
