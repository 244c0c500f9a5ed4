//! `kind = "redis"` backup jobs against a real redis-server: an RDB
//! snapshot over the replication protocol (both framings: diskless
//! `$EOF:` and disk-based `$<len>`), restored to `DIR/dump.rdb` that a
//! stock redis-server loads with the same keys and values, the stock-tools
//! escape hatch (`age -d | zstd -d`), verify and drill, TLS (`tls = true`
//! against redis-server's tls-port, with a CA file and a client
//! certificate), and the faults: the server killed mid-transfer, a wrong
//! password, a port that is not Redis, a wrong CA.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::backup_env::{BackupEnv, HOST};
use steward_tests::pki::Pki;
use steward_tests::redis::Redis;
use steward_tests::{free_port, ChildGuard};

const PASSWORD: &str = "s3cret-redis-pw";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A job block for `redis` with the password in a file.
fn job(env: &BackupEnv, name: &str, port: u16, password: Option<&str>, extra: &str) -> String {
    let mut text = format!("[backup.jobs.{name}]\nkind = \"redis\"\nport = {port}\n{extra}\n");
    if let Some(p) = password {
        let f = env.dir.path().join(format!("{name}.pw"));
        std::fs::write(&f, format!("{p}\n")).unwrap();
        text.push_str(&format!("password_file = \"{}\"\n", f.display()));
    }
    text
}

fn seed(redis: &Redis) {
    for args in [
        &["SET", "page:1", "<html>hello</html>"][..],
        &["SET", "counter", "42"],
        &["HSET", "user:7", "name", "Ada", "plan", "pro"],
        &["RPUSH", "queues:default", "{\"job\":1}", "{\"job\":2}"],
        &[
            "ZADD",
            "queues:default:delayed",
            "1700000000",
            "{\"job\":3}",
        ],
        &["SADD", "tags", "a", "b", "c"],
        &["-n", "3", "SET", "other-db", "yes"],
        &["CONFIG", "SET", "repl-diskless-sync-delay", "0"],
    ] {
        redis.cli(args).unwrap();
    }
}

/// What the seeded keys hold, read back with redis-cli.
fn contents(cli: &dyn Fn(&[&str]) -> String) -> Vec<String> {
    vec![
        cli(&["GET", "page:1"]),
        cli(&["GET", "counter"]),
        cli(&["HGETALL", "user:7"]),
        cli(&["LRANGE", "queues:default", "0", "-1"]),
        cli(&["ZRANGE", "queues:default:delayed", "0", "-1", "WITHSCORES"]),
        // Set members come back in any order: sorted.
        cli(&["SORT", "tags", "ALPHA"]),
        cli(&["-n", "3", "GET", "other-db"]),
        cli(&["DBSIZE"]),
    ]
}

/// A stock redis-server started on `dir` (loads `dir/dump.rdb`).
struct Loaded {
    port: u16,
    _guard: ChildGuard,
}

impl Loaded {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let conf = dir.join("load.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\ndbfilename dump.rdb\nsave \"\"\nappendonly no\nlogfile {}\n",
                dir.display(),
                dir.join("load.log").display()
            ),
        )
        .unwrap();
        let guard = ChildGuard::spawn(
            "redis-server",
            Command::new("redis-server")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        let loaded = Loaded {
            port,
            _guard: guard,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while loaded.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not load {}:\n{}",
                dir.display(),
                std::fs::read_to_string(dir.join("load.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        loaded
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn restore(env: &BackupEnv, job: &str, to: &Path) -> std::process::Output {
    env.steward(&["restore", job, "latest", "--to", s(to), "-i", s(&env.key)])
}

fn manifest(env: &BackupEnv, job: &str) -> serde_json::Value {
    let m = env.manifests(job);
    assert_eq!(m.len(), 1, "{m:?}");
    serde_json::from_slice(&std::fs::read(env.store.join(&m[0])).unwrap()).unwrap()
}

#[test]
fn rdb_snapshots_restore_into_a_stock_redis_server_in_both_framings() {
    let redis = Redis::start_with_password(Some(PASSWORD)).unwrap();
    seed(&redis);
    let original = contents(&|a| redis.cli(a).unwrap());
    let env = BackupEnv::new();
    // Diskless (Redis 7's default, `$EOF:<mark>`) and disk-based (`$<len>`).
    redis
        .cli(&["CONFIG", "SET", "repl-diskless-sync", "no"])
        .unwrap();
    env.write_config(&format!(
        "{}{}",
        job(&env, "disk", redis.port, Some(PASSWORD), ""),
        job(&env, "diskless", redis.port, Some(PASSWORD), "")
    ));
    let (code, report, err) = env.run_job("disk");
    assert_eq!(code, 0, "{report}\n{err}");
    redis
        .cli(&["CONFIG", "SET", "repl-diskless-sync", "yes"])
        .unwrap();
    let (code, report, err) = env.run_job("diskless");
    assert_eq!(code, 0, "{report}\n{err}");
    assert!(!err.contains(PASSWORD) && !report.to_string().contains(PASSWORD));

    for name in ["disk", "diskless"] {
        let m = manifest(&env, name);
        assert_eq!(m["kind"], "redis");
        assert_eq!(m["objects"][0]["role"], "redis_rdb");
        let info = &m["redis"];
        let version = redis.cli(&["INFO", "server"]).unwrap();
        assert!(
            version.contains(&format!(
                "redis_version:{}",
                info["version"].as_str().unwrap()
            )),
            "{info}"
        );
        assert_eq!(info["keyspace"][0]["db"], 0);
        assert_eq!(info["keyspace"][0]["keys"], 6);
        assert_eq!(info["keyspace"][1]["db"], 3);
        assert_eq!(info["keyspace"][1]["keys"], 1);
        assert_eq!(info["rdb_bytes"], m["objects"][0]["plaintext_bytes"]);
        assert!(info["rdb_version"].as_u64().unwrap() >= 9, "{info}");

        // Restore: DIR/dump.rdb, 0600, then a stock redis-server loads it.
        let dir = env.dir.path().join(format!("restored-{name}"));
        let out = restore(&env, name, &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("to load it"), "{stderr}");
        let dump = dir.join("dump.rdb");
        let mode = std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Loaded::start(&dir);
        assert_eq!(contents(&|a| loaded.cli(a)), original, "{name}");
        drop(loaded);

        // Never over an existing file.
        let before = std::fs::read(&dump).unwrap();
        let out = restore(&env, name, &dir);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("already exists"), "{stderr}");
        assert_eq!(std::fs::read(&dump).unwrap(), before);
    }

    // The escape hatch: the stored object through the stock CLIs loads too.
    let m = manifest(&env, "diskless");
    let key = format!(
        "{HOST}/diskless/{}/{}",
        m["snapshot_id"].as_str().unwrap(),
        m["objects"][0]["name"].as_str().unwrap()
    );
    let hatch = env.dir.path().join("hatch");
    std::fs::create_dir(&hatch).unwrap();
    env.decrypt_to(&env.store.join(key), &hatch.join("dump.rdb"));
    let loaded = Loaded::start(&hatch);
    assert_eq!(contents(&|a| loaded.cli(a)), original);
}

#[test]
fn verify_and_drill_check_the_rdb_and_its_key_counts() {
    let redis = Redis::start().unwrap();
    seed(&redis);
    let env = BackupEnv::new();
    env.write_config(&job(&env, "cache", redis.port, None, ""));
    let (code, report, err) = env.run_job("cache");
    assert_eq!(code, 0, "{report}\n{err}");

    let out = env.steward(&["backup", "verify", "--json", "-i", s(&env.key), "cache"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("redis-check-rdb") && text.contains("RDB looks OK"),
        "{text}"
    );

    let out = env.steward(&["drill", "cache", "-i", s(&env.key), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("keys per database"), "{text}");
    assert!(
        text.contains("db0 6 keys, db3 1 keys as recorded"),
        "{text}"
    );

    // A manifest whose counts differ from the data fails the drill.
    let path = env.store.join(&env.manifests("cache")[0]);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["redis"]["keyspace"][0]["keys"] = 7.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let out = env.steward(&["drill", "cache", "-i", s(&env.key), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("db0: 6 keys loaded, the manifest records 7"),
        "{text}"
    );
}

/// Fills `redis` with `count` keys of `size` random bytes via `redis-cli --pipe`.
fn fill(redis: &Redis, count: usize, size: usize) {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut value = vec![0u8; size];
    for i in 0..count {
        for b in value.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = b'a' + (x % 26) as u8;
        }
        let key = format!("big:{i}");
        let mut cmd =
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${size}\r\n", key.len()).into_bytes();
        cmd.extend_from_slice(&value);
        cmd.extend_from_slice(b"\r\n");
        stdin.write_all(&cmd).unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn redis_killed_mid_transfer_records_no_snapshot() {
    let redis = Redis::start().unwrap();
    redis
        .cli(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"])
        .unwrap();
    fill(&redis, 60_000, 2048);
    let pid: u32 = redis
        .cli(&["INFO", "server"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let env = BackupEnv::new();
    // zstd level 9 on one worker: slow enough (120 MB at tens of MB/s)
    // that the transfer is still running when the server dies, without
    // much data left to compress after it (level 19 took two minutes).
    env.write_config(&job(
        &env,
        "cache",
        redis.port,
        None,
        "zstd_level = 9\nzstd_workers = 1",
    ));
    let mut child = Command::new(steward_tests::steward_bin())
        .args(["backup", "run", "cache", "--json", "--quiet", "--config"])
        .arg(&env.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the server streams to us, then kill it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The fork that streams the RDB to us (diskless by default).
        let repl = redis.cli(&["INFO"]).unwrap_or_default();
        if repl.contains("rdb_bgsave_in_progress:1") || repl.contains("state=send_bulk") {
            break;
        }
        assert!(Instant::now() < deadline, "no transfer started:\n{repl}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(!status.success(), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "failed", "{report}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("broke after") && error.contains("no snapshot was recorded"),
        "{error}"
    );
    assert!(
        env.manifests("cache").is_empty(),
        "{:?}",
        env.stored_files()
    );
    assert!(env.stored_files().is_empty(), "{:?}", env.stored_files());
}

#[test]
fn wrong_password_and_a_port_that_is_not_redis_are_one_clear_error() {
    let redis = Redis::start_with_password(Some(PASSWORD)).unwrap();
    let env = BackupEnv::new();

    // Something that answers like a web server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    env.write_config(&format!(
        "{}{}",
        job(&env, "wrongpw", redis.port, Some("not-the-password"), ""),
        job(&env, "garbage", garbage_port, Some(PASSWORD), "")
    ));
    let (code, report, err) = env.run_job("wrongpw");
    assert_ne!(code, 0);
    let e = report["error"].as_str().unwrap_or_default();
    assert!(e.contains("refused the password"), "{report}\n{err}");
    assert!(!e.contains("not-the-password") && !err.contains("not-the-password"));

    let (code, report, err) = env.run_job("garbage");
    assert_ne!(code, 0);
    let e = report["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("does not speak the Redis protocol") && e.contains("HTTP/1.1 400"),
        "{report}\n{err}"
    );
    assert!(!e.contains(PASSWORD) && !err.contains(PASSWORD));
    assert!(env.manifests("wrongpw").is_empty() && env.manifests("garbage").is_empty());
}

#[test]
fn tls_snapshots_check_the_server_certificate_and_restore_into_a_stock_redis_server() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let (server_cert, server_key) = pki.issue("server", true);
    let (client_cert, client_key) = pki.issue("client", false);
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::new(other_dir.path());
    // The server requires a client certificate signed by the same CA.
    let (redis, tls_port) = Redis::start_tls_with_password(
        &server_cert,
        &server_key,
        &pki.ca_cert,
        true,
        Some(PASSWORD),
    )
    .unwrap();
    seed(&redis);
    let original = contents(&|a| redis.cli(a).unwrap());
    let env = BackupEnv::new();
    let tls = |ca: &Path, client: bool| {
        let mut t = format!("tls = true\ntls_ca_file = \"{}\"\n", ca.display());
        if client {
            t.push_str(&format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                client_cert.display(),
                client_key.display()
            ));
        }
        t
    };
    env.write_config(
        &[
            job(
                &env,
                "cache",
                tls_port,
                Some(PASSWORD),
                &tls(&pki.ca_cert, true),
            ),
            job(
                &env,
                "wrongca",
                tls_port,
                Some(PASSWORD),
                &tls(&other.ca_cert, true),
            ),
            job(
                &env,
                "nocert",
                tls_port,
                Some(PASSWORD),
                &tls(&pki.ca_cert, false),
            ),
            // TLS spoken to the plain port.
            job(
                &env,
                "plain",
                redis.port,
                Some(PASSWORD),
                &tls(&pki.ca_cert, true),
            ),
        ]
        .concat(),
    );

    // The good job, with debug logs: the password shows nowhere.
    let out = Command::new(steward_tests::steward_bin())
        .args(["backup", "run", "cache", "--json", "--config"])
        .arg(&env.config)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "{stdout}\n{stderr}"
    );
    let m = manifest(&env, "cache");
    assert_eq!(m["redis"]["keyspace"][0]["keys"], 6, "{m}");
    assert_eq!(m["redis"]["keyspace"][1]["keys"], 1, "{m}");

    // Restored and loaded by a stock redis-server: the same keys and values.
    let dir = env.dir.path().join("restored");
    let out = restore(&env, "cache", &dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loaded = Loaded::start(&dir);
    assert_eq!(contents(&|a| loaded.cli(a)), original);
    drop(loaded);
    let out = env.steward(&["drill", "cache", "-i", s(&env.key), "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("db0 6 keys, db3 1 keys as recorded"),
        "{text}"
    );

    // A CA that did not sign the server's certificate: one error naming
    // the job, the address and the setting to check; nothing recorded.
    let (code, report, err) = env.run_job("wrongca");
    assert_ne!(code, 0, "{report}");
    let e = report["error"].as_str().unwrap_or_default();
    for part in [
        "job wrongca",
        &format!("127.0.0.1:{tls_port} over TLS"),
        "TLS handshake failed",
        "invalid peer certificate",
        "check that tls_ca_file holds the CA that signed the server's certificate",
    ] {
        assert!(e.contains(part), "{part:?} not in {report}\n{err}");
    }
    assert!(!e.contains(PASSWORD) && !err.contains(PASSWORD));

    // Without the client certificate the server refuses the connection;
    // TLS spoken to a plain port (which waits for the rest of what it takes
    // for a command) is named as such after the handshake's 10 s bound.
    let (code, report, err) = env.run_job("nocert");
    assert_ne!(code, 0, "{report}");
    let e = report["error"].as_str().unwrap_or_default();
    assert!(
        e.contains("job nocert")
            && e.contains("over TLS")
            && e.contains("requires a client certificate: set tls_cert_file and tls_key_file"),
        "{report}\n{err}"
    );
    assert!(!e.contains(PASSWORD) && !err.contains(PASSWORD));
    let (code, report, err) = env.run_job("plain");
    assert_ne!(code, 0, "{report}");
    let e = report["error"].as_str().unwrap_or_default();
    assert!(e.contains("is this port a TLS port"), "{report}\n{err}");
    assert!(!e.contains(PASSWORD) && !err.contains(PASSWORD));

    for failed in ["wrongca", "nocert", "plain"] {
        assert!(
            !(env.stored_files().iter()).any(|f| f.starts_with(&format!("{HOST}/{failed}/"))),
            "{failed}: {:?}",
            env.stored_files()
        );
    }
}
