//! Restore to a point in time: a base backup unpacked into a new, empty
//! data directory, `recovery.signal` and the recovery settings
//! (`restore_command` fetching from the archive through Steward, the
//! target), and optionally the server started on a port and watched until
//! recovery has ended and it was promoted.
//!
//! Before anything is written, the archive is checked for the WAL the base
//! backup needs: a gap would make PostgreSQL end recovery early without an
//! error (for `latest`), so it is refused here, naming the segment.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::manifest::{Manifest, ObjectRole, PgBaseInfo};
use crate::restore::stream::open_object;
use crate::restore::{self, Check, Identities, Located, Progress, RestoredItem};
use crate::target::StorageTarget;
use crate::wal::archive;
use crate::wal::chain;
use crate::wal::names::Lsn;
use crate::wal::server::{pg_bin, start_and_wait, Owner};
use crate::wal::stream;

/// How far the clocks of the database host and the store may disagree
/// before a target time past the newest upload is refused outright.
const CLOCK_MARGIN_SECS: i64 = 300;

/// Where recovery stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The end of the archive.
    #[default]
    Latest,
    /// Just after the last transaction committed at or before this time.
    Time(DateTime<Utc>),
    Lsn(Lsn),
    /// A restore point made with `pg_create_restore_point(name)`.
    Name(String),
}

impl RecoveryTarget {
    /// Parses `--to-time`: RFC 3339 or `YYYY-MM-DD HH:MM:SS[.frac][+zone]`;
    /// without a zone the time is UTC.
    pub fn parse_time(text: &str) -> Result<Self> {
        let t = text.trim();
        if let Ok(d) = DateTime::parse_from_rfc3339(t) {
            return Ok(RecoveryTarget::Time(d.with_timezone(&Utc)));
        }
        for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
            if let Ok(d) = DateTime::parse_from_str(t, f) {
                return Ok(RecoveryTarget::Time(d.with_timezone(&Utc)));
            }
        }
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f") {
            return Ok(RecoveryTarget::Time(d.and_utc()));
        }
        Err(Error::Config(format!(
            "--to-time {text:?}: use a time such as '2026-12-04 15:30:00+00' or 2026-12-04T15:30:00Z (UTC when no zone is given)"
        )))
    }

    fn describe(&self) -> String {
        match self {
            RecoveryTarget::Latest => "the end of the archive".into(),
            RecoveryTarget::Time(t) => format!("time {}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            RecoveryTarget::Lsn(l) => format!("LSN {l}"),
            RecoveryTarget::Name(n) => format!("restore point {n:?}"),
        }
    }
}

/// What a point-in-time restore needs besides the snapshot.
#[derive(Debug, Clone, Default)]
pub struct PitrRestoreOptions {
    /// The new data directory: created, or an existing empty directory
    /// (its owner then owns the restored files and runs the server).
    pub data_dir: Option<PathBuf>,
    pub target: RecoveryTarget,
    /// The complete `restore_command` (the caller knows its own binary
    /// and how it reached the archive), with `%f` and `%p`.
    pub restore_command: String,
    /// Start the server on 127.0.0.1:PORT and wait for the promotion.
    pub start_port: Option<u16>,
    /// Directory of `postgres`/`pg_ctl`; default `/usr/lib/postgresql/<major>/bin`
    /// of the backup's major version, else `PATH`.
    pub pg_bin: Option<PathBuf>,
}

/// The base backup to start from: for a time or LSN target, the newest one
/// that ended before it; otherwise the newest.
pub async fn locate_base(
    targets: &[Arc<dyn StorageTarget>],
    host: &str,
    job: &str,
    target: &RecoveryTarget,
) -> Result<Located> {
    let all = restore::list(targets, host, Some(job)).await?;
    let bases: Vec<_> = all
        .iter()
        .filter(|e| e.manifest.postgres_base.is_some())
        .collect();
    let fits = |m: &Manifest| match target {
        RecoveryTarget::Time(t) => m.finished_at <= *t,
        RecoveryTarget::Lsn(l) => m
            .postgres_base
            .as_ref()
            .and_then(|b| Lsn::parse(&b.stop_lsn).ok())
            .is_some_and(|stop| stop <= *l),
        _ => true,
    };
    let Some(pick) = bases.iter().rev().find(|e| fits(&e.manifest)) else {
        return Err(match bases.first() {
            None => Error::NotFound(format!(
                "job {job} (host {host}) has no base backup; run `steward backup run {job}` first"
            )),
            Some(oldest) => Error::NotFound(format!(
                "{} is before the end of the oldest base backup of job {job} (snapshot {}, finished {}): no base backup can be replayed to it",
                target.describe(),
                oldest.manifest.snapshot_id,
                oldest.manifest.finished_at.format("%Y-%m-%d %H:%M:%S UTC")
            )),
        });
    };
    restore::locate(targets, host, job, &pick.manifest.snapshot_id).await
}

/// Unpacks the base backup of `located` into the data directory, writes
/// the recovery settings and, when asked, starts the server and waits
/// until recovery ended and it was promoted.
pub async fn restore(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    options: &PitrRestoreOptions,
) -> Result<Vec<RestoredItem>> {
    let m = &located.manifest;
    let base = m.postgres_base.clone().ok_or_else(|| {
        Error::Integrity(format!(
            "snapshot {} has kind postgres_pitr but no base backup positions in its manifest",
            m.snapshot_id
        ))
    })?;
    let dir = options.data_dir.clone().ok_or_else(|| {
        Error::Config(
            "name the new data directory with --to DIR (it must not exist yet, or be empty)".into(),
        )
    })?;
    let (owner, created) = prepare_dir(&dir, options.start_port.is_some())?;
    let result = restore_into(located, identities, progress, options, &base, &dir, owner).await;
    if result.is_err() {
        // Never leave a data directory that looks restored: what this
        // restore wrote goes (the directory too, if it made it).
        discard(&dir, created);
    }
    result
}

fn discard(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            // remove_dir_all does not follow symlinks.
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

async fn restore_into(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    options: &PitrRestoreOptions,
    base: &PgBaseInfo,
    dir: &Path,
    owner: Owner,
) -> Result<Vec<RestoredItem>> {
    let m = &located.manifest;
    let dir = dir.to_path_buf();
    let base = base.clone();
    let entry = m
        .objects
        .iter()
        .find(|o| o.role == ObjectRole::PostgresBaseTar)
        .ok_or_else(|| {
            Error::Integrity(format!(
                "snapshot {} holds no base backup object",
                m.snapshot_id
            ))
        })?;
    // The WAL first: nothing is written when replay could not get through.
    let archived = archive::list(located.target.as_ref(), &m.host, &m.job).await?;
    let names: Vec<_> = archived.iter().map(|w| w.name.clone()).collect();
    let chain = chain::check(&base, &names);
    if let Some(missing) = &chain.missing {
        return Err(Error::NotFound(format!(
            "WAL segment {missing} of job {job} is missing from target {t} ({loc}): base backup {id} needs every segment from {first} on, and replay would stop before it; nothing was restored. Find the segment (another target?) or restore from a later base backup",
            job = m.job,
            t = located.target.name(),
            loc = located.target.location(),
            id = m.snapshot_id,
            first = chain.first
        )));
    }
    if let RecoveryTarget::Time(t) = &options.target {
        past_the_archive(located, &archived, *t).await?;
    }

    progress.note(&format!(
        "unpacking base backup {} into {}",
        m.snapshot_id,
        dir.display()
    ));
    let reader = open_object(
        Arc::clone(&located.target),
        m,
        entry,
        identities,
        Arc::clone(&progress),
    )
    .await
    .map_err(Error::from)?;
    let unpack_dir = dir.clone();
    let bytes = tokio::task::spawn_blocking(move || unpack(reader, &unpack_dir, owner))
        .await
        .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))??;
    progress.finish();

    write_recovery_settings(&dir, &base, m, options, owner)?;
    let mut checks = vec![Check::ok(
        "wal chain",
        format!(
            "{} segment(s) from {} to {} archived without a gap",
            chain.segments,
            chain.first,
            chain.newest.as_deref().unwrap_or(&base.stop_wal)
        ),
    )];
    if let Some(port) = options.start_port {
        let bin = pg_bin(options.pg_bin.as_deref(), &base);
        let detail = start_and_wait(&bin, &dir, port, owner, &progress).await?;
        checks.push(Check::ok("recovery", detail));
    }
    Ok(vec![RestoredItem {
        name: dir.display().to_string(),
        source: format!(
            "base backup {} + WAL to {}",
            m.snapshot_id,
            options.target.describe()
        ),
        bytes,
        checks,
    }])
}

/// A target time after the newest WAL was stored cannot be reached: the
/// archive holds nothing committed since, and PostgreSQL would end
/// recovery with "recovery ended before configured recovery target was
/// reached". Refused before anything is written (allowing for clocks a
/// few minutes apart; closer than that, the server's own error says it).
async fn past_the_archive(
    located: &Located,
    archived: &[archive::ArchivedWal],
    t: DateTime<Utc>,
) -> Result<()> {
    let m = &located.manifest;
    let Some(newest) = newest_upload(located.target.as_ref(), &m.host, &m.job, archived).await?
    else {
        return Ok(());
    };
    if t <= newest + chrono::Duration::seconds(CLOCK_MARGIN_SECS) {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "{} is after the newest WAL archived for job {job} on target {name} (stored {newest}): nothing committed after that is in the archive, so recovery could not reach the target; nothing was restored. Restore `--to-time latest` (the end of the archive), or a time before {newest}",
        RecoveryTarget::Time(t).describe(),
        job = m.job,
        name = located.target.name(),
        newest = newest.format("%Y-%m-%d %H:%M:%S UTC"),
    )))
}

/// When the newest WAL object of `host`/`job` on `target` (an archived
/// file, listed already, or a streamed delta) was stored, by the target's
/// clock; `None` when there is none or the target keeps no times.
async fn newest_upload(
    target: &dyn StorageTarget,
    host: &str,
    job: &str,
    archived: &[archive::ArchivedWal],
) -> Result<Option<DateTime<Utc>>> {
    // Only the deltas' prefix is listed again: it holds the open
    // segment's stretches, not the whole archive.
    let prefix = stream::stream_prefix(host, job);
    let deltas = target.list(&prefix).await?;
    Ok(archived
        .iter()
        .filter_map(|w| w.modified)
        .chain(
            deltas
                .iter()
                .filter(|o| stream::parse_delta_key(&prefix, &o.key).is_some())
                .filter_map(|o| o.modified),
        )
        .max())
}

/// Checks the data directory and says who will own it and whether it was
/// created here.
fn prepare_dir(dir: &Path, will_start: bool) -> Result<(Owner, bool)> {
    let euid = rustix::process::geteuid().as_raw();
    let local = |doing: &str, e: std::io::Error| Error::Local {
        doing: doing.to_string(),
        path: dir.to_path_buf(),
        source: e,
        hint: String::new(),
    };
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(Error::Config(format!(
                    "{} exists and is not a directory: restore into a new, empty data directory",
                    dir.display()
                )));
            }
            let mut entries = std::fs::read_dir(dir).map_err(|e| local("reading", e))?;
            if entries.next().is_some() {
                return Err(Error::Config(format!(
                    "{} is not empty: a base backup is restored into a new, empty data directory only (nothing was changed); choose another directory or empty this one",
                    dir.display()
                )));
            }
            if will_start && euid == 0 && meta.uid() == 0 {
                return Err(Error::Config(format!(
                    "{} belongs to root, and PostgreSQL does not run as root: create it for the server's user first (install -d -o postgres -g postgres -m 700 {})",
                    dir.display(),
                    dir.display()
                )));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| local("setting the mode of", e))?;
            Ok((
                Owner {
                    uid: meta.uid(),
                    gid: meta.gid(),
                },
                false,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if will_start && euid == 0 {
                return Err(Error::Config(format!(
                    "{} does not exist: PostgreSQL does not run as root, so create it empty for the server's user first (install -d -o postgres -g postgres -m 700 {})",
                    dir.display(),
                    dir.display()
                )));
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| local("creating", e))?;
            Ok((
                Owner {
                    uid: euid,
                    gid: rustix::process::getegid().as_raw(),
                },
                true,
            ))
        }
        Err(e) => Err(local("reading", e)),
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Unpacks the tar: directories and regular files only (a single-tablespace
/// base backup has nothing else), relative paths without `..`, into a
/// directory that was empty, so nothing can be written through a link.
/// Reads the object to its end, so its size and hashes are checked.
fn unpack(mut reader: restore::stream::ObjectReader, dir: &Path, owner: Owner) -> Result<u64> {
    let fail = |what: String| Error::Integrity(format!("base backup: {what}"));
    let chown = rustix::process::geteuid().as_raw() != owner.uid;
    // The reader's own fault (missing, corrupt, wrong key) says more than
    // the I/O error tar sees.
    let slot = reader.fault_slot();
    let fault = || slot.lock().ok().and_then(|f| f.clone()).map(Error::from);
    {
        let mut tar = tar::Archive::new(&mut reader);
        let entries = tar
            .entries()
            .map_err(|e| fail(format!("reading the tar: {e}")))?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| fault().unwrap_or_else(|| fail(format!("reading the tar: {e}"))))?;
            let path = entry
                .path()
                .map_err(|e| fail(format!("an entry has an unreadable name: {e}")))?
                .into_owned();
            if path.as_os_str().is_empty()
                || path
                    .components()
                    .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(fail(format!(
                    "entry {} leaves the data directory",
                    path.display()
                )));
            }
            let out = dir.join(&path);
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&out)
                    .map_err(|e| fail(format!("creating {}: {e}", out.display())))?;
            } else if kind.is_file() {
                if let Some(parent) = out.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)
                        .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .map_err(|e| fail(format!("creating {}: {e}", out.display())))?;
                std::io::copy(&mut entry, &mut file).map_err(|e| {
                    fault().unwrap_or_else(|| fail(format!("writing {}: {e}", out.display())))
                })?;
            } else if matches!(
                kind,
                tar::EntryType::XGlobalHeader
                    | tar::EntryType::XHeader
                    | tar::EntryType::GNULongName
            ) {
                continue;
            } else {
                return Err(fail(format!(
                    "entry {} is a {kind:?}, not a file or directory; tablespaces and links are not supported in a base backup",
                    path.display()
                )));
            }
            if chown {
                std::os::unix::fs::lchown(&out, Some(owner.uid), Some(owner.gid)).map_err(|e| {
                    fail(format!(
                        "giving {} to uid {}: {e}",
                        out.display(),
                        owner.uid
                    ))
                })?;
            }
        }
    }
    // The tar ends before the object does (padding): read the rest, which
    // is where the size and hash checks happen.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| {
        reader
            .fault()
            .map(Error::from)
            .unwrap_or_else(|| fail(format!("reading the end of the object: {e}")))
    })?;
    if let Some(f) = reader.fault() {
        return Err(f.into());
    }
    for sub in ["pg_wal", "pg_wal/archive_status"] {
        let p = dir.join(sub);
        if !p.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .map_err(|e| fail(format!("creating {}: {e}", p.display())))?;
            if chown {
                let _ = std::os::unix::fs::lchown(&p, Some(owner.uid), Some(owner.gid));
            }
        }
    }
    Ok(reader.bytes())
}

/// `'text'` for postgresql.conf: single quotes doubled.
fn conf_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn write_recovery_settings(
    dir: &Path,
    base: &PgBaseInfo,
    m: &Manifest,
    options: &PitrRestoreOptions,
    owner: Owner,
) -> Result<()> {
    let io = |path: &Path, e: std::io::Error| Error::Local {
        doing: "writing the recovery settings to".into(),
        path: path.to_path_buf(),
        source: e,
        hint: String::new(),
    };
    let mut text = format!(
        "\n# Added by `steward restore` from base backup {} (start {} on timeline {}).\n",
        m.snapshot_id, base.start_lsn, base.timeline
    );
    text.push_str(&format!(
        "restore_command = {}\n",
        conf_quote(&options.restore_command)
    ));
    match &options.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(t) => text.push_str(&format!(
            "recovery_target_time = {}\n",
            conf_quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        RecoveryTarget::Lsn(l) => text.push_str(&format!(
            "recovery_target_lsn = {}\n",
            conf_quote(&l.to_string())
        )),
        RecoveryTarget::Name(n) => {
            text.push_str(&format!("recovery_target_name = {}\n", conf_quote(n)))
        }
    }
    text.push_str("recovery_target_timeline = 'latest'\nrecovery_target_action = 'promote'\n");
    // The restored server must not archive into the job it came from
    // (its new timeline would become what a later `latest` restore
    // follows); turn archiving on again when it becomes the primary.
    text.push_str("archive_mode = 'off'\n");
    let auto = dir.join("postgresql.auto.conf");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&auto)
        .map_err(|e| io(&auto, e))?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| io(&auto, e))?;
    let signal = dir.join("recovery.signal");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&signal)
        .map_err(|e| io(&signal, e))?;
    if rustix::process::geteuid().as_raw() != owner.uid {
        for p in [&auto, &signal] {
            std::os::unix::fs::lchown(p, Some(owner.uid), Some(owner.gid)).map_err(|e| io(p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_and_without_zone() {
        let want: DateTime<Utc> = "2026-12-04T15:30:00.25Z".parse().unwrap();
        for text in [
            "2026-12-04T15:30:00.25Z",
            "2026-12-04 15:30:00.25+00",
            "2026-12-04 16:30:00.25+01:00",
            "2026-12-04 15:30:00.25",
        ] {
            assert_eq!(
                RecoveryTarget::parse_time(text).unwrap(),
                RecoveryTarget::Time(want),
                "{text}"
            );
        }
        assert!(RecoveryTarget::parse_time("yesterday").is_err());
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("a 'b' %f"), "'a ''b'' %f'");
    }
}
