//! PHP-FPM against a real php-fpm master with two pools (unix socket and
//! TCP): the hipages php-fpm_exporter families and labels, values checked
//! against the same status page read independently through nginx, per-process
//! series only when enabled, a pool going down and coming back, and answers
//! that are not a status page.

use std::time::{Duration, Instant};

use steward_tests::nginx::{Exposition, Nginx};
use steward_tests::phpfpm::{PhpFpm, WWW_CHILDREN};
use steward_tests::{http_get, StewardAgent};

/// hipages php-fpm_exporter's pool-level families and their types.
const POOL_FAMILIES: [(&str, &str); 13] = [
    ("phpfpm_up", "gauge"),
    ("phpfpm_scrape_failures", "counter"),
    ("phpfpm_start_since", "counter"),
    ("phpfpm_accepted_connections", "counter"),
    ("phpfpm_listen_queue", "gauge"),
    ("phpfpm_max_listen_queue", "counter"),
    ("phpfpm_listen_queue_length", "gauge"),
    ("phpfpm_idle_processes", "gauge"),
    ("phpfpm_active_processes", "gauge"),
    ("phpfpm_total_processes", "gauge"),
    ("phpfpm_max_active_processes", "counter"),
    ("phpfpm_max_children_reached", "counter"),
    ("phpfpm_slow_requests", "counter"),
];

/// Per-process families: type and label names.
const PROCESS_FAMILIES: [(&str, &str, &[&str]); 5] = [
    (
        "phpfpm_process_requests",
        "counter",
        &["child", "pool", "scrape_uri"],
    ),
    (
        "phpfpm_process_last_request_memory",
        "gauge",
        &["child", "pool", "scrape_uri"],
    ),
    (
        "phpfpm_process_last_request_cpu",
        "gauge",
        &["child", "pool", "scrape_uri"],
    ),
    (
        "phpfpm_process_request_duration",
        "gauge",
        &["child", "pool", "scrape_uri"],
    ),
    (
        "phpfpm_process_state",
        "gauge",
        &["child", "pool", "scrape_uri", "state"],
    ),
];

fn status_via_nginx(nginx: &Nginx) -> serde_json::Value {
    let (status, _, body) = http_get(nginx.port, "/fpm-status?json", &[]).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn hipages_families_labels_and_values_over_unix_and_tcp() {
    let fpm = PhpFpm::start().unwrap();
    let nginx = Nginx::start_with_fpm(Some(&fpm.www_socket)).unwrap();
    let (www, api) = (fpm.www_scrape_uri(), fpm.api_scrape_uri());
    let config = format!(
        "[node]\nenabled = false\n\
         [[phpfpm]]\nname = \"www\"\nscrape_uri = \"{www}\"\n\
         [[phpfpm]]\nname = \"api\"\nscrape_uri = \"{api}\"\nper_process_metrics = true\n"
    );
    let agent = StewardAgent::start(&config, "").unwrap();

    let before = status_via_nginx(&nginx);
    let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
    let after = status_via_nginx(&nginx);

    let www_l = [("pool", "www"), ("scrape_uri", www.as_str())];
    let api_l = [("pool", "api"), ("scrape_uri", api.as_str())];
    for (name, kind) in POOL_FAMILIES {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(kind),
            "type of {name}"
        );
        assert_eq!(
            m.label_names(name),
            [vec!["pool".to_string(), "scrape_uri".to_string()]].into(),
            "labels of {name}"
        );
        m.value(name, &www_l).unwrap();
        m.value(name, &api_l).unwrap();
    }
    let v = |name: &str, l: &[(&str, &str)]| m.value(name, l).unwrap();
    assert_eq!(v("phpfpm_up", &www_l), 1.0, "{}", agent.log());
    assert_eq!(v("phpfpm_up", &api_l), 1.0);
    assert_eq!(v("phpfpm_scrape_failures", &www_l), 0.0);
    assert_eq!(v("phpfpm_total_processes", &www_l), f64::from(WWW_CHILDREN));
    assert_eq!(
        v("phpfpm_listen_queue_length", &www_l),
        before["listen queue len"].as_f64().unwrap()
    );
    assert_eq!(
        v("phpfpm_max_children_reached", &www_l),
        before["max children reached"].as_f64().unwrap()
    );
    let accepted = v("phpfpm_accepted_connections", &www_l);
    let (a, c) = (
        before["accepted conn"].as_f64().unwrap(),
        after["accepted conn"].as_f64().unwrap(),
    );
    assert!(
        a < accepted && accepted < c,
        "nginx read {a}, steward {accepted}, nginx {c}"
    );
    let since = v("phpfpm_start_since", &www_l);
    let nginx_since = after["start since"].as_f64().unwrap();
    assert!(
        (nginx_since - since).abs() <= 2.0,
        "{since} vs {nginx_since}"
    );
    // The status request itself occupies a worker while it is answered.
    assert!(v("phpfpm_active_processes", &www_l) >= 1.0);

    // Per-process series only for the pool that asked for them.
    for (name, kind, labels) in PROCESS_FAMILIES {
        assert_eq!(
            m.types.get(name).map(String::as_str),
            Some(kind),
            "type of {name}"
        );
        let expected: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        assert_eq!(m.label_names(name), [expected].into(), "labels of {name}");
        assert!(
            m.find(name, &www_l).next().is_none(),
            "{name} is off for www"
        );
        assert!(
            m.find(name, &api_l).next().is_some(),
            "{name} is on for api"
        );
    }
    let running: f64 = m
        .find(
            "phpfpm_process_state",
            &[("pool", "api"), ("state", "Running")],
        )
        .map(|s| s.2)
        .sum();
    assert!(running >= 1.0, "the worker answering the status is Running");
}

#[test]
fn pool_down_is_up_0_with_its_labels_and_recovers() {
    let mut fpm = PhpFpm::start().unwrap();
    let www = fpm.www_scrape_uri();
    let config = format!("[[phpfpm]]\nname = \"www\"\nscrape_uri = \"{www}\"\n");
    let agent = StewardAgent::start(&config, "scrape_timeout_secs = 3.0").unwrap();
    let l = [("pool", "www"), ("scrape_uri", www.as_str())];
    let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
    assert_eq!(m.value("phpfpm_up", &l).unwrap(), 1.0, "{}", agent.log());

    fpm.stop();
    let started = Instant::now();
    let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(m.value("phpfpm_up", &l).unwrap(), 0.0);
    assert_eq!(m.value("phpfpm_scrape_failures", &l).unwrap(), 1.0);
    assert!(m.find("phpfpm_accepted_connections", &[]).next().is_none());
    assert!(
        m.find("node_load1", &[]).next().is_some(),
        "node collectors unaffected"
    );

    fpm.restart().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
        if m.value("phpfpm_up", &l).unwrap() == 1.0 {
            assert!(m.value("phpfpm_scrape_failures", &l).unwrap() >= 1.0);
            // A fresh master: its counters restarted.
            assert!(m.value("phpfpm_start_since", &l).unwrap() < 15.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "phpfpm_up stayed 0:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn answers_that_are_not_a_status_page_are_failures_not_panics() {
    let fpm = PhpFpm::start().unwrap();
    let nginx = Nginx::start().unwrap();
    let config = format!(
        "[node]\nenabled = false\n\
         [[phpfpm]]\nname = \"wrong-path\"\nscrape_uri = \"unix://{};/nope\"\n\
         [[phpfpm]]\nname = \"http-not-fastcgi\"\nscrape_uri = \"tcp://127.0.0.1:{}/status\"\n\
         [[phpfpm]]\nname = \"good\"\nscrape_uri = \"{}\"\n",
        fpm.www_socket.display(),
        nginx.port,
        fpm.www_scrape_uri(),
    );
    let agent = StewardAgent::start(&config, "").unwrap();
    let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
    // The pool label comes from the status page: "good" is pool www.
    assert_eq!(m.value("phpfpm_up", &[("pool", "www")]).unwrap(), 1.0);
    for bad in ["wrong-path", "http-not-fastcgi"] {
        assert_eq!(
            m.value("phpfpm_up", &[("pool", bad)]).unwrap(),
            0.0,
            "{bad}: {}",
            agent.log()
        );
        assert_eq!(
            m.value("phpfpm_scrape_failures", &[("pool", bad)]).unwrap(),
            1.0
        );
    }
    let log = agent.log();
    assert!(
        log.contains("wrong-path") && log.contains("pm.status_path"),
        "{log}"
    );
    assert!(
        log.contains("http-not-fastcgi") && log.contains("not a FastCGI answer"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}
