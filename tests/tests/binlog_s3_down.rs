//! Binlog shipping to two targets (a local directory and S3) while the S3
//! store goes away and comes back, against a real MariaDB under writes
//! and rotations: the local target keeps getting every binlog while S3
//! refuses connections (one target down does not stop the other), each
//! failure is counted, and once S3 is back it catches up from where it
//! stopped with no gap and no byte twice; both targets restore every row.

use std::time::{Duration, Instant};

use steward_tests::binlog_support::{
    assert_contiguous, keypair, marker, ok, rows, segment_ranges, steward, walk, Agent,
};
use steward_tests::mariadb::Mariadb;
use steward_tests::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use steward_tests::switch_proxy::SwitchProxy;

#[test]
fn one_target_down_does_not_stop_the_other_and_catches_up_after() {
    let db = Mariadb::start_with_binlog().unwrap();
    db.mysql(
        "CREATE DATABASE shop; CREATE TABLE shop.marker (name VARCHAR(10) PRIMARY KEY, at BIGINT NOT NULL);",
    )
    .unwrap();
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("bkp", false).unwrap();
    let proxy = SwitchProxy::start(s3.port).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = keypair(work.path());
    let key = key.to_str().unwrap().to_string();
    let store = work.path().join("store");
    let config = work.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhostname = \"web1\"\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n\
             [backup]\nrecipients = [\"{recipient}\"]\n\
             [backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\
             [backup.targets.s3]\nkind = \"s3\"\nbucket = \"bkp\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\nregion = \"{REGION}\"\nrequest_timeout_secs = 5\n\
             [backup.jobs.shop]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\ndatabases = [\"shop\"]\ntargets = [\"local\", \"s3\"]\nbinlog = true\nbinlog_flush_interval_secs = 1\n",
            steward_tests::free_port(),
            work.path().join("state").display(),
            store.display(),
            proxy.endpoint(),
            db.socket.display(),
            db.root_password
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    ok(steward(&["-c", c, "backup", "run", "shop"], &[]));
    let agent = Agent::start(&config, &work.path().join("agent.log"));
    let a = marker(&db, "a");
    agent.wait_shipped(&db, a);
    let failures = agent.metric("steward_binlog_ship_failures_total");
    let shipped = agent.metric("steward_binlog_shipped_bytes_total");

    // S3 goes away while the server writes and rotates.
    proxy.set_down(true);
    marker(&db, "b");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    let b2 = marker(&db, "b2");
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.metric("steward_binlog_ship_failures_total") <= failures
        || agent.metric("steward_binlog_shipped_bytes_total") <= shipped
    {
        assert!(
            Instant::now() < deadline,
            "no failure counted or nothing shipped to the local target:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Everything reaches the local target meanwhile (restored from it
    // alone, S3 still down); the lag says S3 is behind.
    let port = db.port.to_string();
    let pw = [("MYSQL_PWD", db.root_password.as_str())];
    let restore = |target: &str, into: &str| {
        steward(
            &[
                "-c",
                c,
                "restore",
                "-q",
                "-i",
                &key,
                "--target",
                target,
                "shop",
                "--into",
                into,
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
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = db.mysql("DROP DATABASE IF EXISTS shop_local");
        let o = restore("local", "shop_local");
        if o.status.success()
            && rows(&db, "SELECT MAX(at) FROM shop_local.marker")
                .trim()
                .parse::<i64>()
                .is_ok_and(|t| t >= b2)
            && rows(
                &db,
                "SELECT COUNT(*) FROM shop_local.marker WHERE name = 'b2'",
            ) == "1"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the local target did not get b2 while S3 was down:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_local.marker"
        ),
        "a,b,b2"
    );
    assert!(agent.metric("steward_binlog_unshipped_bytes") > 0.0);
    assert!(
        agent.log().contains("binlog shipping to target s3"),
        "{}",
        agent.log()
    );

    // S3 is back: it catches up from where it stopped.
    proxy.set_down(false);
    let c3 = marker(&db, "c");
    let deadline = Instant::now() + Duration::from_secs(90);
    while agent.metric("steward_binlog_last_event_timestamp_seconds") < c3 as f64
        || agent.metric("steward_binlog_unshipped_bytes") != 0.0
    {
        assert!(
            Instant::now() < deadline,
            "S3 did not catch up:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let keys = s3.list_keys("bkp", "steward/web1/shop/binlog/").unwrap();
    let s3_ranges = segment_ranges(keys.iter().map(String::as_str));
    assert!(s3_ranges.len() >= 2, "{s3_ranges:?}");
    assert_contiguous(&s3_ranges);
    let mut files = Vec::new();
    walk(&store.join("web1/shop/binlog"), &mut files);
    let local: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let local_ranges = segment_ranges(local.iter().map(String::as_str));
    assert_contiguous(&local_ranges);
    // Both cover the same bytes of the same files.
    let ends = |r: &std::collections::BTreeMap<String, Vec<(u64, u64)>>| -> Vec<(String, u64)> {
        r.iter()
            .map(|(f, s)| (f.clone(), s.last().unwrap().1))
            .collect()
    };
    assert_eq!(ends(&s3_ranges), ends(&local_ranges));
    ok(restore("s3", "shop_s3"));
    assert_eq!(
        rows(
            &db,
            "SELECT GROUP_CONCAT(name ORDER BY name) FROM shop_s3.marker"
        ),
        "a,b,b2,c"
    );
}
