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
    /// The tail of stderr, once `finish` has read it.
    stderr_seen: String,
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
            stderr_seen: String::new(),
        }
    }

    /// The last few KiB the command wrote to stderr, after `finish` (tools
    /// that report results there: `pg_basebackup -v` prints its LSNs).
    pub fn stderr(&self) -> &str {
        &self.stderr_seen
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
        let (pipe, stdout_end) = PipeReader::pipe()
            .map_err(|e| Error::Source(format!("{}: cannot make a pipe: {e}", self.description)))?;
        without_secrets(command.as_std_mut());
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout_end))
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            Error::Source(format!(
                "{}: cannot run {}: {e}; install it or set bin_dir on the job",
                self.description, self.program
            ))
        })?;
        // The command still holds the pipe's write end: drop it, or the
        // stream would never end.
        drop(command);
        let stdout = pipe.spawn();
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
        self.stderr_seen = stderr.clone();
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

/// Reads a dump tool's stdout in large pieces, on a blocking thread.
///
/// pg_dump and mariadb-dump write through stdio, 4 KiB at a time. Two
/// things would turn each of those writes into a wake-up of this process
/// (some 230,000 for a 1 GB dump, costing more CPU on a small host than
/// the sha256 of the whole stream):
/// - a pipe that was ever registered with epoll (tokio's `ChildStdout`)
///   wakes its poller on every write, not only when it was empty;
/// - a reader that is always waiting takes each write as it comes.
///
/// So the pipe is made here, never polled, enlarged to [`PIPE_BYTES`],
/// and read with blocking reads; after a short read the next one waits
/// [`NAP`] while the tool keeps writing (1 MiB holds several milliseconds
/// of any dump tool's output), so the next read takes all of it at once.
/// When the pipe cannot be enlarged (a lower `fs.pipe-max-size`) there is
/// no nap: a 64 KiB pipe would fill during one and stall the tool.
struct PipeReader {
    file: std::fs::File,
    nap_after_short_reads: bool,
}

/// The pipe size asked for (the default `fs.pipe-max-size`).
const PIPE_BYTES: usize = 1024 * 1024;
/// Pieces handed to the pipeline.
const PIECE_BYTES: usize = 256 * 1024;
/// A read shorter than this was a reader that came too early.
const SHORT_READ_BYTES: usize = 64 * 1024;
/// How long to let the pipe fill after a short read.
const NAP: std::time::Duration = std::time::Duration::from_millis(1);
/// Pieces in flight between the reading thread and the pipeline.
const PIECES_IN_FLIGHT: usize = 4;

impl PipeReader {
    /// A pipe whose write end goes to the child as its stdout.
    fn pipe() -> std::io::Result<(PipeReader, std::os::fd::OwnedFd)> {
        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let nap_after_short_reads = matches!(
            rustix::pipe::fcntl_setpipe_size(&read_end, PIPE_BYTES),
            Ok(size) if size >= PIPE_BYTES
        );
        let reader = PipeReader {
            file: std::fs::File::from(read_end),
            nap_after_short_reads,
        };
        Ok((reader, write_end))
    }

    /// Starts the reading thread; the returned reader ends at the pipe's
    /// end (every writer closed it) or with the read error.
    fn spawn(self) -> impl AsyncRead + Send + Unpin + 'static {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(PIECES_IN_FLIGHT);
        tokio::task::spawn_blocking(move || self.pump(tx));
        let pieces = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|piece| (piece, rx))
        });
        tokio_util::io::StreamReader::new(Box::pin(pieces))
    }

    fn pump(mut self, tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>) {
        use std::io::Read;
        loop {
            let mut piece = vec![0u8; PIECE_BYTES];
            let mut filled = 0;
            let mut end = false;
            while filled < PIECE_BYTES {
                match self.file.read(&mut piece[filled..]) {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(n) => {
                        filled += n;
                        if self.nap_after_short_reads
                            && n < SHORT_READ_BYTES
                            && filled < PIECE_BYTES
                        {
                            std::thread::sleep(NAP);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            piece.truncate(filled);
            if filled > 0 && tx.blocking_send(Ok(bytes::Bytes::from(piece))).is_err() {
                // The pipeline stopped reading; dropping the pipe lets the
                // tool see EPIPE instead of blocking forever.
                return;
            }
            if end {
                return;
            }
        }
    }
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

/// Removes from `command`'s environment what no dump or client tool needs
/// and every one of them could leak: the age identity (`STEWARD_IDENTITY*`,
/// the private key a drill or restore holds) and the S3 credentials
/// (`AWS_*`). Both inherited and explicitly set variables go; the
/// database's own (`PGPASSWORD`, `MYSQL_PWD`) stay.
pub fn without_secrets(command: &mut std::process::Command) {
    let inherited = std::env::vars_os().map(|(k, _)| k);
    let set: Vec<std::ffi::OsString> = command.get_envs().map(|(k, _)| k.to_owned()).collect();
    for name in inherited.chain(set) {
        let secret = name
            .to_str()
            .is_some_and(|n| n.starts_with("STEWARD_IDENTITY") || n.starts_with("AWS_"));
        if secret {
            command.env_remove(&name);
        }
    }
}

/// The first line a tool prints for `--version`, e.g.
/// `pg_dump (PostgreSQL) 15.8`; `None` when it cannot run.
pub async fn tool_version(program: &std::path::Path) -> Option<String> {
    let mut command = Command::new(program);
    without_secrets(command.as_std_mut());
    let out = command.arg("--version").output().await.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// Runs a short query tool (psql, mariadb) and returns its stdout, or an
/// error with the tool's stderr.
pub async fn run_capture(what: &str, mut command: Command) -> Result<String> {
    without_secrets(command.as_std_mut());
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(source: &mut CommandSource) -> Vec<u8> {
        let mut reader = source.open().await.expect("the command starts");
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .await
            .expect("the stream reads");
        out
    }

    fn shell(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[tokio::test]
    async fn many_small_writes_arrive_whole_and_in_order() {
        // 20,000 writes of one line each, as a dump tool's stdio does.
        let mut source = CommandSource::new(
            "test",
            shell("i=0; while [ $i -lt 20000 ]; do echo \"row $i\"; i=$((i+1)); done"),
        );
        let got = read_all(&mut source).await;
        source.finish().await.expect("sh exits 0");
        let want: String = (0..20000).map(|i| format!("row {i}\n")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    #[tokio::test]
    async fn a_slow_writer_is_read_to_its_end() {
        // Each write is short and followed by a pause longer than the nap.
        let mut source = CommandSource::new(
            "test",
            shell("printf a; sleep 0.2; printf b; sleep 0.2; printf c"),
        );
        assert_eq!(read_all(&mut source).await, b"abc");
        source.finish().await.expect("sh exits 0");
    }

    #[tokio::test]
    async fn a_tool_killed_mid_stream_is_a_failure_not_an_end() {
        let mut source = CommandSource::new("test", shell("echo partial; kill -9 $$"));
        assert_eq!(read_all(&mut source).await, b"partial\n");
        let err = source.finish().await.expect_err("a killed tool fails");
        assert!(err.to_string().contains("killed by signal 9"), "{err}");
    }

    #[tokio::test]
    async fn child_tools_see_neither_the_identity_nor_s3_credentials() {
        let mut c = shell("env");
        c.env("STEWARD_IDENTITY", "AGE-SECRET-KEY-1TEST")
            .env("AWS_SECRET_ACCESS_KEY", "s3-secret")
            .env("PGPASSWORD", "db-password");
        let mut source = CommandSource::new("test", c);
        let seen = String::from_utf8(read_all(&mut source).await).unwrap();
        source.finish().await.expect("env exits 0");
        assert!(
            !seen.contains("AGE-SECRET-KEY") && !seen.contains("s3-secret"),
            "{seen}"
        );
        assert!(seen.contains("PGPASSWORD=db-password"), "{seen}");
    }

    #[test]
    fn the_pipe_is_enlarged_when_the_system_allows() {
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let (reader, _write_end) = PipeReader::pipe().expect("a pipe");
        let size = rustix::pipe::fcntl_getpipe_size(&reader.file).expect("F_GETPIPE_SZ");
        assert_eq!(reader.nap_after_short_reads, max >= PIPE_BYTES);
        if max >= PIPE_BYTES {
            assert!(size >= PIPE_BYTES, "pipe is {size} bytes");
        }
    }
}
