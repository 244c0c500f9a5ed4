//! Exposing Steward safely: one exporter-toolkit web-config file serves
//! node_exporter and Steward alike (TLS + basic auth), a real Prometheus
//! scrapes Steward through it, client certificates are enforced, slow
//! clients are cut off, excess scrapes are refused, a rotated certificate
//! is served after SIGHUP, and a broken file is refused by name.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::pki::{cert_der, Pki};
use steward_tests::{free_port, http_get, steward_bin, wait_for_http, ChildGuard, StewardAgent};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// Node collectors off: these tests are about the server, not the host.
const QUIET: &str = "[node]\nenabled = false\n";

fn bcrypt_hash(password: &str) -> String {
    // Cost 6: realistic format, fast enough for the unoptimized test build.
    bcrypt::hash(password, 6).unwrap()
}

/// A web-config file in exporter-toolkit's format.
fn write_web_config(dir: &Path, name: &str, tls: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n{tls}http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
             basic_auth_users:\n  {USER}: {}\n",
            bcrypt_hash(PASSWORD)
        ),
    )
    .unwrap();
    path
}

fn tls_lines(cert: &Path, key: &Path) -> String {
    format!(
        "  cert_file: {}\n  key_file: {}\n  min_version: TLS12\n",
        cert.display(),
        key.display()
    )
}

fn client(pki: &Pki, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(30))
        // A new connection (and handshake) per request: rotation is seen.
        .pool_max_idle_per_host(0);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

async fn get(
    client: &reqwest::Client,
    port: u16,
    credentials: Option<(&str, &str)>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client.get(format!("https://127.0.0.1:{port}/metrics"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    request.send().await
}

fn served_cert(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS response carries the server certificate")
        .to_vec()
}

fn node_exporter_with(web_config: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let guard = ChildGuard::spawn(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--web.config.file={}", web_config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("install the Debian package prometheus-node-exporter");
    steward_tests::wait_for_tcp(port, Duration::from_secs(30)).unwrap();
    (guard, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_web_config_serves_node_exporter_and_steward_with_tls_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue("server", true);
    let web = write_web_config(dir.path(), "web.yml", &tls_lines(&cert, &key));
    let web_arg = format!("--web.config.file={}", web.display());

    let (_node, node_port) = node_exporter_with(&web);
    let steward = StewardAgent::start_with_args(QUIET, "", &[&web_arg]).unwrap();
    let client = client(&pki, None);

    for (name, port, family) in [
        ("node_exporter", node_port, "node_exporter_build_info"),
        ("steward", steward.port, "steward_build_info"),
    ] {
        let ok = get(&client, port, Some((USER, PASSWORD))).await.unwrap();
        assert_eq!(ok.status(), 200, "{name}");
        assert_eq!(ok.headers()["x-frame-options"], "deny", "{name}");
        assert_eq!(served_cert(&ok), cert_der(&cert), "{name}");
        let body = ok.text().await.unwrap();
        assert!(body.contains(family), "{name}: {body:.300}");

        let wrong = get(&client, port, Some((USER, "wrong"))).await.unwrap();
        assert_eq!(wrong.status(), 401, "{name}");
        let unknown = get(&client, port, Some(("nobody", PASSWORD)))
            .await
            .unwrap();
        assert_eq!(unknown.status(), 401, "{name}");
        let anonymous = get(&client, port, None).await.unwrap();
        assert_eq!(anonymous.status(), 401, "{name}");

        // Plain HTTP on the TLS port gets no metrics.
        let plain = http_get(port, "/metrics", &[]);
        assert!(
            !matches!(plain, Ok((200, _, _))),
            "{name} served plain HTTP: {plain:?}"
        );
    }
    // Steward's 401 carries the challenge and the configured header too.
    let anonymous = get(&client, steward.port, None).await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Basic");
    assert_eq!(anonymous.headers()["x-frame-options"], "deny");
    assert!(!steward.log().contains(PASSWORD));
}

#[test]
fn prometheus_scrapes_steward_over_tls_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue("server", true);
    let web = write_web_config(dir.path(), "web.yml", &tls_lines(&cert, &key));
    let steward = StewardAgent::start_with_args(
        QUIET,
        &format!("web_config_file = \"{}\"", web.display()),
        &[],
    )
    .unwrap();

    let prom_port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: steward\n    \
             scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: {USER}\n      \
             password: {PASSWORD}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            pki.ca_cert.display(),
            steward.port
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = ChildGuard::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .expect("install the Debian package prometheus");
    wait_for_http(prom_port, "/-/ready", Duration::from_secs(60)).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (_, _, body) = http_get(
            prom_port,
            "/api/v1/query?query=up%7Bjob%3D%22steward%22%7D",
            &[],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        last = v.to_string();
        if v["data"]["result"][0]["value"][1] == "1" {
            // And the scrape carried Steward's own metrics through TLS.
            let (_, _, body) =
                http_get(prom_port, "/api/v1/query?query=steward_build_info", &[]).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(1), "{v}");
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let targets = http_get(prom_port, "/api/v1/targets", &[]).unwrap().2;
    panic!(
        "up{{job=\"steward\"}} never became 1: {last}\ntargets: {}\nsteward log:\n{}",
        String::from_utf8_lossy(&targets),
        steward.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_verify_client_cert_refuses_the_handshake_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue("server", true);
    let (client_cert, client_key) = pki.issue("client", false);
    let tls = format!(
        "{}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        tls_lines(&cert, &key),
        pki.ca_cert.display()
    );
    let web = write_web_config(dir.path(), "web.yml", &tls);
    let web_arg = format!("--web.config.file={}", web.display());
    let steward = StewardAgent::start_with_args(QUIET, "", &[&web_arg]).unwrap();

    let anonymous = client(&pki, None);
    let refused = get(&anonymous, steward.port, Some((USER, PASSWORD))).await;
    let err = refused.expect_err("a client without a certificate must not get through");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // A certificate from another CA is refused as well.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::new(other_dir.path());
    let (stranger_cert, stranger_key) = other.issue("stranger", false);
    let stranger = client(&pki, Some((&stranger_cert, &stranger_key)));
    assert!(get(&stranger, steward.port, Some((USER, PASSWORD)))
        .await
        .is_err());

    let trusted = client(&pki, Some((&client_cert, &client_key)));
    let ok = get(&trusted, steward.port, Some((USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // mTLS does not replace basic auth when both are configured.
    let no_password = get(&trusted, steward.port, None).await.unwrap();
    assert_eq!(no_password.status(), 401);
}

/// Sends `prefix`, then `filler` one byte at a time `gap` apart, and
/// returns how long the server kept the connection open (at most `limit`).
fn trickle_until_closed(port: u16, prefix: &[u8], filler: u8, limit: Duration) -> Duration {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let started = Instant::now();
    if stream.write_all(prefix).is_err() {
        return started.elapsed();
    }
    let mut buf = [0u8; 512];
    while started.elapsed() < limit {
        if stream.write_all(&[filler]).is_err() {
            return started.elapsed();
        }
        match stream.read(&mut buf) {
            // Closed (0), or answered and closed.
            Ok(_) => return started.elapsed(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return started.elapsed(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// A request header that never ends: one more byte of a header value.
const SLOW_HEADER: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A TLS record header announcing a 512-byte ClientHello that never comes.
const SLOW_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

#[test]
fn header_read_timeout_closes_a_slow_loris_connection() {
    let steward =
        StewardAgent::start(QUIET, "[agent.http]\nheader_read_timeout_secs = 1.0\n").unwrap();
    let held = trickle_until_closed(steward.port, SLOW_HEADER, b'a', Duration::from_secs(10));
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(4),
        "a header trickled over {held:?} was not cut after 1 s"
    );
    // A silent connection (no byte at all) is cut as well.
    let mut silent = TcpStream::connect(("127.0.0.1", steward.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let _ = silent.read(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a silent connection stayed open {:?}",
        started.elapsed()
    );
    // Normal requests still work.
    assert!(steward.scrape().unwrap().contains("steward_build_info"));
}

#[test]
fn tls_handshake_is_bounded_by_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue("server", true);
    let web = write_web_config(dir.path(), "web.yml", &tls_lines(&cert, &key));
    let web_arg = format!("--web.config.file={}", web.display());
    let steward = StewardAgent::start_with_args(
        QUIET,
        "[agent.http]\nheader_read_timeout_secs = 1.0\n",
        &[&web_arg],
    )
    .unwrap();
    let held = trickle_until_closed(steward.port, SLOW_CLIENT_HELLO, 0, Duration::from_secs(10));
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_secs(4),
        "a TLS handshake trickled over {held:?} was not cut after 1 s"
    );
}

#[test]
fn scrapes_past_the_bound_get_503_at_once() {
    // A probe target that accepts and never answers makes each scrape take
    // the probe's timeout.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let config = format!(
        "{QUIET}[[probe]]\nname = \"hang\"\nurl = \"http://127.0.0.1:{hang_port}/\"\ntimeout_secs = 4.0\n"
    );
    let steward =
        StewardAgent::start(&config, "[agent.http]\nmax_concurrent_scrapes = 1\n").unwrap();
    let port = steward.port;
    let slow = std::thread::spawn(move || http_get(port, "/metrics", &[]).unwrap().0);
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let (status, head, body) = http_get(port, "/metrics", &[]).unwrap();
    assert_eq!(status, 503, "{head}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        started.elapsed()
    );
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("max_concurrent_scrapes"), "{body}");
    // Other endpoints are not bounded by scrapes.
    assert_eq!(http_get(port, "/livez", &[]).unwrap().0, 200);

    assert_eq!(slow.join().unwrap(), 200);
    // The slot is free again.
    assert_eq!(http_get(port, "/livez", &[]).unwrap().0, 200);
    drop(hang);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_rotated_certificate_and_keeps_it_over_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (old_cert, old_key) = pki.issue("old", true);
    let (new_cert, new_key) = pki.issue("new", true);
    let live_cert = dir.path().join("live.pem");
    let live_key = dir.path().join("live.key");
    std::fs::copy(&old_cert, &live_cert).unwrap();
    std::fs::copy(&old_key, &live_key).unwrap();
    let web = write_web_config(dir.path(), "web.yml", &tls_lines(&live_cert, &live_key));
    let web_arg = format!("--web.config.file={}", web.display());
    let steward = StewardAgent::start_with_args(QUIET, "", &[&web_arg]).unwrap();
    let client = client(&pki, None);

    let first = get(&client, steward.port, Some((USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(served_cert(&first), cert_der(&old_cert));

    std::fs::copy(&new_cert, &live_cert).unwrap();
    std::fs::copy(&new_key, &live_key).unwrap();
    steward.guard.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(&client, steward.port, Some((USER, PASSWORD)))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        if served_cert(&r) == cert_der(&new_cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not served\n{}",
            steward.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken file on the next reload: the running configuration stays.
    std::fs::write(&web, "tls_server_config:\n  cert_fil: oops\n").unwrap();
    steward.guard.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !steward.log().contains("web config reload failed") {
        assert!(Instant::now() < deadline, "{}", steward.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = steward.log();
    assert!(log.contains("cert_fil"), "{log}");
    let r = get(&client, steward.port, Some((USER, PASSWORD)))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_cert(&r), cert_der(&new_cert));
}

#[test]
fn broken_web_config_fails_config_check_and_startup_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: a.pem\n  key_fil: a.key\n",
    )
    .unwrap();
    let toml = dir.path().join("steward.toml");
    std::fs::write(
        &toml,
        format!(
            "[agent]\nlisten = \"127.0.0.1:{}\"\nweb_config_file = \"{}\"\n{QUIET}",
            free_port(),
            web.display()
        ),
    )
    .unwrap();
    let web_name = web.display().to_string();
    let check = |out: std::process::Output, what: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(&web_name), "{what}: {stderr}");
        assert!(
            stderr.contains("unknown field `key_fil`"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    };
    let out = Command::new(steward_bin())
        .args(["config", "check", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    check(out, "config check");
    let out = Command::new(steward_bin())
        .args(["agent", "--config"])
        .arg(&toml)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    check(out, "agent with agent.web_config_file");

    // The same file given on the command line.
    std::fs::write(
        &toml,
        format!("[agent]\nlisten = \"127.0.0.1:{}\"\n{QUIET}", free_port()),
    )
    .unwrap();
    let out = Command::new(steward_bin())
        .args(["agent", "--config"])
        .arg(&toml)
        .arg(format!("--web.config.file={}", web.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    check(out, "agent --web.config.file");

    // An unsupported cipher suite is named as well.
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n",
    )
    .unwrap();
    let out = Command::new(steward_bin())
        .args(["agent", "--config"])
        .arg(&toml)
        .arg(format!("--web.config.file={}", web.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls_server_config.cipher_suites: TLS_RSA_WITH_AES_128_CBC_SHA"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receiver_takes_the_same_file_tls_and_basic_auth_on_grpc_and_http() {
    use base64::Engine;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.issue("server", true);
    let web = write_web_config(dir.path(), "receiver-web.yml", &tls_lines(&cert, &key));
    let (grpc_port, http_port) = (free_port(), free_port());
    let config = format!(
        "{QUIET}[telemetry]\n[telemetry.exporter]\nendpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http\"\n\
         [telemetry.receiver]\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\n\
         web_config_file = \"{}\"\n",
        free_port(),
        web.display()
    );
    let steward = StewardAgent::start(&config, "").unwrap();
    steward_tests::wait_for_tcp(grpc_port, Duration::from_secs(30)).unwrap();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };

    // OTLP/HTTP over TLS: basic auth required.
    let client = client(&pki, None);
    let url = format!("https://127.0.0.1:{http_port}/v1/logs");
    let post = |auth: bool| {
        let mut r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec());
        if auth {
            r = r.basic_auth(USER, Some(PASSWORD));
        }
        r.send()
    };
    assert_eq!(post(false).await.unwrap().status(), 401);
    let ok = post(true).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(served_cert(&ok), cert_der(&cert));

    // OTLP/gRPC over TLS: basic auth as `authorization` metadata.
    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{grpc_port}"))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = LogsServiceClient::new(channel);
    let refused = grpc
        .export(tonic::Request::new(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut authed = tonic::Request::new(request.clone());
    let token = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    authed
        .metadata_mut()
        .insert("authorization", token.parse().unwrap());
    grpc.export(authed).await.unwrap();

    // Exactly the two authenticated records were taken in.
    let metrics = steward.scrape().unwrap();
    assert!(
        metrics.contains("steward_telemetry_items_received_total{signal=\"logs\"} 2"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("items_received"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
