//! PostgreSQL point-in-time recovery fixtures shared by the PITR test
//! files: a backup environment the server's user can use (its own copy of
//! the steward binary, config and key), a server whose archive_command is
//! `steward wal push`, marker rows, and restored servers stopped on drop.
//!
//! The server runs as the unprivileged test user, so everything
//! archive_command and restore_command read or write is given to it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::backup_env::{BackupEnv, HOST};
use crate::postgres::{as_owner, chown_tree, test_owner, Postgres};
use crate::steward_bin;

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A backup environment the server's user can use: a private copy of the
/// steward binary, config and key, all owned by that user.
pub struct Pitr {
    pub env: BackupEnv,
    pub bin: PathBuf,
}

// Each one makes a key pair and copies the binary: not a cheap Default.
#[allow(clippy::new_without_default)]
impl Pitr {
    pub fn new() -> Self {
        let env = BackupEnv::new();
        let bin = env.dir.path().join("bin").join("steward");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::copy(steward_bin(), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Pitr { env, bin }
    }

    /// Writes the config, and gives the whole environment (store included)
    /// to the server's user, who runs archive_command and restore_command.
    pub fn configure(&self, rest: &str) {
        self.env.write_config(rest);
        std::fs::create_dir_all(self.env.store.join(HOST).join("db").join("wal")).unwrap();
        if let Some(owner) = test_owner().unwrap() {
            chown_tree(self.env.dir.path(), &owner).unwrap();
        }
    }

    pub fn archive_command(&self) -> String {
        format!(
            "{} wal push --config {} db %p",
            self.bin.display(),
            self.env.config.display()
        )
    }

    pub fn steward(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut c = Command::new(&self.bin);
        c.args(args).stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run steward")
    }

    pub fn with_config(&self, args: &[&str]) -> Output {
        let mut all = vec!["--config", s(&self.env.config)];
        all.extend_from_slice(args);
        self.steward(&all, &[])
    }

    /// An empty directory owned by the server's user, for a restored cluster.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        let d = self.env.dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some(owner) = test_owner().unwrap() {
            chown_tree(&d, &owner).unwrap();
        }
        d
    }
}

pub fn job_config(pg: &Postgres, targets: &str) -> String {
    format!(
        "[backup.jobs.db]\nkind = \"postgres_pitr\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\nbin_dir = \"{}\"\ntargets = [{targets}]\n",
        pg.port,
        pg.superuser,
        pg.password,
        pg.bin_dir.display()
    )
}

pub fn start_archiving(p: &Pitr) -> Postgres {
    let command = p.archive_command();
    Postgres::start_with(&[
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        ("archive_command", &command),
    ])
    .expect("postgres starts")
}

/// Switches to a new segment and waits until the finished one is archived.
pub fn switch_and_wait(pg: &Postgres) -> String {
    let seg = pg
        .psql("SELECT pg_walfile_name(pg_switch_wal())")
        .expect("pg_switch_wal");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = pg
            .psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver")
            .unwrap();
        let (last, _failed) = row.split_once('|').unwrap();
        if last >= seg.as_str() {
            return seg;
        }
        assert!(
            Instant::now() < deadline,
            "{seg} not archived after 60s (pg_stat_archiver: {row}); server log:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inserts a marker in its own transaction; returns the time right after
/// its commit (the server's clock).
pub fn marker(pg: &Postgres, name: &str) -> String {
    pg.psql(&format!(
        "INSERT INTO markers VALUES ('{name}', clock_timestamp())"
    ))
    .unwrap();
    pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
        .unwrap()
}

/// A restored server: stopped when dropped.
pub struct Restored {
    pub pg: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    pub password: String,
}

impl Restored {
    pub fn markers(&self) -> String {
        self.psql("SELECT string_agg(name, ',' ORDER BY name) FROM markers")
    }

    /// One statement on the restored server; its output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.pg.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                "postgres",
            ])
            .args(["-c", sql])
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", &self.password)
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let owner = test_owner().unwrap();
        let _ = as_owner(&owner, &self.pg.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
