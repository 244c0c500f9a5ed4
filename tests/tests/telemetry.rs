//! Log shipping with the real binary against an OTLP upstream built from
//! the official protos: rotation of every kind (running and stopped),
//! outage + SIGKILL without losing a line, retryable and non-retryable
//! errors, partial success, the queue bound, gzip/headers/token, parsers,
//! multiline and over-long records, and no telemetry without a section.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use steward_tests::otlp_sink::{metric_in, Mode, OtlpSink, PersistentAgent};
use steward_tests::{free_port, StewardAgent};

const WAIT: Duration = Duration::from_secs(30);

/// `[telemetry]` with fast polling and retries, the receiver on free ports.
fn config(endpoint: &str, protocol: &str, exporter_extra: &str, sources: &str) -> String {
    format!(
        r#"
[telemetry]
poll_interval_ms = 50
[telemetry.exporter]
endpoint = "{endpoint}"
protocol = "{protocol}"
batch_timeout_ms = 100
retry_initial_backoff_ms = 100
retry_max_backoff_secs = 1
{exporter_extra}
[telemetry.receiver]
grpc_listen = "127.0.0.1:{}"
http_listen = "127.0.0.1:{}"
{sources}
"#,
        free_port(),
        free_port()
    )
}

fn source(name: &str, paths: &[&Path], extra: &str) -> String {
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "[[telemetry.sources]]\nname = \"{name}\"\npaths = [{}]\n{extra}\n",
        list.join(", ")
    )
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = String::new();
    for l in lines {
        buf.push_str(&l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).unwrap();
}

fn lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

/// Waits until every expected body arrived; on timeout names what is missing.
fn wait_all(sink: &OtlpSink, expected: &[String], agent_log: &dyn Fn() -> String) {
    let ok = sink.wait_until(WAIT, |s| {
        let b = s.bodies();
        expected.iter().all(|e| b.contains_key(e))
    });
    if !ok {
        let b = sink.bodies();
        let missing: Vec<&String> = expected.iter().filter(|e| !b.contains_key(*e)).collect();
        panic!(
            "{} of {} lines never arrived, e.g. {:?}\nsteward log:\n{}",
            missing.len(),
            expected.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            agent_log()
        );
    }
}

fn assert_exactly_once(sink: &OtlpSink, expected: &[String]) {
    let b = sink.bodies();
    let dup: Vec<(&String, usize)> = expected
        .iter()
        .filter_map(|e| b.get(e).filter(|n| **n != 1).map(|n| (e, *n)))
        .collect();
    assert!(
        dup.is_empty(),
        "lines not delivered exactly once: {:?}",
        &dup[..dup.len().min(5)]
    );
}

#[test]
fn no_telemetry_section_starts_nothing_and_binds_no_port() {
    let agent = StewardAgent::start("", "").unwrap();
    let text = agent.scrape().unwrap();
    assert!(!text.contains("steward_telemetry_"), "{text}");
    // The only listening socket of the process is its HTTP server.
    let pid = agent.guard.pid();
    let mut socket_inodes = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let t = target.to_string_lossy().to_string();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                socket_inodes.push(inode.to_string());
            }
        }
    }
    let mut listening = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let content = std::fs::read_to_string(table).unwrap_or_default();
        for line in content.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && cols[3] == "0A" && socket_inodes.iter().any(|i| i == cols[9]) {
                listening += 1;
            }
        }
    }
    assert_eq!(
        listening, 1,
        "steward without [telemetry] must listen only on agent.listen"
    );
}

#[test]
fn rotation_of_every_kind_while_running_delivers_each_line_once() {
    let mut sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let ct = logs.join("ct.log");
    let del = logs.join("del.log");
    append(&app, lines("app-first", 200));
    append(&ct, lines("ct-first", 100));
    let sources = source("app", &[&logs.join("app.log*")], "")
        + &source("ct", &[&ct], "")
        + &source("del", &[&del], "");
    let agent = PersistentAgent::start(
        dir.path(),
        &config(&sink.grpc_endpoint(), "grpc", "", &sources),
    )
    .unwrap();
    let log = || agent.log();
    let mut expected = lines("app-first", 200);
    expected.extend(lines("ct-first", 100));
    wait_all(&sink, &expected, &log);

    // rename+create: nginx keeps writing to the renamed file until it
    // reopens; both the old tail and the new file arrive.
    let mut old_handle = OpenOptions::new().append(true).open(&app).unwrap();
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    for l in lines("app-old-after-rename", 100) {
        writeln!(old_handle, "{l}").unwrap();
    }
    drop(old_handle);
    append(&app, lines("app-new", 100));
    expected.extend(lines("app-old-after-rename", 100));
    expected.extend(lines("app-new", 100));
    wait_all(&sink, &expected, &log);

    // Compressed rotation matching the glob: never read.
    let status = Command::new("gzip")
        .arg(logs.join("app.log.1"))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(logs.join("app.log.1.gz").exists());

    // copytruncate: copy, truncate in place, keep writing.
    std::fs::copy(&ct, logs.join("ct.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&ct)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&ct, lines("ct-after-truncate", 50));
    expected.extend(lines("ct-after-truncate", 50));

    // A file deleted while open is drained: wait until it is being read,
    // then write its last lines and delete it at once.
    append(&del, lines("del-first", 10));
    expected.extend(lines("del-first", 10));
    wait_all(&sink, &expected, &log);
    append(&del, lines("del-last", 300));
    std::fs::remove_file(&del).unwrap();
    expected.extend(lines("del-last", 300));

    // A new file appearing under the glob.
    append(&logs.join("app.log.new"), lines("app-newfile", 20));
    expected.extend(lines("app-newfile", 20));
    wait_all(&sink, &expected, &log);
    // Give a compressed re-read (or a duplicate) time to show up.
    std::thread::sleep(Duration::from_millis(1500));
    assert_exactly_once(&sink, &expected);
    assert_eq!(
        sink.log_count(),
        expected.len(),
        "no record beyond the lines written"
    );

    let text = agent.scrape().unwrap();
    assert!(
        metric_in(&text, "steward_telemetry_items_sent_total{signal=\"logs\"}").unwrap_or(0.0)
            >= expected.len() as f64,
        "{text}"
    );
    // Resource and scope attributes.
    let rec = sink
        .logs()
        .into_iter()
        .find(|r| r.body == "app-new-000000")
        .unwrap();
    assert_eq!(
        rec.resource.get("service.name").map(String::as_str),
        Some("steward")
    );
    assert!(rec.resource.contains_key("host.name"));
    assert_eq!(
        rec.resource.get("log.source").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        rec.scope.get("log.file.path"),
        Some(&app.display().to_string())
    );
    sink.down();
}

#[test]
fn rotation_while_stopped_resumes_where_acknowledged() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    let ct = logs.join("ct.log");
    let old = logs.join("old.log");
    append(&app, lines("s-app-first", 100));
    append(&ct, lines("s-ct-first", 100));
    append(&old, lines("s-old-first", 100));
    let sources =
        source("app", &[&app], "") + &source("ct", &[&ct], "") + &source("old", &[&old], "");
    let mut agent = PersistentAgent::start(
        dir.path(),
        &config(&sink.grpc_endpoint(), "grpc", "", &sources),
    )
    .unwrap();
    let mut expected = lines("s-app-first", 100);
    expected.extend(lines("s-ct-first", 100));
    expected.extend(lines("s-old-first", 100));
    wait_all(&sink, &expected, &|| agent.log());
    assert!(agent.stop(), "graceful stop exits 0:\n{}", agent.log());

    // While stopped: more lines, then rename+create (the renamed file is
    // not matched by the glob: found by inode and drained)...
    append(&app, lines("s-app-before-rotate", 100));
    std::fs::rename(&app, logs.join("app.log.1")).unwrap();
    append(&app, lines("s-app-new", 100));
    // ...copytruncate (new content restarts at 0)...
    std::fs::copy(&ct, logs.join("ct.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&ct)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&ct, lines("s-ct-new", 100));
    // ...and a rotation that was compressed while stopped: its old lines
    // were delivered, the new file is read from its start.
    std::fs::rename(&old, logs.join("old.log.1")).unwrap();
    assert!(Command::new("gzip")
        .arg(logs.join("old.log.1"))
        .status()
        .unwrap()
        .success());
    append(&old, lines("s-old-new", 100));
    expected.extend(lines("s-app-before-rotate", 100));
    expected.extend(lines("s-app-new", 100));
    expected.extend(lines("s-ct-new", 100));
    expected.extend(lines("s-old-new", 100));

    agent.restart().unwrap();
    wait_all(&sink, &expected, &|| agent.log());
    std::thread::sleep(Duration::from_millis(1000));
    assert_exactly_once(&sink, &expected);
    assert_eq!(sink.log_count(), expected.len());
    assert!(
        agent
            .log()
            .contains("draining a file rotated while Steward was stopped"),
        "{}",
        agent.log()
    );
}

#[test]
fn outage_with_sigkill_loses_no_line() {
    let mut sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let app = logs.join("app.log");
    std::fs::write(&app, "").unwrap();
    let exporter = "max_batch_records = 500\nconcurrency = 2";
    let mut agent = PersistentAgent::start(
        dir.path(),
        &config(
            &sink.grpc_endpoint(),
            "grpc",
            exporter,
            &source("app", &[&app], ""),
        ),
    )
    .unwrap();

    // A separate process writes 30000 lines over a few seconds; halfway the
    // file is rotated (rename+create) by the writer itself.
    let total = 30_000;
    let script = format!(
        "for i in $(seq 0 {last}); do printf 'outage-%06d\\n' $i; if [ $((i % 1000)) -eq 999 ]; then sleep 0.1; fi; \
         if [ $i -eq 15000 ]; then exec >>{new} ; mv {app} {rot}; exec >>{app}; fi; done >> {app}",
        last = total - 1,
        app = app.display(),
        rot = logs.join("app.log.1").display(),
        new = app.display(),
    );
    let mut writer =
        steward_tests::ChildGuard::spawn("writer", Command::new("bash").arg("-c").arg(&script))
            .unwrap();

    std::thread::sleep(Duration::from_millis(700));
    sink.down();
    std::thread::sleep(Duration::from_millis(1500));
    // Crash in the middle of the outage, with data queued and in flight.
    agent.kill();
    std::thread::sleep(Duration::from_millis(500));
    agent.restart().unwrap();
    // Wait for the writer to finish, still in outage.
    if let Some(c) = writer.child.as_mut() {
        let status = c.wait().unwrap();
        assert!(status.success());
    }
    writer.child = None;
    std::thread::sleep(Duration::from_millis(1000));
    let retries = agent
        .metric("steward_telemetry_export_retries_total")
        .unwrap_or(0.0);
    assert!(retries > 0.0, "the outage caused retries");
    sink.up().unwrap();

    let expected: Vec<String> = (0..total).map(|i| format!("outage-{i:06}")).collect();
    wait_all(&sink, &expected, &|| agent.log());
    std::thread::sleep(Duration::from_millis(1000));
    let bodies = sink.bodies();
    let duplicates: usize = expected
        .iter()
        .map(|e| bodies.get(e).copied().unwrap_or(0).saturating_sub(1))
        .sum();
    // At most what was in flight when killed: concurrency × batch size.
    assert!(duplicates <= 2 * 500, "{duplicates} duplicates");
    assert_eq!(sink.log_count(), total + duplicates, "no foreign records");
    assert_eq!(agent.metric("steward_telemetry_queue_items"), Some(0.0));
}

#[test]
fn retryable_errors_are_retried_and_fatal_ones_dropped_and_counted() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    std::fs::write(&app, "").unwrap();
    sink.set_mode(Mode::Unavailable);
    let agent = PersistentAgent::start(
        dir.path(),
        &config(
            &sink.http_endpoint(),
            "http",
            "",
            &source("app", &[&app], ""),
        ),
    )
    .unwrap();
    append(&app, lines("retry", 50));
    assert!(
        sink.wait_until(WAIT, |s| s.refused() >= 2),
        "retried while unavailable"
    );
    sink.set_mode(Mode::Accept);
    wait_all(&sink, &lines("retry", 50), &|| agent.log());

    // 400: never retried; the batch is dropped and counted.
    sink.set_mode(Mode::BadRequest);
    let refused_before = sink.refused();
    append(&app, lines("fatal", 10));
    let dropped = "steward_telemetry_dropped_items_total{reason=\"non_retryable\"}";
    assert!(
        sink.wait_until(WAIT, |_| agent.metric(dropped).unwrap_or(0.0) >= 10.0),
        "{}",
        agent.scrape().unwrap()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let refused = sink.refused() - refused_before;
    assert!(refused <= 2, "a 400 is not retried ({refused} refusals)");

    // Partial success: accepted, the rejected count is not retried.
    sink.set_mode(Mode::PartialReject(1));
    append(&app, lines("partial", 5));
    wait_all(&sink, &lines("partial", 5), &|| agent.log());
    sink.set_mode(Mode::Accept);
    append(&app, lines("after", 5));
    wait_all(&sink, &lines("after", 5), &|| agent.log());
    let text = agent.scrape().unwrap();
    assert!(
        metric_in(
            &text,
            "steward_telemetry_dropped_items_total{reason=\"rejected\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    let b = sink.bodies();
    assert!(lines("fatal", 10).iter().all(|l| !b.contains_key(l)));
    assert_exactly_once(&sink, &lines("partial", 5));
    assert!(
        metric_in(
            &text,
            "steward_telemetry_export_errors_total{reason=\"http_503\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
}

#[test]
fn an_expired_token_keeps_batches_queued_until_the_upstream_accepts() {
    for protocol in ["http", "grpc"] {
        let sink = OtlpSink::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.log");
        std::fs::write(&app, "").unwrap();
        sink.set_mode(Mode::Unauthorized);
        let endpoint = match protocol {
            "http" => sink.http_endpoint(),
            _ => sink.grpc_endpoint(),
        };
        let agent = PersistentAgent::start(
            dir.path(),
            &config(&endpoint, protocol, "", &source("app", &[&app], "")),
        )
        .unwrap();
        let expected = lines(&format!("token-{protocol}"), 40);
        append(&app, expected.clone());
        assert!(
            sink.wait_until(WAIT, |s| s.refused() >= 2),
            "{protocol}: retried while unauthorized"
        );
        sink.set_mode(Mode::Accept);
        wait_all(&sink, &expected, &|| agent.log());
        assert_exactly_once(&sink, &expected);
        let dropped = "steward_telemetry_dropped_items_total{reason=\"non_retryable\"}";
        assert_eq!(agent.metric(dropped).unwrap_or(0.0), 0.0, "{protocol}");
    }
}

#[test]
fn a_damaged_checkpoint_file_is_kept_aside_and_no_line_is_lost() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    append(&app, lines("cp-before", 50));
    let mut agent = PersistentAgent::start(
        dir.path(),
        &config(
            &sink.http_endpoint(),
            "http",
            "",
            &source("app", &[&app], ""),
        ),
    )
    .unwrap();
    wait_all(&sink, &lines("cp-before", 50), &|| agent.log());
    assert!(agent.stop(), "{}", agent.log());

    let checkpoints = agent.state_dir.join("telemetry/checkpoints.json");
    assert!(checkpoints.exists());
    std::fs::write(&checkpoints, "{\"files\": [[1, {\"sou").unwrap();
    append(&app, lines("cp-after", 50));
    agent.restart().unwrap();
    // Everything arrives: the new lines once, the old ones again (read
    // from the start: duplicates, never loss).
    let mut all = lines("cp-before", 50);
    all.extend(lines("cp-after", 50));
    wait_all(&sink, &all, &|| agent.log());
    assert_exactly_once(&sink, &lines("cp-after", 50));
    let aside = agent.state_dir.join("telemetry/checkpoints.json.damaged");
    assert!(aside.exists(), "the damaged file is kept for a look");
    assert!(
        agent.log().contains("telemetry checkpoint file is damaged"),
        "{}",
        agent.log()
    );
    // And the agent wrote good checkpoints again.
    assert!(agent.stop());
    let text = std::fs::read_to_string(&checkpoints).unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "{text}"
    );
}

#[test]
fn a_taken_receiver_port_degrades_telemetry_and_the_agent_runs_on() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    append(&app, lines("port", 20));
    // Someone else holds the OTLP gRPC port.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let config = format!(
        r#"
[telemetry]
poll_interval_ms = 50
[telemetry.exporter]
endpoint = "{}"
protocol = "http"
batch_timeout_ms = 100
[telemetry.receiver]
grpc_listen = "127.0.0.1:{taken}"
http_listen = "127.0.0.1:{}"
{}"#,
        sink.http_endpoint(),
        free_port(),
        source("app", &[&app], "")
    );
    let agent = PersistentAgent::start(dir.path(), &config).expect("the agent starts anyway");

    let up = |name: &str| agent.metric(&format!("steward_subsystem_up{{subsystem=\"{name}\"}}"));
    assert_eq!(up("telemetry"), Some(0.0), "{}", agent.scrape().unwrap());
    assert_eq!(up("scheduler"), Some(1.0), "backups are unaffected");
    let (status, _, body) = steward_tests::http_get(agent.port, "/health", &[]).unwrap();
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let telemetry = health["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "telemetry")
        .cloned()
        .unwrap();
    assert_eq!(telemetry["up"], false, "{health}");
    assert!(
        telemetry["error"]
            .as_str()
            .unwrap()
            .contains(&taken.to_string()),
        "{health}"
    );

    // The port frees: telemetry starts on a retry and ships the file.
    drop(squatter);
    wait_all(&sink, &lines("port", 20), &|| agent.log());
    assert_eq!(up("telemetry"), Some(1.0));
    assert_exactly_once(&sink, &lines("port", 20));
}

#[test]
fn queue_bound_drops_oldest_and_counts_them() {
    let mut sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    std::fs::write(&app, "").unwrap();
    sink.down();
    let extra =
        "max_batch_records = 50\n[telemetry.queue]\nmax_bytes = 262144\nsegment_bytes = 65536";
    let agent = PersistentAgent::start(
        dir.path(),
        &config(
            &sink.grpc_endpoint(),
            "grpc",
            extra,
            &source("app", &[&app], ""),
        ),
    )
    .unwrap();
    let pad = "x".repeat(400);
    let total = 3000;
    let all: Vec<String> = (0..total).map(|i| format!("bound-{i:06}-{pad}")).collect();
    for chunk in all.chunks(300) {
        append(&app, chunk.to_vec());
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = "steward_telemetry_lines_read_total{source=\"app\"}";
    assert!(sink.wait_until(WAIT, |_| agent.metric(read) == Some(total as f64)));
    std::thread::sleep(Duration::from_millis(500));
    let dropped = agent
        .metric("steward_telemetry_dropped_items_total{reason=\"queue_full\"}")
        .unwrap_or(0.0) as usize;
    assert!(dropped > 0, "1.2 MB of lines do not fit in 256 KiB");
    sink.up().unwrap();
    let kept = total - dropped;
    assert!(
        sink.wait_until(WAIT, |s| s.log_count() >= kept),
        "{} of {kept}",
        sink.log_count()
    );
    std::thread::sleep(Duration::from_millis(500));
    // The newest are kept, the oldest dropped, each line at most once.
    assert_eq!(sink.log_count(), kept);
    let b = sink.bodies();
    assert!(all[total - kept..].iter().all(|l| b.get(l) == Some(&1)));
    assert!(all[..total - kept].iter().all(|l| !b.contains_key(l)));
}

#[test]
fn exporter_sends_gzip_token_and_headers_over_http_and_grpc() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    std::fs::write(&app, "").unwrap();
    let extra = format!(
        "compression = \"gzip\"\ntoken_file = \"{}\"\nheaders = {{ \"X-Scope-OrgID\" = \"tenant-7\" }}",
        token.display()
    );
    for protocol in ["http", "grpc"] {
        let endpoint = if protocol == "http" {
            sink.http_endpoint()
        } else {
            sink.grpc_endpoint()
        };
        let sub = dir.path().join(protocol);
        std::fs::create_dir_all(&sub).unwrap();
        let mut agent = PersistentAgent::start(
            &sub,
            &config(&endpoint, protocol, &extra, &source("app", &[&app], "")),
        )
        .unwrap();
        let these = lines(&format!("hdr-{protocol}"), 20);
        append(&app, these.clone());
        wait_all(&sink, &these, &|| agent.log());
        let headers = sink.headers();
        let has = |k: &str, v: &str| headers.iter().any(|(hk, hv)| hk == k && hv == v);
        assert!(
            has("authorization", "Bearer s3cr3t-token"),
            "{protocol}: {headers:?}"
        );
        assert!(has("x-scope-orgid", "tenant-7"), "{protocol}: {headers:?}");
        let encoding = if protocol == "http" {
            "content-encoding"
        } else {
            "grpc-encoding"
        };
        assert!(has(encoding, "gzip"), "{protocol}: {headers:?}");
        assert!(
            !agent.log().contains("s3cr3t"),
            "the token never appears in logs"
        );
        assert!(agent.stop());
    }
}

#[test]
fn parsers_multiline_truncation_and_invalid_utf8() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let php = dir.path().join("php_errors.log");
    let json = dir.path().join("laravel.json.log");
    let err = dir.path().join("nginx-error.log");
    let plain = dir.path().join("plain.log");
    for p in [&php, &json, &err, &plain] {
        std::fs::write(p, "").unwrap();
    }
    let sources = source("php", &[&php], "parser = \"php_fpm\"")
        + &source("json", &[&json], "parser = \"json\"\nservice_name = \"shop\"\nresource = { \"service.namespace\" = \"web\" }")
        + &source("nginx-error", &[&err], "parser = \"nginx_error\"")
        + &source("plain", &[&plain], "max_record_bytes = 1024");
    let agent = PersistentAgent::start(
        dir.path(),
        &config(&sink.grpc_endpoint(), "grpc", "", &sources),
    )
    .unwrap();

    let fatal = "[23-Nov-2026 10:00:00 UTC] PHP Fatal error:  Uncaught RuntimeException: boom in /app/src/X.php:12\nStack trace:\n#0 /app/src/Y.php(7): X->run()\n#1 {main}\n  thrown in /app/src/X.php on line 12";
    let warning = "[23-Nov-2026 10:00:01] WARNING: [pool www] server reached pm.max_children setting (5), consider raising it";
    append(&php, [fatal.to_string(), warning.to_string()]);
    let monolog = r#"{"message":"Order placed","context":{"order_id":991},"level":200,"level_name":"INFO","channel":"production","datetime":"2026-11-23T10:00:00+00:00","extra":{}}"#;
    let monolog_err = r#"{"message":"Payment failed","context":{},"level":400,"level_name":"ERROR","channel":"production","datetime":"2026-11-23T10:00:02+00:00","extra":{}}"#;
    append(&json, [monolog.to_string(), monolog_err.to_string()]);
    append(
        &err,
        [r#"2026/11/23 10:00:00 [error] 31#31: *7 open() "/srv/www/missing" failed (2: No such file or directory), client: 127.0.0.1, server: shop, request: "GET /missing HTTP/1.1""#.to_string()],
    );
    let long = "L".repeat(5000);
    {
        let mut f = OpenOptions::new().append(true).open(&plain).unwrap();
        f.write_all(format!("{long}\nbad-\u{0}bytes-").as_bytes())
            .unwrap();
        f.write_all(&[0xff, 0xfe, b'\n']).unwrap();
        f.write_all(b"after-the-long-one\n").unwrap();
    }
    let ok = sink.wait_until(WAIT, |s| s.log_count() >= 8);
    assert!(ok, "{:?}\n{}", sink.bodies(), agent.log());
    std::thread::sleep(Duration::from_millis(1500));
    let logs = sink.logs();
    let by_body: HashMap<&str, _> = logs.iter().map(|r| (r.body.as_str(), r)).collect();

    // The whole stack trace is one record, FATAL (21), with its UTC time.
    let f = by_body
        .get(fatal)
        .unwrap_or_else(|| panic!("{:?}", by_body.keys()));
    assert_eq!(f.severity, 21);
    assert_eq!(f.time_unix_nano, 1_795_428_000_000_000_000);
    assert_eq!(by_body[warning].severity, 13);
    assert_eq!(
        by_body[warning]
            .attributes
            .get("php_fpm.pool")
            .map(String::as_str),
        Some("www")
    );

    let order = by_body["Order placed"];
    assert_eq!(order.severity, 9);
    assert_eq!(
        order.attributes.get("context.order_id").map(String::as_str),
        Some("991")
    );
    assert_eq!(
        order.resource.get("service.name").map(String::as_str),
        Some("shop")
    );
    assert_eq!(
        order.resource.get("service.namespace").map(String::as_str),
        Some("web")
    );
    assert_eq!(by_body["Payment failed"].severity, 17);

    let e = logs
        .iter()
        .find(|r| r.body.contains("open() \"/srv/www/missing\""))
        .unwrap();
    assert_eq!(e.severity, 17);
    assert_eq!(
        e.attributes.get("client.address").map(String::as_str),
        Some("127.0.0.1")
    );

    // Truncated to max_record_bytes, counted; reading went on.
    let t = logs.iter().find(|r| r.body.starts_with("LLLL")).unwrap();
    assert_eq!(t.body.len(), 1024);
    assert_eq!(
        t.attributes.get("log.record.truncated").map(String::as_str),
        Some("true")
    );
    assert!(
        by_body.contains_key("bad-\u{0}bytes-\u{fffd}\u{fffd}"),
        "{:?}",
        by_body.keys()
    );
    assert!(by_body.contains_key("after-the-long-one"));
    assert_eq!(
        agent.metric("steward_telemetry_records_truncated_total{source=\"plain\"}"),
        Some(1.0)
    );
}

#[test]
fn sighup_reload_restarts_telemetry_without_loss_or_duplicates() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.log");
    append(&app, lines("reload-before", 100));
    let agent = PersistentAgent::start(
        dir.path(),
        &config(
            &sink.grpc_endpoint(),
            "grpc",
            "",
            &source("app", &[&app], ""),
        ),
    )
    .unwrap();
    let mut expected = lines("reload-before", 100);
    wait_all(&sink, &expected, &|| agent.log());
    for round in 0..2 {
        append(&app, lines(&format!("reload-during-{round}"), 500));
        expected.extend(lines(&format!("reload-during-{round}"), 500));
        agent.guard.as_ref().unwrap().signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
    }
    append(&app, lines("reload-after", 100));
    expected.extend(lines("reload-after", 100));
    wait_all(&sink, &expected, &|| agent.log());
    std::thread::sleep(Duration::from_millis(1000));
    assert_exactly_once(&sink, &expected);
    let log = agent.log();
    assert_eq!(log.matches("configuration reloaded").count(), 2, "{log}");
    assert!(!log.contains("cannot listen"), "{log}");
}

/// The web application owns the log directory and may plant traps in it:
/// a FIFO named like a log, links to root's secrets, a link swapped in at
/// rotation. Nothing blocks, no secret leaves, every trap is counted.
#[test]
fn a_hostile_log_directory_ships_no_secret_and_blocks_nothing() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let secret = dir.path().join("backup.key");
    std::fs::write(&secret, "AGE-SECRET-KEY-1MUSTNEVERLEAVE\n").unwrap();
    // Named to sort before the real log: a FIFO, then a link to the secret.
    let status = Command::new("mkfifo")
        .arg(logs.join("a-fifo.log"))
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink(&secret, logs.join("b-link.log")).unwrap();
    let app = logs.join("c-app.log");
    std::fs::write(&app, "").unwrap();
    let sources = source("app", &[&logs.join("*.log")], "");
    let agent = PersistentAgent::start(
        dir.path(),
        &config(&sink.grpc_endpoint(), "grpc", "", &sources),
    )
    .unwrap();
    let before = lines("before", 20);
    append(&app, before.clone());
    wait_all(&sink, &before, &|| agent.log());

    // Rotation by rename, and a link to the secret where the new log goes.
    std::fs::rename(&app, logs.join("c-app.log.1")).unwrap();
    std::os::unix::fs::symlink(&secret, &app).unwrap();
    let after = lines("after", 20);
    append(&logs.join("d-next.log"), after.clone());
    wait_all(&sink, &after, &|| agent.log());
    std::thread::sleep(Duration::from_millis(500));

    let leaked: Vec<String> = sink
        .bodies()
        .into_keys()
        .filter(|b| b.contains("AGE-SECRET-KEY"))
        .collect();
    assert!(leaked.is_empty(), "shipped: {leaked:?}");
    let skipped = |reason: &str| {
        agent.metric(&format!(
            "steward_telemetry_files_skipped_total{{source=\"app\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(skipped("symlink"), Some(2.0), "{}", agent.log());
    assert_eq!(skipped("not_regular_file"), Some(1.0), "{}", agent.log());
    assert!(agent
        .log()
        .contains("links in a log directory are never followed"));
}
