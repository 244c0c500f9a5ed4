//! PostgreSQL metrics against a real server, side by side with the Debian
//! prometheus-postgres-exporter (0.11): same families, types and label
//! names; stable values agree; `pg_up` follows the server down and back;
//! a wrong password is counted and logged without the secret.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::postgres::Postgres;
use steward_tests::{free_port, http_get, wait_for_http, ChildGuard, StewardAgent};

/// Families the Debian exporter writes by default that Steward does not,
/// each with the reason.
const EXCEPTIONS: &[(&str, &str)] = &[
    // Go runtime and HTTP handler metrics of the exporter process itself;
    // Steward has its own process metrics.
    ("go_", "Go runtime of the anchor process"),
    ("process_", "the anchor process; Steward reports its own"),
    ("promhttp_", "the anchor's HTTP handler"),
    (
        "postgres_exporter_build_info",
        "the anchor's build; steward_build_info instead",
    ),
];

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
            let name = &line[..name_end];
            let mut names: Vec<String> = Vec::new();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.rfind('}').expect("closing brace")];
                let mut rest = body;
                while let Some(eq) = rest.find("=\"") {
                    names.push(rest[..eq].trim_start_matches(',').to_string());
                    // Skip the quoted value, honouring escapes.
                    let bytes = rest.as_bytes();
                    let mut i = eq + 2;
                    while i < bytes.len() && bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    rest = &rest[(i + 1).min(rest.len())..];
                }
            }
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

struct Anchor {
    _guard: ChildGuard,
    port: u16,
}

impl Anchor {
    fn start(pg: &Postgres) -> Anchor {
        let port = free_port();
        let mut cmd = Command::new("prometheus-postgres-exporter");
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .env("DATA_SOURCE_NAME", format!("{}?sslmode=disable", pg.dsn()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = ChildGuard::spawn("prometheus-postgres-exporter", &mut cmd).expect(
            "prometheus-postgres-exporter must be installed (Debian package prometheus-postgres-exporter)",
        );
        wait_for_http(port, "/metrics", Duration::from_secs(20)).expect("anchor exporter up");
        Anchor {
            _guard: guard,
            port,
        }
    }

    fn scrape(&self) -> String {
        let (status, _, body) = http_get(self.port, "/metrics", &[]).expect("anchor scrape");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf-8")
    }
}

fn monitoring_role(pg: &Postgres, role: &str, password: &str) {
    pg.psql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT pg_monitor TO {role};"
    ))
    .expect("create monitoring role");
}

fn steward_with(
    pg: &Postgres,
    dir: &std::path::Path,
    targets: &[(&str, &str, &str)],
) -> StewardAgent {
    let mut config = String::new();
    for (name, user, password) in targets {
        let pw = dir.join(format!("{name}.pw"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        config.push_str(&format!(
            "[[postgres]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\npassword_file = \"{}\"\n",
            pg.port,
            pw.display()
        ));
    }
    StewardAgent::start(&format!("[node]\nenabled = false\n{config}"), "").expect("steward starts")
}

#[test]
fn postgres_families_match_the_debian_exporter_and_follow_the_server() {
    let mut pg = Postgres::start().expect("start postgres");
    // Steward runs with the documented minimum: a login role in pg_monitor.
    monitoring_role(&pg, "steward_mon", "mon-pass-1");
    pg.psql("CREATE DATABASE app").unwrap();
    pg.psql_db(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent = steward_with(&pg, dir.path(), &[("main", "steward_mon", "mon-pass-1")]);
    let anchor = Anchor::start(&pg);

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
        their_shapes.len() > 250,
        "anchor wrote only {} families",
        their_shapes.len()
    );

    // Stable values agree.
    for series in [
        "pg_up",
        "pg_settings_max_connections",
        "pg_settings_shared_buffers_bytes",
        "pg_settings_work_mem_bytes",
        "pg_settings_checkpoint_timeout_seconds",
        "pg_settings_fsync",
    ] {
        let (a, b) = (value(&theirs, series), value(&ours, series));
        assert!(
            a.is_some() && a == b,
            "{series}: steward {b:?}, anchor {a:?}"
        );
    }
    let size = "pg_database_size_bytes{datname=\"app\"";
    let (a, b) = (value(&theirs, size).unwrap(), value(&ours, size).unwrap());
    assert!(
        (a - b).abs() / a < 0.1,
        "database size: steward {b}, anchor {a}"
    );
    assert!(a > 1_000_000.0, "the app database holds a table: {a}");
    // Extras the issue asks for.
    let start = value(&ours, "pg_postmaster_start_time_seconds").expect("postmaster start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - start < 600.0 && now >= start - 5.0,
        "start time {start}, now {now}"
    );
    assert_eq!(value(&ours, "pg_replication_is_replica"), Some(0.0));
    assert_eq!(value(&ours, "pg_replication_lag_seconds"), Some(0.0));
    assert!(ours.contains("pg_stat_bgwriter_buffers_alloc_total{server=\"127.0.0.1:"));
    assert!(ours.contains("# TYPE pg_stat_database_xact_commit counter"));

    // Kill the server: pg_up 0 with HTTP 200, well within the deadline.
    pg.kill();
    let t0 = Instant::now();
    let down = agent.scrape().expect("scrape while the database is down");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "scrape took {:?}",
        t0.elapsed()
    );
    assert_eq!(value(&down, "pg_up"), Some(0.0), "{down}");
    assert!(value(
        &down,
        "steward_scrape_collector_success{collector=\"postgres\""
    )
    .is_some());

    // Restart: the collector reconnects by itself.
    pg.restart().expect("restart postgres");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = agent.scrape().unwrap();
        if value(&text, "pg_up") == Some(1.0) {
            assert!(value(&text, "pg_settings_max_connections").is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_up did not return to 1:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn wrong_password_is_counted_logged_without_secret_and_recovers() {
    let pg = Postgres::start().expect("start postgres");
    monitoring_role(&pg, "good_mon", "good-pass");
    monitoring_role(&pg, "late_mon", "the-real-one");
    let dir = tempfile::tempdir().unwrap();
    let secret = "wrong-secret-4711";
    let agent = steward_with(
        &pg,
        dir.path(),
        &[
            ("good", "good_mon", "good-pass"),
            ("bad", "late_mon", secret),
        ],
    );
    let text = agent.scrape().unwrap();
    // Several targets: each series carries its target name.
    assert_eq!(value(&text, "pg_up{target=\"bad\"}"), Some(0.0), "{text}");
    assert_eq!(value(&text, "pg_up{target=\"good\"}"), Some(1.0), "{text}");
    let errors = value(
        &text,
        "pg_exporter_scrape_errors_total{collector=\"connection\",target=\"bad\"}",
    )
    .expect("error counter for the bad target");
    assert!(errors >= 1.0);
    let (_, _, health) = http_get(agent.port, "/health", &[]).unwrap();
    let health = String::from_utf8_lossy(&health).to_string();
    let log = agent.log();
    assert!(log.contains("bad"), "log names the target:\n{log}");
    assert!(log.contains("password authentication failed"), "{log}");
    for (what, body) in [("log", &log), ("/health", &health), ("/metrics", &text)] {
        assert!(!body.contains(secret), "{what} shows the password");
    }

    // The operator fixes the role's password: the target recovers alone.
    pg.psql(&format!("ALTER ROLE late_mon PASSWORD '{secret}'"))
        .unwrap();
    let text = agent.scrape().unwrap();
    assert_eq!(value(&text, "pg_up{target=\"bad\"}"), Some(1.0), "{text}");
}
