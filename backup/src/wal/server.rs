//! Starting a restored cluster and watching its recovery: `pg_ctl` as the
//! data directory's owner, on 127.0.0.1 only, until recovery has ended and
//! the cluster is in production; then a restart without the environment
//! the restore_command needed (archive credentials, the key).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::manifest::PgBaseInfo;
use crate::restore::Progress;

/// Who owns the restored files and runs the server: the owner of the
/// existing empty data directory, or ourselves for one created here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `--pg-bin`, else Debian's directory for the backup's major version,
/// else `PATH` (empty).
pub(crate) fn pg_bin(explicit: Option<&Path>, base: &PgBaseInfo) -> PathBuf {
    if let Some(b) = explicit {
        return b.to_path_buf();
    }
    let debian = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        base.server_version_num / 10000
    ));
    if debian.join("pg_ctl").exists() {
        debian
    } else {
        PathBuf::new()
    }
}

fn pg_command(bin: &Path, tool: &str, owner: Owner) -> tokio::process::Command {
    let program = if bin.as_os_str().is_empty() {
        PathBuf::from(tool)
    } else {
        bin.join(tool)
    };
    let mut c = tokio::process::Command::new(program);
    if rustix::process::geteuid().as_raw() != owner.uid {
        c.uid(owner.uid).gid(owner.gid);
    }
    c.env("LC_ALL", "C").stdin(Stdio::null()).kill_on_drop(true);
    c
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// While recovery runs, the server's environment holds the archive's
/// credentials and the private key, and its configuration came from the
/// bucket, which whoever can write to the bucket can plant. Every setting
/// that runs a command or loads a library is switched off on the command
/// line (which wins over both configuration files) for that start only.
const RECOVERY_HOOKS_OFF: &str = "-c recovery_end_command='' -c archive_cleanup_command='' \
     -c archive_mode=off -c archive_command='' -c archive_library='' \
     -c shared_preload_libraries='' -c local_preload_libraries='' \
     -c session_preload_libraries='' -c jit=off -c ssl=off -c ssl_passphrase_command=''";

/// PostgreSQL's FATAL when replay reached the end of the WAL it could get
/// without reaching the recovery target (since PostgreSQL 13).
const TARGET_NOT_REACHED: &str = "recovery ended before configured recovery target was reached";

/// Starts the restored server, waits for the end of recovery and the
/// promotion, then restarts it without the environment recovery needed
/// (the archive's credentials and the key stay out of the running server).
pub(crate) async fn start_and_wait(
    bin: &Path,
    dir: &Path,
    port: u16,
    owner: Owner,
    progress: &Arc<dyn Progress>,
) -> Result<String> {
    let log = dir.join("steward-restore.log");
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' {RECOVERY_HOOKS_OFF}"
    );
    let ctl_failed = |what: &str, detail: String| {
        // Replay that ran out of WAL before the target ends the server,
        // during `pg_ctl start -w` or after it: either way, say why.
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let (what, detail) = if text.contains(TARGET_NOT_REACHED) {
            (
                "stopped: the archive ends before the recovery target",
                "no transaction after the target was archived, so replay ran out of WAL first; restore --to-time latest, or an earlier target".to_string(),
            )
        } else {
            (what, detail)
        };
        Error::Other(format!(
            "the restored server {what} ({detail}); last lines of {}:\n{}",
            log.display(),
            log_tail(&log, 15)
        ))
    };
    progress.note(&format!(
        "starting PostgreSQL on 127.0.0.1:{port} to replay the WAL"
    ));
    // The restore_command needs the archive's credentials and the key
    // from this environment while recovery runs.
    let mut c = pg_command(bin, "pg_ctl", owner);
    c.arg("start").arg("-D").arg(dir).arg("-l").arg(&log);
    c.args(["-w", "-t", "86400", "-o", &options]);
    let out = c.output().await.map_err(|e| {
        Error::Other(format!(
            "cannot run pg_ctl in {}: {e}; pass --pg-bin DIR",
            bin.display()
        ))
    })?;
    if !out.status.success() {
        return Err(ctl_failed(
            "did not start",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let signal = dir.join("recovery.signal");
    let deadline = Instant::now() + Duration::from_secs(7 * 24 * 3600);
    loop {
        if !signal.exists() && in_production(bin, dir, owner).await {
            break;
        }
        let mut status = pg_command(bin, "pg_ctl", owner);
        status
            .arg("status")
            .arg("-D")
            .arg(dir)
            .stdout(Stdio::null());
        let alive = status.status().await.map(|s| s.success()).unwrap_or(false);
        if !alive {
            return Err(ctl_failed("stopped during recovery", "see its log".into()));
        }
        if Instant::now() > deadline {
            return Err(ctl_failed(
                "did not finish recovery within 7 days",
                "still running".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split("last completed transaction was at log time ")
                .nth(1)
        })
        .next_back()
        .map(str::to_string);
    // Segments prefetched past the end of recovery are not needed.
    let _ = std::fs::remove_dir_all(dir.join("pg_wal").join(crate::wal::prefetch::SPOOL_DIR));
    mark_history_ready(dir, owner);
    let mut restart = pg_command(bin, "pg_ctl", owner);
    crate::source::command::without_secrets(restart.as_std_mut());
    restart
        .arg("restart")
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&log);
    restart.args(["-w", "-m", "fast", "-t", "600"]);
    let out = restart
        .output()
        .await
        .map_err(|e| Error::Other(format!("cannot run pg_ctl: {e}")))?;
    if !out.status.success() {
        return Err(ctl_failed(
            "did not restart after the promotion",
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(format!(
        "recovery ended and the server was promoted; running on 127.0.0.1:{port}{}",
        last.map(|t| format!("; last replayed transaction committed at {t}"))
            .unwrap_or_default()
    ))
}

/// The promotion wrote the new timeline's history file while archiving
/// was off, so PostgreSQL will never archive it, and without it a later
/// `latest` restore cannot follow the new timeline. Marking it ready
/// (`pg_wal/archive_status/N.history.ready`, what the server itself writes
/// when archiving is on) makes the archiver push it first once
/// `archive_mode` is turned on for this copy; until then nothing reads it.
fn mark_history_ready(dir: &Path, owner: Owner) {
    let pg_wal = dir.join("pg_wal");
    let Ok(entries) = std::fs::read_dir(&pg_wal) else {
        return;
    };
    let status = pg_wal.join("archive_status");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with(".history") || crate::wal::names::WalName::parse(&name).is_err() {
            continue;
        }
        let done = status.join(format!("{name}.done"));
        let ready = status.join(format!("{name}.ready"));
        if done.exists() || ready.exists() {
            continue;
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&ready)
            .is_ok()
        {
            let _ = std::os::unix::fs::chown(&ready, Some(owner.uid), Some(owner.gid));
        }
    }
}

async fn in_production(bin: &Path, dir: &Path, owner: Owner) -> bool {
    let mut c = pg_command(bin, "pg_controldata", owner);
    c.arg("-D").arg(dir);
    match c.output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("Database cluster state:") && l.contains("in production")),
        Err(_) => false,
    }
}
