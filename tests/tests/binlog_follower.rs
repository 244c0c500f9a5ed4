//! Steward's own binlog follower (backup/src/binlog/follower) against the
//! server's own files: every shipped binlog, decrypted with the age CLI,
//! decompressed with the zstd CLI and its segments put end to end, is
//! byte for byte the file in the server's data directory, across
//! rotations and a row event longer than one protocol packet (a 20 MiB
//! blob), over TCP as a user with only the documented grants. A user
//! without REPLICATION SLAVE gets the GRANT to run. An idle connection
//! outlives the read timeout on the server's heartbeats.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use steward_tests::binlog_support::{keypair, marker, walk, Agent};
use steward_tests::mariadb::Mariadb;

/// The concatenated plaintext of each binlog file's shipped segments.
fn shipped_files(store: &Path, key: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut paths = Vec::new();
    walk(store, &mut paths);
    let mut segments: std::collections::BTreeMap<String, Vec<(u64, std::path::PathBuf)>> =
        Default::default();
    for p in paths {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let Some(range) = name.strip_suffix(".zst.age") else {
            continue;
        };
        let range = range.trim_end_matches(".last");
        let start: u64 = range.split('-').next().unwrap().parse().unwrap();
        let file = p
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        segments.entry(file).or_default().push((start, p));
    }
    let mut out = std::collections::BTreeMap::new();
    for (file, mut segs) in segments {
        segs.sort();
        let mut bytes = Vec::new();
        for (start, path) in segs {
            assert_eq!(start, bytes.len() as u64, "{file}: a segment out of place");
            let o = Command::new("sh")
                .arg("-c")
                .arg("age -d -i \"$1\" \"$2\" | zstd -d -c")
                .args(["sh", key.to_str().unwrap(), path.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            bytes.extend_from_slice(&o.stdout);
        }
        out.insert(file, bytes);
    }
    out
}

#[test]
fn shipped_binlogs_are_the_servers_files_byte_for_byte() {
    let db = Mariadb::start_with(&[
        "--log-bin=mysql-bin",
        "--binlog-format=ROW",
        "--server-id=1",
        "--max-allowed-packet=64M",
    ])
    .unwrap();
    db.mysql(
        "CREATE DATABASE shop; CREATE TABLE shop.marker (name VARCHAR(10) PRIMARY KEY, at BIGINT NOT NULL);\
         CREATE TABLE shop.blobs (id INT PRIMARY KEY, b LONGBLOB);\
         CREATE USER 'ship'@'127.0.0.1' IDENTIFIED BY 'ship-pw';\
         GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ship'@'127.0.0.1';\
         CREATE USER 'nosl'@'127.0.0.1' IDENTIFIED BY 'nosl-pw';\
         GRANT BINLOG MONITOR ON *.* TO 'nosl'@'127.0.0.1';",
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (key, recipient) = keypair(work.path());
    let config_for = |name: &str, user: &str, password: &str| {
        let config = work.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[agent]\nhostname = \"web1\"\nlisten = \"127.0.0.1:{}\"\nstate_dir = \"{}\"\n\
                 [backup]\nrecipients = [\"{recipient}\"]\n\
                 [backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\
                 [backup.jobs.shop]\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\npassword = \"{password}\"\ndatabases = [\"shop\"]\nbinlog = true\nbinlog_flush_interval_secs = 1\nbinlog_heartbeat_secs = 1\n",
                steward_tests::free_port(),
                work.path().join(format!("state-{name}")).display(),
                work.path().join(format!("store-{name}")).display(),
                db.port
            ),
        )
        .unwrap();
        config
    };

    // Without REPLICATION SLAVE: the server refuses the dump, and the log
    // says which GRANT to run (and never the password).
    let refused = Agent::start(
        &config_for("nosl", "nosl", "nosl-pw"),
        &work.path().join("nosl.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = refused.log();
        if log.contains("GRANT REPLICATION SLAVE") {
            assert!(log.contains("REPLICATION SLAVE privilege"), "{log}");
            assert!(!log.contains("nosl-pw"), "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no grant error in:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(refused.metric("steward_binlog_following"), 0.0);
    drop(refused);

    let agent = Agent::start(
        &config_for("ship", "ship", "ship-pw"),
        &work.path().join("ship.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.metric("steward_binlog_following") != 1.0 {
        assert!(Instant::now() < deadline, "not following:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    marker(&db, "a");
    // One row event of 20 MiB: longer than a protocol packet (16 MiB).
    db.mysql("INSERT INTO shop.blobs VALUES (1, REPEAT(UNHEX('00FF7A'), 7000000))")
        .unwrap();
    marker(&db, "b");
    db.mysql("FLUSH BINARY LOGS").unwrap();
    for i in 0..200 {
        db.mysql(&format!(
            "INSERT INTO shop.blobs VALUES ({}, REPEAT('row {i} ', 500))",
            i + 2
        ))
        .unwrap();
    }
    db.mysql("FLUSH BINARY LOGS").unwrap();
    let last = marker(&db, "c");
    let (open_file, position) = steward_tests::binlog_support::master_position(&db);
    agent.wait_shipped(&db, last);
    assert!(
        agent.log().contains("(the binlog follower)"),
        "{}",
        agent.log()
    );

    let shipped = shipped_files(&work.path().join("store-ship"), &key);
    assert!(shipped.len() >= 3, "{:?}", shipped.keys());
    for (file, bytes) in &shipped {
        let mut server = std::fs::read(db.data_dir.join(file)).unwrap();
        if *file == open_file {
            // The server marks the file it still writes "in use" (a flag
            // in its first event, cleared when it closes the file) and
            // clears the flag in what it sends; its checksum leaves the
            // flag out.
            assert_eq!(server[4 + 17] & 1, 1);
            server[4 + 17] &= !1;
            // The server may have written on since (a binlog checkpoint
            // event): what was shipped is its file up to at least where
            // it stood.
            assert!(
                bytes.len() as u64 >= position,
                "{file}: {} < {position}",
                bytes.len()
            );
            server.truncate(bytes.len());
        }
        assert!(
            *bytes == server,
            "{file}: shipped {} bytes, the server has {}; first difference at {:?}",
            bytes.len(),
            server.len(),
            bytes.iter().zip(&server).position(|(a, b)| a != b)
        );
    }
    let big = shipped.values().map(Vec::len).max().unwrap();
    assert!(
        big > 21_000_000,
        "the 20 MiB event is not in what was shipped"
    );

    // Idle past the read timeout (3 heartbeats of 1 s + 5 s): the
    // server's heartbeats keep the connection, so the follower is still on
    // its first one when the next write comes, and ships it.
    std::thread::sleep(Duration::from_secs(12));
    let last = marker(&db, "idle");
    agent.wait_shipped(&db, last);
    let log = agent.log();
    assert!(!log.contains("not even a heartbeat"), "{log}");
    assert_eq!(log.matches("(the binlog follower)").count(), 1, "{log}");
    drop(agent);

    // A login the follower does not speak (MariaDB's ed25519 plugin):
    // `mariadb-binlog` follows instead, and shipping works the same.
    db.mysql(
        "INSTALL SONAME 'auth_ed25519';\
         CREATE USER 'ed'@'127.0.0.1' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw');\
         GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'ed'@'127.0.0.1';",
    )
    .unwrap();
    let agent = Agent::start(
        &config_for("ed", "ed", "ed-pw"),
        &work.path().join("ed.log"),
    );
    let last = marker(&db, "d");
    agent.wait_shipped(&db, last);
    let log = agent.log();
    assert!(
        log.contains("ed25519 authentication plugin; following with")
            && log.contains("mariadb-binlog instead"),
        "{log}"
    );
    assert!(!log.contains("ed-pw"), "{log}");
    let shipped = shipped_files(&work.path().join("store-ed"), &key);
    let (file, bytes) = shipped.last_key_value().unwrap();
    let mut server = std::fs::read(db.data_dir.join(file)).unwrap();
    server[4 + 17] &= !1;
    assert!(bytes.len() > 4 && server.starts_with(bytes), "{file}");
}
