//! The real binary on good and bad input: embedded defaults, config check,
//! config example, endpoints, gzip, filters, SIGHUP reload.

use std::process::Command;
use std::time::Duration;

use steward_tests::{http_get, steward_bin, StewardAgent};

#[test]
fn config_check_reports_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[agent]\nlisten = \"not an address\"\nscrape_timeout_secs = 1\n[node]\nenabld = true\n[nope]\n",
    )
    .unwrap();
    let out = Command::new(steward_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 errors"), "{stderr}");
    assert!(stderr.contains("agent.listen"), "{stderr}");
    assert!(stderr.contains("node.enabld"), "{stderr}");
    assert!(stderr.contains("nope: unknown section"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn config_check_rejects_duplicate_target_names_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.toml");
    std::fs::write(
        &path,
        "[node]\nenabled = false\n\
         [[nginx]]\nname = \"web\"\nscrape_uri = \"http://127.0.0.1:1/stub_status\"\n\
         [[nginx]]\nname = \"web\"\nscrape_uri = \"http://127.0.0.1:2/stub_status\"\n\
         [[mysql]]\nname = \"db\"\n[[mysql]]\nname = \"db\"\nport = 3307\n",
    )
    .unwrap();
    let out = Command::new(steward_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 errors"), "{stderr}");
    assert!(
        stderr.contains("nginx[1].name: \"web\" is used by nginx[0] and nginx[1]"),
        "{stderr}"
    );
    assert!(
        stderr.contains("mysql[1].name: \"db\" is used by mysql[0] and mysql[1]"),
        "{stderr}"
    );
}

#[test]
fn missing_explicit_config_is_a_clear_error() {
    let out = Command::new(steward_bin())
        .args(["agent", "--config", "/nonexistent/steward.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/steward.toml"), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn config_example_is_valid_and_print_redacts_secrets() {
    let out = Command::new(steward_bin())
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new(steward_bin())
        .args(["config", "check", "--print", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let secret_path = dir.path().join("secret.toml");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2-do-not-print\n").unwrap();
    std::fs::write(
        &secret_path,
        format!(
            "[grafana]\nurl = \"http://127.0.0.1:3000\"\ntoken_file = \"{}\"\n",
            pw.display()
        ),
    )
    .unwrap();
    let check = Command::new(steward_bin())
        .args(["config", "check", "--print", "--config"])
        .arg(&secret_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("<redacted>"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[test]
fn agent_serves_endpoints_gzip_and_filters() {
    let agent = StewardAgent::start("", "").unwrap();
    let (status, head, body) = http_get(agent.port, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("steward_build_info{version=\""), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");

    let (status, head, body) =
        http_get(agent.port, "/metrics", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");

    let (_, _, body) = http_get(agent.port, "/metrics?exclude[]=process", &[]).unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("process_resident_memory_bytes"), "{text}");

    for path in ["/livez", "/readyz"] {
        assert_eq!(http_get(agent.port, path, &[]).unwrap().0, 200);
    }
    let (status, _, body) = http_get(agent.port, "/health", &[]).unwrap();
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(health["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["collector"] == "process"));
}

#[test]
fn sighup_with_bad_config_keeps_running_and_sigterm_stops() {
    let mut agent = StewardAgent::start("", "").unwrap();
    let good = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(&agent.config_path, format!("{good}\n[broken\n")).unwrap();
    agent.guard.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(http_get(agent.port, "/livez", &[]).unwrap().0, 200);
    assert!(
        agent.log().contains("keeping the running configuration"),
        "{}",
        agent.log()
    );
    std::fs::write(&agent.config_path, good).unwrap();
    agent.guard.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.log().contains("configuration reloaded"),
        "{}",
        agent.log()
    );
    let status = agent.guard.stop(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
}
