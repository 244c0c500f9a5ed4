//! MySQL/MariaDB jobs: one `mariadb-dump` (or `mysqldump`) per database
//! with `--single-transaction --routines --events --triggers --hex-blob`.
//! A dump counts only when the tool exits 0 AND its output ends with the
//! `-- Dump completed` trailer (a server dying mid-dump can leave a clean
//! exit but a truncated file). The password travels in `MYSQL_PWD`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use crate::config::JobConfig;
use crate::error::Result;
use crate::manifest::{DatabaseInfo, ObjectRole, TableStat};
use crate::source::command::{run_capture, tool_version, CommandSource};
use crate::source::{safe_object_segment, PlannedObject};

/// The trailer every complete mysqldump/mariadb-dump output ends with.
pub const DUMP_TRAILER: &str = "-- Dump completed";

const SYSTEM_SCHEMAS: &[&str] = &["information_schema", "performance_schema", "sys", "mysql"];

#[derive(Debug)]
pub struct MysqlPlan {
    pub objects: Vec<PlannedObject>,
    pub databases: Vec<DatabaseInfo>,
    pub tools: BTreeMap<String, String>,
}

/// The first of `names` found in `bin_dir` or on `PATH`.
pub(crate) fn find_tool(job: &JobConfig, names: &[&str]) -> PathBuf {
    let dirs: Vec<PathBuf> = match &job.bin_dir {
        Some(d) => vec![d.clone()],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    };
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    match &job.bin_dir {
        Some(d) => d.join(names[0]),
        None => PathBuf::from(names[0]),
    }
}

pub(crate) fn where_(job: &JobConfig) -> String {
    match &job.socket {
        Some(s) => s.display().to_string(),
        None => format!(
            "{}:{}",
            job.host.as_deref().unwrap_or("localhost"),
            job.port.unwrap_or(3306)
        ),
    }
}

pub(crate) fn command(job: &JobConfig, program: &Path) -> Command {
    let mut c = Command::new(program);
    // Must come first: stops the tools from reading ~/.my.cnf surprises.
    c.arg("--no-defaults");
    if let Some(s) = &job.socket {
        c.arg(format!("--socket={}", s.display()));
    } else {
        c.arg(format!(
            "--host={}",
            job.host.as_deref().unwrap_or("127.0.0.1")
        ));
        c.arg(format!("--port={}", job.port.unwrap_or(3306)));
        c.arg("--protocol=TCP");
    }
    if let Some(u) = &job.user {
        c.arg(format!("--user={u}"));
    }
    if let Some(pw) = &job.password {
        c.env("MYSQL_PWD", pw);
    }
    c
}

/// `mariadb-binlog --read-from-remote-server --raw ARGS
/// --result-file=DIR/ FILE` (or `mysqlbinlog`) started: the password out
/// of its command line, stderr piped, killed when dropped. Returns the
/// tool's file name with the child.
pub(crate) fn spawn_remote_binlog(
    job_name: &str,
    job: &JobConfig,
    args: &[String],
    dir: &Path,
    file: &str,
) -> Result<(String, tokio::process::Child)> {
    let tool = find_tool(job, &["mariadb-binlog", "mysqlbinlog"]);
    let mut cmd = command(job, &tool);
    cmd.args(["--read-from-remote-server", "--raw"])
        .args(args)
        .arg(format!("--result-file={}/", dir.display()))
        .arg(file);
    crate::source::command::without_secrets(cmd.as_std_mut());
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        crate::error::Error::Source(format!(
            "job {job_name}: cannot run {}: {e}; install mariadb-client or set bin_dir on the job",
            tool.display()
        ))
    })?;
    Ok((tool_name(&tool), child))
}

pub(crate) async fn query(job: &JobConfig, sql: &str, what: &str) -> Result<String> {
    let client = find_tool(job, &["mariadb", "mysql"]);
    let mut c = command(job, &client);
    c.args([
        "--connect-timeout=10",
        // `-e` text is parsed for client commands (`\!` runs a shell) like
        // piped input; the SQL holds names from the server, so turn them off.
        "--binary-mode",
        "--batch",
        "--skip-column-names",
        "--raw",
        "-e",
        sql,
    ]);
    run_capture(what, c).await
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

pub async fn plan(job_name: &str, job: &JobConfig) -> Result<MysqlPlan> {
    let at = where_(job);
    let databases: Vec<String> = if job.databases.is_empty() {
        query(
            job,
            "SHOW DATABASES",
            &format!("job {job_name}: listing the databases of MySQL at {at}"),
        )
        .await?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !SYSTEM_SCHEMAS.contains(l) && !job.exclude_databases.iter().any(|x| x == l))
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

    if job.binlog {
        require_binlog(job_name, job, &at).await?;
    }
    let dump = find_tool(job, &["mariadb-dump", "mysqldump"]);
    let mut objects = Vec::new();
    for db in &databases {
        let mut c = command(job, &dump);
        c.args([
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
        ]);
        if job.binlog {
            // The binlog position (and MariaDB's GTID) of the dump's own
            // snapshot, as comments; source/binlog_position.rs reads them.
            c.arg("--master-data=2");
            if tool_name(&dump).starts_with("mariadb") {
                c.arg("--gtid");
            }
        }
        c.args([
            "--databases",
            // Names come from SHOW DATABASES, chosen by whoever may create
            // a database: after `--`, `--result-file=...` is a name.
            "--",
        ])
        .arg(db);
        let source: Box<dyn crate::source::Source> = Box::new(
            CommandSource::new(
                format!(
                    "job {job_name}: {} of database {db:?} at {at}",
                    tool_name(&dump)
                ),
                c,
            )
            .with_trailer(DUMP_TRAILER),
        );
        let source: Box<dyn crate::source::Source> = if job.binlog {
            Box::new(crate::source::binlog_position::PositionedDump::new(source))
        } else {
            source
        };
        objects.push(PlannedObject {
            name: format!("mysql/{}.sql.zst.age", safe_object_segment(db)),
            role: ObjectRole::MysqlDump,
            database: Some(db.clone()),
            source,
        });
    }
    let mut tools = BTreeMap::new();
    if let Some(v) = tool_version(&dump).await {
        tools.insert(tool_name(&dump), v);
    }
    Ok(MysqlPlan {
        objects,
        databases: infos,
        tools,
    })
}

/// A job with `binlog = true` needs a server that writes binary logs;
/// said before any dump starts, naming the setting.
async fn require_binlog(job_name: &str, job: &JobConfig, at: &str) -> Result<()> {
    let out = query(
        job,
        "SELECT @@log_bin",
        &format!("job {job_name}: checking binary logging of MySQL at {at}"),
    )
    .await?;
    if out.trim() != "1" {
        return Err(crate::error::Error::Source(format!(
            "job {job_name}: binlog = true but MySQL at {at} has binary logging off (log_bin = 0); start the server with log_bin (and binlog_format = ROW) for point-in-time recovery, or set binlog = false on the job"
        )));
    }
    Ok(())
}

fn tool_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

/// Exact row counts of every base table of `database`.
pub async fn table_stats(job: &JobConfig, database: &str, what: &str) -> Result<Vec<TableStat>> {
    let list = query(
        job,
        &format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = {} AND table_type = 'BASE TABLE' ORDER BY 1",
            quote_str(database)
        ),
        what,
    )
    .await?;
    let tables: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let sql = tables
        .iter()
        .map(|t| {
            format!(
                "SELECT {}, COUNT(*) FROM {}.{}",
                quote_str(t),
                quote_ident(database),
                quote_ident(t)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let out = query(job, &sql, what).await?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (name, rows) = l.split_once('\t')?;
            Some(TableStat {
                name: name.to_string(),
                rows: rows.trim().parse().ok()?,
            })
        })
        .collect())
}
