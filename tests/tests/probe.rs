//! HTTP(S) probes against a real nginx: health endpoints with the
//! blackbox_exporter names, redirects, refused ports, and the expiry of a
//! server certificate generated with a known notAfter.

use std::time::{Duration, Instant};

use steward_tests::nginx::{Exposition, Nginx, CERT_DAYS};
use steward_tests::{free_port, StewardAgent};

fn probe(name: &str, url: &str, extra: &str) -> String {
    format!("[[probe]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

#[test]
fn health_endpoints_redirects_and_refused_ports() {
    let nginx = Nginx::start().unwrap();
    let closed = free_port();
    let config = [
        "[node]\nenabled = false\n".to_string(),
        probe("livez", &nginx.url("/livez"), ""),
        probe("readyz", &nginx.url("/readyz"), ""),
        probe(
            "readyz-503-ok",
            &nginx.url("/readyz"),
            "valid_status_codes = [503]",
        ),
        probe("health", &nginx.url("/health"), "method = \"HEAD\""),
        probe("redirect", &nginx.url("/redirect"), ""),
        probe(
            "no-follow",
            &nginx.url("/redirect"),
            "follow_redirects = false\nvalid_status_codes = [302]",
        ),
        probe("closed", &format!("http://127.0.0.1:{closed}/livez"), ""),
    ]
    .concat();
    let agent = StewardAgent::start(&config, "").unwrap();
    let started = Instant::now();
    let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let v = |name: &str, probe: &str| {
        m.value(name, &[("probe", probe)])
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()))
    };

    assert_eq!(v("probe_success", "livez"), 1.0);
    assert_eq!(v("probe_http_status_code", "livez"), 200.0);
    assert_eq!(v("probe_http_content_length", "livez"), 3.0);
    assert_eq!(v("probe_http_uncompressed_body_length", "livez"), 3.0);
    assert_eq!(v("probe_http_ssl", "livez"), 0.0);
    assert_eq!(v("probe_http_version", "livez"), 1.1);
    let d = v("probe_duration_seconds", "livez");
    assert!(d > 0.0 && d < 5.0, "{d}");
    assert_eq!(
        m.value(
            "probe_success",
            &[("probe", "livez"), ("target", &nginx.url("/livez"))]
        )
        .unwrap(),
        1.0
    );

    assert_eq!(v("probe_success", "readyz"), 0.0);
    assert_eq!(v("probe_http_status_code", "readyz"), 503.0);
    assert_eq!(v("probe_success", "readyz-503-ok"), 1.0);

    assert_eq!(v("probe_success", "health"), 1.0);
    assert_eq!(v("probe_http_uncompressed_body_length", "health"), 0.0);

    assert_eq!(v("probe_success", "redirect"), 1.0);
    assert_eq!(v("probe_http_redirects", "redirect"), 1.0);
    assert_eq!(v("probe_http_status_code", "redirect"), 200.0);
    assert_eq!(v("probe_success", "no-follow"), 1.0);
    assert_eq!(v("probe_http_status_code", "no-follow"), 302.0);
    assert_eq!(v("probe_http_redirects", "no-follow"), 0.0);

    assert_eq!(v("probe_success", "closed"), 0.0);
    assert_eq!(v("probe_http_status_code", "closed"), 0.0);
    assert!(
        m.find("probe_ssl_earliest_cert_expiry", &[])
            .next()
            .is_none(),
        "no TLS, no expiry"
    );
    for (_, labels, _) in m.find("probe_success", &[]) {
        let mut names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["probe", "target"]);
    }
    assert!(agent.log().contains("probe failed"), "{}", agent.log());
}

#[test]
fn tls_certificate_expiry_is_the_certificate_not_after() {
    let nginx = Nginx::start().unwrap();
    let url = nginx.tls_url("/livez");
    let config = [
        "[node]\nenabled = false\n".to_string(),
        probe(
            "trusted",
            &url,
            &format!("ca_file = \"{}\"", nginx.ca_path.display()),
        ),
        probe("insecure", &url, "insecure_skip_verify = true"),
        probe("untrusted", &url, ""),
    ]
    .concat();
    let agent = StewardAgent::start(&config, "").unwrap();
    let m = Exposition::parse(&agent.scrape().unwrap()).unwrap();
    let v = |name: &str, probe: &str| {
        m.value(name, &[("probe", probe)])
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()))
    };

    assert_eq!(v("probe_success", "trusted"), 1.0, "{}", agent.log());
    assert_eq!(v("probe_http_ssl", "trusted"), 1.0);
    let expiry = v("probe_ssl_earliest_cert_expiry", "trusted");
    assert_eq!(expiry, nginx.cert_not_after as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days_left = (expiry - now) / 86400.0;
    assert!(
        (f64::from(CERT_DAYS) - 1.0..=f64::from(CERT_DAYS)).contains(&days_left),
        "{days_left}"
    );

    assert_eq!(v("probe_success", "insecure"), 1.0);
    assert_eq!(v("probe_ssl_earliest_cert_expiry", "insecure"), expiry);

    // A certificate from a CA nobody trusts fails the probe.
    assert_eq!(v("probe_success", "untrusted"), 0.0);
    assert_eq!(v("probe_http_status_code", "untrusted"), 0.0);
}
