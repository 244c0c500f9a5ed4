//! nginx against a real nginx: the Debian prometheus-nginx-exporter 0.11 side
//! by side (same families, types, labels, help; counters agree), several
//! targets over TCP and a unix socket, a target going down and coming back,
//! a garbage status page.

use std::time::{Duration, Instant};

use steward_tests::nginx::{Exposition, Nginx, NginxExporter};
use steward_tests::StewardAgent;

/// Families the Debian exporter has that Steward leaves out on purpose.
fn exporter_only(name: &str) -> Option<&'static str> {
    if name == "nginxexporter_build_info" {
        Some("the exporter's own version, not an nginx metric")
    } else if name.starts_with("go_")
        || name.starts_with("process_")
        || name.starts_with("promhttp_")
    {
        Some("Go runtime / exporter process self-metrics, not nginx")
    } else {
        None
    }
}

fn scrape(agent: &StewardAgent) -> Exposition {
    let text = agent.scrape().expect("steward /metrics");
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn families_types_labels_and_values_match_the_debian_exporter() {
    let nginx = Nginx::start().unwrap();
    let uri = nginx.url("/stub_status");
    let exporter = NginxExporter::start(&uri).unwrap();
    let agent = StewardAgent::start(
        &format!("[node]\nenabled = false\n[[nginx]]\nname = \"web\"\nscrape_uri = \"{uri}\"\n"),
        "",
    )
    .unwrap();

    let before = Exposition::parse(&exporter.scrape().unwrap()).unwrap();
    let ours = scrape(&agent);
    let after = Exposition::parse(&exporter.scrape().unwrap()).unwrap();

    let mut compared = 0;
    for (name, kind) in &before.types {
        if let Some(reason) = exporter_only(name) {
            eprintln!("skip {name}: {reason}");
            continue;
        }
        compared += 1;
        assert_eq!(ours.types.get(name), Some(kind), "type of {name}");
        assert_eq!(ours.help.get(name), before.help.get(name), "help of {name}");
        assert_eq!(
            ours.label_names(name),
            before.label_names(name),
            "label names of {name} (one target: no extra label)"
        );
    }
    assert_eq!(compared, 8, "nginx_up + 7 stub_status families expected");
    assert_eq!(ours.value("nginx_up", &[]).unwrap(), 1.0);

    // Steward read the page between the exporter's two reads, so each
    // counter lies between them.
    for counter in [
        "nginx_connections_accepted",
        "nginx_connections_handled",
        "nginx_http_requests_total",
    ] {
        let (a, b, c) = (
            before.value(counter, &[]).unwrap(),
            ours.value(counter, &[]).unwrap(),
            after.value(counter, &[]).unwrap(),
        );
        assert!(
            a <= b && b <= c,
            "{counter}: exporter {a}, steward {b}, exporter {c}"
        );
        assert!(c - a <= 10.0, "{counter}: unrelated traffic? {a}..{c}");
    }
    assert!(ours.value("nginx_connections_writing", &[]).unwrap() >= 1.0);
    assert!(ours.value("nginx_connections_active", &[]).unwrap() >= 1.0);
}

#[test]
fn several_targets_over_tcp_https_and_unix_socket_get_a_target_label() {
    let nginx = Nginx::start().unwrap();
    let config = format!(
        "[node]\nenabled = false\n\
         [[nginx]]\nname = \"tcp\"\nscrape_uri = \"{}\"\n\
         [[nginx]]\nname = \"sock\"\nscrape_uri = \"unix:{}:/stub_status\"\nlabels = {{ site = \"shop\" }}\n\
         [[nginx]]\nname = \"tls\"\nscrape_uri = \"{}\"\nssl_ca_cert = \"{}\"\n",
        nginx.url("/stub_status"),
        nginx.socket.display(),
        nginx.tls_url("/stub_status"),
        nginx.ca_path.display()
    );
    let agent = StewardAgent::start(&config, "").unwrap();
    let m = scrape(&agent);
    for target in ["tcp", "sock", "tls"] {
        assert_eq!(
            m.value("nginx_up", &[("target", target)]).unwrap(),
            1.0,
            "{target}: {}",
            agent.log()
        );
        assert!(
            m.value("nginx_http_requests_total", &[("target", target)])
                .unwrap()
                >= 1.0
        );
    }
    assert_eq!(
        m.value(
            "nginx_connections_active",
            &[("target", "sock"), ("site", "shop")]
        )
        .unwrap()
        .min(1.0),
        1.0
    );
    // One nginx behind all three: the requests counter is shared.
    assert!(
        m.value("nginx_http_requests_total", &[("target", "sock")])
            .unwrap()
            >= m.value("nginx_http_requests_total", &[("target", "tcp")])
                .unwrap()
                - 10.0
    );
}

#[test]
fn down_target_is_up_0_within_the_deadline_and_recovers() {
    let mut nginx = Nginx::start().unwrap();
    // A listener that accepts and never answers: the slowest way to fail.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let config = format!(
        "[[nginx]]\nname = \"web\"\nscrape_uri = \"{}\"\n\
         [[nginx]]\nname = \"silent\"\nscrape_uri = \"http://127.0.0.1:{silent_port}/stub_status\"\ntimeout_secs = 30\n",
        nginx.url("/stub_status")
    );
    let agent = StewardAgent::start(&config, "scrape_timeout_secs = 2.0").unwrap();
    let m = scrape(&agent);
    assert_eq!(m.value("nginx_up", &[("target", "web")]).unwrap(), 1.0);

    nginx.stop();
    let started = Instant::now();
    let m = scrape(&agent);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "scrape took {took:?}");
    assert_eq!(m.value("nginx_up", &[("target", "web")]).unwrap(), 0.0);
    assert_eq!(
        m.value("nginx_up", &[("target", "silent")]).unwrap(),
        0.0,
        "a hanging target is cut by its deadline and still reports up 0"
    );
    assert!(
        m.find("nginx_connections_active", &[("target", "web")])
            .next()
            .is_none(),
        "no stale values for a down target"
    );
    // Other collectors are unaffected.
    assert!(
        m.find("node_load1", &[]).next().is_some(),
        "node collectors still answer"
    );
    assert!(
        m.value(
            "steward_scrape_failures_total",
            &[("collector", "nginx"), ("instance", "web")]
        )
        .unwrap()
            >= 1.0
    );

    nginx.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(&agent);
        if m.value("nginx_up", &[("target", "web")]).unwrap() == 1.0 {
            assert!(m
                .find("nginx_connections_active", &[("target", "web")])
                .next()
                .is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nginx_up stayed 0 after restart:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(silent);
}

#[test]
fn garbage_status_page_counts_a_failure_and_logs_the_target() {
    let nginx = Nginx::start().unwrap();
    let config = format!(
        "[node]\nenabled = false\n\
         [[nginx]]\nname = \"good\"\nscrape_uri = \"{}\"\n\
         [[nginx]]\nname = \"garbage\"\nscrape_uri = \"{}\"\n\
         [[nginx]]\nname = \"missing\"\nscrape_uri = \"{}\"\n",
        nginx.url("/stub_status"),
        nginx.url("/garbage"),
        nginx.url("/no-such-page"),
    );
    let agent = StewardAgent::start(&config, "").unwrap();
    scrape(&agent);
    let m = scrape(&agent);
    assert_eq!(m.value("nginx_up", &[("target", "good")]).unwrap(), 1.0);
    for bad in ["garbage", "missing"] {
        assert_eq!(m.value("nginx_up", &[("target", bad)]).unwrap(), 0.0);
        assert_eq!(
            m.value(
                "steward_scrape_failures_total",
                &[("collector", "nginx"), ("instance", bad)]
            )
            .unwrap(),
            2.0
        );
        assert_eq!(
            m.value(
                "steward_scrape_collector_success",
                &[("collector", "nginx"), ("instance", bad)]
            )
            .unwrap(),
            0.0
        );
    }
    let log = agent.log();
    assert!(
        log.contains("nginx target \\\"garbage\\\"") || log.contains("nginx target \"garbage\""),
        "{log}"
    );
    assert!(log.contains("not a stub_status page"), "{log}");
    assert!(log.contains("404"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let (status, _, body) = steward_tests::http_get(agent.port, "/health", &[]).unwrap();
    assert_eq!(status, 200);
    let health = String::from_utf8_lossy(&body);
    assert!(health.contains("garbage"), "{health}");
}
