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
        probe(
            "by-name",
            &format!("http://localhost:{}/livez", nginx.port),
            "",
        ),
        probe(
            "regex-ok",
            &nginx.url("/livez"),
            "fail_if_body_not_matches_regexp = [\"^ok\"]\nfail_if_body_matches_regexp = [\"error\"]",
        ),
        probe(
            "regex-fails",
            &nginx.url("/health"),
            "fail_if_body_matches_regexp = [\"\\\"status\\\":\\\\s*\\\"ok\\\"\"]",
        ),
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

    // blackbox's phases: every one present, none negative; plain HTTP has
    // no TLS phase, and an answered request spent time connecting and
    // waiting for the response head.
    let phase = |probe: &str, phase: &str| {
        m.value(
            "probe_http_duration_seconds",
            &[("probe", probe), ("phase", phase)],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    for p in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(phase("livez", p) >= 0.0, "{p}");
    }
    assert_eq!(phase("livez", "tls"), 0.0);
    assert!(phase("livez", "connect") > 0.0);
    assert!(phase("livez", "processing") > 0.0);
    let phases_sum: f64 = ["resolve", "connect", "tls", "processing", "transfer"]
        .iter()
        .map(|p| phase("livez", p))
        .sum();
    assert!(phases_sum <= d, "{phases_sum} > {d}");
    // Two hops: each connected and waited for its own response.
    assert!(phase("redirect", "processing") > 0.0);
    assert_eq!(phase("closed", "processing"), 0.0);
    assert_eq!(
        m.label_names("probe_http_duration_seconds"),
        [vec!["phase".to_string(), "probe".into(), "target".into()]].into()
    );

    // An IP literal needs no lookup; a name does, and falls back to the
    // next address when the first (::1 on many hosts) refuses.
    assert_eq!(v("probe_dns_lookup_time_seconds", "livez"), 0.0);
    assert_eq!(v("probe_ip_protocol", "livez"), 4.0);
    let mut fnv: u32 = 0x811c_9dc5;
    for b in [127u8, 0, 0, 1] {
        fnv = (fnv ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    assert_eq!(v("probe_ip_addr_hash", "livez"), f64::from(fnv));
    assert_eq!(v("probe_success", "by-name"), 1.0, "{}", agent.log());
    assert!(v("probe_dns_lookup_time_seconds", "by-name") > 0.0);
    assert!(phase("by-name", "resolve") > 0.0);
    assert_eq!(v("probe_ip_addr_hash", "closed"), f64::from(fnv));

    assert_eq!(v("probe_success", "regex-ok"), 1.0);
    assert_eq!(v("probe_failed_due_to_regex", "regex-ok"), 0.0);
    assert_eq!(v("probe_success", "regex-fails"), 0.0);
    assert_eq!(v("probe_failed_due_to_regex", "regex-fails"), 1.0);
    assert_eq!(v("probe_http_status_code", "regex-fails"), 200.0);
    assert_eq!(v("probe_failed_due_to_regex", "closed"), 0.0);
    for family in [
        "probe_tls_version_info",
        "probe_ssl_last_chain_expiry_timestamp_seconds",
    ] {
        assert!(m.find(family, &[]).next().is_none(), "no TLS, no {family}");
    }
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

    // The chain leaf -> test CA (3650 days) lives as long as the leaf.
    assert_eq!(
        v("probe_ssl_last_chain_expiry_timestamp_seconds", "trusted"),
        expiry
    );
    // One series, labelled with what was negotiated (nginx 1.22's default
    // protocols stop at TLS 1.2, later ones offer 1.3).
    let versions: Vec<_> = m
        .find("probe_tls_version_info", &[("probe", "trusted")])
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let (_, labels, value) = versions[0];
    assert_eq!(*value, 1.0);
    assert!(
        labels
            .iter()
            .any(|(k, v)| k == "version" && (v == "TLS 1.2" || v == "TLS 1.3")),
        "{labels:?}"
    );
    let tls_phase = m
        .value(
            "probe_http_duration_seconds",
            &[("probe", "trusted"), ("phase", "tls")],
        )
        .unwrap();
    assert!(tls_phase > 0.0, "{tls_phase}");

    assert_eq!(v("probe_success", "insecure"), 1.0);
    assert_eq!(v("probe_ssl_earliest_cert_expiry", "insecure"), expiry);
    // Nothing was verified, so there is no verified chain to report.
    assert!(m
        .find(
            "probe_ssl_last_chain_expiry_timestamp_seconds",
            &[("probe", "insecure")]
        )
        .next()
        .is_none());

    // A certificate from a CA nobody trusts fails the probe.
    assert_eq!(v("probe_success", "untrusted"), 0.0);
    assert_eq!(v("probe_http_status_code", "untrusted"), 0.0);
}
