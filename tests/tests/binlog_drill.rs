//! `steward drill` of a `mysql` job with binlog shipping, against a real
//! MariaDB under steady writes: the dump is rolled forward with the
//! shipped binlogs and the RPO is the live server's last commit at drill
//! start minus the last replayed event. With the agent shipping, it is
//! within the flush interval plus a margin and the objective is met; with
//! shipping stopped while writes go on, it grows and the drill fails.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steward_tests::binlog_support::{keypair, marker, ok, shop_backup_toml, steward, text, Agent};
use steward_tests::mariadb::Mariadb;

/// Inserts a row every 200 ms until `stop`; returns how many.
fn writer(db: &Mariadb, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let mut cmd = db.command("mariadb");
    cmd.args(["-N", "-B"]);
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let out = Command::new(cmd.get_program())
                .args(cmd.get_args())
                .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
                .arg("-e")
                .arg("INSERT INTO shop.load (at) VALUES (UNIX_TIMESTAMP())")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        n
    })
}

fn drill(config: &str, key: &str) -> (bool, serde_json::Value, String) {
    let o = steward(
        &[
            "-c",
            config,
            "drill",
            "-q",
            "-i",
            key,
            "--json",
            "--rpo-secs",
            "7",
            "shop",
        ],
        &[],
    );
    let t = text(&o);
    assert!(!t.contains("panicked"), "{t}");
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    (o.status.success(), report, t)
}

#[test]
fn drill_measures_the_binlog_rpo_against_the_live_server() {
    let db = Mariadb::start_with_binlog().unwrap();
    db.mysql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.marker (name VARCHAR(10) PRIMARY KEY, at BIGINT NOT NULL); \
         CREATE TABLE shop.load (id INT AUTO_INCREMENT PRIMARY KEY, at BIGINT NOT NULL);",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = keypair(work.path());
    let key = key.to_str().unwrap().to_string();
    let config = work.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhostname = \"web1\"\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n{}",
            steward_tests::free_port(),
            work.path().join("state").display(),
            shop_backup_toml(&recipient, &work.path().join("store"), &db, 2)
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    ok(steward(&["-c", c, "backup", "run", "shop"], &[]));
    let mut agent = Agent::start(&config, &work.path().join("agent.log"));
    let a = marker(&db, "a");
    agent.wait_shipped(&db, a);
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(&db, Arc::clone(&stop));
    // Under steady writes, longer after the dump than the objective: only
    // the binlogs can keep the drill within it.
    std::thread::sleep(Duration::from_secs(9));

    let (passed, report, t) = drill(c, &key);
    let job = &report["jobs"][0];
    let b = &job["binlog"];
    assert!(passed, "{t}");
    assert_eq!(b["measured"], true, "{t}");
    let rpo = b["rpo_seconds"].as_f64().unwrap();
    eprintln!("measured RPO under writes (flush interval 2 s): {rpo} s");
    assert!(rpo <= 2.0 + 5.0, "RPO {rpo}: {t}");
    assert_eq!(job["data_age_seconds"].as_f64(), Some(rpo), "{t}");
    assert!(b["last_replayed_at"].as_i64().unwrap() >= a, "{t}");
    let checks = job["checks"].as_array().unwrap();
    assert!(
        checks.iter().any(|c| c["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("binlog replay"))
            && c["ok"] == true),
        "{t}"
    );

    // Shipping stops, writes go on: what was shipped falls behind the
    // live server by the time since the agent died.
    agent.guard.kill();
    std::thread::sleep(Duration::from_secs(12));
    let (passed, report, t) = drill(c, &key);
    stop.store(true, Ordering::Relaxed);
    assert!(load.join().unwrap() > 20);
    let job = &report["jobs"][0];
    let rpo = job["binlog"]["rpo_seconds"].as_f64().unwrap();
    assert!(!passed, "{t}");
    assert_eq!(report["success"], false, "{t}");
    eprintln!("measured RPO 12 s after shipping stopped: {rpo} s");
    assert!((10.0..60.0).contains(&rpo), "RPO {rpo}: {t}");
    let live = job["binlog"]["live_last_commit_at"].as_i64().unwrap();
    let replayed = job["binlog"]["last_replayed_at"].as_i64().unwrap();
    assert_eq!((live - replayed) as f64, rpo, "{t}");
    // The table says so too.
    let o = steward(
        &[
            "-c",
            c,
            "drill",
            "-q",
            "-i",
            &key,
            "--rpo-secs",
            "7",
            "shop",
        ],
        &[],
    );
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("RPO MISSED") && t.contains("after the last replayed binlog event"),
        "{t}"
    );
}
