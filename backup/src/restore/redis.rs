//! Restoring Redis snapshots: the RDB file goes to `DIR/dump.rdb` (0600,
//! never over an existing file), checked on the way (sizes and hashes by
//! the object stream, RDB structure and CRC-64 here), with instructions to
//! load it into a stock redis-server. Drills go one step further
//! ([`load_and_count`]): a scratch redis-server loads the file and its key
//! counts per database are compared with the manifest's.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::manifest::{Manifest, ObjectEntry, ObjectRole, RedisDbKeys};
use crate::restore::stream::{open_object, take_fault, Progress};
use crate::restore::{Check, Identities, Located, RestoredItem};
use crate::source::redis::rdb::{RdbChecker, RdbSummary};
use crate::source::redis::resp::{parse_info, Client, RedisEndpoint, Reply};

/// The file name a stock redis-server loads by default (`dbfilename`).
pub const DUMP_NAME: &str = "dump.rdb";

/// The RDB object of a Redis snapshot.
pub fn rdb_object(manifest: &Manifest) -> Result<ObjectEntry> {
    (manifest.objects.iter())
        .find(|o| o.role == ObjectRole::RedisRdb)
        .cloned()
        .ok_or_else(|| {
            Error::NotFound(format!(
                "snapshot {} holds no Redis RDB file (it is a {} snapshot)",
                manifest.snapshot_id, manifest.kind
            ))
        })
}

/// Writes the snapshot's RDB file to `to/dump.rdb`.
pub async fn restore(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    to: Option<&Path>,
) -> Result<RestoredItem> {
    let m = &located.manifest;
    let dir = to.ok_or_else(|| {
        Error::Config(
            "say where to restore: --to DIR writes DIR/dump.rdb, which you then give to redis-server"
                .into(),
        )
    })?;
    let entry = rdb_object(m)?;
    let dest = dir.join(DUMP_NAME);
    prepare_dir(dir, &dest)?;
    progress.start(
        &format!("{}/{}", m.job, entry.name),
        Some(entry.stored_bytes),
    );
    let reader = open_object(
        Arc::clone(&located.target),
        m,
        &entry,
        identities,
        Arc::clone(&progress),
    )
    .await
    .map_err(Error::from)?;
    let slot = reader.fault_slot();
    let tmp = dir.join(format!(".{DUMP_NAME}.steward-{}", std::process::id()));
    let (tmp2, dest2) = (tmp.clone(), dest.clone());
    let written = tokio::task::spawn_blocking(move || write_rdb(reader, &tmp2, &dest2))
        .await
        .map_err(|e| Error::Internal(format!("restore task failed: {e}")))?;
    progress.finish();
    let summary = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(match take_fault(&slot) {
                Some(f) => f.into(),
                None => e,
            });
        }
    };
    let mut checks = vec![rdb_check(&summary)];
    if let Some(info) = &m.redis {
        checks.push(keyspace_recorded(&info.keyspace));
    }
    progress.note(&format!(
        "to load it: stop redis-server, copy {} into its `dir` as its `dbfilename` (redis-cli CONFIG GET dir; CONFIG GET dbfilename), owned by the redis user, with appendonly off for that first start (an AOF would be loaded instead), then start redis-server",
        dest.display()
    ));
    Ok(RestoredItem {
        name: dest.display().to_string(),
        source: "redis".into(),
        bytes: summary.bytes,
        checks,
    })
}

/// Creates `dir` (0700) when missing; refuses an existing `dest`.
fn prepare_dir(dir: &Path, dest: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(md) if !md.is_dir() => {
            return Err(Error::Config(format!(
                "--to {}: not a directory",
                dir.display()
            )))
        }
        // Its owner could swap or pre-seed entries while root restores.
        Ok(_) => crate::restore::files::refuse_foreign_owner(dir)?,
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::local("cannot create", dir, e, None))?,
    }
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Config(format!(
            "{} already exists; restore into another directory, or move it away first (it is never overwritten)",
            dest.display()
        )));
    }
    Ok(())
}

/// Streams the plaintext into a private temporary file, checks it, then
/// links it to `dest`, which fails rather than replace an existing file.
fn write_rdb(mut reader: impl Read, tmp: &Path, dest: &Path) -> Result<RdbSummary> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(tmp)
        .map_err(|e| Error::local("cannot create", tmp, e, None))?;
    let mut checker = RdbChecker::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::Integrity(e.to_string()))?;
        if n == 0 {
            break;
        }
        checker.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Error::local("cannot write", tmp, e, None))?;
    }
    file.sync_all()
        .map_err(|e| Error::local("cannot write", tmp, e, None))?;
    let summary = checker.finish().map_err(|e| {
        Error::Integrity(format!(
            "the snapshot's RDB file is not a whole RDB file: {e}"
        ))
    })?;
    std::fs::hard_link(tmp, dest).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Config(format!(
                "{} appeared while restoring; it was left alone",
                dest.display()
            ))
        } else {
            Error::local("cannot create", dest, e, None)
        }
    })?;
    let _ = std::fs::remove_file(tmp);
    Ok(summary)
}

/// `steward backup verify` of an RDB object: the structure and CRC-64
/// check always and, when `redis-check-rdb` (Debian redis-tools) is
/// installed, its full parse of a private spooled copy. `Err` only for
/// what is not the object's fault.
pub fn verify_rdb(
    mut reader: impl Read,
    manifest: &Manifest,
) -> std::result::Result<Check, String> {
    let tool = crate::restore::tool::find_tool(None, &["redis-check-rdb"]).ok();
    let spool = match &tool {
        Some(_) => {
            let dir = private_socket_dir().map_err(|e| e.to_string())?;
            Some(dir)
        }
        None => None,
    };
    let result = (|| {
        let mut file = match &spool {
            Some(dir) => Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(dir.join(DUMP_NAME))
                    .map_err(|e| format!("cannot spool for redis-check-rdb: {e}"))?,
            ),
            None => None,
        };
        let mut checker = RdbChecker::new();
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            checker.update(&buf[..n]);
            if let Some(f) = file.as_mut() {
                f.write_all(&buf[..n])
                    .map_err(|e| format!("cannot spool for redis-check-rdb: {e}"))?;
            }
        }
        drop(file);
        let summary = match checker.finish() {
            Ok(s) => s,
            Err(e) => return Ok(Check::failed("rdb structure", e)),
        };
        if let Some(info) = manifest
            .redis
            .as_ref()
            .filter(|i| i.rdb_bytes != summary.bytes)
        {
            return Ok(Check::failed(
                "rdb structure",
                format!(
                    "{} bytes, but the manifest records {}",
                    summary.bytes, info.rdb_bytes
                ),
            ));
        }
        let (Some(tool), Some(dir)) = (&tool, &spool) else {
            let mut c = rdb_check(&summary);
            c.detail
                .push_str(" (redis-check-rdb not installed: structure and checksum only)");
            return Ok(c);
        };
        let out = std::process::Command::new(tool)
            .arg(dir.join(DUMP_NAME))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("RDB looks OK") {
            Ok(Check::ok(
                "redis-check-rdb",
                format!(
                    "RDB version {}, {} bytes: RDB looks OK",
                    summary.version, summary.bytes
                ),
            ))
        } else {
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            Ok(Check::failed(
                "redis-check-rdb",
                format!(
                    "redis-check-rdb rejects the file ({}): {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            ))
        }
    })();
    if let Some(dir) = spool {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// The structure check as a restore check.
pub fn rdb_check(s: &RdbSummary) -> Check {
    Check::ok(
        "rdb structure",
        format!(
            "RDB version {}, {} bytes, {}",
            s.version,
            s.bytes,
            if s.checksum.is_some() {
                "CRC-64 matches"
            } else {
                "written without a checksum (rdbchecksum no)"
            }
        ),
    )
}

fn keyspace_recorded(keyspace: &[RedisDbKeys]) -> Check {
    Check::ok(
        "keyspace at snapshot",
        if keyspace.is_empty() {
            "no keys".to_string()
        } else {
            describe_keyspace(keyspace.iter().map(|k| (k.db, k.keys)))
        },
    )
}

fn describe_keyspace(it: impl Iterator<Item = (u32, u64)>) -> String {
    it.map(|(db, keys)| format!("db{db} {keys} keys"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts a scratch redis-server on `dir/dump.rdb` (a unix socket in a
/// private directory, no TCP port, no persistence), waits for it to load,
/// and compares its key counts per database with `expected`.
pub async fn load_and_count(dir: &Path, expected: &[RedisDbKeys]) -> Result<Check> {
    let server = crate::restore::tool::find_tool(None, &["redis-server"]).map_err(|_| {
        Error::Config(
            "drills of redis jobs load the snapshot into a scratch redis-server: install it (Debian package redis-server)"
                .into(),
        )
    })?;
    let sock_dir = private_socket_dir()?;
    let result = run_scratch(&server, dir, &sock_dir, expected).await;
    let _ = std::fs::remove_dir_all(&sock_dir);
    result
}

fn private_socket_dir() -> Result<PathBuf> {
    // Short (a socket path is limited to ~100 bytes) and private: the
    // loaded data is the snapshot's.
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = base.join(format!(
            "steward-redis-{}-{nanos:x}{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::local("cannot create", &p, e, None)),
        }
    }
    Err(Error::Other(format!(
        "cannot create a private directory under {}",
        base.display()
    )))
}

/// `path` as a double-quoted redis.conf argument. A path holding a quote,
/// a backslash or a line break is refused rather than escaped: it could
/// otherwise end the argument and add directives of its own.
fn config_path(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .filter(|t| !t.contains(['"', '\\', '\n', '\r']));
    match text {
        Some(t) => Ok(format!("\"{t}\"")),
        None => Err(Error::Config(format!(
            "the drill's scratch directory {} has a name redis-server's configuration cannot hold (a quote, backslash, line break or non-UTF-8 byte): choose another scratch directory",
            path.display()
        ))),
    }
}

async fn run_scratch(
    server: &Path,
    dir: &Path,
    sock_dir: &Path,
    expected: &[RedisDbKeys],
) -> Result<Check> {
    let socket = sock_dir.join("redis.sock");
    let log = dir.join("redis-server.log");
    let conf = dir.join("redis-scratch.conf");
    // The snapshot comes from the bucket: sanitize-dump-payload makes the
    // server check every encoded value deeply while it loads, instead of
    // trusting lengths and offsets a forged RDB could set (Redis >= 6.2).
    let text = format!(
        "port 0\nunixsocket {}\nunixsocketperm 700\ndir {}\ndbfilename {DUMP_NAME}\nsave \"\"\nappendonly no\ndaemonize no\nsanitize-dump-payload yes\nlogfile {}\n",
        config_path(&socket)?,
        config_path(dir)?,
        config_path(&log)?
    );
    crate::private_fs::write(&conf, text.as_bytes())
        .map_err(|e| Error::local("cannot write", &conf, e, None))?;
    let mut child = tokio::process::Command::new(server)
        .arg(&conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Other(format!("cannot start {}: {e}", server.display())))?;
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    let endpoint = RedisEndpoint {
        socket: Some(socket.clone()),
        ..Default::default()
    };
    // Loading runs at a few hundred MB/s; be generous with large files.
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut client = loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Other(format!(
                "the scratch redis-server exited ({status}) instead of loading the snapshot:\n{}",
                log_tail()
            )));
        }
        if let Ok(mut c) = Client::connect(&endpoint).await {
            match c.command(&[b"PING"]).await {
                Ok(Reply::Status(s)) if s == "PONG" => break c,
                _ => {}
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "the scratch redis-server did not finish loading the snapshot within 30 minutes:\n{}",
                log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let info = parse_info(&client.info().await?);
    let _ = client.send(&[b"SHUTDOWN", b"NOSAVE"]).await;
    drop(client);
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    Ok(compare_keyspace(&info.keyspace, expected))
}

/// Loaded `(db, keys, expires)` against the manifest's counts.
pub fn compare_keyspace(loaded: &[(u32, u64, u64)], expected: &[RedisDbKeys]) -> Check {
    let mut problems = Vec::new();
    let mut dbs: Vec<u32> = loaded.iter().map(|l| l.0).collect();
    dbs.extend(expected.iter().map(|e| e.db));
    dbs.sort();
    dbs.dedup();
    for db in dbs {
        let got = loaded.iter().find(|l| l.0 == db).map(|l| l.1).unwrap_or(0);
        let want = expected
            .iter()
            .find(|e| e.db == db)
            .map(|e| e.keys)
            .unwrap_or(0);
        if got != want {
            problems.push(format!(
                "db{db}: {got} keys loaded, the manifest records {want}"
            ));
        }
    }
    if problems.is_empty() {
        Check::ok(
            "keys per database",
            format!(
                "{} as recorded",
                if loaded.is_empty() {
                    "no keys".to_string()
                } else {
                    describe_keyspace(loaded.iter().map(|l| (l.0, l.1)))
                }
            ),
        )
    } else {
        Check::failed("keys per database", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn scratch_paths_are_quoted_and_ones_that_could_add_directives_refused() {
        assert_eq!(
            config_path(Path::new("/var/tmp/drill dir/dump")).unwrap(),
            "\"/var/tmp/drill dir/dump\""
        );
        for bad in ["/tmp/x\nenable-debug-command yes", "/tmp/a\"b", "/tmp/a\\b"] {
            let e = config_path(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("choose another scratch directory"), "{e}");
        }
    }
    use super::*;

    #[test]
    fn key_counts_compare_per_database() {
        let want = vec![
            RedisDbKeys {
                db: 0,
                keys: 10,
                expires: 0,
            },
            RedisDbKeys {
                db: 2,
                keys: 1,
                expires: 1,
            },
        ];
        assert!(compare_keyspace(&[(0, 10, 0), (2, 1, 1)], &want).ok);
        let c = compare_keyspace(&[(0, 9, 0), (2, 1, 1), (5, 1, 0)], &want);
        assert!(!c.ok);
        assert!(c
            .detail
            .contains("db0: 9 keys loaded, the manifest records 10"));
        assert!(c
            .detail
            .contains("db5: 1 keys loaded, the manifest records 0"));
    }
}
