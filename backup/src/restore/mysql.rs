//! Restoring MySQL/MariaDB snapshots: each database's dump is piped into the
//! `mariadb` (or `mysql`) client against a database that is created (or,
//! with `force`, reused), then tables and row counts are checked against
//! the manifest.
//!
//! Dumps are made with `--databases`, so they carry their own
//! `CREATE DATABASE` and `USE` lines; those are dropped on the way in so the
//! data lands in the database chosen here (possibly under a new name).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::manifest::{DatabaseInfo, Manifest, ObjectEntry, ObjectRole};
use crate::restore::identity::Identities;
use crate::restore::stream::{open_object, Progress};
use crate::restore::tool::{feed, find_tool, run_capture, FeedError};
use crate::restore::{tables, Check, Located, RestoredItem};

/// How to reach the server to restore into.
#[derive(Debug, Clone, Default)]
pub struct MysqlConnection {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    /// Passed as `MYSQL_PWD` in the child's environment only.
    pub password: Option<String>,
    pub bin_dir: Option<PathBuf>,
}

/// Whether the client knows `--sandbox` (MariaDB 10.5.25, 10.6.18,
/// 10.11.8, 11.0.6 and later; not Oracle's `mysql`), from its `--help`.
fn has_sandbox(client: &std::ffi::OsStr) -> bool {
    Command::new(client)
        .args(["--no-defaults", "--help"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--sandbox"))
        .unwrap_or(false)
}

impl MysqlConnection {
    pub fn command(&self) -> Result<Command> {
        let path = find_tool(self.bin_dir.as_deref(), &["mariadb", "mysql"])?;
        let mut c = Command::new(path);
        c.arg("--no-defaults");
        if let Some(s) = &self.socket {
            c.arg(format!("--socket={}", s.display()));
        } else {
            c.arg(format!(
                "--host={}",
                self.host.as_deref().unwrap_or("127.0.0.1")
            ));
            c.arg(format!("--port={}", self.port.unwrap_or(3306)));
            c.arg("--protocol=TCP");
        }
        if let Some(u) = &self.user {
            c.arg(format!("--user={u}"));
        }
        c.arg("--connect-timeout=15");
        // What goes in comes from the bucket, which the backed-up host can
        // write: it is SQL for the server and nothing else. --binary-mode
        // turns off the client's own commands (`\!` runs a shell, `\.`
        // reads a file) except DELIMITER, which routines need;
        // --local-infile=0 keeps `LOAD DATA LOCAL` from sending this host's
        // files (the private key) to the server; the sandbox refuses the
        // file and shell commands too, on clients that have it.
        c.args(["--binary-mode", "--local-infile=0"]);
        if has_sandbox(c.get_program()) {
            c.arg("--sandbox");
        }
        if let Some(pw) = &self.password {
            c.env("MYSQL_PWD", pw);
        }
        Ok(c)
    }

    pub fn describe(&self) -> String {
        match &self.socket {
            Some(s) => s.display().to_string(),
            None => format!(
                "{}:{}",
                self.host.as_deref().unwrap_or("127.0.0.1"),
                self.port.unwrap_or(3306)
            ),
        }
    }

    /// Runs SQL (batch mode, no column names) and returns the output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let mut c = self.command()?;
        c.args(["--batch", "--skip-column-names", "--raw"]);
        run_capture(&mut c, sql)
            .map_err(|e| Error::Other(format!("MySQL at {}: {e}", self.describe())))
    }
}

/// What to restore and where.
#[derive(Debug, Clone, Default)]
pub struct MysqlRestoreOptions {
    /// Databases of the snapshot to restore; all when empty.
    pub databases: Vec<String>,
    /// Restore into this name (exactly one database selected).
    pub into: Option<String>,
    /// Allow an existing database that has tables (the dump drops and
    /// recreates each of its tables).
    pub force: bool,
}

pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `None` when missing, else the number of tables and views.
pub fn db_tables(conn: &MysqlConnection, db: &str) -> Result<Option<u64>> {
    let exists = conn.sql(&format!(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {};\n",
        quote_str(db)
    ))?;
    if exists.trim() != "1" {
        return Ok(None);
    }
    let n = conn.sql(&format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {};\n",
        quote_str(db)
    ))?;
    Ok(Some(n.trim().parse().unwrap_or(0)))
}

/// The dump objects selected by `opts`, with their target names.
pub fn plan(manifest: &Manifest, opts: &MysqlRestoreOptions) -> Result<Vec<(ObjectEntry, String)>> {
    let pg_like = crate::restore::postgres::PgRestoreOptions {
        databases: opts.databases.clone(),
        into: opts.into.clone(),
        ..Default::default()
    };
    // Same selection rules as PostgreSQL, over the MySQL dumps.
    let mut only_dumps = manifest.clone();
    only_dumps.objects = manifest
        .objects
        .iter()
        .filter(|o| o.role == ObjectRole::MysqlDump)
        .cloned()
        .map(|mut o| {
            o.role = ObjectRole::PostgresDump;
            o
        })
        .collect();
    let selected = crate::restore::postgres::plan(&only_dumps, &pg_like)?;
    Ok(selected
        .into_iter()
        .map(|(mut o, into)| {
            o.role = ObjectRole::MysqlDump;
            (o, into)
        })
        .collect())
}

/// Restores the selected databases of a MySQL snapshot; refuses a
/// non-empty existing database unless `force`, drops a database it created
/// when that database's restore fails.
pub async fn restore(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    conn: &MysqlConnection,
    opts: &MysqlRestoreOptions,
) -> Result<Vec<RestoredItem>> {
    let manifest = &located.manifest;
    let plan = plan(manifest, opts)?;
    let mut existing = Vec::new();
    for (_, into) in &plan {
        let (c, n) = (conn.clone(), into.clone());
        let state = blocking(move || db_tables(&c, &n)).await?;
        if let Some(tables) = state {
            if tables > 0 && !opts.force {
                return Err(Error::Config(format!(
                    "database {into} on {} already exists and holds {tables} tables; restore into a new name with --into NAME, or pass --force to replace the tables of the dump in it",
                    conn.describe()
                )));
            }
        }
        existing.push(state.is_some());
    }
    let mut items = Vec::new();
    for ((entry, into), existed) in plan.into_iter().zip(existing) {
        if !existed {
            let (c, n) = (conn.clone(), into.clone());
            blocking(move || {
                c.sql(&format!("CREATE DATABASE {};\n", quote_ident(&n)))
                    .map(|_| ())
            })
            .await?;
        }
        match restore_one(
            located,
            identities,
            Arc::clone(&progress),
            conn,
            &entry,
            &into,
        )
        .await
        {
            Ok(item) => items.push(item),
            Err(e) => {
                let note = if existed {
                    format!("; database {into} may hold partial data")
                } else {
                    let (c, n) = (conn.clone(), into.clone());
                    match blocking(move || {
                        c.sql(&format!("DROP DATABASE IF EXISTS {};\n", quote_ident(&n)))
                    })
                    .await
                    {
                        Ok(_) => format!("; database {into} (created by this restore) was dropped again"),
                        Err(_) => format!("; database {into} was created by this restore and may hold partial data: drop it"),
                    }
                };
                return Err(Error::Other(format!("{e}{note}")));
            }
        }
    }
    Ok(items)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("internal: {e}")))?
}

async fn restore_one(
    located: &Located,
    identities: &Identities,
    progress: Arc<dyn Progress>,
    conn: &MysqlConnection,
    entry: &ObjectEntry,
    into: &str,
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
    let mut cmd = conn.command()?;
    cmd.arg(format!("--database={into}"));
    let outcome = tokio::task::spawn_blocking(move || {
        let filtered = WithoutLines::new(reader, switches_database);
        feed(&mut cmd, filtered, &slot)
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
    let expected = manifest
        .databases
        .iter()
        .find(|d| d.name == source_db)
        .cloned();
    let (c, n) = (conn.clone(), into.to_string());
    let checks = blocking(move || check_tables(&c, &n, expected.as_ref())).await?;
    let item = RestoredItem {
        name: into.to_string(),
        source: source_db,
        bytes: entry.plaintext_bytes,
        checks,
    };
    if let Some(bad) = item.checks.iter().find(|c| !c.ok) {
        return Err(Error::Integrity(format!(
            "database {into} restored from snapshot {} does not match the manifest: {}: {}",
            manifest.snapshot_id, bad.name, bad.detail
        )));
    }
    Ok(item)
}

/// Compares the restored database with the manifest: same base tables,
/// same row counts.
pub fn check_tables(
    conn: &MysqlConnection,
    db: &str,
    expected: Option<&DatabaseInfo>,
) -> Result<Vec<Check>> {
    let listed = conn.sql(&format!(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = {} AND table_type = 'BASE TABLE' ORDER BY 1;\n",
        quote_str(db)
    ))?;
    let actual: Vec<String> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    tables::compare_with_manifest(&actual, expected, |present| {
        // One query counting every table.
        let sql = present
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "SELECT {i}, COUNT(*) FROM {}.{}",
                    quote_ident(db),
                    quote_ident(&t.name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
            + ";\n";
        Ok(tables::parse_counts(&conn.sql(&sql)?, '\t'))
    })
}

/// A SQL stream without the lines `drop` picks (whole lines, `\n`
/// included); everything else passes through as bytes. Used to take the
/// database switch out of a dump ([`switches_database`]) and the original
/// server's GTID sequence numbers out of replayed binlogs.
pub struct WithoutLines<R> {
    inner: BufReader<R>,
    line: Vec<u8>,
    pos: usize,
    drop: fn(&[u8]) -> bool,
}

impl<R: Read> WithoutLines<R> {
    pub fn new(inner: R, drop: fn(&[u8]) -> bool) -> Self {
        WithoutLines {
            inner: BufReader::with_capacity(256 * 1024, inner),
            line: Vec::new(),
            pos: 0,
            drop,
        }
    }
}

/// A dump's top-level `CREATE DATABASE ...;` and `USE `db`;` lines (only
/// the start and end of each line are looked at).
pub fn switches_database(line: &[u8]) -> bool {
    let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
    (trimmed.starts_with(b"CREATE DATABASE ") && trimmed.ends_with(b";"))
        || (trimmed.starts_with(b"USE `") && trimmed.ends_with(b"`;"))
}

impl<R: Read> Read for WithoutLines<R> {
    /// Fills `buf` with as many kept lines as are at hand: one line per
    /// call would mean one pipe write per line downstream, and
    /// `mariadb-binlog` prints a gigabyte of binlog as some twenty million
    /// short base64 lines.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        loop {
            // The rest of a line that did not fit last time.
            if self.pos < self.line.len() {
                let n = (buf.len() - written).min(self.line.len() - self.pos);
                buf[written..written + n].copy_from_slice(&self.line[self.pos..self.pos + n]);
                self.pos += n;
                written += n;
            }
            if written == buf.len() {
                return Ok(written);
            }
            // Hand over what we have rather than wait for more input.
            if written > 0 && self.inner.buffer().is_empty() {
                return Ok(written);
            }
            self.line.clear();
            self.pos = 0;
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                return Ok(written);
            }
            let Some(end) = available.iter().position(|&b| b == b'\n').map(|i| i + 1) else {
                // A line longer than the buffer, or the last one without a
                // newline: gather it whole before judging it.
                self.inner.read_until(b'\n', &mut self.line)?;
                if (self.drop)(&self.line) {
                    self.line.clear();
                }
                continue;
            };
            let line = &available[..end];
            if (self.drop)(line) {
                self.inner.consume(end);
            } else if end <= buf.len() - written {
                buf[written..written + end].copy_from_slice(line);
                written += end;
                self.inner.consume(end);
            } else {
                self.line.extend_from_slice(line);
                self.inner.consume(end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_switch_lines_are_dropped() {
        let dump = "-- header\nCREATE DATABASE /*!32312 IF NOT EXISTS*/ `app` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;\n\nUSE `app`;\nINSERT INTO t VALUES ('USE `x`;');\n-- Dump completed\n";
        let mut out = String::new();
        WithoutLines::new(dump.as_bytes(), switches_database)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(
            out,
            "-- header\n\nINSERT INTO t VALUES ('USE `x`;');\n-- Dump completed\n"
        );
    }

    /// Hands out its bytes a few at a time, as a pipe may.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_are_dropped_whatever_the_read_sizes() {
        // Short lines, lines longer than the internal buffer, a dropped
        // line that is long, and a last line without a newline.
        let long = "x".repeat(300 * 1024);
        let mut dump = String::new();
        let mut expected = String::new();
        for i in 0..2000 {
            let kept = format!("INSERT INTO t VALUES ({i}, 'USE `a`;');\n");
            dump.push_str(&kept);
            expected.push_str(&kept);
            if i % 7 == 0 {
                dump.push_str("USE `app`;\n");
            }
            if i % 500 == 0 {
                let kept = format!("INSERT INTO t VALUES ('{long}');\n");
                dump.push_str(&kept);
                expected.push_str(&kept);
                dump.push_str(&format!("CREATE DATABASE `{long}`;\n"));
            }
        }
        dump.push_str("-- no newline");
        expected.push_str("-- no newline");
        for (inner_chunk, out_chunk) in [(1, 1), (7, 3), (4096, 100), (1 << 20, 1 << 20)] {
            let mut filtered =
                WithoutLines::new(Dribble(dump.as_bytes(), inner_chunk), switches_database);
            let mut out = Vec::new();
            let mut buf = vec![0u8; out_chunk];
            loop {
                let n = filtered.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert!(
                out == expected.as_bytes(),
                "read sizes {inner_chunk}/{out_chunk}"
            );
        }
    }
}
