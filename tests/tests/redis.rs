//! Redis against a real redis-server: the Debian prometheus-redis-exporter
//! 1.45 side by side (same families, types, labels, help; stable values
//! equal), exact-key sizes, Laravel job queues from real LPUSH/ZADD, a key
//! of the wrong type, wrong passwords and ACL users, a server that hangs and
//! a port that is not Redis.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use steward_tests::nginx::Exposition;
use steward_tests::pki::Pki;
use steward_tests::redis::{Redis, RedisExporter};
use steward_tests::StewardAgent;

fn scrape(agent: &StewardAgent) -> Exposition {
    let text = agent.scrape().expect("steward /metrics");
    Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Families with a `redis_` name that Steward writes.
fn redis_families(e: &Exposition) -> BTreeSet<String> {
    e.types
        .keys()
        .filter(|n| n.starts_with("redis_"))
        .cloned()
        .collect()
}

fn seed(redis: &Redis) {
    for args in [
        &["SET", "page:1", "<html>"][..],
        &["SET", "session:a", "x", "EX", "3600"],
        &["-n", "2", "SET", "other", "1"],
        &["-n", "2", "HSET", "h", "a", "1", "b", "2"],
        &[
            "RPUSH",
            "queues:default",
            "{\"job\":1}",
            "{\"job\":2}",
            "{\"job\":3}",
        ],
        &["SET", "counter", "42.5"],
        &["PFADD", "visitors", "a", "b", "c"],
        &["-n", "2", "SET", "old:1", "7"],
        &["CONFIG", "SET", "maxmemory", "104857600"],
    ] {
        redis.cli(args).unwrap();
    }
}

#[test]
fn families_types_labels_and_stable_values_match_the_debian_exporter() {
    let redis = Redis::start().unwrap();
    seed(&redis);
    let exporter = RedisExporter::start(
        &redis,
        &[
            "--check-single-keys=db0=queues:default,db2=h,db0=counter,db0=visitors,db0=missing",
            "--check-keys=db0=page:*,db2=o*,db0=session:a",
        ],
    )
    .unwrap();
    let agent = StewardAgent::start(
        &format!(
            "[node]\nenabled = false\n[[redis]]\nname = \"cache\"\naddr = \"{}\"\n\
             check_single_keys = [\"queues:default\", \"db2=h\", \"counter\", \"visitors\", \"missing\"]\n\
             check_keys = [\"page:*\", \"db2=o*\", \"session:a\"]\n",
            redis.url()
        ),
        "",
    )
    .unwrap();
    let theirs = Exposition::parse(&exporter.scrape().unwrap()).unwrap();
    let ours = scrape(&agent);
    assert_eq!(ours.value("redis_up", &[]).unwrap(), 1.0, "{}", agent.log());

    let our_names = redis_families(&ours);
    let their_names = redis_families(&theirs);
    let mut compared = 0;
    for name in &our_names {
        assert!(
            their_names.contains(name),
            "{name}: Steward writes a redis_ family the exporter does not"
        );
        compared += 1;
        assert_eq!(
            ours.types.get(name),
            theirs.types.get(name),
            "type of {name}"
        );
        assert_eq!(ours.help.get(name), theirs.help.get(name), "help of {name}");
        let (o, t) = (ours.label_names(name), theirs.label_names(name));
        // A family with no sample (no command stats yet) has no shape.
        if !o.is_empty() && !t.is_empty() {
            assert_eq!(o, t, "label names of {name}");
        }
    }
    let missing: Vec<&String> = their_names.difference(&our_names).collect();
    eprintln!(
        "compared {compared} of the exporter's {} redis_ families; not written by Steward: {missing:?}",
        their_names.len()
    );
    assert!(compared >= 100, "only {compared} families in common");
    for required in [
        "redis_up",
        "redis_uptime_in_seconds",
        "redis_connected_clients",
        "redis_blocked_clients",
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "redis_commands_processed_total",
        "redis_keyspace_hits_total",
        "redis_keyspace_misses_total",
        "redis_evicted_keys_total",
        "redis_expired_keys_total",
        "redis_rejected_connections_total",
        "redis_db_keys",
        "redis_db_keys_expiring",
        "redis_commands_total",
        "redis_commands_duration_seconds_total",
        "redis_connected_slaves",
        "redis_rdb_last_save_timestamp_seconds",
        "redis_rdb_changes_since_last_save",
        "redis_key_size",
        "redis_config_maxmemory",
    ] {
        assert!(our_names.contains(required), "{required} missing");
    }

    // Values that do not move between the two scrapes are equal.
    let mut stable: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("redis_memory_max_bytes", vec![]),
        ("redis_config_maxmemory", vec![]),
        ("redis_config_maxclients", vec![]),
        ("redis_connected_slaves", vec![]),
        ("redis_rdb_last_save_timestamp_seconds", vec![]),
        (
            "redis_key_size",
            vec![("db", "db0"), ("key", "queues:default")],
        ),
        ("redis_key_size", vec![("db", "db2"), ("key", "h")]),
        ("redis_aof_enabled", vec![]),
        ("redis_cluster_enabled", vec![]),
    ];
    for db in 0..16 {
        let db: &'static str = Box::leak(format!("db{db}").into_boxed_str());
        stable.push(("redis_db_keys", vec![("db", db)]));
        stable.push(("redis_db_keys_expiring", vec![("db", db)]));
    }
    for (name, with) in &stable {
        assert_eq!(
            ours.value(name, with).unwrap(),
            theirs.value(name, with).unwrap(),
            "{name}{with:?}"
        );
    }
    assert_eq!(ours.value("redis_db_keys", &[("db", "db0")]).unwrap(), 5.0);
    // Every key check, exact or from a SCAN pattern, gives the same series
    // and values as the exporter: sizes (PFCOUNT for a HyperLogLog, 0 for
    // a missing key) and the values of numeric strings.
    for family in ["redis_key_size", "redis_key_value"] {
        let series = |e: &Exposition| -> std::collections::BTreeMap<Vec<(String, String)>, f64> {
            e.find(family, &[])
                .map(|(_, labels, v)| {
                    let mut l = labels.clone();
                    l.sort();
                    (l, *v)
                })
                .collect()
        };
        let (o, t) = (series(&ours), series(&theirs));
        assert_eq!(o, t, "{family}");
        assert!(o.len() >= 2, "{family}: {o:?}");
    }
    assert_eq!(
        ours.value("redis_key_size", &[("key", "visitors")])
            .unwrap(),
        3.0
    );
    assert_eq!(
        ours.value("redis_key_value", &[("key", "old:1")]).unwrap(),
        7.0
    );
    assert_eq!(
        ours.value(
            "steward_redis_key_check_truncated",
            &[("pattern", "page:*")]
        )
        .unwrap(),
        0.0
    );
    assert_eq!(
        ours.value("redis_key_size", &[("key", "queues:default")])
            .unwrap(),
        3.0
    );
    assert_eq!(
        ours.value("redis_memory_max_bytes", &[]).unwrap(),
        104857600.0
    );
    let start = (
        ours.value("redis_start_time_seconds", &[]).unwrap(),
        theirs.value("redis_start_time_seconds", &[]).unwrap(),
    );
    assert!((start.0 - start.1).abs() <= 2.0, "{start:?}");
}

#[test]
fn laravel_queues_count_ready_delayed_and_reserved_jobs() {
    let redis = Redis::start().unwrap();
    let p = "laravel_database_queues:";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for args in [
        vec![
            "RPUSH".to_string(),
            format!("{p}default"),
            "{\"uuid\":\"a\"}".into(),
            "{\"uuid\":\"b\"}".into(),
        ],
        vec![
            "ZADD".into(),
            format!("{p}default:delayed"),
            "1900000000".into(),
            "{\"uuid\":\"c\"}".into(),
        ],
        vec![
            "ZADD".into(),
            format!("{p}default:reserved"),
            "1800000000".into(),
            "{\"uuid\":\"d\"}".into(),
            "1800000001".into(),
            "{\"uuid\":\"e\"}".into(),
            "1800000002".into(),
            "{\"uuid\":\"f\"}".into(),
        ],
        vec![
            "-n".into(),
            "0".into(),
            "RPUSH".into(),
            format!("{p}emails"),
            "{}".into(),
        ],
        // Delayed jobs that fell due 10 and 1 minutes ago and nobody moved.
        vec![
            "ZADD".into(),
            format!("{p}late:delayed"),
            (now - 60).to_string(),
            "{\"uuid\":\"h\"}".into(),
            (now - 600).to_string(),
            "{\"uuid\":\"i\"}".into(),
        ],
        // A string where a queue list belongs: counted, not a failed scrape.
        vec!["SET".into(), format!("{p}broken"), "not a list".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis.cli(&args).unwrap();
    }
    let config = format!(
        "[node]\nenabled = false\n\
         [[redis]]\nname = \"app\"\naddr = \"unix:{}\"\nprefix = \"laravel_database_\"\nqueues = [\"default\", \"emails\", \"broken\", \"idle\", \"late\"]\n",
        redis.socket.display()
    );
    let agent = StewardAgent::start(&config, "").unwrap();
    let m = scrape(&agent);
    assert_eq!(m.value("redis_up", &[]).unwrap(), 1.0, "{}", agent.log());
    for (queue, state, n) in [
        ("default", "ready", 2.0),
        ("default", "delayed", 1.0),
        ("default", "reserved", 3.0),
        ("emails", "ready", 1.0),
        ("emails", "delayed", 0.0),
        ("idle", "ready", 0.0),
        ("broken", "delayed", 0.0),
    ] {
        assert_eq!(
            m.value("steward_queue_jobs", &[("queue", queue), ("state", state)])
                .unwrap(),
            n,
            "{queue} {state}"
        );
    }
    // How overdue the oldest delayed job is: 0 when none is due (a job due
    // in 2030, an empty set), else the age of the earliest due time.
    let overdue = |m: &Exposition, queue: &str| {
        m.value(
            "steward_queue_oldest_delayed_job_overdue_seconds",
            &[("queue", queue)],
        )
        .unwrap()
    };
    for queue in ["default", "emails", "idle"] {
        assert_eq!(overdue(&m, queue), 0.0, "{queue}");
    }
    // Due at `now - 600`; the scrape came some seconds after `now`.
    let since_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - now;
    let late = overdue(&m, "late");
    assert!(
        late >= 600.0 && late <= 601.0 + since_now as f64,
        "{late}, {since_now} s after seeding"
    );
    assert!(m
        .find(
            "steward_queue_jobs",
            &[("queue", "broken"), ("state", "ready")]
        )
        .next()
        .is_none());
    assert_eq!(
        m.value(
            "steward_redis_key_check_errors_total",
            &[("key", "queue:broken:ready")]
        )
        .unwrap(),
        1.0
    );
    // The connection is kept: a second scrape sees new jobs and counts the
    // wrong type again.
    redis
        .cli(&["RPUSH", &format!("{p}default"), "{\"uuid\":\"g\"}"])
        .unwrap();
    let m = scrape(&agent);
    assert_eq!(
        m.value(
            "steward_queue_jobs",
            &[("queue", "default"), ("state", "ready")]
        )
        .unwrap(),
        3.0
    );
    assert_eq!(
        m.value(
            "steward_redis_key_check_errors_total",
            &[("key", "queue:broken:ready")]
        )
        .unwrap(),
        2.0
    );
    let clients = m.value("redis_connections_received_total", &[]).unwrap();
    let m = scrape(&agent);
    assert_eq!(
        m.value("redis_connections_received_total", &[]).unwrap(),
        clients,
        "a new connection per scrape"
    );
}

#[test]
fn wrong_password_is_up_0_without_the_secret_and_acl_users_work() {
    let secret = "s3cret-redis-pass";
    let redis = Redis::start_with_password(Some(secret)).unwrap();
    redis
        .cli(&[
            "ACL",
            "SETUSER",
            "steward",
            "on",
            ">acl-pass-42",
            "~*",
            "+@all",
        ])
        .unwrap();
    // A user that may not SCAN: its pattern check fails, not its scrape.
    redis
        .cli(&[
            "ACL",
            "SETUSER",
            "noscan",
            "on",
            ">acl-pass-43",
            "~*",
            "+@all",
            "-scan",
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password-17\n").unwrap();
    let config = format!(
        "[node]\nenabled = false\n\
         [[redis]]\nname = \"wrong\"\naddr = \"{url}\"\npassword_file = \"{}\"\n\
         [[redis]]\nname = \"none\"\naddr = \"{url}\"\n\
         [[redis]]\nname = \"right\"\naddr = \"{url}\"\npassword = \"${{REDIS_PASS}}\"\n\
         [[redis]]\nname = \"acl\"\naddr = \"{url}\"\nuser = \"steward\"\npassword = \"acl-pass-42\"\n\
         [[redis]]\nname = \"noscan\"\naddr = \"{url}\"\nuser = \"noscan\"\npassword = \"acl-pass-43\"\ncheck_keys = [\"page:*\"]\n",
        wrong.display(),
        url = redis.url()
    );
    let agent = StewardAgent::start_with_env(&config, "", &[("REDIS_PASS", secret)]).unwrap();
    let text = agent.scrape().unwrap();
    let m = Exposition::parse(&text).unwrap();
    for (target, up) in [
        ("wrong", 0.0),
        ("none", 0.0),
        ("right", 1.0),
        ("acl", 1.0),
        ("noscan", 1.0),
    ] {
        assert_eq!(
            m.value("redis_up", &[("target", target)]).unwrap(),
            up,
            "{target}: {}",
            agent.log()
        );
    }
    assert_eq!(
        m.value(
            "steward_redis_key_check_errors_total",
            &[("target", "noscan"), ("key", "scan:page:*")]
        )
        .unwrap(),
        1.0
    );
    let (_, _, health) = steward_tests::http_get(agent.port, "/health", &[]).unwrap();
    let health = String::from_utf8_lossy(&health).into_owned();
    let log = agent.log();
    assert!(
        log.contains("AUTH refused") || health.contains("AUTH refused"),
        "{log}\n{health}"
    );
    for place in [&text, &log, &health] {
        for s in [secret, "not-the-password-17", "acl-pass-42", "acl-pass-43"] {
            assert!(!place.contains(s), "secret {s} leaked:\n{place}");
        }
    }
}

/// Serves `answer` to every connection (nothing when `None`) and keeps it
/// open.
fn fake_server(answer: Option<&'static [u8]>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            if let Some(a) = answer {
                let mut buf = [0u8; 256];
                let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(a);
            }
            held.push(conn);
        }
    });
    port
}

#[test]
fn a_hanging_server_keeps_the_deadline_and_garbage_is_up_0() {
    let redis = Redis::start().unwrap();
    let silent = fake_server(None);
    let http = fake_server(Some(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    ));
    let ssh = fake_server(Some(b"SSH-2.0-OpenSSH_9.2p1\r\n"));
    let huge = fake_server(Some(b"$99999999999\r\n"));
    let config = format!(
        "[[redis]]\nname = \"good\"\naddr = \"{}\"\n\
         [[redis]]\nname = \"silent\"\naddr = \"redis://127.0.0.1:{silent}\"\ntimeout_secs = 30\n\
         [[redis]]\nname = \"http\"\naddr = \"redis://127.0.0.1:{http}\"\n\
         [[redis]]\nname = \"ssh\"\naddr = \"redis://127.0.0.1:{ssh}\"\n\
         [[redis]]\nname = \"huge\"\naddr = \"redis://127.0.0.1:{huge}\"\n",
        redis.url()
    );
    let agent = StewardAgent::start(&config, "scrape_timeout_secs = 2.0").unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let m = scrape(&agent);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "scrape took {took:?}");
        assert_eq!(
            m.value("redis_up", &[("target", "good")]).unwrap(),
            1.0,
            "{}",
            agent.log()
        );
        for target in ["silent", "http", "ssh", "huge"] {
            assert_eq!(
                m.value("redis_up", &[("target", target)]).unwrap(),
                0.0,
                "{target}"
            );
        }
        // Host metrics still answer next to the hanging target.
        assert!(m.find("node_load1", &[]).next().is_some());
    }
    let log = agent.log();
    assert!(log.contains("not a RESP"), "{log}");
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[redis]]\nname = \"a\"\naddr = \"rediss://cache:6380\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n[[redis]]\nname = \"a\"\naddr = \"redis://u:pw@x:1\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(steward_tests::steward_bin())
        .args(["config", "check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("redis[0].tls_ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    assert!(
        err.contains("redis[1].addr") && !err.contains("pw@"),
        "{err}"
    );
    assert!(err.contains("redis[1].name"), "{err}");
}

#[test]
fn rediss_with_a_ca_file_and_client_certificate_and_a_wrong_ca_is_up_0() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (server_cert, server_key) = pki.issue("server", true);
    let (client_cert, client_key) = pki.issue("client", false);
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::new(other_dir.path());
    let (redis, tls_port) =
        Redis::start_tls(&server_cert, &server_key, &pki.ca_cert, true).unwrap();
    redis.cli(&["RPUSH", "queues:default", "a", "b"]).unwrap();
    let target = |name: &str, ca: &std::path::Path, client: bool, extra: &str| {
        let mut t = format!(
            "[[redis]]\nname = \"{name}\"\naddr = \"rediss://127.0.0.1:{tls_port}\"\ntls_ca_file = \"{}\"\nqueues = [\"default\"]\n{extra}",
            ca.display()
        );
        if client {
            t.push_str(&format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                client_cert.display(),
                client_key.display()
            ));
        }
        t
    };
    let config = [
        "[node]\nenabled = false\n".to_string(),
        target("tls", &pki.ca_cert, true, ""),
        target("wrong_ca", &other.ca_cert, true, ""),
        target("no_client_cert", &pki.ca_cert, false, ""),
        target(
            "wrong_name",
            &pki.ca_cert,
            true,
            "tls_server_name = \"cache.example\"\n",
        ),
    ]
    .concat();
    let agent = StewardAgent::start(&config, "").unwrap();
    let m = scrape(&agent);
    let log = agent.log();
    assert_eq!(
        m.value("redis_up", &[("target", "tls")]).unwrap(),
        1.0,
        "{log}"
    );
    // Data went through the TLS connection: the queue's jobs are counted
    // and the server saw a TLS client.
    assert_eq!(
        m.value(
            "steward_queue_jobs",
            &[("target", "tls"), ("queue", "default"), ("state", "ready")]
        )
        .unwrap(),
        2.0
    );
    for target in ["wrong_ca", "no_client_cert", "wrong_name"] {
        assert_eq!(
            m.value("redis_up", &[("target", target)]).unwrap(),
            0.0,
            "{target}: {log}"
        );
        assert!(m
            .find("redis_connected_clients", &[("target", target)])
            .next()
            .is_none());
    }
    let (_, _, health) = steward_tests::http_get(agent.port, "/health", &[]).unwrap();
    let health = String::from_utf8_lossy(&health).into_owned();
    let wrong_ca: Vec<&str> = log
        .lines()
        .chain(health.lines())
        .filter(|l| l.contains("wrong_ca"))
        .collect();
    assert!(
        wrong_ca
            .iter()
            .any(|l| l.contains("TLS handshake failed") && l.contains("tls_ca_file")),
        "{log}\n{health}"
    );
}

/// `INFO commandstats` calls of `command` on `redis`'s db (0 if never run).
fn calls(redis: &Redis, command: &str) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn a_huge_keyspace_keeps_pattern_checks_within_the_scan_bound() {
    let redis = Redis::start().unwrap();
    // 200k keys, 3 of which match the pattern, and a small db 1 that fits
    // the bound.
    redis
        .cli(&[
            "EVAL",
            "for i = 1, 200000 do redis.call('SET', 'cache:' .. i, i) end \
             for i = 1, 3 do redis.call('RPUSH', 'jobs:' .. i, 'a', 'b') end",
            "0",
        ])
        .unwrap();
    for i in 0..10 {
        redis
            .cli(&["-n", "1", "SET", &format!("s:{i}"), "x"])
            .unwrap();
    }
    assert_eq!(redis.cli(&["DBSIZE"]).unwrap().trim(), "200003");
    let config = format!(
        "[node]\nenabled = false\n[[redis]]\nname = \"big\"\naddr = \"{}\"\n\
         check_keys = [\"db1=s:*\", \"jobs:*\", \"cache:1?\"]\n\
         check_keys_batch_size = 1000\ncheck_keys_max_scanned = 5000\n",
        redis.url()
    );
    let agent = StewardAgent::start(&config, "").unwrap();
    for _ in 0..2 {
        let before = calls(&redis, "scan");
        let m = scrape(&agent);
        let scans = calls(&redis, "scan") - before;
        assert_eq!(m.value("redis_up", &[]).unwrap(), 1.0, "{}", agent.log());
        // The small db is covered within the bound: all 10 keys, not cut.
        assert_eq!(
            m.value("steward_redis_key_check_truncated", &[("pattern", "s:*")])
                .unwrap(),
            0.0
        );
        assert_eq!(m.find("redis_key_size", &[("db", "db1")]).count(), 10);
        // The big db: SCAN stopped when the bound was reached, the rest of
        // the bound went to the first pattern, none is left for the last.
        let examined = |p: &str| {
            m.value("steward_redis_key_check_scanned_keys", &[("pattern", p)])
                .unwrap()
        };
        assert!(examined("s:*") >= 1000.0, "{}", examined("s:*"));
        assert_eq!(examined("s:*") + examined("jobs:*"), 5000.0);
        assert_eq!(examined("cache:1?"), 0.0);
        for p in ["jobs:*", "cache:1?"] {
            assert_eq!(
                m.value("steward_redis_key_check_truncated", &[("pattern", p)])
                    .unwrap(),
                1.0,
                "{p}"
            );
        }
        // Redis's own count: one SCAN per COUNT=1000 step, never more than
        // the bound allows (5000 keys / 1000 per call).
        assert!(scans <= 5, "{scans} SCAN calls for a 5000-key bound");
        let sizes = m.find("redis_key_size", &[("db", "db0")]).count();
        assert!(sizes <= 3, "{sizes}");
    }
}
