//! Restoring PostgreSQL snapshots: `pg_dump -Fc` objects through
//! `pg_restore` into a database that is created (or, with `force`, reused),
//! roles from the globals dump through `psql`, then the restored tables and
//! row counts checked against the manifest.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::manifest::{DatabaseInfo, Manifest, ObjectEntry, ObjectRole};
use crate::restore::identity::Identities;
use crate::restore::stream::{open_object, Progress};
use crate::restore::tool::{feed, find_tool, run_capture, FeedError};
use crate::restore::{tables, Check, Located, RestoredItem};
use crate::source::postgres::dbname_conninfo;

/// How to reach the server to restore into. Unset fields fall back to
/// libpq's own environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`).
#[derive(Debug, Clone, Default)]
pub struct PgConnection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Passed in the child's environment only, never as an argument.
    pub password: Option<String>,
    pub bin_dir: Option<PathBuf>,
}

impl PgConnection {
    /// A command for `tool` with the connection in its environment.
    pub fn command(&self, tool: &str) -> Result<Command> {
        let path = find_tool(self.bin_dir.as_deref(), &[tool])?;
        let mut cmd = Command::new(path);
        if let Some(h) = &self.host {
            cmd.env("PGHOST", h);
        }
        if let Some(p) = self.port {
            cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.user {
            cmd.env("PGUSER", u);
        }
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd.env("PGCONNECT_TIMEOUT", "15");
        cmd.env("PGAPPNAME", "steward-restore");
        Ok(cmd)
    }

    /// `host:port` for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}",
            self.host
                .clone()
                .or_else(|| std::env::var("PGHOST").ok())
                .unwrap_or_else(|| "local socket".into()),
            self.port
                .map(|p| p.to_string())
                .or_else(|| std::env::var("PGPORT").ok())
                .unwrap_or_else(|| "5432".into())
        )
    }

    /// Runs SQL (from stdin, so `:'var'` / `:"var"` quoting works) in `db`
    /// with psql variables; returns tuples-only unaligned output. `db` and
    /// the variables' values stay data: the name goes through
    /// [`dbname_conninfo`], values through psql's own quoting.
    pub fn sql(&self, db: &str, vars: &[(&str, &str)], sql: &str) -> Result<String> {
        let mut cmd = self.command("psql")?;
        cmd.args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(dbname_conninfo(db));
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        run_capture(&mut cmd, sql).map_err(|e| {
            Error::Other(format!(
                "PostgreSQL at {}, database {db}: {e}",
                self.describe()
            ))
        })
    }
}

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct PgRestoreOptions {
    /// Databases of the snapshot to restore; all when empty.
    pub databases: Vec<String>,
    /// Restore into this name (exactly one database selected).
    pub into: Option<String>,
    /// Allow an existing database that has tables: objects of the dump are
    /// dropped and recreated (`pg_restore --clean --if-exists`).
    pub force: bool,
    /// Restore roles from the globals dump first; ownership and grants are
    /// then kept. Without it, `--no-owner --no-privileges` (the roles may
    /// not exist on a fresh server).
    pub globals: bool,
    /// `pg_restore -j N`: the object is spooled (checked) to a temporary
    /// file first.
    pub parallel: Option<u32>,
    /// Where to spool for parallel restores (default: the temp directory).
    pub spool_dir: Option<PathBuf>,
}

/// State of a database before restoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbState {
    Missing,
    /// Exists with this many user tables (0 = empty).
    Exists(u64),
}

/// Does `db` exist, and how many tables (outside system schemas) it has.
pub fn db_state(conn: &PgConnection, db: &str) -> Result<DbState> {
    let exists = conn.sql(
        "postgres",
        &[("name", db)],
        "SELECT count(*) FROM pg_database WHERE datname = :'name';\n",
    )?;
    if exists.trim() != "1" {
        return Ok(DbState::Missing);
    }
    let tables = conn.sql(
        db,
        &[],
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p','v','m','S','f') \
         AND n.nspname NOT IN ('pg_catalog','information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%';\n",
    )?;
    Ok(DbState::Exists(tables.trim().parse().unwrap_or(0)))
}

pub fn create_db(conn: &PgConnection, db: &str) -> Result<()> {
    conn.sql("postgres", &[("name", db)], "CREATE DATABASE :\"name\";\n")?;
    Ok(())
}

pub fn drop_db(conn: &PgConnection, db: &str) -> Result<()> {
    conn.sql(
        "postgres",
        &[("name", db)],
        "DROP DATABASE IF EXISTS :\"name\" WITH (FORCE);\n",
    )?;
    Ok(())
}

/// The dump objects selected by `opts`, with their target names.
pub fn plan(manifest: &Manifest, opts: &PgRestoreOptions) -> Result<Vec<(ObjectEntry, String)>> {
    let dumps: Vec<&ObjectEntry> = manifest
        .objects
        .iter()
        .filter(|o| o.role == ObjectRole::PostgresDump)
        .collect();
    let available = || {
        dumps
            .iter()
            .filter_map(|o| o.database.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let selected: Vec<&ObjectEntry> = if opts.databases.is_empty() {
        dumps.clone()
    } else {
        let mut out = Vec::new();
        for name in &opts.databases {
            match dumps.iter().find(|o| o.database.as_deref() == Some(name)) {
                Some(o) => out.push(*o),
                None => {
                    return Err(Error::NotFound(format!(
                        "snapshot {} has no dump of database {name:?}; it holds: {}",
                        manifest.snapshot_id,
                        available()
                    )))
                }
            }
        }
        out
    };
    if selected.is_empty() {
        return Err(Error::NotFound(format!(
            "snapshot {} holds no database dump",
            manifest.snapshot_id
        )));
    }
    if opts.into.is_some() && selected.len() > 1 {
        return Err(Error::Config(format!(
            "--into names one database but snapshot {} holds {} ({}); choose one with --database",
            manifest.snapshot_id,
            selected.len(),
            available()
        )));
    }
    Ok(selected
        .into_iter()
        .map(|o| {
            let source = o.database.clone().unwrap_or_default();
            let into = opts.into.clone().unwrap_or(source);
            (o.clone(), into)
        })
        .collect())
}

/// Restores the selected databases of a PostgreSQL snapshot. Refuses (before
/// downloading anything) to write into an existing database that holds
/// tables unless `force`. A database this call created is dropped again
/// when its restore fails.
pub async fn restore(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    conn: &PgConnection,
    opts: &PgRestoreOptions,
) -> Result<Vec<RestoredItem>> {
    let manifest = &located.manifest;
    let plan = plan(manifest, opts)?;
    // Check every destination first: fail before any download or change.
    let mut states = Vec::new();
    for (_, into) in &plan {
        let (c, name) = (conn.clone(), into.clone());
        let state = tokio::task::spawn_blocking(move || db_state(&c, &name))
            .await
            .map_err(|e| Error::Other(format!("internal: {e}")))??;
        if let DbState::Exists(n) = state {
            if n > 0 && !opts.force {
                return Err(Error::Config(format!(
                    "database {into} on {} already exists and holds {n} tables or other relations; restore into a new name with --into NAME, or pass --force to drop and recreate the objects of the dump in it",
                    conn.describe()
                )));
            }
        }
        states.push(state);
    }

    if opts.globals {
        restore_globals(located, identities, Arc::clone(&progress), conn).await?;
    }

    let mut items = Vec::new();
    for ((entry, into), state) in plan.into_iter().zip(states) {
        let created = state == DbState::Missing;
        if created {
            let (c, n) = (conn.clone(), into.clone());
            tokio::task::spawn_blocking(move || create_db(&c, &n))
                .await
                .map_err(|e| Error::Other(format!("internal: {e}")))??;
        }
        let result = restore_one(
            located,
            identities,
            Arc::clone(&progress),
            conn,
            opts,
            &entry,
            &into,
            created,
        )
        .await;
        match result {
            Ok(item) => items.push(item),
            Err(e) => {
                if created {
                    let (c, n) = (conn.clone(), into.clone());
                    let dropped = tokio::task::spawn_blocking(move || drop_db(&c, &n)).await;
                    let note = match dropped {
                        Ok(Ok(())) => format!("; database {into} (created by this restore) was dropped again"),
                        _ => format!("; database {into} was created by this restore and may hold partial data: drop it"),
                    };
                    return Err(annotate(e, &note));
                }
                return Err(annotate(
                    e,
                    &format!("; database {into} may hold partial data"),
                ));
            }
        }
    }
    Ok(items)
}

fn annotate(e: Error, note: &str) -> Error {
    match e {
        Error::NotFound(m) => Error::NotFound(m + note),
        Error::Integrity(m) => Error::Integrity(m + note),
        Error::Config(m) => Error::Config(m + note),
        other => Error::Other(other.to_string() + note),
    }
}

#[allow(clippy::too_many_arguments)]
async fn restore_one(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    conn: &PgConnection,
    opts: &PgRestoreOptions,
    entry: &ObjectEntry,
    into: &str,
    created: bool,
) -> Result<RestoredItem> {
    let manifest = &located.manifest;
    let source_db = entry.database.clone().unwrap_or_default();
    progress.start(
        &format!("{} {} -> {into}", manifest.job, source_db),
        Some(entry.stored_bytes),
    );
    let reader = open_object(
        Arc::clone(&located.target),
        manifest,
        entry,
        identities,
        Arc::clone(&progress),
    )
    .await
    .map_err(Error::from)?;
    let slot = reader.fault_slot();
    let mut cmd = conn.command("pg_restore")?;
    cmd.args(["--exit-on-error", "--no-password", "-d"])
        .arg(dbname_conninfo(into));
    if !opts.globals {
        cmd.args(["--no-owner", "--no-privileges"]);
    }
    if opts.force && !created {
        cmd.args(["--clean", "--if-exists"]);
    }
    let parallel = opts.parallel.filter(|n| *n > 1);
    let spool_dir = opts.spool_dir.clone();
    let outcome = tokio::task::spawn_blocking(move || -> std::result::Result<(), FeedError> {
        match parallel {
            None => {
                cmd.arg("--single-transaction");
                feed(&mut cmd, reader, &slot).map(|_| ())
            }
            Some(n) => {
                // pg_restore -j needs a seekable file: spool the checked
                // plaintext, then restore from it.
                let mut spool = Spool::create(spool_dir.as_deref()).map_err(FeedError::Tool)?;
                let mut reader = reader;
                if let Err(e) = std::io::copy(&mut reader, &mut spool.file) {
                    return Err(match crate::restore::stream::take_fault(&slot) {
                        Some(f) => FeedError::Object(f),
                        None => {
                            FeedError::Tool(format!("spooling to {}: {e}", spool.path.display()))
                        }
                    });
                }
                cmd.arg("-j").arg(n.to_string()).arg(&spool.path);
                crate::restore::tool::run_capture(&mut cmd, "")
                    .map(|_| ())
                    .map_err(|e| FeedError::Tool(e.to_string()))
            }
        }
    })
    .await
    .map_err(|e| Error::Other(format!("internal: {e}")))?;
    progress.finish();
    outcome.map_err(|e| match e {
        FeedError::Object(f) => Error::from(f),
        FeedError::Tool(m) => Error::Other(format!(
            "restoring database {source_db} of snapshot {} into {into} on {}: {m}",
            manifest.snapshot_id,
            conn.describe()
        )),
    })?;

    let expected = manifest.databases.iter().find(|d| d.name == source_db);
    let checks = {
        let (c, n, e) = (conn.clone(), into.to_string(), expected.cloned());
        tokio::task::spawn_blocking(move || check_tables(&c, &n, e.as_ref()))
            .await
            .map_err(|e| Error::Other(format!("internal: {e}")))??
    };
    let item = RestoredItem {
        name: into.to_string(),
        source: source_db,
        bytes: entry.plaintext_bytes,
        checks,
    };
    if let Some(bad) = item.checks.iter().find(|c| !c.ok) {
        return Err(Error::Integrity(format!(
            "database {} restored from snapshot {} does not match the manifest: {}: {}",
            into, manifest.snapshot_id, bad.name, bad.detail
        )));
    }
    Ok(item)
}

/// A private temporary file removed on drop (no `tempfile` dependency in
/// the library).
struct Spool {
    path: PathBuf,
    file: std::fs::File,
}

impl Spool {
    fn create(dir: Option<&std::path::Path>) -> std::result::Result<Self, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = dir
            .map(|d| d.to_path_buf())
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            "steward-restore-{}-{nanos}.pgdump",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                format!(
                    "cannot create a spool file in {}: {e}; choose another directory",
                    dir.display()
                )
            })?;
        Ok(Spool { path, file })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Compares the restored database with what the manifest recorded: the
/// same set of tables, and the same row count in each.
pub fn check_tables(
    conn: &PgConnection,
    db: &str,
    expected: Option<&DatabaseInfo>,
) -> Result<Vec<Check>> {
    let listed = conn.sql(
        db,
        &[],
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p') AND n.nspname NOT IN ('pg_catalog','information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1;\n",
    )?;
    let actual: Vec<String> = listed
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    tables::compare_with_manifest(&actual, expected, |present| {
        // One query counting every table; identifiers quoted by the server.
        let mut sql = String::new();
        for (i, t) in present.iter().enumerate() {
            let (schema, table) = t
                .name
                .split_once('.')
                .unwrap_or(("public", t.name.as_str()));
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            sql.push_str(&format!(
                "SELECT {i}, count(*) FROM {}.{}",
                quote_ident(schema),
                quote_ident(table)
            ));
        }
        sql.push_str(";\n");
        Ok(tables::parse_counts(&conn.sql(db, &[], &sql)?, '|'))
    })
}

/// PostgreSQL identifier quoting: `"` doubled inside double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The most of a roles dump read into memory (a real one is kilobytes).
const GLOBALS_MAX_BYTES: u64 = 64 << 20;

/// Refuses a roles dump in which psql would find a meta-command: `\!` and
/// `\o |cmd` run shell commands, `\copy ... program` too, `\i` reads files.
/// The bucket is writable by the backed-up host, so the dump is untrusted.
/// A backslash is refused wherever it is, inside a string literal too:
/// whether `'a\'` ends at its second quote depends on
/// `standard_conforming_strings`, which the dump itself may change, so
/// only a dump without backslashes lexes the same for psql and for this
/// check. The one exception is the `\restrict KEY` / `\unrestrict KEY`
/// pair that pg_dumpall writes (PostgreSQL 15.14 and later): they only
/// forbid the other meta-commands in between.
pub fn refuse_meta_commands(sql: &[u8], object: &str) -> Result<()> {
    for (index, line) in sql.split(|b| *b == b'\n').enumerate() {
        if !line.contains(&b'\\') {
            continue;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let restrict = [&b"\\restrict "[..], &b"\\unrestrict "[..]]
            .iter()
            .find_map(|p| line.strip_prefix(*p))
            .is_some_and(|key| !key.is_empty() && key.iter().all(u8::is_ascii_alphanumeric));
        if !restrict {
            return Err(Error::Integrity(format!(
                "{object}: line {} holds a backslash, which psql could run as a meta-command (`\\!` runs a shell command); a dump made by pg_dumpall has none there, so it is not applied. Restore without --globals, or decrypt the object with age and zstd, review it and apply what is right by hand",
                index + 1
            )));
        }
    }
    Ok(())
}

/// Applies the roles/tablespaces dump through psql, after
/// [`refuse_meta_commands`] found nothing psql would run itself. Statements that fail
/// because a role already exists are expected on a server that has them;
/// every failure is counted and reported, none stops the restore.
async fn restore_globals(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    conn: &PgConnection,
) -> Result<()> {
    let manifest = &located.manifest;
    let Some(entry) = manifest
        .objects
        .iter()
        .find(|o| o.role == ObjectRole::PostgresGlobals)
    else {
        return Err(Error::NotFound(format!(
            "snapshot {} has no globals dump (roles); restore without --globals",
            manifest.snapshot_id
        )));
    };
    progress.start(&format!("{} roles", manifest.job), Some(entry.stored_bytes));
    let reader = open_object(
        Arc::clone(&located.target),
        manifest,
        entry,
        identities,
        Arc::clone(&progress),
    )
    .await
    .map_err(Error::from)?;
    let slot = reader.fault_slot();
    let mut cmd = conn.command("psql")?;
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=0",
        "-d",
        "postgres",
        "-f",
        "-",
    ]);
    let object = format!("{} of snapshot {}", entry.name, manifest.snapshot_id);
    let out = tokio::task::spawn_blocking(move || -> Result<_> {
        // Small (roles and tablespaces): read and checked whole before
        // psql sees a byte, so nothing of a refused dump runs.
        let mut sql = Vec::new();
        let mut reader = reader;
        if let Err(e) = (&mut reader)
            .take(GLOBALS_MAX_BYTES + 1)
            .read_to_end(&mut sql)
        {
            return Err(match crate::restore::stream::take_fault(&slot) {
                Some(f) => Error::from(f),
                None => Error::Other(format!("reading {object}: {e}")),
            });
        }
        if sql.len() as u64 > GLOBALS_MAX_BYTES {
            return Err(Error::Integrity(format!(
                "{object} is larger than {} MiB, which no roles dump is; it is not applied",
                GLOBALS_MAX_BYTES >> 20
            )));
        }
        refuse_meta_commands(&sql, &object)?;
        feed(&mut cmd, std::io::Cursor::new(sql), &slot).map_err(Error::from)
    })
    .await
    .map_err(|e| Error::Other(format!("internal: {e}")))?;
    progress.finish();
    let out = out?;
    let errors = out.stderr.lines().filter(|l| l.contains("ERROR:")).count();
    if errors > 0 {
        progress.note(&format!(
            "roles: {errors} statements of the globals dump failed (usually roles that already exist): {}",
            crate::restore::tool::tail(&out.stderr)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::refuse_meta_commands;

    #[test]
    fn a_roles_dump_without_backslashes_passes() {
        let dump = b"\\restrict Ab12\n--\n-- PostgreSQL database cluster dump\n--\nSET standard_conforming_strings = on;\nCREATE ROLE app;\nALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:x$y:z';\n\\unrestrict Ab12\r\n";
        refuse_meta_commands(dump, "globals").expect("a pg_dumpall roles dump");
    }

    #[test]
    fn meta_commands_are_refused_wherever_they_hide() {
        for (dump, line) in [
            ("CREATE ROLE a;\n\\! touch /tmp/x\n", 2),
            ("\\o |touch /tmp/x\n", 1),
            ("SELECT 1 \\g |sh\n", 1),
            ("\\copy (SELECT 1) TO PROGRAM 'sh'\n", 1),
            // A quote that ends the literal only for one lexer.
            (
                "SET standard_conforming_strings = off;\nSELECT 'a\\' \\! sh';\n",
                2,
            ),
            ("\\restrict k\n\\restrict k; \\! sh\n", 2),
            ("\\unrestrict \n", 1),
        ] {
            let e = refuse_meta_commands(dump.as_bytes(), "postgres/globals.sql.zst.age")
                .expect_err(dump)
                .to_string();
            assert!(
                e.contains(&format!("line {line} ")) && e.contains("globals.sql"),
                "{dump:?}: {e}"
            );
        }
    }
}
