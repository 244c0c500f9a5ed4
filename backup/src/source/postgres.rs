//! PostgreSQL jobs: `pg_dump -Fc` per database (restore selectively with
//! `pg_restore`) plus `pg_dumpall --globals-only` for roles and tablespaces.
//! The password travels in `PGPASSWORD`, never on a command line. Database
//! names come from `pg_database`, where any role with CREATEDB chooses them:
//! they reach the tools only as the quoted `dbname` of a conninfo string
//! ([`dbname_conninfo`]), never as a string libpq would expand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::process::Command;

use crate::config::JobConfig;
use crate::error::Result;
use crate::manifest::{DatabaseInfo, ObjectRole, TableStat};
use crate::source::command::{run_capture, tool_version, CommandSource};
use crate::source::{safe_object_segment, PlannedObject};

/// Everything a PostgreSQL job run needs before streaming.
#[derive(Debug)]
pub struct PostgresPlan {
    pub objects: Vec<PlannedObject>,
    pub databases: Vec<DatabaseInfo>,
    pub tools: BTreeMap<String, String>,
}

pub(crate) fn tool(job: &JobConfig, name: &str) -> PathBuf {
    match &job.bin_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

pub(crate) fn where_(job: &JobConfig) -> String {
    format!(
        "{}:{}",
        job.host.as_deref().unwrap_or("localhost"),
        job.port.unwrap_or(5432)
    )
}

/// A command for a PostgreSQL client tool with the job's connection.
pub(crate) fn command(job: &JobConfig, name: &str) -> Command {
    let mut c = Command::new(tool(job, name));
    if let Some(h) = &job.host {
        c.arg("--host").arg(h);
    }
    if let Some(p) = job.port {
        c.arg("--port").arg(p.to_string());
    }
    if let Some(u) = &job.user {
        c.arg("--username").arg(u);
    }
    c.arg("--no-password");
    if let Some(pw) = &job.password {
        c.env("PGPASSWORD", pw);
    }
    c.env("PGCONNECT_TIMEOUT", "10");
    c.env("PGAPPNAME", "steward-backup");
    c
}

pub(crate) async fn psql(job: &JobConfig, database: &str, sql: &str, what: &str) -> Result<String> {
    let mut c = command(job, "psql");
    c.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-F",
        "\t",
        "--dbname",
        &dbname_conninfo(database),
        "-c",
        sql,
    ]);
    run_capture(what, c).await
}

/// `dbname='NAME'` with `\` and `'` escaped as libpq documents for
/// conninfo values. Given to `--dbname`/`-d`, libpq would read a bare
/// `host=... dbname=...` or `postgresql://...` as connection parameters
/// (a database named so could send the backup's password elsewhere); this
/// string sets the database name and nothing else, and the tools' own
/// `--host`/`--port`/`--username` or `PG*` variables still apply.
pub fn dbname_conninfo(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 10);
    out.push_str("dbname='");
    for c in name.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Lists the databases, counts rows, and prepares one source per object.
pub async fn plan(job_name: &str, job: &JobConfig) -> Result<PostgresPlan> {
    let at = where_(job);
    let databases = if job.databases.is_empty() {
        let list = psql(
            job,
            "postgres",
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
            &format!("job {job_name}: listing the databases of PostgreSQL at {at}"),
        )
        .await?;
        list.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !job.exclude_databases.iter().any(|x| x == l))
            .map(str::to_string)
            .collect()
    } else {
        job.databases.clone()
    };

    let mut infos = Vec::new();
    for db in &databases {
        let tables = if job.table_stats {
            table_stats(
                job,
                db,
                &format!("job {job_name}: counting rows of {db:?} at {at}"),
            )
            .await?
        } else {
            Vec::new()
        };
        infos.push(DatabaseInfo {
            name: db.clone(),
            tables,
        });
    }

    let mut objects = Vec::new();
    if job.globals {
        let mut c = command(job, "pg_dumpall");
        c.arg("--globals-only");
        objects.push(PlannedObject {
            name: "postgres/globals.sql.zst.age".into(),
            role: ObjectRole::PostgresGlobals,
            database: None,
            source: Box::new(CommandSource::new(
                format!("job {job_name}: pg_dumpall --globals-only of {at}"),
                c,
            )),
        });
    }
    for db in &databases {
        let mut c = command(job, "pg_dump");
        // We compress ourselves; -Z0 keeps pg_dump from doing it twice.
        c.args(["--format=custom", "--compress=0", "--dbname"])
            .arg(dbname_conninfo(db));
        objects.push(PlannedObject {
            name: format!("postgres/{}.pgdump.zst.age", safe_object_segment(db)),
            role: ObjectRole::PostgresDump,
            database: Some(db.clone()),
            source: Box::new(CommandSource::new(
                format!("job {job_name}: pg_dump of database {db:?} at {at}"),
                c,
            )),
        });
    }

    let mut tools = BTreeMap::new();
    for name in ["pg_dump", "pg_dumpall"] {
        if let Some(v) = tool_version(&tool(job, name)).await {
            tools.insert(name.to_string(), v);
        }
    }
    Ok(PostgresPlan {
        objects,
        databases: infos,
        tools,
    })
}

/// Exact row counts of every user table (`schema.table`).
pub async fn table_stats(job: &JobConfig, database: &str, what: &str) -> Result<Vec<TableStat>> {
    // query_to_xml runs one count(*) per table inside a single statement.
    let sql = "SELECT format('%I.%I', schemaname, tablename), \
               (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text \
               FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1";
    let out = psql(job, database, sql, what).await?;
    Ok(parse_stats(&out))
}

fn parse_stats(out: &str) -> Vec<TableStat> {
    out.lines()
        .filter_map(|l| {
            let (name, rows) = l.split_once('\t')?;
            Some(TableStat {
                name: name.to_string(),
                rows: rows.trim().parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_stats() {
        let s = super::parse_stats("public.a\t3\npublic.b\t0\n\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].rows, 3);
    }

    #[test]
    fn database_names_become_quoted_conninfo_values() {
        use super::dbname_conninfo;
        assert_eq!(dbname_conninfo("app"), "dbname='app'");
        assert_eq!(
            dbname_conninfo("host=evil dbname=x"),
            "dbname='host=evil dbname=x'"
        );
        assert_eq!(dbname_conninfo(r"it's \ x"), r"dbname='it\'s \\ x'");
        assert_eq!(dbname_conninfo(""), "dbname=''");
    }
}
