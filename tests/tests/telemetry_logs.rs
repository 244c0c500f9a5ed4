//! The stack's log parsers on what the real programs write in the test
//! run: Laravel lines from Debian's php-monolog (LineFormatter built as
//! Laravel builds it), MariaDB's error and slow query logs, PostgreSQL's
//! stderr log with Debian's prefix and its jsonlog, redis-server's log,
//! util-linux `logger` output in both syslog formats, and supervisord with
//! a program. Each record arrives once, grouped as written (stack traces,
//! DETAIL/STATEMENT lines, multi-line statements), with its fields named.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use steward_tests::mariadb::Mariadb;
use steward_tests::otlp_sink::{LogRecordSeen, OtlpSink, PersistentAgent};
use steward_tests::postgres::Postgres;
use steward_tests::redis::Redis;
use steward_tests::ChildGuard;

/// `[telemetry]` with the sink as exporter and `sources` (TOML).
fn config(sink: &OtlpSink, sources: &str) -> String {
    format!(
        "[telemetry]\npoll_interval_ms = 50\n[telemetry.exporter]\nendpoint = \"{}\"\nbatch_timeout_ms = 100\n[telemetry.receiver]\nenabled = false\n{sources}",
        sink.grpc_endpoint()
    )
}

fn source(name: &str, path: &Path, parser: &str, extra: &str) -> String {
    format!(
        "[[telemetry.sources]]\nname = \"{name}\"\npaths = [\"{}\"]\nparser = \"{parser}\"\n{extra}\n",
        path.display()
    )
}

fn of_source(sink: &OtlpSink, name: &str) -> Vec<LogRecordSeen> {
    sink.logs()
        .into_iter()
        .filter(|r| r.resource.get("log.source").map(String::as_str) == Some(name))
        .collect()
}

/// Waits until `source` has `n` records, then a little longer so that
/// extra (wrongly split) records would show up too.
fn wait_records(
    sink: &OtlpSink,
    agent: &PersistentAgent,
    name: &str,
    n: usize,
) -> Vec<LogRecordSeen> {
    let ok = sink.wait_until(Duration::from_secs(60), |s| {
        s.logs()
            .iter()
            .filter(|r| r.resource.get("log.source").map(String::as_str) == Some(name))
            .count()
            >= n
    });
    let got = of_source(sink, name);
    assert!(
        ok,
        "{name}: {} of {n} records: {:#?}\nagent log:\n{}",
        got.len(),
        got.iter().map(|r| &r.body).collect::<Vec<_>>(),
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    of_source(sink, name)
}

fn attr<'a>(r: &'a LogRecordSeen, key: &str) -> &'a str {
    r.attributes
        .get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {key} in {:#?}", r))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A PHP script with Debian's php-monolog writing as Laravel does:
/// `new LineFormatter(null, 'Y-m-d H:i:s', true, true)` and
/// `includeStacktraces()` (Illuminate\Log\LogManager::formatter()).
const LARAVEL_PHP: &str = r#"<?php
require_once '/usr/share/php/Monolog/autoload.php';
use Monolog\Logger;
use Monolog\Handler\StreamHandler;
use Monolog\Formatter\LineFormatter;
$path = $argv[1];
$handler = new StreamHandler($path, Logger::DEBUG);
$formatter = new LineFormatter(null, 'Y-m-d H:i:s', true, true);
$formatter->includeStacktraces();
$handler->setFormatter($formatter);
$log = new Logger('production');
$log->pushHandler($handler);
function deep($n) { if ($n == 0) { throw new RuntimeException("deep failure"); } deep($n - 1); }
function wrap() { try { deep(200); } catch (RuntimeException $e) { throw new LogicException("wrapped \"it\"", 7, $e); } }
$log->info('User logged in', ['user_id' => 42, 'trace_id' => '4bf92f3577b34da6a3ce929d0e0e4736', 'span_id' => '00f067aa0ba902b7']);
try { wrap(); } catch (Exception $e) { $log->error($e->getMessage(), ['exception' => $e]); }
$log->warning("two\nlines", []);
$log->notice("bad \xff byte", ['k' => 'v']);
$log->debug('last', ['n' => 1]);
"#;

#[test]
fn laravel_lines_from_php_monolog() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("log.php"), LARAVEL_PHP).unwrap();
    for name in ["laravel.log", "small.log"] {
        let out = Command::new("php")
            .arg(d.join("log.php"))
            .arg(d.join(name))
            .output()
            .expect("php is needed (Debian packages php-cli and php-monolog)");
        assert!(
            out.status.success(),
            "php-monolog failed (Debian package php-monolog): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = std::fs::read(d.join("laravel.log")).unwrap();
    let lines = written.split(|b| *b == b'\n').count();
    assert!(lines > 200, "the stack trace spans {lines} lines");
    let sources = source(
        "laravel",
        &d.join("laravel.log"),
        "monolog",
        "time_zone = \"UTC\"",
    ) + &source(
        "small",
        &d.join("small.log"),
        "monolog",
        "max_record_bytes = 2048",
    );
    let agent = PersistentAgent::start(d, &config(&sink, &sources)).unwrap();
    let records = wait_records(&sink, &agent, "laravel", 5);
    assert_eq!(records.len(), 5, "one record per log call: {records:#?}");
    let info = &records[0];
    assert_eq!(info.body, "User logged in");
    assert_eq!((info.severity, info.severity_text.as_str()), (9, "INFO"));
    assert_eq!(attr(info, "log.logger"), "production");
    assert_eq!(attr(info, "context.user_id"), "42");
    assert_eq!(hex(&info.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&info.span_id), "00f067aa0ba902b7");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        info.time_unix_nano <= now && now - info.time_unix_nano < 300 * 1_000_000_000,
        "the line's time (UTC) is about now: {} vs {now}",
        info.time_unix_nano
    );
    let error = &records[1];
    assert_eq!(error.severity, 17);
    assert_eq!(error.body, "wrapped \"it\"");
    assert_eq!(attr(error, "exception.type"), "LogicException");
    assert_eq!(attr(error, "exception.message"), "wrapped \"it\"");
    assert!(attr(error, "code.file.path").ends_with("log.php"));
    let trace = attr(error, "exception.stacktrace");
    assert!(trace.contains("#200 "), "all 200 frames: {trace}");
    assert!(
        trace.contains("[previous exception] [object] (RuntimeException(code: 0): deep failure")
    );
    assert!(!error.attributes.contains_key("log.record.truncated"));
    assert_eq!(records[2].body, "two\nlines");
    assert_eq!(records[2].severity, 13);
    assert_eq!(
        records[3].body, "bad \u{fffd} byte",
        "invalid UTF-8 kept as U+FFFD"
    );
    assert_eq!(attr(&records[3], "context.k"), "v");
    assert_eq!(records[4].body, "last");

    // Cut at 2048 bytes: marked, counted, and the next records are whole.
    let small = wait_records(&sink, &agent, "small", 5);
    assert_eq!(small.len(), 5);
    assert_eq!(attr(&small[1], "log.record.truncated"), "true");
    assert_eq!(
        small[1].severity, 17,
        "the head of a cut record still parses"
    );
    assert_eq!(small[2].body, "two\nlines");
    assert_eq!(small[4].body, "last");
    assert_eq!(
        agent.metric("steward_telemetry_records_truncated_total{source=\"small\"}"),
        Some(1.0)
    );
}

#[test]
fn mariadb_error_and_slow_query_logs() {
    let sink = OtlpSink::start().unwrap();
    let db = Mariadb::start().unwrap();
    let slow = db.dir.path().join("slow.log");
    db.mysql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT); INSERT INTO app.t SELECT seq FROM app.seq_1_to_1000;",
    )
    .unwrap();
    db.mysql(&format!(
        "SET GLOBAL slow_query_log_file = '{}'; SET GLOBAL long_query_time = 0.2; SET GLOBAL slow_query_log = ON;",
        slow.display()
    ))
    .unwrap();
    // Each a new connection, so each is its own entry.
    let statements = [
        "SELECT SLEEP(0.3)",
        "SELECT\n  SLEEP(0.25) AS s,\n  'multi' AS line",
        "SELECT COUNT(*) FROM app.t WHERE SLEEP(0.0003) = 0",
    ];
    for sql in statements {
        db.mysql(sql).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let sources = source(
        "mariadb",
        &db.dir.path().join("mariadb.err"),
        "mysql_error",
        "",
    ) + &source("mariadb-slow", &slow, "mysql_slow", "");
    let agent = PersistentAgent::start(dir.path(), &config(&sink, &sources)).unwrap();

    // The file's header (written when the server opened it), then one
    // record per query.
    let mut slow_records = wait_records(&sink, &agent, "mariadb-slow", statements.len() + 1);
    let slow_text = std::fs::read_to_string(&slow).unwrap();
    let header = slow_records.remove(0);
    assert!(header.body.contains(", Version: "), "{header:#?}");
    assert!(!header.attributes.contains_key("mysql.query_time"));
    assert_eq!(
        slow_records.len(),
        statements.len(),
        "one record per query:\n{slow_text}"
    );
    for (r, sql) in slow_records.iter().zip(statements) {
        assert_eq!(r.body, format!("{sql};"), "{slow_text}");
        assert_eq!(attr(r, "db.system.name"), "mariadb");
        assert_eq!(attr(r, "user.name"), "root");
        assert_eq!(attr(r, "db.operation.name"), "SELECT");
        let q: f64 = attr(r, "mysql.query_time").parse().unwrap();
        assert!(q >= 0.2, "{q}");
        assert!(r.time_unix_nano > 0);
    }
    assert_eq!(attr(&slow_records[2], "mysql.rows_examined"), "1000");
    let metrics = agent.scrape().unwrap();
    let series = |name: &str| {
        steward_tests::otlp_sink::metric_in(&metrics, name)
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(
        series("steward_slow_query_duration_seconds_count{source=\"mariadb-slow\"}"),
        3.0
    );
    assert_eq!(
        series("steward_slow_query_duration_seconds_bucket{source=\"mariadb-slow\",le=\"0.1\"}"),
        0.0
    );
    assert_eq!(
        series("steward_slow_query_duration_seconds_bucket{source=\"mariadb-slow\",le=\"120\"}"),
        3.0
    );
    assert_eq!(
        series("steward_slow_query_rows_examined_bucket{source=\"mariadb-slow\",le=\"10\"}"),
        2.0
    );
    assert_eq!(
        series("steward_slow_query_rows_examined_count{source=\"mariadb-slow\"}"),
        3.0
    );

    // The error log: every dated line starts a record, InnoDB's
    // continuation lines (if any) stay with theirs.
    let err_text = db.log();
    let starts = regex_lite_count(&err_text);
    let err_records = wait_records(&sink, &agent, "mariadb", starts);
    assert_eq!(err_records.len(), starts, "{err_text}");
    let ready = err_records
        .iter()
        .find(|r| r.body.contains("ready for connections"))
        .unwrap_or_else(|| panic!("{err_records:#?}"));
    assert_eq!((ready.severity, ready.severity_text.as_str()), (9, "Note"));
    assert!(ready.attributes.contains_key("thread.id"));
    assert!(ready.time_unix_nano > 0);
}

/// Lines of a MariaDB error log that start a record (a date first).
fn regex_lite_count(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            let b = l.as_bytes();
            b.len() > 19 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b' '
        })
        .count()
}

#[test]
fn postgresql_stderr_with_debian_prefix_and_jsonlog() {
    let sink = OtlpSink::start().unwrap();
    let pg = Postgres::start_with(&[
        ("logging_collector", "on"),
        ("log_destination", "stderr,jsonlog"),
        ("log_directory", "log"),
        ("log_filename", "pg.log"),
        ("log_line_prefix", "%m [%p] %q%u@%d "),
        ("log_min_duration_statement", "200"),
    ])
    .unwrap();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(pg.psql("INSERT INTO t\nVALUES (1);").is_err());
    assert!(pg.psql("SELECT nope_fn(1)").is_err());
    pg.psql("SELECT pg_sleep(0.3),\n  'two lines'").unwrap();
    let log_dir = pg.data_dir.join("log");
    let dir = tempfile::tempdir().unwrap();
    let sources = source("pg", &log_dir.join("pg.log"), "postgresql", "")
        + &source("pg-json", &log_dir.join("pg.json"), "postgresql", "");
    let agent = PersistentAgent::start(dir.path(), &config(&sink, &sources)).unwrap();
    for name in ["pg", "pg-json"] {
        let ok = sink.wait_until(Duration::from_secs(60), |s| {
            s.logs().iter().any(|r| {
                r.resource.get("log.source").map(String::as_str) == Some(name)
                    && r.body.starts_with("duration: ")
            })
        });
        let text =
            std::fs::read_to_string(log_dir.join(if name == "pg" { "pg.log" } else { "pg.json" }))
                .unwrap_or_default();
        assert!(ok, "{name}: no duration record\n{text}\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(500));
        let records = of_source(&sink, name);
        let dup = records
            .iter()
            .find(|r| r.body.starts_with("duplicate key value"))
            .unwrap_or_else(|| panic!("{name}: {records:#?}"));
        assert_eq!((dup.severity, dup.severity_text.as_str()), (17, "ERROR"));
        assert_eq!(
            attr(dup, "postgresql.detail"),
            "Key (id)=(1) already exists."
        );
        assert_eq!(attr(dup, "db.query.text"), "INSERT INTO t\nVALUES (1);");
        assert_eq!(attr(dup, "user.name"), "postgres");
        assert_eq!(attr(dup, "db.namespace"), "postgres");
        assert!(dup.attributes.contains_key("process.pid"));
        let missing = records
            .iter()
            .find(|r| r.body.contains("nope_fn"))
            .unwrap_or_else(|| panic!("{name}: {records:#?}"));
        assert!(attr(missing, "postgresql.hint").contains("No function matches"));
        let slow = records
            .iter()
            .find(|r| r.body.starts_with("duration: "))
            .unwrap();
        let seconds: f64 = attr(slow, "postgresql.duration").parse().unwrap();
        assert!(seconds >= 0.3, "{seconds}");
        assert_eq!(
            attr(slow, "db.query.text"),
            "SELECT pg_sleep(0.3),\n  'two lines'"
        );
        // No DETAIL/HINT/STATEMENT line became a record of its own.
        assert!(
            records.iter().all(|r| !r.body.starts_with("Key (id)")
                && !r.body.starts_with("INSERT INTO")
                && r.severity > 0),
            "{name}: {records:#?}"
        );
        assert!(records.iter().all(|r| r.time_unix_nano > 0));
    }
    // pg_sleep(0.3), and whatever else the loaded machine made slower.
    let slow = agent
        .metric("steward_slow_query_duration_seconds_count{source=\"pg\"}")
        .unwrap_or(0.0);
    assert!(slow >= 1.0, "{slow}");
}

#[test]
fn redis_server_log() {
    let sink = OtlpSink::start().unwrap();
    let redis = Redis::start().unwrap();
    let log = redis.dir.path().join("redis.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let re_starts = text
        .lines()
        .filter(|l| {
            l.split_once(':').is_some_and(|(pid, rest)| {
                pid.bytes().all(|b| b.is_ascii_digit())
                    && rest.len() > 2
                    && rest.as_bytes()[1] == b' '
            })
        })
        .count();
    let dir = tempfile::tempdir().unwrap();
    let agent = PersistentAgent::start(
        dir.path(),
        &config(&sink, &source("redis", &log, "redis", "")),
    )
    .unwrap();
    let records = wait_records(&sink, &agent, "redis", re_starts);
    assert_eq!(records.len(), re_starts, "{text}");
    let ready = records
        .iter()
        .find(|r| r.body.starts_with("Ready to accept connections"))
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        (ready.severity, ready.severity_text.as_str()),
        (10, "notice")
    );
    assert_eq!(attr(ready, "redis.role"), "master");
    assert!(ready.time_unix_nano > 0);
    assert!(records
        .iter()
        .all(|r| r.attributes.contains_key("process.pid")));
}

#[test]
fn syslog_from_logger_and_supervisor_programs() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // util-linux logger prints what it would send (to a UDP port nobody
    // listens on) in either format.
    let mut syslog = Vec::new();
    for args in [
        &[
            "--rfc5424",
            "-p",
            "local4.notice",
            "--msgid",
            "ID47",
            "--sd-id",
            "x@32473",
            "--sd-param",
            "a=\"b\"",
            "an event",
        ][..],
        &["--rfc3164", "-p", "cron.err", "job failed"][..],
    ] {
        let out = Command::new("logger")
            .args([
                "-n",
                "127.0.0.1",
                "-P",
                "9",
                "-d",
                "--no-act",
                "--stderr",
                "-t",
                "app",
            ])
            .args(args)
            .output()
            .expect("logger (Debian package bsdutils) is needed");
        assert!(out.status.success());
        syslog.extend_from_slice(&out.stderr);
    }
    std::fs::write(d.join("syslog"), &syslog).unwrap();

    let conf = d.join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}/children\n[program:worker]\ncommand=/bin/sh -c 'echo processing job 1; echo job 2 failed >&2; exec sleep 60'\nautostart=true\nstartsecs=0\n",
            d = d.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.join("children")).unwrap();
    let _supervisord = ChildGuard::spawn(
        "supervisord",
        Command::new("supervisord")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("supervisord is needed (Debian package supervisor)");
    let sources = source("syslog", &d.join("syslog"), "syslog", "")
        + &source("supervisor", &d.join("children/*.log"), "supervisor", "")
        + &source("supervisord", &d.join("supervisord.log"), "supervisor", "");
    let agent = PersistentAgent::start(d, &config(&sink, &sources)).unwrap();

    let records = wait_records(&sink, &agent, "syslog", 2);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].body, "an event");
    assert_eq!(
        (records[0].severity, records[0].severity_text.as_str()),
        (10, "notice")
    );
    assert_eq!(attr(&records[0], "syslog.appname"), "app");
    assert_eq!(attr(&records[0], "syslog.msgid"), "ID47");
    assert_eq!(attr(&records[0], "syslog.facility"), "20");
    assert_eq!(attr(&records[0], "syslog.structured_data.x@32473.a"), "b");
    assert_eq!(records[1].body, "job failed");
    assert_eq!(records[1].severity, 17);
    for r in &records {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = r.time_unix_nano / 1_000_000_000;
        assert!(t <= now + 1 && now - t < 300, "{t} vs {now}");
    }

    let out = wait_records(&sink, &agent, "supervisor", 2);
    let by_stream: BTreeMap<String, (String, String)> = out
        .iter()
        .map(|r| {
            (
                r.scope.get("log.iostream").cloned().unwrap_or_default(),
                (
                    r.scope
                        .get("supervisor.program")
                        .cloned()
                        .unwrap_or_default(),
                    r.body.clone(),
                ),
            )
        })
        .collect();
    assert_eq!(
        by_stream.get("stdout"),
        Some(&("worker".to_string(), "processing job 1".to_string())),
        "{out:#?}"
    );
    assert_eq!(
        by_stream.get("stderr"),
        Some(&("worker".to_string(), "job 2 failed".to_string()))
    );
    let ok = sink.wait_until(Duration::from_secs(30), |s| {
        s.logs().iter().any(|r| {
            r.resource.get("log.source").map(String::as_str) == Some("supervisord")
                && r.attributes.get("supervisor.program").map(String::as_str) == Some("worker")
        })
    });
    assert!(ok, "{:#?}", of_source(&sink, "supervisord"));
}
