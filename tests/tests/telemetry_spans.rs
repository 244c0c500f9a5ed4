//! Steward's own work as spans, exported like everything else: a real
//! agent's `/metrics` scrape and a backup run its scheduler starts (files
//! job, local target, a 6-field cron schedule with seconds), and a
//! `steward backup run` from the command line while the agent runs (sent
//! through the agent's OTLP receiver and queue before the command exits),
//! all arrive at an OTLP sink with their attributes.

use std::process::{Command, Stdio};
use std::time::Duration;

use steward_tests::backup_env::{BackupEnv, HOST};
use steward_tests::otlp_sink::{OtlpSink, SpanSeen};
use steward_tests::{free_port, http_get, steward_bin, wait_for_http, ChildGuard};

fn find<'a>(spans: &'a [SpanSeen], name: &str, attr: (&str, &str)) -> Option<&'a SpanSeen> {
    spans
        .iter()
        .find(|s| s.name == name && s.attributes.get(attr.0).map(String::as_str) == Some(attr.1))
}

#[test]
fn scrape_scheduled_backup_and_cli_backup_arrive_as_spans() {
    let env = BackupEnv::new();
    let sink = OtlpSink::start().expect("otlp sink");
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index.php"), "<?php echo 1;").unwrap();
    let port = free_port();
    let rest = format!(
        "[backup.jobs.site]\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"*/5 * * * * *\"\n\n\
         [telemetry]\nservice_name = \"steward-spans\"\n\n\
         [telemetry.exporter]\nendpoint = \"{}\"\nprotocol = \"http\"\n\n\
         [telemetry.receiver]\ngrpc_listen = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:{}\"\n",
        data.display(),
        sink.http_endpoint(),
        free_port(),
        free_port(),
    );
    let config = env.config_text(&rest).replace(
        "listen = \"127.0.0.1:1\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&env.config, config).unwrap();
    let log = env.dir.path().join("steward.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut agent = ChildGuard::spawn(
        "steward",
        Command::new(steward_bin())
            .arg("agent")
            .arg("--config")
            .arg(&env.config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file),
    )
    .expect("start steward");
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for_http(port, "/livez", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("steward did not start: {e}\n{}", agent_log()));

    // A scrape; the scheduler runs the job within 5 seconds.
    let (status, _, _) = http_get(port, "/metrics", &[]).expect("scrape");
    assert_eq!(status, 200);

    let arrived = sink.wait_until(Duration::from_secs(60), |s| {
        let spans = s.spans();
        spans.iter().any(|s| s.name == "steward.scrape")
            && find(&spans, "steward.backup", ("steward.trigger", "schedule")).is_some()
    });
    let spans = sink.spans();
    assert!(
        arrived,
        "spans seen: {:?}\nagent log:\n{}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>(),
        agent_log()
    );
    let scrape = spans.iter().find(|s| s.name == "steward.scrape").unwrap();
    let collectors: u64 = scrape.attributes["steward.collectors"].parse().unwrap();
    assert!(collectors >= 1, "{scrape:?}");
    assert_eq!(
        scrape.attributes["steward.collector_failures"], "0",
        "{scrape:?}"
    );
    assert_eq!(scrape.resource["service.name"], "steward-spans");
    assert_eq!(scrape.resource["host.name"], HOST);

    let run = find(&spans, "steward.backup", ("steward.trigger", "schedule")).unwrap();
    assert_eq!(run.attributes["steward.job"], "site", "{run:?}");
    assert_eq!(run.attributes["steward.job.kind"], "files", "{run:?}");
    assert_eq!(run.attributes["steward.outcome"], "success", "{run:?}");
    assert_eq!(run.attributes["steward.targets"], "local", "{run:?}");
    let stored: u64 = run.attributes["steward.stored_bytes"].parse().unwrap();
    assert!(stored > 0, "{run:?}");
    // The span names the snapshot the run stored.
    let snapshot = &run.attributes["steward.snapshot.id"];
    let listed = env.list("site");
    assert!(
        listed
            .iter()
            .any(|s| s.to_string().contains(snapshot.as_str())),
        "snapshot {snapshot} not in {listed:?}"
    );

    // From the command line: exported before the command exits, through
    // the agent's receiver and queue.
    let out = env.steward(&["backup", "run", "site", "--reason", "pre-deploy", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = sink.wait_until(Duration::from_secs(30), |s| {
        find(
            &s.spans(),
            "steward.backup",
            ("steward.trigger", "pre-deploy"),
        )
        .is_some()
    });
    assert!(
        cli,
        "the CLI run's span did not arrive; stderr:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent_log()
    );
    let spans = sink.spans();
    let cli_run = find(&spans, "steward.backup", ("steward.trigger", "pre-deploy")).unwrap();
    assert_eq!(cli_run.resource["service.name"], "steward-spans");
    assert!(matches!(
        cli_run.attributes["steward.outcome"].as_str(),
        "success" | "unchanged"
    ));
    agent.stop(Duration::from_secs(15));
}
