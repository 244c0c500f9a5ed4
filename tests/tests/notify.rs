//! `[[notify]]` end to end: the real `steward agent` runs a failing and a
//! succeeding backup job on a schedule and tells local servers that follow
//! Healthchecks', Slack's and the documented webhook's contracts
//! (tests/src/notify_receivers.rs); a 500 is retried, a revoked Slack URL
//! is not, a receiver that hangs or is down neither fails nor delays a
//! backup, and no URL or secret reaches the log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::backup_env::require_tool;
use steward_tests::notify_receivers::{
    signature_ok, HealthchecksServer, Received, SlackServer, WebhookReceiver,
};
use steward_tests::{free_port, steward_bin, StewardAgent};

/// The value of the first sample of `name` whose labels contain every
/// `label="value"` in `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        if !labels.iter().all(|want| rest.contains(want)) {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}

fn age_recipient(dir: &Path) -> String {
    require_tool("age-keygen");
    let key = dir.join("backup.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen failed");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `[backup]` with a local target, a files job `good` and a postgres job
/// `bad` whose (fake) pg_dump fails the way a refused login does, both
/// every `every` seconds.
fn backup_section(dir: &Path, every: u32) -> String {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index.php"), "<?php echo 'hello';").unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (tool, body) in [
        ("psql", "echo app"),
        ("pg_dumpall", "echo '-- globals'"),
        (
            "pg_dump",
            "echo 'pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"backup\"' >&2; exit 1",
        ),
    ] {
        std::fs::write(bin.join(tool), format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!(
        "[backup]\nrecipients = [\"{}\"]\n\n[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\n\
         [backup.jobs.good]\nkind = \"files\"\npaths = [\"{}\"]\nschedule = \"*/{every} * * * * *\"\n\n\
         [backup.jobs.bad]\nkind = \"postgres\"\nbin_dir = \"{}\"\ntable_stats = false\nschedule = \"*/{every} * * * * *\"\n\n",
        age_recipient(dir),
        dir.join("store").display(),
        data.display(),
        bin.display()
    )
}

/// Polls `f` every 100 ms until it returns `Some`, failing with `what` and
/// the agent's log after `within`.
fn wait_for<T>(
    agent: &StewardAgent,
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}\nlog:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_tells_healthchecks_slack_and_a_webhook_about_a_failing_and_a_succeeding_job() {
    let work = tempfile::Builder::new()
        .prefix("steward-notify-")
        .tempdir()
        .unwrap();
    let hc = HealthchecksServer::start(2_000).unwrap();
    let (hc_good, hc_bad) = (hc.add_check(), hc.add_check());
    let slack = SlackServer::start().unwrap();
    let slack_url = slack.add_webhook();
    let revoked = slack.url("/services/T0STEWARD/B0GONE/revokedSECRETxyz");
    const SIGNING: &str = "whsec-Sup3r-S3cret-k3y";
    let hooks = WebhookReceiver::start(Some(SIGNING)).unwrap();
    // The receiver fails its first request: the agent must retry it.
    hooks.force(500, &[], "internal error");

    // One URL and the signing secret from files, one from the environment.
    let secrets = work.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("hc-bad.url"), format!("{hc_bad}\n")).unwrap();
    std::fs::write(secrets.join("signing.key"), format!("{SIGNING}\n")).unwrap();
    let config = format!(
        "{}\
         [[notify]]\nname = \"hc-good\"\nkind = \"healthchecks\"\nping_url = \"{hc_good}\"\njobs = [\"good\"]\n\n\
         [[notify]]\nname = \"hc-bad\"\nkind = \"healthchecks\"\nping_url_file = \"{}\"\njobs = [\"bad\"]\n\n\
         [[notify]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = \"${{STEWARD_TEST_SLACK_URL}}\"\n\n\
         [[notify]]\nname = \"chat-revoked\"\nkind = \"slack\"\nwebhook_url = \"{revoked}\"\n\n\
         [[notify]]\nname = \"hooks\"\nkind = \"webhook\"\nwebhook_url = \"{}\"\nsigning_secret_file = \"{}\"\n\
         on = [\"start\", \"success\", \"failure\"]\nretry_for_secs = 60\n",
        backup_section(work.path(), 3),
        secrets.join("hc-bad.url").display(),
        hooks.url(),
        secrets.join("signing.key").display(),
    );
    let agent = StewardAgent::start_with_env(
        &config,
        "hostname = \"web-1\"\nlog_level = \"debug\"",
        &[("STEWARD_TEST_SLACK_URL", slack_url.as_str())],
    )
    .expect("start steward agent");

    // Healthchecks: the good job's start and success, paired by run id.
    let pings = wait_for(
        &agent,
        Duration::from_secs(120),
        "no start+success pings for good",
        || {
            let p = hc.pings(&hc_good);
            p.iter()
                .position(|x| x.action == "success")
                .filter(|&i| i > 0)
                .map(|_| p)
        },
    );
    let success = pings.iter().find(|p| p.action == "success").unwrap();
    let start = pings
        .iter()
        .find(|p| p.action == "start" && p.rid == success.rid)
        .unwrap_or_else(|| panic!("no start ping with the success's rid: {pings:?}"));
    assert_eq!(start.method, "POST");
    assert!(success.rid.is_some(), "{pings:?}");
    assert!(
        success.body.contains("backup good on web-1 succeeded"),
        "{}",
        success.body
    );
    assert!(
        success.body.contains("target local: committed"),
        "{}",
        success.body
    );
    assert!(!pings.iter().any(|p| p.action == "fail"), "{pings:?}");

    // The bad job: start, then /fail with the tool's error in the body.
    let pings = wait_for(
        &agent,
        Duration::from_secs(60),
        "no fail ping for bad",
        || {
            let p = hc.pings(&hc_bad);
            p.iter().any(|x| x.action == "fail").then_some(p)
        },
    );
    let fail = pings.iter().find(|p| p.action == "fail").unwrap();
    assert!(
        pings
            .iter()
            .any(|p| p.action == "start" && p.rid == fail.rid),
        "{pings:?}"
    );
    assert!(
        fail.body.starts_with("backup bad on web-1 failed"),
        "{}",
        fail.body
    );
    assert!(
        fail.body.contains("password authentication failed"),
        "the fail ping carries no log excerpt: {}",
        fail.body
    );
    assert!(fail.body.len() <= hc.body_limit);
    assert!(!pings.iter().any(|p| p.action == "success"), "{pings:?}");

    // Slack (on = failure by default): the bad job only, text and blocks.
    let messages = wait_for(&agent, Duration::from_secs(60), "no Slack message", || {
        let m = slack.messages(&slack_url);
        (!m.is_empty()).then_some(m)
    });
    for m in &messages {
        let text = m["text"].as_str().unwrap_or("");
        assert!(text.contains("backup bad on web-1 failed"), "{m:#}");
        let header = m["blocks"][0]["text"]["text"].as_str().unwrap_or("");
        assert!(header.contains("Backup bad FAILED on web-1"), "{m:#}");
        let section = m["blocks"][1]["text"]["text"].as_str().unwrap_or("");
        assert!(section.contains("password authentication failed"), "{m:#}");
    }
    // Every request to Slack was accepted (the fake refuses what Slack does).
    assert!(
        slack
            .requests()
            .iter()
            .filter(|r| r.path != "/services/T0STEWARD/B0GONE/revokedSECRETxyz")
            .all(|r| r.status == 200),
        "{:?}",
        slack.requests()
    );

    // The webhook: signed, the 500 retried with the same delivery id, all
    // five event kinds of the two jobs seen.
    let accepted = wait_for(
        &agent,
        Duration::from_secs(60),
        "webhook events missing",
        || {
            let a = hooks.accepted();
            let has =
                |event: &str, job: &str| a.iter().any(|p| p["event"] == event && p["job"] == job);
            (has("backup.start", "good")
                && has("backup.success", "good")
                && has("backup.start", "bad")
                && has("backup.failure", "bad"))
            .then_some(a)
        },
    );
    let requests = hooks.requests();
    assert_eq!(requests[0].status, 500, "{requests:?}");
    let header = |r: &Received, k: &str| r.headers.get(k).cloned().unwrap_or_default();
    let first_delivery = header(&requests[0], "x-steward-delivery");
    assert!(
        requests[1..]
            .iter()
            .any(|r| r.status == 200 && header(r, "x-steward-delivery") == first_delivery),
        "the refused delivery was never retried: {requests:?}"
    );
    for r in requests.iter().filter(|r| r.status == 200) {
        assert!(signature_ok(
            SIGNING.as_bytes(),
            &header(r, "x-steward-timestamp"),
            &header(r, "x-steward-signature"),
            &r.body
        ));
        assert_eq!(header(r, "content-type"), "application/json");
        assert!(header(r, "user-agent").starts_with("steward/"), "{r:?}");
    }
    let failure = accepted
        .iter()
        .find(|p| p["event"] == "backup.failure")
        .unwrap();
    assert_eq!(failure["schema"], "steward.notification.v1", "{failure:#}");
    assert_eq!(failure["outcome"], "failure");
    assert_eq!(failure["host"], "web-1");
    assert_eq!(failure["backup"]["status"], "failed", "{failure:#}");
    assert!(
        failure["backup"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("password authentication failed")),
        "{failure:#}"
    );
    let success = accepted
        .iter()
        .find(|p| p["event"] == "backup.success")
        .unwrap();
    assert_eq!(success["backup"]["status"], "success", "{success:#}");
    assert!(
        success["backup"]["snapshot"].as_str().is_some(),
        "{success:#}"
    );
    assert_eq!(success["backup"]["targets"][0]["committed"], true);
    assert!(
        accepted
            .iter()
            .any(|p| p["event"] == "backup.start" && p["run_id"] == success["run_id"]),
        "start and success of a run share its run_id"
    );

    // The revoked Slack URL: 404 no_service, not retried, counted, and a
    // log line that says what to do without showing the URL.
    let metrics = wait_for(
        &agent,
        Duration::from_secs(30),
        "no failed notification counted",
        || {
            let m = agent.scrape().ok()?;
            (sample(
                &m,
                "steward_notifications_total",
                &["notifier=\"chat-revoked\"", "result=\"failed\""],
            )? >= 1.0)
                .then_some(m)
        },
    );
    let revoked_requests: Vec<_> = slack
        .requests()
        .into_iter()
        .filter(|r| r.status == 404)
        .collect();
    assert!(!revoked_requests.is_empty());
    let failed = sample(
        &metrics,
        "steward_notifications_total",
        &["notifier=\"chat-revoked\"", "result=\"failed\""],
    )
    .unwrap();
    assert!(
        revoked_requests.len() as f64 <= failed + 1.0,
        "a 404 was retried: {} requests for {failed} failures",
        revoked_requests.len()
    );
    assert_eq!(
        sample(
            &metrics,
            "steward_notification_retries_total",
            &["notifier=\"chat-revoked\""]
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "steward_notification_retries_total",
            &["notifier=\"hooks\"", "kind=\"webhook\""]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "steward_notifications_total",
            &[
                "notifier=\"hc-good\"",
                "kind=\"healthchecks\"",
                "result=\"sent\""
            ]
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "steward_notifications_total",
            &["notifier=\"chat\"", "result=\"dropped\""]
        ),
        Some(0.0),
        "{metrics}"
    );
    let log = agent.log();
    assert!(
        log.contains("no_service") && log.contains("create a new incoming webhook"),
        "no actionable log line for the revoked webhook:\n{log}"
    );

    // No URL, no secret in the log, even at debug level.
    let uuid = |u: &str| u.rsplit('/').next().unwrap().to_string();
    for secret in [
        uuid(&hc_good),
        uuid(&hc_bad),
        uuid(&slack_url),
        "revokedSECRETxyz".to_string(),
        SIGNING.to_string(),
    ] {
        assert!(!log.contains(&secret), "{secret} is in the log:\n{log}");
    }
}

#[test]
fn a_receiver_that_hangs_or_is_down_neither_fails_nor_delays_a_backup() {
    let work = tempfile::Builder::new()
        .prefix("steward-notify-down-")
        .tempdir()
        .unwrap();
    let hanging = WebhookReceiver::start(None).unwrap();
    hanging.set_delay(Duration::from_secs(120));
    let closed = free_port();
    let config = format!(
        "{}\
         [[notify]]\nname = \"hangs\"\nkind = \"webhook\"\nwebhook_url = \"{}\"\non = [\"start\", \"success\", \"failure\"]\n\
         timeout_secs = 1\nretry_for_secs = 3\n\n\
         [[notify]]\nname = \"down\"\nkind = \"slack\"\nwebhook_url = \"http://127.0.0.1:{closed}/services/T/B/x\"\n\
         on = [\"start\", \"success\", \"failure\"]\ntimeout_secs = 1\nretry_for_secs = 3\n",
        backup_section(work.path(), 2),
        hanging.url(),
    );
    let agent = StewardAgent::start(&config, "hostname = \"web-1\"").expect("start steward agent");
    // Every 2 s, each run's notifications hang for 1 s per attempt and are
    // retried for 3 s: were backups waiting for them, they would fall
    // behind the schedule and count missed runs.
    let started = Instant::now();
    let metrics = wait_for(
        &agent,
        Duration::from_secs(120),
        "five successful runs of good",
        || {
            let m = agent.scrape().ok()?;
            (sample(
                &m,
                "steward_backup_runs_total",
                &["job=\"good\"", "result=\"success\""],
            )? >= 5.0)
                .then_some(m)
        },
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(40),
        "five runs on a 2 s schedule took {took:?}\n{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "steward_backup_missed_runs_total",
            &["job=\"good\""]
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "steward_backup_last_run_success",
            &["job=\"good\""]
        ),
        Some(1.0)
    );
    // The failures are counted, not hidden.
    let metrics = wait_for(
        &agent,
        Duration::from_secs(30),
        "no failed notification counted",
        || {
            let m = agent.scrape().ok()?;
            let f = |n: &str| sample(&m, "steward_notifications_total", &[n, "result=\"failed\""]);
            (f("notifier=\"hangs\"")? >= 1.0 && f("notifier=\"down\"")? >= 1.0).then_some(m)
        },
    );
    assert!(
        sample(
            &metrics,
            "steward_notification_retries_total",
            &["notifier=\"down\""]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    let log = agent.log();
    assert!(log.contains("notification not sent"), "{log}");
    assert!(
        !log.contains(&format!("127.0.0.1:{closed}")),
        "the URL is in the log:\n{log}"
    );
}

#[test]
fn bad_notifier_settings_are_named_without_showing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.toml");
    let recipient = age_recipient(dir.path());
    std::fs::write(
        &config,
        format!("[backup]\nrecipients = [\"{recipient}\"]\n[backup.targets.local]\nkind = \"local\"\npath = \"/tmp/x\"\n\
         [backup.jobs.db]\nkind = \"files\"\npaths = [\"/etc/hostname\"]\n\
         [[notify]]\nname = \"hc\"\nkind = \"healthchecks\"\nping_url = \"hc-ping.com/SECRET-UUID\"\njobs = [\"db\", \"web\"]\n\
         [[notify]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = \"https://hooks.slack.com/services/SECRET\"\nsigning_secret = \"SECRET-KEY\"\non = [\"sometimes\"]\n"),
    )
    .unwrap();
    let out = Command::new(steward_bin())
        .args(["config", "check", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("notify[1].on[0]: unknown variant `sometimes`"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Fixed syntax, still wrong settings: each named by its key.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("sometimes", "failure");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(steward_bin())
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for key in [
        "notify[0].ping_url: not a URL",
        "notify[0].jobs[1]: no backup job named \"web\"; configured jobs: db",
        "notify[0].jobs: a Healthchecks check follows exactly one thing",
        "notify[1].signing_secret: only kind = \"webhook\"",
    ] {
        assert!(stderr.contains(key), "{key} missing:\n{stderr}");
    }
    assert!(!stderr.contains("SECRET"), "{stderr}");

    // Valid: `config check --print` shows every notifier secret redacted.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("hc-ping.com/", "https://hc-ping.com/")
        .replace("\"db\", \"web\"", "\"db\"")
        .replace("signing_secret = \"SECRET-KEY\"\n", "");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(steward_bin())
        .args(["config", "check", "--print", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[[notify]]"), "{stdout}");
    assert!(stdout.contains("ping_url = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("SECRET"), "{stdout}");
}

/// A raw HTTP/1.1 POST: (status, headers, body).
fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let mut req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The fakes refuse what the real services refuse, so the tests above
/// cannot pass against a laxer server.
#[test]
fn the_fake_services_follow_their_documented_contracts() {
    let slack = SlackServer::start().unwrap();
    let url = slack.add_webhook();
    let json = "application/json";
    assert_eq!(post(&url, json, br#"{"text":"hi"}"#, &[]).0, 200);
    assert_eq!(post(&url, json, br#"{"text":"hi"}"#, &[]).2, "ok");
    for bad in [
        &b"{}"[..],
        b"{\"text\":\"\"}",
        b"not json",
        b"[1]",
        b"{\"blocks\":[]}",
    ] {
        let (status, _, body) = post(&url, json, bad, &[]);
        assert_eq!(
            (status, body.as_str()),
            (400, "invalid_payload"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = serde_json::json!({"text": "x", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "y".repeat(3001)}}]});
    assert_eq!(
        post(&url, json, long.to_string().as_bytes(), &[]).2,
        "invalid_blocks"
    );
    let form = format!(
        "payload={}",
        form_urlencoded::byte_serialize(br#"{"text":"form"}"#).collect::<String>()
    );
    assert_eq!(
        post(
            &url,
            "application/x-www-form-urlencoded",
            form.as_bytes(),
            &[]
        )
        .0,
        200
    );
    let (status, _, body) = post(
        &slack.url("/services/T0/B0/wrong"),
        json,
        br#"{"text":"hi"}"#,
        &[],
    );
    assert_eq!((status, body.as_str()), (404, "no_service"));
    assert_eq!(slack.messages(&url).len(), 3);

    let hc = HealthchecksServer::start(100).unwrap();
    let check = hc.add_check();
    let (status, head, body) = post(
        &format!("{check}/start?rid=4a4cd8f7-1d2c-4d3a-9b1e-0123456789ab"),
        "text/plain",
        b"",
        &[],
    );
    assert_eq!((status, body.as_str()), (200, "OK"));
    assert!(head.contains("Ping-Body-Limit: 100"), "{head}");
    assert_eq!(post(&check, "text/plain", &[b'z'; 500], &[]).0, 200);
    assert_eq!(post(&format!("{check}/7"), "text/plain", b"", &[]).0, 200);
    assert_eq!(
        post(&format!("{check}/256"), "text/plain", b"", &[]).2,
        "invalid url format"
    );
    assert_eq!(
        post(&format!("{check}?rid=nope"), "text/plain", b"", &[]).2,
        "invalid uuid format"
    );
    let unknown = hc.url("/ping/00000000-0000-4000-8000-000000000000");
    let (status, _, body) = post(&unknown, "text/plain", b"", &[]);
    assert_eq!((status, body.as_str()), (404, "not found"));
    let pings = hc.pings(&check);
    let actions: Vec<&str> = pings.iter().map(|p| p.action.as_str()).collect();
    assert_eq!(actions, ["start", "success", "exit 7"]);
    assert_eq!(pings[1].body.len(), 100, "the body is kept up to the limit");

    let hook = WebhookReceiver::start(Some("k")).unwrap();
    let body = br#"{"event":"backup.failure"}"#;
    assert_eq!(post(&hook.url(), json, body, &[]).0, 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |ts: u64| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let (ts, stale) = (now.to_string(), (now - 3600).to_string());
    assert_eq!(
        post(
            &hook.url(),
            json,
            body,
            &[
                ("X-Steward-Timestamp", &ts),
                ("X-Steward-Signature", &sign(now))
            ]
        )
        .0,
        200
    );
    assert_eq!(
        post(
            &hook.url(),
            json,
            body,
            &[
                ("X-Steward-Timestamp", &stale),
                ("X-Steward-Signature", &sign(now - 3600))
            ]
        )
        .0,
        401
    );
    assert_eq!(
        post(
            &hook.url(),
            json,
            b"{\"event\":\"x\"}",
            &[
                ("X-Steward-Timestamp", &ts),
                ("X-Steward-Signature", &sign(now))
            ]
        )
        .0,
        401
    );
    assert_eq!(hook.accepted().len(), 1);
}

/// Scheduled drills: the drill check gets `/start` and `/fail`, the webhook
/// gets `drill.failure` naming the job that missed its RPO and the one that
/// passed, Slack the same in its message.
#[test]
fn a_drill_that_misses_its_objective_is_notified() {
    let work = tempfile::Builder::new()
        .prefix("steward-notify-drill-")
        .tempdir()
        .unwrap();
    let hc = HealthchecksServer::start(10_000).unwrap();
    let drill_check = hc.add_check();
    let slack = SlackServer::start().unwrap();
    let slack_url = slack.add_webhook();
    let hooks = WebhookReceiver::start(None).unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "a").unwrap();
    let recipient = age_recipient(work.path());
    // `stale` must be at most a millisecond old: every drill misses it.
    let config = format!(
        "[backup]\nrecipients = [\"{recipient}\"]\n[backup.targets.local]\nkind = \"local\"\npath = \"{store}\"\n\
         [backup.jobs.fresh]\nkind = \"files\"\npaths = [\"{data}\"]\nschedule = \"*/2 * * * * *\"\n\
         [backup.jobs.stale]\nkind = \"files\"\npaths = [\"{data}\"]\nschedule = \"*/2 * * * * *\"\n\
         [backup.drill]\nschedule = \"*/5 * * * * *\"\nidentity_file = \"{key}\"\n\
         [backup.drill.objectives.stale]\nrpo_secs = 0.001\n\n\
         [[notify]]\nname = \"hc-drill\"\nkind = \"healthchecks\"\nping_url = \"{drill_check}\"\njobs = []\ndrills = true\n\n\
         [[notify]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = \"{slack_url}\"\njobs = []\n\n\
         [[notify]]\nname = \"hooks\"\nkind = \"webhook\"\nwebhook_url = \"{hook}\"\njobs = []\n",
        store = work.path().join("store").display(),
        data = data.display(),
        key = work.path().join("backup.key").display(),
        hook = hooks.url(),
    );
    let agent = StewardAgent::start(&config, "hostname = \"web-1\"").expect("start steward agent");
    // The first drill may come before the first snapshots; wait for one
    // that restored both jobs.
    let failure = wait_for(
        &agent,
        Duration::from_secs(150),
        "no drill.failure with both jobs",
        || {
            hooks.accepted().into_iter().find(|p| {
                p["event"] == "drill.failure"
                    && p["drill"]["jobs"].as_array().is_some_and(|j| {
                        j.iter()
                            .any(|j| j["job"] == "fresh" && j["success"] == true)
                    })
            })
        },
    );
    assert_eq!(failure["job"], serde_json::Value::Null, "{failure:#}");
    let jobs = failure["drill"]["jobs"].as_array().unwrap();
    let stale = jobs.iter().find(|j| j["job"] == "stale").unwrap();
    assert_eq!(stale["verdict"], "RPO MISSED", "{failure:#}");
    assert!(
        stale["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("RPO objective")),
        "{failure:#}"
    );
    assert!(
        failure["summary"]
            .as_str()
            .unwrap()
            .contains("stale RPO MISSED"),
        "{failure:#}"
    );
    // No backup events: jobs = [] on every notifier.
    assert!(
        hooks
            .accepted()
            .iter()
            .all(|p| p["event"].as_str().unwrap().starts_with("drill.")),
        "{:?}",
        hooks.accepted()
    );

    // The drill check: each drill's /start then /fail, paired by rid.
    let (pings, fail) = wait_for(
        &agent,
        Duration::from_secs(30),
        "no /fail ping naming stale",
        || {
            let pings = hc.pings(&drill_check);
            let fail = pings
                .iter()
                .find(|p| p.action == "fail" && p.body.contains("stale: RPO MISSED"))?
                .clone();
            Some((pings, fail))
        },
    );
    assert!(
        pings
            .iter()
            .any(|p| p.action == "start" && p.rid == fail.rid),
        "{pings:?}"
    );
    assert!(
        fail.body.starts_with("drill on web-1 failed"),
        "{}",
        fail.body
    );
    assert!(!pings.iter().any(|p| p.action == "success"), "{pings:?}");

    let messages = wait_for(
        &agent,
        Duration::from_secs(30),
        "no Slack drill message",
        || {
            let m = slack.messages(&slack_url);
            m.iter()
                .any(|m| {
                    m["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("stale RPO MISSED"))
                })
                .then_some(m)
        },
    );
    assert!(
        messages.iter().all(|m| m["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("Drill FAILED on web-1")),
        "{messages:?}"
    );
}

/// `steward backup run` (a pre-deploy hook, a cron line) notifies like the
/// daemon, waits a bounded time for a hanging receiver, and `--no-notify`
/// sends nothing; the exit status is the backup's either way.
#[test]
fn a_command_line_run_notifies_and_waits_only_a_bounded_time() {
    let env = steward_tests::backup_env::BackupEnv::new();
    let hooks = WebhookReceiver::start(None).unwrap();
    let data = env.dir.path().join("site");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index.html"), "hi").unwrap();
    env.write_config(&format!(
        "[backup.jobs.site]\nkind = \"files\"\npaths = [\"{}\"]\n\n\
         [[notify]]\nname = \"hooks\"\nkind = \"webhook\"\nwebhook_url = \"{}\"\n\
         on = [\"start\", \"success\", \"failure\"]\ntimeout_secs = 2\nretry_for_secs = 60\n",
        data.display(),
        hooks.url()
    ));
    let out = env.steward(&["backup", "run", "site", "--quiet", "--reason", "pre-deploy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<(String, String)> = hooks
        .accepted()
        .iter()
        .map(|p| {
            (
                p["event"].as_str().unwrap().to_string(),
                p["run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[1].0.as_str()),
        ("backup.start", "backup.success")
    );
    assert_eq!(events[0].1, events[1].1, "one run id for start and end");
    assert_eq!(hooks.accepted()[1]["backup"]["reason"], "pre-deploy");

    let out = env.steward(&["backup", "run", "site", "--quiet", "--no-notify"]);
    assert!(out.status.success());
    assert_eq!(hooks.requests().len(), 2, "--no-notify sent something");

    // A receiver that never answers: the run still ends, within the wait.
    hooks.set_delay(Duration::from_secs(120));
    let started = Instant::now();
    let out = env.steward(&[
        "backup",
        "run",
        "site",
        "--quiet",
        "--notify-wait-secs",
        "1",
    ]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {stderr}");
    assert!(
        stderr.contains("still sending after --notify-wait-secs 1"),
        "{stderr}"
    );
    assert!(!stderr.contains(&hooks.url()), "{stderr}");
}
