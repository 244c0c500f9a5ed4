//! MySQL/MariaDB point-in-time recovery against a real MariaDB writing
//! row-based binlogs: dumps record their binlog position, the agent ships
//! binlogs (rotations under writes included) to a local directory and to
//! S3 (moto), and `steward restore --to-time` gives back exactly the rows
//! committed before the time, from the configuration or from the bucket
//! alone. Also: binlog off, a user without REPLICATION grants, a corrupt
//! shipped segment.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_tests::binlog_support::{
    assert_contiguous, failed, keypair, marker, master_position, ok, restore_into, rows,
    segment_ranges, shipped_through, shop_backup_toml, steward, text, walk, Agent,
};
use steward_tests::mariadb::Mariadb;
use steward_tests::promtext::Scrape;
use steward_tests::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use steward_tests::StewardAgent;

fn metric(agent: &StewardAgent, name: &str) -> f64 {
    let scrape = Scrape::parse(&agent.scrape().unwrap());
    let value = scrape
        .series_of(name)
        .map(|(_, v)| v)
        .next()
        .unwrap_or(f64::NAN);
    value
}

/// Waits until every target holds the server's binlogs up to where they
/// stand now (marker `at` included); returns how long that took.
fn wait_shipped(agent: &StewardAgent, db: &Mariadb, at: i64, limit: Duration) -> Duration {
    let (file, position) = master_position(db);
    let start = Instant::now();
    loop {
        if shipped_through(&agent.scrape().unwrap(), &file, position) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "binlogs up to {file}:{position} (marker at {at}) not shipped within {limit:?}; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_until_second_after(t: i64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        if now >= (t + 1) as f64 + 0.05 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn utc(t: i64) -> String {
    steward_backup_time(t)
}

fn steward_backup_time(t: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn restore_to_a_time_between_markers_from_config_and_from_s3() {
    let db = Mariadb::start_with_binlog().unwrap();
    db.mysql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.marker (name VARCHAR(10) PRIMARY KEY, at BIGINT NOT NULL); \
         CREATE TABLE shop.load (id INT AUTO_INCREMENT PRIMARY KEY, at BIGINT NOT NULL, pad VARCHAR(200)); \
         INSERT INTO shop.marker VALUES ('base', UNIX_TIMESTAMP());",
    )
    .unwrap();
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("bkp", false).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = keypair(work.path());
    let store = work.path().join("store");
    let backup = format!(
        "[backup]\nrecipients = [\"{recipient}\"]\n\
         [backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\
         [backup.targets.s3]\nkind = \"s3\"\nbucket = \"bkp\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\nregion = \"{REGION}\"\n\
         [backup.jobs.shop]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\ndatabases = [\"shop\"]\ntargets = [\"local\", \"s3\"]\nbinlog = true\nbinlog_flush_interval_secs = 2\n",
        store.display(),
        s3.endpoint(),
        db.socket.display(),
        db.root_password
    );
    let agent = StewardAgent::start(&backup, "hostname = \"web1\"").unwrap();
    let config = agent.config_path.to_str().unwrap().to_string();

    // The dump records where it sits in the binlog.
    ok(steward(&["-c", &config, "backup", "run", "shop"], &[]));
    let listed = ok(steward(&["-c", &config, "backup", "list", "--json"], &[]));
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let position = &list[0]["objects"][0]["binlog"];
    assert!(
        position["file"].as_str().unwrap().starts_with("mysql-bin.")
            && position["position"].as_u64().unwrap() > 4
            && position["gtid"].as_str().is_some(),
        "{list:#}"
    );

    // Writes under load, with rotations, and markers with known times.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut cmd = db.command("mariadb");
        cmd.args(["-N", "-B"]);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let out = Command::new(cmd.get_program())
                    .args(cmd.get_args())
                    .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
                    .arg("-e")
                    .arg("INSERT INTO shop.load (at, pad) SELECT UNIX_TIMESTAMP(), REPEAT('x', 200) FROM shop.seq_1_to_20")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        })
    };
    let a = marker(&db, "a");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    wait_until_second_after(a);
    let between = a + 1;
    let b = marker(&db, "b");
    assert!(b >= between, "marker b at {b}, not after {between}");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 5);
    let c = marker(&db, "c");
    let rpo = wait_shipped(&agent, &db, c, Duration::from_secs(30));
    assert!(rpo < Duration::from_secs(2 + 5), "RPO {rpo:?}");
    let logs = rows(&db, "SHOW BINARY LOGS");
    assert!(logs.lines().count() >= 3, "{logs}");

    let before_between = rows(
        &db,
        &format!("SELECT COUNT(*) FROM shop.load WHERE at < {between}"),
    );
    let all_load = rows(&db, "SELECT COUNT(*) FROM shop.load");
    let restore = |extra: &[&str]| restore_into(&key, &db, extra);

    // To a time between a and b: a and everything before, nothing after.
    let to = utc(between);
    ok(restore(&[
        "-c",
        &config,
        "shop",
        "--into",
        "shop_t",
        "--to-time",
        &to,
    ]));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_t.marker"
        ),
        "a,base"
    );
    assert_eq!(
        rows(&db, "SELECT COUNT(*) FROM shop_t.load"),
        before_between
    );
    assert_eq!(
        rows(
            &db,
            &format!("SELECT COUNT(*) FROM shop_t.load WHERE at >= {between}")
        ),
        "0"
    );

    // Latest: everything shipped, which is everything written.
    ok(restore(&[
        "-c",
        &config,
        "shop",
        "--into",
        "shop_l",
        "--to-time",
        "latest",
    ]));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_l.marker"
        ),
        "a,b,base,c"
    );
    assert_eq!(rows(&db, "SELECT COUNT(*) FROM shop_l.load"), all_load);

    // From the bucket alone, no configuration.
    let aws = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("MYSQL_PWD", db.root_password.as_str()),
    ];
    let endpoint = s3.endpoint();
    let port = db.port.to_string();
    let o = ok(steward(
        &[
            "restore",
            "-q",
            "--from",
            "s3://bkp/steward",
            "--endpoint",
            &endpoint,
            "--path-style",
            "-i",
            key.to_str().unwrap(),
            "shop",
            "--into",
            "shop_s3",
            "--to-time",
            &to,
            "--db-host",
            "127.0.0.1",
            "--db-port",
            &port,
            "--db-user",
            "root",
        ],
        &aws,
    ));
    assert!(text(&o).contains("binlog replay"), "{}", text(&o));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_s3.marker"
        ),
        "a,base"
    );
    assert_eq!(
        rows(&db, "SELECT COUNT(*) FROM shop_s3.load"),
        before_between
    );

    // A time before the first dump has no base.
    let t = failed(restore(&[
        "-c",
        &config,
        "shop",
        "--into",
        "shop_x",
        "--to-time",
        "2001-01-01 00:00:00",
    ]));
    assert!(t.contains("old enough"), "{t}");

    // A corrupt segment is named, and the restore fails.
    let mut segments: Vec<PathBuf> = Vec::new();
    walk(&store.join("web1/shop/binlog"), &mut segments);
    let victim = segments
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".zst.age"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a shipped segment")
        .clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&victim, &bytes).unwrap();
    let t = failed(restore(&[
        "-c",
        &config,
        "--target",
        "local",
        "shop",
        "--into",
        "shop_c",
        "--to-time",
        "latest",
    ]));
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(t.contains("corrupt") && t.contains(&name), "{t}");
    drop(agent);
}

/// Event times need not rise: a statement carries its start time, so one
/// that starts before a marker and commits after a rotation lands in a
/// later binlog file with an earlier time. One `mariadb-binlog` over all
/// the files stops at the marker and never replays it; the restore, which
/// runs one `mariadb-binlog` per file, must stop at the same place, and
/// should not fetch or replay the files after the one the time falls in.
#[test]
fn a_statement_started_before_the_time_but_logged_in_a_later_file_is_not_replayed() {
    let db = Mariadb::start_with_binlog().unwrap();
    db.mysql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.marker (name VARCHAR(10) PRIMARY KEY, at BIGINT NOT NULL); \
         INSERT INTO shop.marker VALUES ('base', UNIX_TIMESTAMP());",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = keypair(work.path());
    let backup = shop_backup_toml(&recipient, &work.path().join("store"), &db, 1);
    let agent = StewardAgent::start(&backup, "hostname = \"web1\"").unwrap();
    let config = agent.config_path.to_str().unwrap().to_string();
    ok(steward(&["-c", &config, "backup", "run", "shop"], &[]));

    // 'slow' starts now and commits after b and a rotation.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let slow = {
        let mut cmd = db.command("mariadb");
        cmd.args(["-N", "-B", "-e"])
            .arg("INSERT INTO shop.marker (name, at) VALUES ('slow', UNIX_TIMESTAMP() + SLEEP(4))");
        std::thread::spawn(move || cmd.output().unwrap())
    };
    wait_until_second_after(started + 1);
    let b = marker(&db, "b");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    let out = slow.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let slow_at: i64 = rows(&db, "SELECT at FROM shop.marker WHERE name = 'slow'")
        .parse()
        .unwrap();
    assert!(slow_at < b, "slow at {slow_at}, b at {b}");
    wait_shipped(&agent, &db, b, Duration::from_secs(30));

    // A time after slow started and at b: one mariadb-binlog stops at b.
    let to = utc(slow_at + 1);
    let o = ok(restore_into(
        &key,
        &db,
        &["-c", &config, "shop", "--into", "shop_t", "--to-time", &to],
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_t.marker"
        ),
        "base"
    );
    // The restore knew from the event headers that the time is reached
    // in b's file, and replayed (and fetched) nothing after it.
    assert!(text(&o).contains(" 1 binlog file(s) from"), "{}", text(&o));
    drop(agent);
}

#[test]
fn binlog_off_and_missing_grants_are_clear_errors() {
    let db = Mariadb::start().unwrap();
    db.mysql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_key, recipient) = keypair(work.path());
    let job = |user: &str, password: &str| {
        format!(
            "[backup]\nrecipients = [\"{recipient}\"]\n[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.shop]\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\npassword = \"{password}\"\ndatabases = [\"shop\"]\nbinlog = true\nbinlog_flush_interval_secs = 1\n",
            work.path().join("store").display(),
            db.port
        )
    };
    let config = work.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n{}",
            work.path().join("state").display(),
            job("root", &db.root_password)
        ),
    )
    .unwrap();
    let t = failed(steward(
        &["-c", config.to_str().unwrap(), "backup", "run", "shop"],
        &[],
    ));
    assert!(t.contains("log_bin") && t.contains("binlog = false"), "{t}");
    assert!(!t.contains(&db.root_password), "{t}");

    let db = Mariadb::start_with_binlog().unwrap();
    db.mysql(
        "CREATE USER 'plain'@'127.0.0.1' IDENTIFIED BY 'plain-pw'; GRANT SELECT ON *.* TO 'plain'@'127.0.0.1';",
    )
    .unwrap();
    let text_of = |port: u16| {
        format!(
            "[backup]\nrecipients = [\"{recipient}\"]\n[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.shop]\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"plain\"\npassword = \"plain-pw\"\ndatabases = [\"shop\"]\nbinlog = true\n",
            work.path().join("store2").display()
        )
    };
    let agent = StewardAgent::start(&text_of(db.port), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = agent.log();
        if log.contains("GRANT REPLICATION SLAVE") {
            assert!(log.contains("BINLOG MONITOR"), "{log}");
            assert!(!log.contains("plain-pw"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no grant error in:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&agent, "steward_binlog_ship_failures_total") >= 1.0);
    assert_eq!(metric(&agent, "steward_binlog_following"), 0.0);
}

/// `steward agent` on a fixed config and state directory, restartable.
/// The job's snapshots, newest first (`backup list --json`).
fn snapshots(config: &str) -> Vec<serde_json::Value> {
    let o = ok(steward(&["-c", config, "backup", "list", "--json"], &[]));
    let mut list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    list.sort_by(|a, b| {
        b["started_at"]
            .as_str()
            .unwrap_or("")
            .cmp(a["started_at"].as_str().unwrap_or(""))
    });
    list
}

/// Every (start, end) of the shipped segments of each binlog file.
fn shipped_ranges(store: &Path) -> std::collections::BTreeMap<String, Vec<(u64, u64)>> {
    let mut files = Vec::new();
    walk(&store.join("web1/shop/binlog"), &mut files);
    let keys: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    segment_ranges(keys.iter().map(String::as_str))
}

#[test]
fn shipping_resumes_after_sigkill_and_catches_purge_gaps_and_log_resets() {
    let db = Mariadb::start_with_binlog().unwrap();
    db.mysql(
        "CREATE DATABASE shop; CREATE TABLE shop.marker (name VARCHAR(10) PRIMARY KEY, at BIGINT NOT NULL);",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = keypair(work.path());
    let store = work.path().join("store");
    let config = work.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhostname = \"web1\"\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n{}",
            steward_tests::free_port(),
            work.path().join("state").display(),
            shop_backup_toml(&recipient, &store, &db, 1)
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    ok(steward(&["-c", c, "backup", "run", "shop"], &[]));
    let log = work.path().join("agent.log");
    let mut agent = Agent::start(&config, &log);
    let a = marker(&db, "a");
    let after_a = rows(&db, "SHOW MASTER STATUS");
    let mut after_a = after_a.split('\t');
    let to_position = format!("{}:{}", after_a.next().unwrap(), after_a.next().unwrap());
    agent.wait_shipped(&db, a);
    // What Steward writes on this host is private: the spool holds the
    // server's binlogs.
    let binlog_dir = work.path().join("state/binlog/shop");
    for (path, want) in [
        (binlog_dir.clone(), 0o700),
        (binlog_dir.join("spool"), 0o700),
        (binlog_dir.join("state.json"), 0o600),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{}", path.display());
    }
    for e in std::fs::read_dir(binlog_dir.join("spool")).unwrap() {
        let e = e.unwrap();
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", e.path().display());
    }

    // Killed, the server writes and rotates meanwhile, started again.
    agent.guard.kill();
    // A new second, so that shipping c cannot be taken from a's events.
    wait_until_second_after(a);
    marker(&db, "b");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    let cm = marker(&db, "c");
    let mut agent = Agent::start(&config, &log);
    agent.wait_shipped(&db, cm);
    // Each file's segments follow one another exactly: no byte twice,
    // none missing.
    let ranges = shipped_ranges(&store);
    assert!(ranges.len() >= 2, "{ranges:?}");
    assert_contiguous(&ranges);
    let key = key.to_str().unwrap();
    let o = ok(steward(
        &["-c", c, "backup", "verify", "--json", "-i", key, "shop"],
        &[],
    ));
    assert!(text(&o).contains("binlog continuity"), "{}", text(&o));
    let port = db.port.to_string();
    let pw = [("MYSQL_PWD", db.root_password.as_str())];
    ok(steward(
        &[
            "-c",
            c,
            "restore",
            "-q",
            "-i",
            key,
            "shop",
            "--into",
            "shop_l",
            "--to-time",
            "latest",
            "--db-host",
            "127.0.0.1",
            "--db-port",
            &port,
            "--db-user",
            "root",
        ],
        &pw,
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_l.marker"
        ),
        "a,b,c"
    );
    // To a binlog position: the position right after marker a.
    ok(steward(
        &[
            "-c",
            c,
            "restore",
            "-q",
            "-i",
            key,
            "shop",
            "--into",
            "shop_p",
            "--to-position",
            &to_position,
            "--db-host",
            "127.0.0.1",
            "--db-port",
            &port,
            "--db-user",
            "root",
        ],
        &pw,
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_p.marker"
        ),
        "a"
    );

    // Down while the server purges what was not shipped: a gap.
    agent.guard.stop(Duration::from_secs(10));
    marker(&db, "d");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    marker(&db, "e");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    let current = rows(&db, "SHOW MASTER STATUS");
    let current = current.split('\t').next().unwrap().to_string();
    // The server purges a file only once no dump thread reads it (the
    // stopped agent's connection may linger a moment): ask until it did.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        db.mysql(&format!("PURGE BINARY LOGS TO '{current}'"))
            .unwrap();
        let logs = rows(&db, "SHOW BINARY LOGS");
        if logs.lines().next().is_some_and(|l| l.starts_with(&current)) {
            break;
        }
        assert!(Instant::now() < deadline, "not purged: {logs}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let agent = Agent::start(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric("steward_binlog_gaps_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no gap counted:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.log().contains("binlog gap"), "{}", agent.log());
    // The gap is answered by a fresh full dump, through the agent's own
    // backup runs: coverage resumes from it without anyone stepping in.
    let before_gap = snapshots(c)[0]["snapshot_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let fresh = loop {
        let list = snapshots(c);
        if let Some(s) = list.iter().find(|s| s["reason"] == "binlog-gap") {
            break s["snapshot_id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no binlog-gap dump: {list:?}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(!binlog_dir.join("gap-pending").exists(), "{}", agent.log());
    // Shipping goes on after the gap; the old dump cannot cross it, the
    // new one is a base.
    let g = marker(&db, "g");
    agent.wait_shipped(&db, g);
    let t = failed(steward(
        &["-c", c, "backup", "verify", "-i", key, "shop", &before_gap],
        &[],
    ));
    assert!(
        t.contains("binlog continuity") && t.contains("never shipped"),
        "{t}"
    );
    ok(steward(
        &["-c", c, "backup", "verify", "-i", key, "shop", &fresh],
        &[],
    ));
    let f = marker(&db, "f");
    agent.wait_shipped(&db, f);
    ok(steward(
        &["-c", c, "backup", "verify", "-i", key, "shop"],
        &[],
    ));
    ok(steward(
        &[
            "-c",
            c,
            "restore",
            "-q",
            "-i",
            key,
            "shop",
            "--into",
            "shop_g",
            "--to-time",
            "latest",
            "--db-host",
            "127.0.0.1",
            "--db-port",
            &port,
            "--db-user",
            "root",
        ],
        &pw,
    ));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_g.marker"
        ),
        "a,b,c,d,e,f,g"
    );

    // The server's logs reset: the new mysql-bin.000001 is not the
    // archived one, and is not shipped over it.
    let failures = agent.metric("steward_binlog_ship_failures_total");
    db.mysql("RESET MASTER").unwrap();
    marker(&db, "h");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent
        .log()
        .contains("from another server or before its logs were reset")
    {
        assert!(
            Instant::now() < deadline,
            "reset not refused:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.metric("steward_binlog_ship_failures_total") > failures);
    // The archive was not mixed: the dump before the reset still rolls
    // forward. (The reset also looks like a gap, so the agent takes a
    // dump after it; that one cannot be rolled forward until the old
    // archive is moved aside, and verify says so.)
    ok(steward(
        &["-c", c, "backup", "verify", "-i", key, "shop", &fresh],
        &[],
    ));
}
