//! Running client tools (psql, pg_restore, mariadb): capture their output,
//! feed them a checked object stream, and turn failures into messages that
//! name the command and quote the end of its stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};
use crate::restore::stream::{take_fault, FaultSlot, ObjectFault};
use crate::source::command::without_secrets;

/// Resolves a tool: in `bin_dir` when given, else the first of `names` on
/// `PATH` (e.g. `mariadb` before `mysql`).
pub fn find_tool(bin_dir: Option<&Path>, names: &[&str]) -> Result<PathBuf> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(d) => vec![d.to_path_buf()],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    };
    for name in names {
        for d in &dirs {
            let candidate = d.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(Error::Other(format!(
        "cannot find {} in {}; install the database client tools (Debian: postgresql-client or mariadb-client) or set the job's bin_dir",
        names.join(" or "),
        match bin_dir {
            Some(d) => d.display().to_string(),
            None => "PATH".to_string(),
        }
    )))
}

/// The last lines of a tool's stderr, for an error message.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(6);
    lines[start..].join(" | ")
}

/// Describes a command for messages: the program name and its arguments
/// (they never hold secrets: passwords go through the environment).
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().to_string()));
    parts.join(" ")
}

/// Runs `cmd` with `stdin` as its input; returns stdout, or an error with
/// the command and its stderr.
pub fn run_capture(cmd: &mut Command, stdin: &str) -> Result<String> {
    let what = describe(cmd);
    without_secrets(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Other(format!("cannot run `{what}`: {e}")))?;
    let stderr = collect(child.stderr.take());
    let stdout = collect(child.stdout.take());
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes());
    }
    let status = child
        .wait()
        .map_err(|e| Error::Other(format!("`{what}` did not finish: {e}")))?;
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::Other(format!(
            "`{what}` failed ({status}): {}",
            tail(&err)
        )));
    }
    Ok(out)
}

fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let mut raw = Vec::new();
            let _ = p.read_to_end(&mut raw);
            text = String::from_utf8_lossy(&raw).into_owned();
        }
        text
    })
}

/// Asks for a 1 MiB pipe (the default `fs.pipe-max-size`) instead of
/// 64 KiB: fewer wake-ups of the tool and of this process per gigabyte.
/// Best effort: a smaller pipe only costs time.
pub fn enlarge_pipe(pipe: &impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(pipe, 1024 * 1024);
}

/// Why feeding an object to a tool failed.
#[derive(Debug)]
pub enum FeedError {
    /// The stored object is bad (the tool was stopped before it finished).
    Object(ObjectFault),
    /// The tool failed or could not be run.
    Tool(String),
}

impl From<FeedError> for Error {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Object(f) => f.into(),
            FeedError::Tool(m) => Error::Other(m),
        }
    }
}

/// What a tool printed.
#[derive(Debug, Default)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Copies `input` (a checked object stream) into `cmd`'s stdin. The tool's
/// stdin is closed only after the stream verified, so a corrupt object
/// makes the tool see a killed pipe, never a clean end of input; the tool
/// is killed on any fault. A tool that stops reading early (e.g.
/// `pg_restore --list` once it has the table of contents) is fine: the rest
/// of the object is still read and checked.
pub fn feed(
    cmd: &mut Command,
    mut input: impl Read,
    slot: &FaultSlot,
) -> std::result::Result<ToolOutput, FeedError> {
    let what = describe(cmd);
    without_secrets(cmd);
    let mut child: Child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FeedError::Tool(format!("cannot run `{what}`: {e}")))?;
    let stderr = collect(child.stderr.take());
    let stdout = collect(child.stdout.take());
    let mut stdin = child.stdin.take();
    if let Some(pipe) = &stdin {
        enlarge_pipe(pipe);
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut read_error = None;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if let Some(pipe) = stdin.as_mut() {
            if pipe.write_all(&buf[..n]).is_err() {
                stdin = None;
                // The tool closed its input: if it failed, say so now rather
                // than after reading gigabytes; if it succeeded (it had all
                // it needed), keep checking the rest of the object.
                let status = child
                    .wait()
                    .map_err(|e| FeedError::Tool(format!("`{what}` did not finish: {e}")))?;
                if !status.success() {
                    let err = stderr.join().unwrap_or_default();
                    return Err(FeedError::Tool(format!(
                        "`{what}` failed ({status}): {}",
                        tail(&err)
                    )));
                }
            }
        }
    }
    if let Some(e) = read_error {
        let _ = child.kill();
        let _ = child.wait();
        drop(stdin);
        let fault = take_fault(slot);
        return Err(match fault {
            Some(f) => FeedError::Object(f),
            None => FeedError::Tool(format!("reading the snapshot for `{what}` failed: {e}")),
        });
    }
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| FeedError::Tool(format!("`{what}` did not finish: {e}")))?;
    let output = ToolOutput {
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if !status.success() {
        return Err(FeedError::Tool(format!(
            "`{what}` failed ({status}): {}",
            tail(&output.stderr)
        )));
    }
    Ok(output)
}
