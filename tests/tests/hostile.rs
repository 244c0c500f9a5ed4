//! Backups and restores against hostile input (issue 15): database names
//! chosen by a role with CREATEDB that look like connection strings or
//! command-line options, snapshots whose SQL carries client shell commands
//! (what anyone with write access to the bucket can plant), and the modes
//! and environment of what Steward creates and runs.

use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use steward_tests::backup_env::BackupEnv;
use steward_tests::mariadb::{tool_path, Mariadb};
use steward_tests::postgres::Postgres;
use steward_tests::{free_port, steward_bin, ChildGuard};

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `steward restore -i KEY <args> --config CONFIG`, without ambient keys.
fn restore(env: &BackupEnv, args: &[&str]) -> Output {
    Command::new(steward_bin())
        .arg("restore")
        .arg("-i")
        .arg(&env.key)
        .args(args)
        .arg("--config")
        .arg(&env.config)
        .env_remove("STEWARD_IDENTITY")
        .env_remove("STEWARD_IDENTITY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run steward")
}

/// A libpq conninfo naming only `dbname`, so the harness's `psql -d` takes
/// a hostile name as a name.
fn pg_dbname(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// Listens where a hostile database name would send a client (127.0.0.2 on
/// the server's port); `connections` says whether anything came.
struct Trap(TcpListener);

impl Trap {
    fn new(port: u16) -> Trap {
        let l = TcpListener::bind(("127.0.0.2", port)).expect("bind 127.0.0.2");
        l.set_nonblocking(true).unwrap();
        Trap(l)
    }

    fn connections(&self) -> usize {
        std::iter::from_fn(|| self.0.accept().ok()).count()
    }
}

/// The database names of the newest manifest of `job`.
fn manifest_databases(env: &BackupEnv, job: &str) -> Vec<String> {
    let manifests = env.manifests(job);
    let newest = manifests.last().expect("a manifest");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store.join(newest)).unwrap()).unwrap();
    let mut names: Vec<String> = m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

const PG_HOSTILE: [&str; 5] = [
    "host=127.0.0.2 dbname=postgres",
    "postgresql://x@127.0.0.2/y",
    "it's \\ \"odd\"",
    // Two names whose object names were the same: one dump overwrote the
    // other.
    "my app",
    "my_app",
];

#[test]
fn postgres_database_names_that_look_like_connection_strings_stay_names() {
    let pg = Postgres::start().unwrap();
    let trap = Trap::new(pg.port);
    for (i, name) in PG_HOSTILE.iter().enumerate() {
        pg.psql(&format!(
            "CREATE DATABASE \"{}\"",
            name.replace('"', "\"\"")
        ))
        .unwrap();
        pg.psql_db(
            &pg_dbname(name),
            &format!(
                "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, {})",
                i + 2
            ),
        )
        .unwrap();
    }
    let env = BackupEnv::new();
    env.write_config(&format!(
        "[backup.jobs.db]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\nbin_dir = \"{}\"\nexclude_databases = [\"postgres\"]\n",
        pg.port,
        pg.superuser,
        pg.password,
        pg.bin_dir.display()
    ));
    let (code, report, stderr) = env.run_job("db");
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let mut want: Vec<String> = PG_HOSTILE.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(manifest_databases(&env, "db"), want);

    // Drop the originals and restore every database of the snapshot.
    for name in PG_HOSTILE {
        pg.psql(&format!("DROP DATABASE \"{}\"", name.replace('"', "\"\"")))
            .unwrap();
    }
    // With the roles too: a real pg_dumpall dump (its `\restrict` lines
    // included) passes the meta-command check.
    let o = restore(&env, &["db", "latest", "--globals"]);
    assert!(o.status.success(), "{}", text(&o));
    for (i, name) in PG_HOSTILE.iter().enumerate() {
        let rows = pg
            .psql_db(&pg_dbname(name), "SELECT count(*) FROM t")
            .unwrap();
        assert_eq!(rows, (i + 2).to_string(), "database {name:?}");
    }
    assert_eq!(trap.connections(), 0, "a client connected to 127.0.0.2");
}

#[test]
fn mariadb_database_names_that_look_like_options_stay_names() {
    let db = Mariadb::start().unwrap();
    let pwned = std::env::temp_dir().join(format!("steward-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&pwned);
    let hostile = [
        format!("--result-file={}", pwned.display()),
        "-r".to_string(),
    ];
    for (i, name) in hostile.iter().enumerate() {
        db.mysql(&format!(
            "CREATE DATABASE `{name}`; CREATE TABLE `{name}`.t (x INT); INSERT INTO `{name}`.t VALUES {}",
            vec!["(1)"; i + 2].join(",")
        ))
        .unwrap();
    }
    let env = BackupEnv::new();
    env.write_config(&format!(
        "[backup.jobs.my]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\n",
        db.socket.display(),
        db.root_password
    ));
    let (code, report, stderr) = env.run_job("my");
    assert!(
        !pwned.exists(),
        "a dump tool took a database name as an option"
    );
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let mut want = hostile.to_vec();
    want.sort();
    assert_eq!(manifest_databases(&env, "my"), want);

    for name in &hostile {
        db.mysql(&format!("DROP DATABASE `{name}`")).unwrap();
    }
    let o = restore(&env, &["my", "latest"]);
    assert!(o.status.success(), "{}", text(&o));
    for (i, name) in hostile.iter().enumerate() {
        assert_eq!(
            db.mysql(&format!("SELECT COUNT(*) FROM `{name}`.t"))
                .unwrap(),
            (i + 2).to_string()
        );
    }
    assert!(!pwned.exists());
}

/// A `bin_dir` whose `tool` prints `script`'s output and whose other
/// `tools` are the real ones: how a test makes a snapshot hold exactly the
/// bytes an attacker with write access to the bucket would plant.
fn planted_tools(dir: &Path, tool: &str, script: &str, real: &[(&str, PathBuf)]) {
    std::fs::create_dir_all(dir).unwrap();
    let fake = dir.join(tool);
    std::fs::write(&fake, format!("#!/bin/sh\ncat <<'EOF'\n{script}\nEOF\n")).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, path) in real {
        std::os::unix::fs::symlink(path, dir.join(name)).unwrap();
    }
}

#[test]
fn a_planted_mariadb_dump_cannot_run_shell_commands_or_read_local_files() {
    let db = Mariadb::start().unwrap();
    let env = BackupEnv::new();
    let touched = env.dir.path().join("touched");
    let bin = env.dir.path().join("bin");
    let key = env.key.display().to_string();
    planted_tools(
        &bin,
        "mariadb-dump",
        &format!(
            "CREATE TABLE t (x INT);\nINSERT INTO t VALUES (1);\n\\! touch {t}\nsystem touch {t}\nCREATE TABLE stolen (line TEXT);\nLOAD DATA LOCAL INFILE '{key}' INTO TABLE stolen;\n-- Dump completed",
            t = touched.display()
        ),
        &[("mariadb", tool_path("mariadb").unwrap())],
    );
    env.write_config(&format!(
        "[backup.jobs.my]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\ndatabases = [\"app\"]\ntable_stats = false\nbin_dir = \"{}\"\n",
        db.socket.display(),
        db.root_password,
        bin.display()
    ));
    let (code, _, stderr) = env.run_job("my");
    assert_eq!(code, 0, "{stderr}");
    let o = restore(&env, &["my", "latest"]);
    assert!(
        !touched.exists(),
        "restored SQL ran a shell command:\n{}",
        text(&o)
    );
    assert!(!text(&o).contains("AGE-SECRET-KEY"), "{}", text(&o));
    let stolen = db
        .mysql("SELECT COUNT(*) FROM app.stolen")
        .unwrap_or_default();
    assert!(
        stolen.is_empty() || stolen == "0",
        "LOAD DATA LOCAL read the key file into the database"
    );
}

#[test]
fn a_planted_roles_dump_cannot_run_psql_meta_commands() {
    let pg = Postgres::start().unwrap();
    pg.psql("CREATE DATABASE app").unwrap();
    pg.psql_db("app", "CREATE TABLE t (x int)").unwrap();
    let env = BackupEnv::new();
    let bin = env.dir.path().join("bin");
    let dir = env.dir.path().display().to_string();
    planted_tools(
        &bin,
        "pg_dumpall",
        &format!(
            "CREATE ROLE planted;\n\\! touch {dir}/bang\n\\o |touch {dir}/pipe\nSELECT 1;\n\\o\n\\copy (SELECT 1) TO PROGRAM 'touch {dir}/copy'\nSELECT 'a\\' \\! touch {dir}/quoted';"
        ),
        &["psql", "pg_dump", "pg_restore"].map(|t| (t, pg.bin_dir.join(t))),
    );
    env.write_config(&format!(
        "[backup.jobs.db]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\nbin_dir = \"{}\"\ndatabases = [\"app\"]\n",
        pg.port,
        pg.superuser,
        pg.password,
        bin.display()
    ));
    let (code, _, stderr) = env.run_job("db");
    assert_eq!(code, 0, "{stderr}");
    let o = restore(&env, &["db", "latest", "--into", "app_copy", "--globals"]);
    for f in ["bang", "pipe", "copy", "quoted"] {
        assert!(
            !env.dir.path().join(f).exists(),
            "the roles dump ran a shell command ({f}):\n{}",
            text(&o)
        );
    }
    assert!(
        !o.status.success(),
        "a roles dump with meta-commands was applied"
    );
    let t = text(&o);
    assert!(t.contains("globals") && t.contains("meta-command"), "{t}");
}

/// Every entry under `root` whose mode lets group or others read it.
fn readable_by_others(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                continue;
            }
            if m.mode() & 0o077 != 0 {
                out.push(format!("{} {:o}", e.path().display(), m.mode() & 0o7777));
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Files under `dir` whose content holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn what_a_backup_and_the_log_queue_create_is_private_under_a_permissive_umask() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "x").unwrap();
    let log = env.dir.path().join("app.log");
    std::fs::write(&log, "").unwrap();
    let config = env
        .config_text(&format!(
            "[backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\n\n[telemetry]\npoll_interval_ms = 50\n[telemetry.exporter]\nendpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http\"\n[[telemetry.sources]]\nname = \"app\"\npaths = [\"{}\"]\n",
            data.display(),
            free_port(),
            log.display()
        ))
        .replace("127.0.0.1:1\"", &format!("127.0.0.1:{}\"", free_port()));
    std::fs::write(&env.config, config).unwrap();
    // The umask a service manager or a login shell commonly hands over.
    let under_022 = |args: &str| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("umask 022; exec \"$0\" {args} --config \"$1\""))
            .arg(steward_bin())
            .arg(&env.config);
        c
    };
    let o = under_022("backup run files").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // The agent tails the log into its queue (the exporter is down, so the
    // line stays there in plain text).
    let agent = ChildGuard::spawn(
        "steward agent",
        under_022("agent")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    std::fs::write(&log, "user=alice token=hello-queued-line\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_holding(&env.state, "hello-queued-line") == 0 {
        assert!(
            Instant::now() < deadline,
            "the line never reached the queue"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);

    // The store's root is Steward's too (the state dir is the test's).
    let root_mode = std::fs::metadata(&env.store).unwrap().mode() & 0o777;
    assert_eq!(root_mode, 0o700, "{}", env.store.display());
    for root in [&env.store, &env.state] {
        let open = readable_by_others(root);
        assert!(open.is_empty(), "readable by others: {open:#?}");
    }
}

#[test]
fn dump_tools_see_neither_the_private_key_nor_s3_credentials() {
    let env = BackupEnv::new();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // A "pg_dump" whose dump is its environment, and a psql that lists one
    // database.
    for (tool, body) in [
        ("pg_dump", "env"),
        ("pg_dumpall", "env"),
        ("psql", "echo app"),
    ] {
        std::fs::write(bin.join(tool), format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.write_config(&format!(
        "[backup.jobs.db]\nkind = \"postgres\"\nbin_dir = \"{}\"\ntable_stats = false\npassword = \"db-pw\"\n",
        bin.display()
    ));
    let o = Command::new(steward_bin())
        .args(["backup", "run", "db", "--config"])
        .arg(&env.config)
        .env("STEWARD_IDENTITY", "AGE-SECRET-KEY-1PLANTED")
        .env("AWS_SECRET_ACCESS_KEY", "planted-s3-secret")
        .env("AWS_ACCESS_KEY_ID", "planted-key-id")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut seen = 0;
    for f in env.stored_files().iter().filter(|f| f.ends_with(".age")) {
        let plain = env.dir.path().join("plain");
        env.decrypt_to(&env.store.join(f), &plain);
        let dump = std::fs::read_to_string(&plain).unwrap();
        assert!(dump.contains("PGPASSWORD=db-pw"), "{f}: {dump}");
        for secret in ["AGE-SECRET-KEY", "planted-s3-secret", "planted-key-id"] {
            assert!(!dump.contains(secret), "{f} saw {secret}: {dump}");
        }
        seen += 1;
    }
    assert_eq!(seen, 2, "{:?}", env.stored_files());
}
