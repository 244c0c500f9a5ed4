//! `steward annotate` against a local server that implements Grafana's
//! documented annotations contract (tests/src/grafana_api.rs): deployments
//! as regions, idempotency by deploy id, every Grafana error as one clear
//! line with a non-zero exit, token sources, and the agent's counters.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use steward_tests::grafana_api::{GrafanaApi, Role};
use steward_tests::{steward_bin, StewardAgent};

const TOKEN: &str = "glsa_editor_token_do_not_print";
const VIEWER: &str = "glsa_viewer_token_do_not_print";

fn grafana() -> GrafanaApi {
    let g = GrafanaApi::start().expect("start the fake Grafana");
    g.add_token(TOKEN, Role::Editor);
    g.add_token(VIEWER, Role::Viewer);
    g
}

/// Writes a config with `[grafana]` pointing at `g` plus `extra` lines.
fn config(dir: &Path, g: &GrafanaApi, extra: &str) -> std::path::PathBuf {
    let path = dir.join("steward.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nhostname = \"web-1\"\n[grafana]\nurl = \"{}\"\n{extra}\n",
            g.url()
        ),
    )
    .unwrap();
    path
}

fn annotate(config: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(steward_bin());
    cmd.arg("--config").arg(config).arg("annotate").args(args);
    cmd.env_remove("GRAFANA_URL").env_remove("GRAFANA_TOKEN");
    if let Some(t) = token {
        cmd.env("GRAFANA_TOKEN", t);
    }
    cmd.output().expect("run steward annotate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn deploy_is_idempotent_by_deploy_id_and_finish_makes_a_region() {
    let g = grafana();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &g, "tags = [\"team:web\"]");
    let args = [
        "deploy",
        "--version",
        "v1.2.3",
        "--env",
        "production",
        "--tags",
        "blue-green,canary",
        "--deploy-id",
        "run-42",
    ];
    let first = annotate(&cfg, Some(TOKEN), &args);
    assert!(first.status.success(), "{}", stderr(&first));
    let id: u64 = stdout(&first).parse().expect("deploy prints the id");

    let stored = g.annotations();
    assert_eq!(stored.len(), 1);
    let a = &stored[0];
    assert_eq!(a.id, id);
    for tag in [
        "deploy",
        "env:production",
        "version:v1.2.3",
        "deploy_id:run-42",
        "host:web-1",
        "team:web",
        "blue-green",
        "canary",
    ] {
        assert!(a.tags.contains(&tag.to_string()), "{tag} in {:?}", a.tags);
    }
    assert_eq!(a.text, "Deploy v1.2.3 to production on web-1");
    assert_eq!(a.dashboard_uid, "", "organization annotation by default");
    assert_eq!(a.time_end, a.time, "a point until finished");
    let auth = g.requests()[0].authorization.clone().unwrap_or_default();
    assert_eq!(auth, format!("Bearer {TOKEN}"));

    // A retried deploy (same id) finds the annotation instead of adding one.
    let again = annotate(&cfg, Some(TOKEN), &args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again), id.to_string());
    assert!(
        stderr(&again).contains("already annotated"),
        "{}",
        stderr(&again)
    );
    assert_eq!(g.annotations().len(), 1);
    assert_eq!(g.count("POST"), 1);

    // Another deployment of the same version is a new annotation.
    let other = annotate(
        &cfg,
        Some(TOKEN),
        &[
            "deploy",
            "--version",
            "v1.2.3",
            "--env",
            "production",
            "--deploy-id",
            "run-43",
        ],
    );
    assert!(other.status.success(), "{}", stderr(&other));
    assert_ne!(stdout(&other), id.to_string());

    std::thread::sleep(Duration::from_millis(20));
    let fin = annotate(&cfg, Some(TOKEN), &["finish", "--deploy-id", "run-42"]);
    assert!(fin.status.success(), "{}", stderr(&fin));
    assert_eq!(stdout(&fin), id.to_string());
    let a = g.annotations().into_iter().find(|a| a.id == id).unwrap();
    assert!(a.time_end > a.time, "finish makes a region: {a:?}");
    assert_eq!(g.count("PATCH"), 1);

    // finish by id.
    let other_id: u64 = stdout(&other).parse().unwrap();
    let fin = annotate(&cfg, Some(TOKEN), &["finish", &other_id.to_string()]);
    assert!(fin.status.success(), "{}", stderr(&fin));
    let b = g
        .annotations()
        .into_iter()
        .find(|a| a.id == other_id)
        .unwrap();
    assert!(b.time_end >= b.time);
}

#[test]
fn finish_errors_name_what_is_missing() {
    let g = grafana();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &g, "");
    let out = annotate(&cfg, Some(TOKEN), &["finish", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no annotation 999"),
        "{}",
        stderr(&out)
    );
    let out = annotate(&cfg, Some(TOKEN), &["finish", "--deploy-id", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("deploy_id:nope"), "{}", stderr(&out));
    // Neither an id nor --deploy-id: a usage error from clap.
    let out = annotate(&cfg, Some(TOKEN), &["finish"]);
    assert!(!out.status.success());
    // Only the PATCH of 999 reached Grafana (and was refused).
    assert_eq!(g.count("PATCH"), 1);
    assert!(g.annotations().is_empty());
}

#[test]
fn auth_errors_are_clear_and_never_print_the_token() {
    let g = grafana();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &g, "");
    let args = ["deploy", "--version", "1", "--env", "prod"];

    let wrong = annotate(&cfg, Some("glsa_wrong_secret"), &args);
    assert_eq!(wrong.status.code(), Some(1));
    let e = stderr(&wrong);
    assert!(e.contains("401") && e.contains("token"), "{e}");
    assert!(!e.contains("glsa_wrong_secret"), "token leaked: {e}");
    assert_eq!(
        e.trim().lines().count(),
        2,
        "one line plus the generated id note: {e}"
    );

    let viewer = annotate(&cfg, Some(VIEWER), &args);
    assert_eq!(viewer.status.code(), Some(1));
    let e = stderr(&viewer);
    assert!(e.contains("403") && e.contains("Editor"), "{e}");
    assert!(!e.contains(VIEWER), "token leaked: {e}");

    let none = annotate(&cfg, None, &args);
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));
    assert!(
        stderr(&none).contains("no Grafana token"),
        "{}",
        stderr(&none)
    );
    assert!(g.annotations().is_empty());
}

#[test]
fn token_file_flag_and_config_token_file_work() {
    let g = grafana();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // --token-file wins over a wrong $GRAFANA_TOKEN.
    let cfg = config(dir.path(), &g, "");
    let out = annotate(
        &cfg,
        Some("wrong"),
        &[
            "--token-file",
            token_file.to_str().unwrap(),
            "deploy",
            "--version",
            "1",
            "--env",
            "prod",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // grafana.token_file in the configuration, no environment.
    let cfg = config(
        dir.path(),
        &g,
        &format!("token_file = \"{}\"", token_file.display()),
    );
    let out = annotate(&cfg, None, &["deploy", "--version", "2", "--env", "prod"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(g.annotations().len(), 2);
    // An unreadable --token-file is a usage error naming the path.
    let out = annotate(
        &cfg,
        None,
        &[
            "--token-file",
            "/nonexistent/token",
            "deploy",
            "--version",
            "3",
            "--env",
            "prod",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/token"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_dashboard_uid_fails_instead_of_being_silently_dropped() {
    let g = grafana();
    g.add_dashboard("steward-deploys", "Deployments");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &g, "dashboard_uid = \"no-such-dash\"");
    let out = annotate(
        &cfg,
        Some(TOKEN),
        &["deploy", "--version", "1", "--env", "prod"],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("no-such-dash") && e.contains("dashboard"), "{e}");
    assert!(g.annotations().is_empty(), "nothing posted");

    // --dashboard-uid overrides the config; a known UID is attached.
    let out = annotate(
        &cfg,
        Some(TOKEN),
        &[
            "--dashboard-uid",
            "steward-deploys",
            "deploy",
            "--version",
            "1",
            "--env",
            "prod",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(g.annotations()[0].dashboard_uid, "steward-deploys");
}

#[test]
fn timeout_is_reported_with_a_safe_retry() {
    let g = grafana();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &g, "timeout_secs = 1.0");
    g.set_delay(Duration::from_millis(2500));
    // Built (or found) before the clock starts: only the call is timed.
    steward_bin();
    let started = std::time::Instant::now();
    let out = annotate(
        &cfg,
        Some(TOKEN),
        &[
            "deploy",
            "--version",
            "1",
            "--env",
            "prod",
            "--deploy-id",
            "slow-1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = stderr(&out);
    assert!(e.contains("did not answer within"), "{e}");
    g.set_delay(Duration::ZERO);
}

#[test]
fn grafana_rejections_pass_through_as_clear_errors() {
    let g = grafana();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &g, "");
    // Grafana's 400 (e.g. a rejected field) and a 500 both end the CLI
    // with its message.
    g.force_next(400, r#"{"message":"bad request data"}"#);
    let out = annotate(
        &cfg,
        Some(TOKEN),
        &["deploy", "--version", "1", "--env", "prod"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HTTP 400") && stderr(&out).contains("bad request data"));
    g.force_next(500, r#"{"message":"database is locked"}"#);
    let out = annotate(
        &cfg,
        Some(TOKEN),
        &["deploy", "--version", "1", "--env", "prod"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("HTTP 500") && stderr(&out).contains("database is locked"));
    // An empty text never reaches Grafana (which would answer 400).
    let out = annotate(
        &cfg,
        Some(TOKEN),
        &["deploy", "--version", "1", "--env", "prod", "--text", " "],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--text"));
    // Nothing listens: a connection error naming the URL.
    let port = steward_tests::free_port();
    let path = dir.path().join("down.toml");
    std::fs::write(
        &path,
        format!("[grafana]\nurl = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let out = annotate(
        &path,
        Some(TOKEN),
        &["deploy", "--version", "1", "--env", "prod"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    assert!(g.annotations().is_empty());
}

/// A raw HTTP/1.1 request to the fake Grafana: (status, body).
fn raw(port: u16, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// The fake itself rejects what Grafana rejects, so the tests above can
/// fail: without this, a fake that accepts anything would prove nothing.
#[test]
fn fake_grafana_follows_the_documented_contract() {
    let g = grafana();
    g.add_dashboard("d1", "D1");
    let p = g.port;
    assert_eq!(
        raw(p, "POST", "/api/annotations", None, r#"{"text":"x"}"#).0,
        401
    );
    assert_eq!(
        raw(
            p,
            "POST",
            "/api/annotations",
            Some("bogus"),
            r#"{"text":"x"}"#
        )
        .0,
        401
    );
    assert_eq!(
        raw(
            p,
            "POST",
            "/api/annotations",
            Some(VIEWER),
            r#"{"text":"x"}"#
        )
        .0,
        403
    );
    assert_eq!(
        raw(p, "POST", "/api/annotations", Some(TOKEN), "{not json").0,
        400
    );
    let (s, b) = raw(
        p,
        "POST",
        "/api/annotations",
        Some(TOKEN),
        r#"{"text":"","tags":["a"]}"#,
    );
    assert_eq!(
        (s, b.contains("Text field should not be empty")),
        (400, true)
    );
    assert_eq!(
        raw(
            p,
            "POST",
            "/api/annotations",
            Some(TOKEN),
            r#"{"text":"x","tags":"a"}"#
        )
        .0,
        400
    );
    assert_eq!(
        raw(
            p,
            "POST",
            "/api/annotations",
            Some(TOKEN),
            r#"{"text":"x","time":"now"}"#
        )
        .0,
        400
    );
    let (s, b) = raw(
        p,
        "POST",
        "/api/annotations",
        Some(TOKEN),
        r#"{"text":"one","tags":["a","b"],"time":1000,"dashboardUID":"missing"}"#,
    );
    assert_eq!(s, 200);
    let created: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(created["message"], "Annotation added");
    let id = created["id"].as_u64().unwrap();
    raw(
        p,
        "POST",
        "/api/annotations",
        Some(TOKEN),
        r#"{"text":"two","tags":["a"],"time":2000,"dashboardUID":"d1"}"#,
    );
    // Unknown dashboard UID silently ignored, known one kept.
    let stored = g.annotations();
    assert_eq!(stored[0].dashboard_uid, "");
    assert_eq!(stored[1].dashboard_uid, "d1");
    // Tags ANDed, newest first, limit honoured.
    let (_, b) = raw(p, "GET", "/api/annotations?tags=a&tags=b", Some(TOKEN), "");
    let list: Vec<serde_json::Value> = serde_json::from_str(&b).unwrap();
    assert_eq!(list.len(), 1);
    let (_, b) = raw(p, "GET", "/api/annotations?tags=a&limit=1", Some(TOKEN), "");
    let list: Vec<serde_json::Value> = serde_json::from_str(&b).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["text"], "two");
    // PATCH: only given fields change; unknown id 404; bad id 400.
    let (s, _) = raw(
        p,
        "PATCH",
        &format!("/api/annotations/{id}"),
        Some(TOKEN),
        r#"{"timeEnd":5000}"#,
    );
    assert_eq!(s, 200);
    let a = g.annotations().into_iter().find(|a| a.id == id).unwrap();
    assert_eq!((a.time, a.time_end, a.text.as_str()), (1000, 5000, "one"));
    assert_eq!(
        raw(
            p,
            "PATCH",
            "/api/annotations/777",
            Some(TOKEN),
            r#"{"timeEnd":1}"#
        )
        .0,
        404
    );
    assert_eq!(
        raw(
            p,
            "PATCH",
            "/api/annotations/abc",
            Some(TOKEN),
            r#"{"timeEnd":1}"#
        )
        .0,
        400
    );
    assert_eq!(
        raw(p, "GET", "/api/dashboards/uid/nope", Some(TOKEN), "").0,
        404
    );
    assert_eq!(
        raw(p, "GET", "/api/dashboards/uid/d1", Some(TOKEN), "").0,
        200
    );
}

/// The daemon exports the annotation counters, all at 0, once Grafana is
/// configured, so `increase()` sees the first failure.
#[test]
fn agent_exports_annotation_counters_when_grafana_is_configured() {
    let g = grafana();
    let agent = StewardAgent::start(
        &format!(
            "[node]\nenabled = false\n[grafana]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n",
            g.url()
        ),
        "",
    )
    .expect("start steward");
    let text = agent.scrape().unwrap();
    assert!(
        text.contains(
            "steward_grafana_annotation_errors_total{kind=\"backup_failure\",reason=\"timeout\"} 0"
        ),
        "{text}"
    );
    assert!(
        text.contains("steward_grafana_annotations_total{kind=\"drill\"} 0"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    let (_, _, health) = steward_tests::http_get(agent.port, "/health", &[]).unwrap();
    assert!(!String::from_utf8_lossy(&health).contains(TOKEN));

    let off = StewardAgent::start("[node]\nenabled = false\n", "").expect("start steward");
    assert!(!off.scrape().unwrap().contains("steward_grafana_"));
}
