//! MySQL/MariaDB metrics against a real MariaDB, side by side with the
//! Debian prometheus-mysqld-exporter (0.14): same families, types and label
//! names (MariaDB replica syntax included); stable values agree; `mysql_up`
//! follows the server down and back; a wrong password is counted and logged
//! without the secret.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::mariadb::Mariadb;
use steward_tests::{free_port, http_get, wait_for_http, ChildGuard, StewardAgent};

/// Families the Debian exporter writes by default that Steward does not,
/// each with the reason.
const EXCEPTIONS: &[(&str, &str)] = &[
    ("go_", "Go runtime of the anchor process"),
    ("process_", "the anchor process; Steward reports its own"),
    ("promhttp_", "the anchor's HTTP handler"),
    (
        "mysqld_exporter_build_info",
        "the anchor's build; steward_build_info instead",
    ),
];

/// Grants the README documents as the minimum for Steward on MariaDB.
const GRANTS: &str = "PROCESS, REPLICATION CLIENT, SLAVE MONITOR, SELECT";

/// Family -> (type, label-name sets) of a text-format scrape.
fn shapes(text: &str) -> BTreeMap<String, (String, BTreeSet<Vec<String>>)> {
    let mut types = BTreeMap::new();
    let mut labels: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).expect("sample line");
            let mut name = &line[..name_end];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if types.get(base).map(String::as_str) == Some("histogram") {
                        name = base;
                    }
                }
            }
            let mut names: Vec<String> = Vec::new();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.rfind('}').expect("closing brace")];
                let mut rest = body;
                while let Some(eq) = rest.find("=\"") {
                    names.push(rest[..eq].trim_start_matches(',').to_string());
                    let bytes = rest.as_bytes();
                    let mut i = eq + 2;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    rest = &rest[(i + 1).min(rest.len())..];
                }
            }
            names.retain(|n| n != "le");
            names.sort();
            labels.entry(name.to_string()).or_default().insert(names);
        }
    }
    types
        .into_iter()
        .map(|(name, kind)| {
            let l = labels.remove(&name).unwrap_or_default();
            (name, (kind, l))
        })
        .filter(|(_, (_, l))| !l.is_empty())
        .collect()
}

/// Value of the first sample matching `series`: a bare name, a full
/// series `name{a="b"}`, or a label prefix `name{a="b"` (labels sorted).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            if series.ends_with('}') {
                l.starts_with(&format!("{series} "))
            } else if series.contains('{') {
                l.starts_with(series)
            } else {
                l.starts_with(&format!("{series} ")) || l.starts_with(&format!("{series}{{"))
            }
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn line_of<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

struct Anchor {
    _guard: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Anchor {
    fn start(db: &Mariadb, user: &str, password: &str) -> Anchor {
        let dir = tempfile::tempdir().unwrap();
        let cnf = dir.path().join("my.cnf");
        std::fs::write(
            &cnf,
            format!(
                "[client]\nuser={user}\npassword={password}\nhost=127.0.0.1\nport={}\n",
                db.port
            ),
        )
        .unwrap();
        let port = free_port();
        let mut cmd = Command::new("prometheus-mysqld-exporter");
        cmd.arg(format!("--config.my-cnf={}", cnf.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = ChildGuard::spawn("prometheus-mysqld-exporter", &mut cmd).expect(
            "prometheus-mysqld-exporter must be installed (Debian package prometheus-mysqld-exporter)",
        );
        wait_for_http(port, "/metrics", Duration::from_secs(20)).expect("anchor exporter up");
        Anchor {
            _guard: guard,
            port,
            _dir: dir,
        }
    }

    fn scrape(&self) -> String {
        let (status, _, body) = http_get(self.port, "/metrics", &[]).expect("anchor scrape");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf-8")
    }
}

fn monitoring_user(db: &Mariadb, user: &str, password: &str) {
    db.mysql(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; \
         GRANT {GRANTS} ON *.* TO '{user}'@'127.0.0.1';"
    ))
    .expect("create monitoring user");
}

fn steward_with(
    db: &Mariadb,
    dir: &std::path::Path,
    targets: &[(&str, &str, &str)],
) -> StewardAgent {
    let mut config = String::new();
    for (name, user, password) in targets {
        let pw = dir.join(format!("{name}.pw"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        config.push_str(&format!(
            "[[mysql]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\npassword_file = \"{}\"\n",
            db.port,
            pw.display()
        ));
    }
    StewardAgent::start(&format!("[node]\nenabled = false\n{config}"), "").expect("steward starts")
}

#[test]
fn mysql_families_match_the_debian_exporter_and_follow_the_server() {
    let mut db = Mariadb::start().expect("start mariadb");
    monitoring_user(&db, "exporter", "exp-pass-1");
    // A configured but stopped replica connection: SHOW ALL SLAVES STATUS
    // (MariaDB syntax) then has a row with connection_name "src".
    db.mysql(
        "CHANGE MASTER 'src' TO MASTER_HOST='192.0.2.1', MASTER_PORT=3306, \
         MASTER_USER='repl', MASTER_PASSWORD='x'",
    )
    .expect("configure a replica connection");
    let dir = tempfile::tempdir().unwrap();
    let agent = steward_with(&db, dir.path(), &[("main", "exporter", "exp-pass-1")]);
    let anchor = Anchor::start(&db, "exporter", "exp-pass-1");

    let theirs = anchor.scrape();
    let ours = agent.scrape().unwrap();
    let their_shapes = shapes(&theirs);
    let our_shapes = shapes(&ours);
    let mut problems = Vec::new();
    for (name, (kind, label_sets)) in &their_shapes {
        if EXCEPTIONS.iter().any(|(p, _)| name.starts_with(p)) {
            continue;
        }
        match our_shapes.get(name) {
            None => problems.push(format!("missing family {name}")),
            Some((our_kind, our_labels)) => {
                if our_kind != kind {
                    problems.push(format!("{name}: type {our_kind}, anchor {kind}"));
                }
                if our_labels != label_sets {
                    problems.push(format!(
                        "{name}: labels {our_labels:?}, anchor {label_sets:?}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "differences from the anchor:\n{}",
        problems.join("\n")
    );
    assert!(
        their_shapes.len() > 500,
        "anchor wrote only {} families",
        their_shapes.len()
    );
    assert!(
        their_shapes.contains_key("mysql_slave_status_slave_io_running"),
        "the anchor saw the replica connection"
    );

    // Stable values agree.
    for series in [
        "mysql_up",
        "mysql_global_variables_max_connections",
        "mysql_global_variables_innodb_buffer_pool_size",
        "mysql_global_variables_table_open_cache",
        "mysql_global_variables_read_only",
        "mysql_global_status_buffer_pool_pages{state=\"free\"",
        "mysql_slave_status_slave_io_running",
        "mysql_slave_status_master_port",
    ] {
        let (a, b) = (value(&theirs, series), value(&ours, series));
        assert!(
            a.is_some() && a == b,
            "{series}: steward {b:?}, anchor {a:?}"
        );
    }
    for prefix in ["mysql_version_info{", "mysql_slave_status_master_port{"] {
        assert_eq!(line_of(&ours, prefix), line_of(&theirs, prefix), "{prefix}");
    }
    let uptime = |t: &str| value(t, "mysql_global_status_uptime").unwrap();
    assert!((uptime(&theirs) - uptime(&ours)).abs() <= 5.0);
    assert!(ours.contains("# TYPE mysql_global_status_uptime untyped"));
    assert!(ours.contains("# TYPE mysql_global_status_commands_total counter"));

    // Kill the server: mysql_up 0 with HTTP 200, well within the deadline.
    db.kill();
    let t0 = Instant::now();
    let down = agent.scrape().expect("scrape while the database is down");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "scrape took {:?}",
        t0.elapsed()
    );
    assert_eq!(value(&down, "mysql_up"), Some(0.0), "{down}");

    // Restart: the collector reconnects by itself.
    db.restart().expect("restart mariadb");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = agent.scrape().unwrap();
        if value(&text, "mysql_up") == Some(1.0) {
            assert_eq!(
                value(&text, "mysql_global_variables_max_connections"),
                Some(100.0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mysql_up did not return to 1:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn wrong_password_is_counted_logged_without_secret_and_recovers() {
    let db = Mariadb::start().expect("start mariadb");
    monitoring_user(&db, "good", "good-pass");
    monitoring_user(&db, "late", "the-real-one");
    let dir = tempfile::tempdir().unwrap();
    let secret = "wrong-secret-4711";
    let agent = steward_with(
        &db,
        dir.path(),
        &[("good", "good", "good-pass"), ("bad", "late", secret)],
    );
    let text = agent.scrape().unwrap();
    assert_eq!(
        value(&text, "mysql_up{target=\"bad\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "mysql_up{target=\"good\"}"),
        Some(1.0),
        "{text}"
    );
    let errors = value(
        &text,
        "mysql_exporter_scrape_errors_total{collector=\"connection\",target=\"bad\"}",
    )
    .expect("error counter for the bad target");
    assert!(errors >= 1.0);
    let (_, _, health) = http_get(agent.port, "/health", &[]).unwrap();
    let health = String::from_utf8_lossy(&health).to_string();
    let log = agent.log();
    assert!(log.contains("bad"), "log names the target:\n{log}");
    assert!(log.contains("Access denied"), "{log}");
    for (what, body) in [("log", &log), ("/health", &health), ("/metrics", &text)] {
        assert!(!body.contains(secret), "{what} shows the password");
    }

    db.mysql(&format!(
        "ALTER USER 'late'@'127.0.0.1' IDENTIFIED BY '{secret}'"
    ))
    .unwrap();
    let text = agent.scrape().unwrap();
    assert_eq!(
        value(&text, "mysql_up{target=\"bad\"}"),
        Some(1.0),
        "{text}"
    );
}
