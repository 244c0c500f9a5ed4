//! A real nginx, with the `steward` log_format the README documents,
//! serving load from separate curl processes: every request becomes one OTLP
//! log record with the HTTP semantic-convention attributes, and the request
//! metrics (count by method/status, duration and upstream histograms) on
//! `/metrics` match what was sent. The error log is parsed too.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use steward_tests::otlp_sink::{metric_in, OtlpSink, PersistentAgent};
use steward_tests::{free_port, wait_for_http, ChildGuard};

/// The log_format from the README (combined + request and upstream times).
const LOG_FORMAT: &str = r#"log_format steward '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time $upstream_response_time';"#;

fn nginx_bin() -> String {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("nginx is not installed (Debian package nginx-light or nginx; scripts/apt-packages.txt lists it)");
}

fn curl(args: &[String]) -> ChildGuard {
    let mut cmd = Command::new("curl");
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    ChildGuard::spawn("curl", &mut cmd).expect("curl is needed (Debian package curl)")
}

#[test]
fn nginx_access_log_under_load_becomes_records_and_request_metrics() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    for sub in [
        "www",
        "tmp/body",
        "tmp/proxy",
        "tmp/fastcgi",
        "tmp/uwsgi",
        "tmp/scgi",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let access = d.join("access.log");
    let error = d.join("error.log");
    let conf = format!(
        r#"daemon off;
worker_processes 2;
user root;
pid {d}/nginx.pid;
error_log {error} error;
events {{ worker_connections 512; }}
http {{
  {LOG_FORMAT}
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    access_log {access} steward;
    root {d}/www;
    location /ok/ {{ return 200 "ok\n"; }}
    location /fail/ {{ return 503 "down\n"; }}
    location /backend/ {{ access_log off; return 200 "backend\n"; }}
    location /up/ {{ proxy_pass http://127.0.0.1:{port}/backend/; }}
    location /missing/ {{ }}
  }}
}}
"#,
        d = d.display(),
        error = error.display(),
        access = access.display(),
    );
    let conf_path = d.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _nginx = ChildGuard::spawn(
        "nginx",
        Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(d)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
    .unwrap();
    wait_for_http(port, "/ok/ready", Duration::from_secs(20)).unwrap();

    let sources = format!(
        r#"
[telemetry]
poll_interval_ms = 50
environment = "test"
[telemetry.exporter]
endpoint = "{}"
batch_timeout_ms = 100
[telemetry.receiver]
enabled = false
[[telemetry.sources]]
name = "nginx"
paths = ["{}"]
parser = "nginx_combined"
[[telemetry.sources]]
name = "nginx-error"
paths = ["{}"]
parser = "nginx_error"
"#,
        sink.grpc_endpoint(),
        access.display(),
        error.display()
    );
    let agent = PersistentAgent::start(d, &sources).unwrap();

    // Load from separate processes: parallel GETs of several kinds and POSTs.
    let base = format!("http://127.0.0.1:{port}");
    let mut get_args: Vec<String> = [
        "-s",
        "--parallel",
        "--parallel-max",
        "8",
        "-A",
        "steward-load/1.0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (path, range) in [
        ("ok", "1-1500"),
        ("fail", "1-200"),
        ("up", "1-100"),
        ("missing", "1-100"),
    ] {
        get_args.push("-o".into());
        get_args.push("/dev/null".into());
        get_args.push(format!("{base}/{path}/[{range}]"));
    }
    let post_args: Vec<String> = vec![
        "-s".into(),
        "-A".into(),
        "steward-load/1.0".into(),
        "-d".into(),
        "x=1".into(),
        "-o".into(),
        "/dev/null".into(),
        format!("{base}/ok/post-[1-50]"),
    ];
    let mut g = curl(&get_args);
    let mut p = curl(&post_args);
    for c in [&mut g, &mut p] {
        let status = c.child.as_mut().unwrap().wait().unwrap();
        assert!(status.success(), "curl failed: {status:?}");
        c.child = None;
    }
    // The readiness probe above is one more 200 GET.
    let total = 1 + 1500 + 200 + 100 + 100 + 50;
    let access_lines = std::fs::read_to_string(&access).unwrap().lines().count();
    assert_eq!(access_lines, total, "nginx wrote one line per request");

    let arrived = sink.wait_until(Duration::from_secs(60), |s| {
        s.logs()
            .iter()
            .filter(|r| r.resource.get("log.source").map(String::as_str) == Some("nginx"))
            .count()
            >= total
    });
    assert!(
        arrived,
        "only {} records\n{}",
        sink.log_count(),
        agent.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let logs = sink.logs();
    let access_records: Vec<_> = logs
        .iter()
        .filter(|r| r.resource.get("log.source").map(String::as_str) == Some("nginx"))
        .collect();
    assert_eq!(access_records.len(), total);
    let mut by_path: HashMap<String, usize> = HashMap::new();
    for r in &access_records {
        *by_path
            .entry(r.attributes.get("url.path").cloned().unwrap_or_default())
            .or_insert(0) += 1;
    }
    for i in 1..=1500 {
        assert_eq!(by_path.get(&format!("/ok/{i}")), Some(&1), "/ok/{i}");
    }
    for i in 1..=50 {
        assert_eq!(by_path.get(&format!("/ok/post-{i}")), Some(&1));
    }
    let r = access_records
        .iter()
        .find(|r| r.attributes.get("url.path").map(String::as_str) == Some("/fail/7"))
        .unwrap();
    assert_eq!(r.attributes["http.request.method"], "GET");
    assert_eq!(r.attributes["http.response.status_code"], "503");
    assert_eq!(r.attributes["client.address"], "127.0.0.1");
    assert_eq!(r.attributes["user_agent.original"], "steward-load/1.0");
    assert_eq!(r.attributes["network.protocol.version"], "1.1");
    assert!(r.attributes.contains_key("nginx.request_time"));
    assert_eq!(r.severity, 17, "5xx is an error");
    assert!(
        r.time_unix_nano > 1_700_000_000_000_000_000,
        "timestamp from $time_local"
    );
    assert_eq!(
        r.resource
            .get("deployment.environment.name")
            .map(String::as_str),
        Some("test")
    );
    let up = access_records
        .iter()
        .find(|r| r.attributes.get("url.path").map(String::as_str) == Some("/up/3"))
        .unwrap();
    assert!(
        up.attributes.contains_key("nginx.upstream_response_time"),
        "{up:?}"
    );

    // Request metrics on /metrics.
    let text = agent.scrape().unwrap();
    let m = |series: &str| {
        metric_in(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    let s = |method: &str, status: &str| {
        format!("steward_http_requests_total{{source=\"nginx\",method=\"{method}\",status=\"{status}\"}}")
    };
    assert_eq!(m(&s("GET", "200")), (1 + 1500 + 100) as f64);
    assert_eq!(m(&s("GET", "503")), 200.0);
    assert_eq!(m(&s("GET", "404")), 100.0);
    assert_eq!(m(&s("POST", "200")), 50.0);
    assert_eq!(
        m("steward_http_request_duration_seconds_count{source=\"nginx\"}"),
        total as f64
    );
    assert_eq!(
        m("steward_http_request_duration_seconds_bucket{source=\"nginx\",le=\"+Inf\"}"),
        total as f64
    );
    assert_eq!(
        m("steward_http_upstream_duration_seconds_count{source=\"nginx\"}"),
        100.0
    );
    assert!(
        m("steward_http_response_body_bytes_total{source=\"nginx\",method=\"GET\",status=\"503\"}")
            >= 200.0 * 5.0
    );
    assert_eq!(
        m("steward_telemetry_lines_read_total{source=\"nginx\"}"),
        total as f64
    );

    // The error log: one record per missing file, at error severity.
    let errors: Vec<_> = logs
        .iter()
        .filter(|r| r.resource.get("log.source").map(String::as_str) == Some("nginx-error"))
        .collect();
    assert!(
        errors
            .iter()
            .filter(|r| r.body.contains("No such file") && r.severity == 17)
            .count()
            >= 100,
        "{:?}",
        errors.iter().take(3).collect::<Vec<_>>()
    );
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a leaf certificate for 127.0.0.1 signed by it.
fn make_ca_and_leaf(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=steward-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// nginx terminates TLS in front of the OTLP sink (HTTPS for OTLP/HTTP,
/// HTTP/2 + TLS with grpc_pass for OTLP/gRPC); Steward trusts the private
/// CA from `ca_file` and delivers over both.
#[test]
fn exporter_delivers_over_tls_with_a_private_ca() {
    let sink = OtlpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_ca_and_leaf(d);
    for sub in [
        "tmp/body",
        "tmp/proxy",
        "tmp/fastcgi",
        "tmp/uwsgi",
        "tmp/scgi",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let (https_port, grpcs_port) = (free_port(), free_port());
    let conf = format!(
        r#"daemon off;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  ssl_certificate {d}/leaf.pem;
  ssl_certificate_key {d}/leaf.key;
  server {{
    listen 127.0.0.1:{https_port} ssl;
    location / {{ proxy_pass http://127.0.0.1:{http}; }}
  }}
  server {{
    listen 127.0.0.1:{grpcs_port} ssl http2;
    location / {{ grpc_pass grpc://127.0.0.1:{grpc}; }}
  }}
}}
"#,
        d = d.display(),
        http = sink.http_port,
        grpc = sink.grpc_port,
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let _nginx = ChildGuard::spawn(
        "nginx",
        Command::new(nginx_bin())
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stdout(Stdio::null()),
    )
    .unwrap();
    steward_tests::wait_for_tcp(https_port, Duration::from_secs(20)).unwrap();
    steward_tests::wait_for_tcp(grpcs_port, Duration::from_secs(20)).unwrap();

    let app = d.join("app.log");
    std::fs::write(&app, "").unwrap();
    for (protocol, port) in [("http", https_port), ("grpc", grpcs_port)] {
        let sub = d.join(format!("steward-{protocol}"));
        std::fs::create_dir_all(&sub).unwrap();
        let config = format!(
            r#"
[telemetry]
poll_interval_ms = 50
[telemetry.exporter]
endpoint = "https://127.0.0.1:{port}"
protocol = "{protocol}"
ca_file = "{}"
batch_timeout_ms = 100
retry_initial_backoff_ms = 100
retry_max_backoff_secs = 1
[telemetry.receiver]
enabled = false
[[telemetry.sources]]
name = "app"
paths = ["{}"]
"#,
            d.join("ca.pem").display(),
            app.display()
        );
        let mut agent = PersistentAgent::start(&sub, &config).unwrap();
        let lines: Vec<String> = (0..20).map(|i| format!("tls-{protocol}-{i}")).collect();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&app)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, (lines.join("\n") + "\n").as_bytes())
            })
            .unwrap();
        let ok = sink.wait_until(Duration::from_secs(30), |s| {
            let b = s.bodies();
            lines.iter().all(|l| b.contains_key(l))
        });
        assert!(
            ok,
            "{protocol} over TLS: {:?}\n{}",
            sink.bodies().len(),
            agent.log()
        );
        assert!(agent.stop());
    }
}
