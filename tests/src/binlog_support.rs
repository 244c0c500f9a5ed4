//! Helpers of the MySQL/MariaDB point-in-time recovery tests
//! (tests/tests/binlog*.rs): keys, the CLI, marker rows with known commit
//! times, and an agent started from a configuration file that can be
//! killed and started again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::mariadb::Mariadb;
use crate::promtext::Scrape;
use crate::steward_bin;

pub fn keypair(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("backup.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen (Debian package age)");
    assert!(out.status.success());
    let text = std::fs::read_to_string(&key).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (key, recipient)
}

pub fn steward(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(steward_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("STEWARD_CONFIG")
        .env_remove("STEWARD_IDENTITY")
        .env_remove("STEWARD_IDENTITY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run steward")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

pub fn failed(o: Output) -> String {
    assert!(!o.status.success(), "expected failure:\n{}", text(&o));
    let t = text(&o);
    assert!(!t.contains("panicked"), "{t}");
    t
}

/// The `[backup]` section of the tests' usual setup: a local target at
/// `store` and job `shop` (database `shop` over the server's socket as
/// root, binlog shipping every `flush_secs`).
pub fn shop_backup_toml(recipient: &str, store: &Path, db: &Mariadb, flush_secs: u64) -> String {
    format!(
        "[backup]\nrecipients = [\"{recipient}\"]\n\
         [backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\
         [backup.jobs.shop]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\ndatabases = [\"shop\"]\ntargets = [\"local\"]\nbinlog = true\nbinlog_flush_interval_secs = {flush_secs}\n",
        store.display(),
        db.socket.display(),
        db.root_password
    )
}

/// `steward restore -q -i KEY EXTRA...` into `db` over TCP as root.
pub fn restore_into(key: &Path, db: &Mariadb, extra: &[&str]) -> Output {
    let port = db.port.to_string();
    let mut args = vec!["restore", "-q", "-i", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--db-user",
        "root",
        "--db-host",
        "127.0.0.1",
        "--db-port",
        &port,
    ]);
    steward(&args, &[("MYSQL_PWD", db.root_password.as_str())])
}

/// Inserts a marker row and returns the server's Unix time of the
/// statement (the time its binlog events carry).
pub fn marker(db: &Mariadb, name: &str) -> i64 {
    db.mysql(&format!(
        "INSERT INTO shop.marker (name, at) VALUES ('{name}', UNIX_TIMESTAMP()); SELECT at FROM shop.marker WHERE name = '{name}'"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

pub fn rows(db: &Mariadb, sql: &str) -> String {
    db.mysql(sql).unwrap()
}

/// An agent run from a configuration file (with `listen` on a loopback
/// port), its output appended to a log file.
pub struct Agent {
    pub guard: crate::ChildGuard,
    port: u16,
    log: PathBuf,
}

impl Agent {
    pub fn start(config: &Path, log: &Path) -> Agent {
        let text = std::fs::read_to_string(config).unwrap();
        let port: u16 = text
            .lines()
            .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|p| p.trim_end_matches('"').parse().ok())
            .unwrap();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut cmd = Command::new(steward_bin());
        cmd.arg("agent")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let guard = crate::ChildGuard::spawn("steward", &mut cmd).unwrap();
        crate::wait_for_http(port, "/livez", Duration::from_secs(30)).unwrap();
        Agent {
            guard,
            port,
            log: log.to_path_buf(),
        }
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = crate::http_get(self.port, "/metrics", &[]).unwrap();
        let scrape = Scrape::parse(&String::from_utf8_lossy(&body));
        let value = scrape
            .series_of(name)
            .map(|(_, v)| v)
            .next()
            .unwrap_or(f64::NAN);
        value
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until every target holds the server's binlogs up to where
    /// they stand now (`SHOW MASTER STATUS`), marker `at` included.
    pub fn wait_shipped(&self, db: &Mariadb, at: i64) {
        let (file, position) = master_position(db);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = self.scrape();
            if shipped_through(&body, &file, position) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "binlogs up to {file}:{position} (marker at {at}) not shipped; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn scrape(&self) -> String {
        let (_, _, body) = crate::http_get(self.port, "/metrics", &[]).unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }
}

/// Where the server's binlog stands: (file, next byte).
pub fn master_position(db: &Mariadb) -> (String, u64) {
    let status = db.mysql("SHOW MASTER STATUS").unwrap();
    let mut fields = status.trim().split('\t');
    let file = fields.next().unwrap().to_string();
    let position = fields.next().unwrap().parse().unwrap();
    (file, position)
}

/// Whether a scrape says every target holds the binlogs up to `file`
/// byte `position`: `steward_binlog_shipped_position_bytes` names the
/// next byte every target still needs. Waiting on the newest event's
/// second instead races: an earlier event in the marker's second already
/// meets it while the marker itself is not shipped yet (a CI run restored
/// "latest" without its last marker).
pub fn shipped_through(scrape: &str, file: &str, position: u64) -> bool {
    Scrape::parse(scrape)
        .series_of("steward_binlog_shipped_position_bytes")
        .any(|(series, next)| match series.label("file") {
            // Binlog names share a base and a zero-padded number.
            Some(f) if f == file => next >= position as f64,
            Some(f) => f > file,
            None => false,
        })
}

/// Every (start, end) of the shipped segments of each binlog file, from
/// the keys (or paths) of their metadata objects
/// (`.../binlog/<file>/<start>-<end>[.last].json`), each file's sorted.
pub fn segment_ranges<'a>(
    keys: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    for key in keys {
        let mut parts = key.rsplit('/');
        let (Some(name), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(range) = name.strip_suffix(".json") else {
            continue;
        };
        let range = range.trim_end_matches(".last");
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        out.entry(file.to_string())
            .or_default()
            .push((a.parse().unwrap(), b.parse().unwrap()));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// Asserts each file's segments start at byte 0 and follow one another
/// exactly: no byte twice, none missing.
pub fn assert_contiguous(ranges: &std::collections::BTreeMap<String, Vec<(u64, u64)>>) {
    assert!(!ranges.is_empty());
    for (file, segs) in ranges {
        assert_eq!(segs[0].0, 0, "{file}: {segs:?}");
        for w in segs.windows(2) {
            assert_eq!(w[0].1, w[1].0, "{file}: {segs:?}");
        }
    }
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}
