//! PostgreSQL point-in-time recovery (`postgres_pitr` jobs) against a real
//! PostgreSQL with `archive_mode = on` whose `archive_command` is
//! `steward wal push`: base backups, restore to a time between two marker
//! rows, to the end of the archive, from S3 with no configuration, and the
//! archive's refusals (different content, damaged or missing segments, the
//! wrong key, a non-empty data directory).
//!
//! The server runs as the unprivileged test user (fixtures in
//! tests/src/pitr.rs); the restored servers run as that user too, from
//! data directories it owns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use steward_tests::backup_env::{random_file, HOST};
use steward_tests::free_port;
use steward_tests::pitr::{
    job_config, marker, s, start_archiving, switch_and_wait, text, Pitr, Restored,
};
use steward_tests::s3::S3Server;

#[test]
fn restore_to_a_time_between_two_markers_and_to_the_end_of_the_archive() {
    let p = Pitr::new();
    // The config needs the server's port: start it archiving into a
    // config written right after (archive_command reads it per segment).
    p.configure("");
    let pg = start_archiving(&p);
    p.configure(&job_config(&pg, "\"local\""));
    pg.psql("CREATE TABLE markers (name text, at timestamptz)")
        .unwrap();
    // What a planted base backup could carry: a command run at the end of
    // recovery, while the server's environment holds the key.
    let planted = p.data_dir("planted-marker");
    let planted = planted.join("ran");
    pg.psql(&format!(
        "ALTER SYSTEM SET recovery_end_command = 'env > {}'",
        planted.display()
    ))
    .unwrap();

    let run = p.with_config(&["backup", "run", "db", "--json", "--quiet"]);
    assert!(
        run.status.success(),
        "base backup: {}\n{}",
        text(&run),
        pg.log()
    );
    let list = p.with_config(&["backup", "list", "--job", "db", "--json"]);
    let snapshots: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let base = &snapshots[0]["postgres_base"];
    assert_eq!(base["timeline"], 1, "{snapshots:#}");
    assert!(
        base["start_wal"].as_str().unwrap().starts_with("00000001"),
        "{base}"
    );
    assert!(
        base["label"].as_str().unwrap().starts_with("steward db "),
        "{base}"
    );

    marker(&pg, "m1");
    std::thread::sleep(Duration::from_millis(1100));
    let between = marker(&pg, "m2");
    std::thread::sleep(Duration::from_millis(1100));
    marker(&pg, "m3");
    switch_and_wait(&pg);

    // A time between m2 and m3: exactly m1 and m2.
    let dir = p.data_dir("at-time");
    let port = free_port();
    let key = s(&p.env.key);
    let out = p.with_config(&[
        "restore",
        "db",
        "-i",
        key,
        "--to",
        s(&dir),
        "--to-time",
        &between,
        "--start-port",
        &port.to_string(),
        "--quiet",
    ]);
    let restored = Restored {
        pg: pg.bin_dir.clone(),
        dir: dir.clone(),
        port,
        password: pg.password.clone(),
    };
    assert!(out.status.success(), "restore --to-time: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("promoted"),
        "{}",
        text(&out)
    );
    assert_eq!(restored.markers(), "m1,m2");
    assert!(
        !planted.exists(),
        "a recovery_end_command from the backup ran during recovery"
    );
    drop(restored);

    // The end of the archive: every marker.
    let dir = p.data_dir("latest");
    let port = free_port();
    let out = p.with_config(&[
        "restore",
        "db",
        "-i",
        key,
        "--to",
        s(&dir),
        "--start-port",
        &port.to_string(),
        "--quiet",
    ]);
    let restored = Restored {
        pg: pg.bin_dir.clone(),
        dir: dir.clone(),
        port,
        password: pg.password.clone(),
    };
    assert!(out.status.success(), "restore latest: {}", text(&out));
    assert_eq!(restored.markers(), "m1,m2,m3");
    drop(restored);

    // A data directory that is not empty is refused, untouched.
    let busy = p.data_dir("busy");
    std::fs::write(busy.join("PG_VERSION"), "15\n").unwrap();
    let out = p.with_config(&["restore", "db", "-i", key, "--to", s(&busy)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    // Times that no base backup or no archived WAL reaches: refused
    // before anything is written.
    let refused_time = |name: &str, time: &str, says: &str| {
        let dir = p.env.dir.path().join(name);
        let out = p.with_config(&[
            "restore",
            "db",
            "-i",
            key,
            "--to",
            s(&dir),
            "--to-time",
            time,
        ]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{}",
            text(&out)
        );
        assert!(!dir.exists(), "{name}: a data directory was left");
    };
    // A time before the base backup ended...
    refused_time(
        "early",
        "2001-01-01 00:00:00",
        "before the end of the oldest base backup",
    );
    // ...one after the newest archived WAL (the year 2099)...
    refused_time(
        "late",
        "2099-01-01 00:00:00",
        "is after the newest WAL archived",
    );
    // ...and one minute from now, closer than clocks may disagree: the
    // server runs out of WAL before the target, and the error says so.
    let soon = std::process::Command::new("date")
        .args(["-u", "-d", "+60 seconds", "+%Y-%m-%d %H:%M:%S+00"])
        .output()
        .unwrap();
    let soon = String::from_utf8(soon.stdout).unwrap().trim().to_string();
    let soon_dir = p.data_dir("soon");
    let out = p.with_config(&[
        "restore",
        "db",
        "-i",
        key,
        "--to",
        s(&soon_dir),
        "--to-time",
        &soon,
        "--start-port",
        &free_port().to_string(),
        "--quiet",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the archive ends before the recovery target"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(&soon_dir).unwrap().count(),
        0,
        "a data directory that looks restored was left"
    );

    // The wrong key: nothing restored, the message says so.
    let other = p.env.dir.path().join("other.key");
    assert!(Command::new("age-keygen")
        .arg("-o")
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success());
    let out = p.with_config(&[
        "restore",
        "db",
        "-i",
        s(&other),
        "--to",
        s(&p.env.dir.path().join("wrong")),
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong key"),
        "{}",
        text(&out)
    );

    // A segment missing in the middle of the chain is named, and nothing
    // is restored (replay would silently stop before it).
    marker(&pg, "m4");
    switch_and_wait(&pg);
    let wal_dir = p.env.store.join(HOST).join("db").join("wal");
    let mut segments: Vec<String> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() > 24 && n.as_bytes()[24] == b'.' && !n.contains(".backup."))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let victim = &segments[segments.len() - 2];
    std::fs::remove_file(wal_dir.join(victim)).unwrap();
    let dir = p.data_dir("gap");
    let out = p.with_config(&["restore", "db", "-i", key, "--to", s(&dir)]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("WAL segment {} ", &victim[..24])) && err.contains("missing"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing restored"
    );
    // `backup verify` names it too.
    let out = p.with_config(&["backup", "verify", "db", "-i", key, "--quiet"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("wal chain")
            && said.contains(&format!("segment {} is missing", &victim[..24])),
        "{said}"
    );

    // Retention: with one base backup kept, the WAL before its start goes,
    // the WAL it needs and the timeline history stay.
    p.configure(&format!(
        "{}retention.local = {{ keep_last = 1 }}\n",
        job_config(&pg, "\"local\"")
    ));
    let run = p.with_config(&["backup", "run", "db", "--json", "--quiet"]);
    assert!(run.status.success(), "second base backup: {}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        report["targets"][0]["retention_error"],
        serde_json::Value::Null,
        "{report:#}"
    );
    let list = p.with_config(&["backup", "list", "--job", "db", "--json"]);
    let snapshots: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(snapshots.as_array().unwrap().len(), 1, "{snapshots:#}");
    let start = snapshots[0]["postgres_base"]["start_wal"]
        .as_str()
        .unwrap()
        .to_string();
    let left: Vec<String> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        left.iter().all(|n| &n[..24] >= start.as_str()),
        "{start}: {left:?}"
    );
    assert!(
        left.iter().any(|n| n.starts_with(&start)),
        "{start}: {left:?}"
    );
    let out = p.with_config(&["backup", "verify", "db", "-i", key, "--quiet"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn push_is_idempotent_refuses_other_content_and_fetch_checks_what_it_writes() {
    let p = Pitr::new();
    p.configure("[backup.jobs.db]\nkind = \"postgres_pitr\"\nhost = \"127.0.0.1\"\n");
    let work = p.env.dir.path().join("pg_wal");
    std::fs::create_dir(&work).unwrap();
    let seg = work.join("000000010000000000000007");
    random_file(&seg, 1024 * 1024, 7);
    let push = |path: &Path| p.with_config(&["wal", "push", "db", s(path)]);
    let stored = || -> Vec<PathBuf> {
        let wal_dir = p.env.store.join(HOST).join("db").join("wal");
        let mut v: Vec<PathBuf> = std::fs::read_dir(wal_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };

    let out = push(&seg);
    assert!(out.status.success(), "{}", text(&out));
    let first = stored();
    assert_eq!(first.len(), 1, "{first:?}");
    let bytes = std::fs::read(&first[0]).unwrap();
    // The same content again (PostgreSQL retries when it missed an exit 0).
    let out = push(&seg);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stored(), first);
    // Different content under the same name: refused, nothing overwritten.
    random_file(&seg, 1024 * 1024, 8);
    let out = push(&seg);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different content"),
        "{}",
        text(&out)
    );
    assert_eq!(stored(), first);
    assert_eq!(std::fs::read(&first[0]).unwrap(), bytes);
    // Not a WAL file name.
    let odd = work.join("postgresql.conf");
    std::fs::write(&odd, "x").unwrap();
    let out = push(&odd);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("not a WAL file name"),
        "{}",
        text(&out)
    );
    // History and backup label files are archived too.
    for name in [
        "00000002.history",
        "000000010000000000000007.00000028.backup",
    ] {
        std::fs::write(work.join(name), format!("{name}\n")).unwrap();
        let out = push(&work.join(name));
        assert!(out.status.success(), "{name}: {}", text(&out));
    }

    // Fetch: the original bytes, nothing but exit 1 for an absent file.
    random_file(&seg, 1024 * 1024, 7);
    let want = std::fs::read(&seg).unwrap();
    let restore_dir = p.env.dir.path().join("restore-wal");
    std::fs::create_dir(&restore_dir).unwrap();
    let key = s(&p.env.key);
    let fetch = |name: &str, dest: &Path| {
        p.with_config(&[
            "wal",
            "fetch",
            "--prefetch",
            "0",
            "-i",
            key,
            "db",
            name,
            s(dest),
        ])
    };
    let dest = restore_dir.join("RECOVERYXLOG");
    let out = fetch("000000010000000000000007", &dest);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), want);
    let absent = restore_dir.join("absent");
    let out = fetch("000000010000000000000008", &absent);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!absent.exists());
    // A damaged object: exit 255 (PostgreSQL aborts recovery instead of
    // ending it early), the file named, nothing written.
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x40;
    std::fs::write(&first[0], &damaged).unwrap();
    let broken = restore_dir.join("broken");
    let out = fetch("000000010000000000000007", &broken);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("000000010000000000000007") && err.contains("corrupt"),
        "{}",
        text(&out)
    );
    assert!(!broken.exists());
    assert_eq!(
        std::fs::read_dir(&restore_dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    // Prefetch: fetching 8 also downloads 9 into pg_wal/.steward-prefetch,
    // from where the next request is served even once the archive lost it.
    let seg8 = work.join("000000010000000000000008");
    let seg9 = work.join("000000010000000000000009");
    random_file(&seg8, 1024 * 1024, 80);
    random_file(&seg9, 1024 * 1024, 90);
    for seg in [&seg8, &seg9] {
        let out = push(seg);
        assert!(out.status.success(), "{}", text(&out));
    }
    let pg_wal = p.env.dir.path().join("prefetch-wal");
    std::fs::create_dir(&pg_wal).unwrap();
    let fetch_ahead = |name: &str| {
        p.with_config(&[
            "wal",
            "fetch",
            "--prefetch",
            "4",
            "-i",
            key,
            "db",
            name,
            s(&pg_wal.join("RECOVERYXLOG")),
        ])
    };
    let out = fetch_ahead("000000010000000000000008");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(pg_wal.join("RECOVERYXLOG")).unwrap(),
        std::fs::read(&seg8).unwrap()
    );
    let spooled = pg_wal
        .join(".steward-prefetch")
        .join("000000010000000000000009");
    assert!(spooled.is_file(), "9 was prefetched");
    let object9 = stored()
        .into_iter()
        .find(|k| {
            k.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("000000010000000000000009.")
        })
        .unwrap();
    std::fs::remove_file(object9).unwrap();
    let out = fetch_ahead("000000010000000000000009");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(pg_wal.join("RECOVERYXLOG")).unwrap(),
        std::fs::read(&seg9).unwrap()
    );
    assert!(!spooled.exists());
    // Gone from the archive and the spool: absent.
    let out = fetch_ahead("000000010000000000000009");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn restore_from_s3_with_no_configuration() {
    let moto = S3Server::start().expect("moto");
    moto.create_bucket("pitr", false).unwrap();
    let p = Pitr::new();
    p.configure("");
    let pg = start_archiving(&p);
    let endpoint = moto.endpoint();
    p.configure(&format!(
        "[backup.targets.s3]\nkind = \"s3\"\nbucket = \"pitr\"\nprefix = \"steward\"\nendpoint = \"{endpoint}\"\npath_style = true\naccess_key_id = \"pitr-key-id\"\nsecret_access_key = \"pitr-secret\"\n\n{}",
        job_config(&pg, "\"s3\"")
    ));
    pg.psql("CREATE TABLE markers (name text, at timestamptz)")
        .unwrap();
    let run = p.with_config(&["backup", "run", "db", "--quiet"]);
    assert!(
        run.status.success(),
        "base backup: {}\n{}",
        text(&run),
        pg.log()
    );
    marker(&pg, "m1");
    marker(&pg, "m2");
    switch_and_wait(&pg);
    let keys = moto.list_keys("pitr", "steward/testhost/db/wal/").unwrap();
    assert!(keys.len() >= 2, "{keys:?}");

    // A fresh host: the bucket, the key, and nothing else.
    let dir = p.data_dir("from-s3");
    let port = free_port();
    let out = p.steward(
        &[
            "restore",
            "--from",
            "s3://pitr/steward",
            "--endpoint",
            &endpoint,
            "--path-style",
            "-i",
            s(&p.env.key),
            "db",
            "--to",
            s(&dir),
            "--start-port",
            &port.to_string(),
            "--quiet",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "pitr-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "pitr-secret"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let restored = Restored {
        pg: pg.bin_dir.clone(),
        dir: dir.clone(),
        port,
        password: pg.password.clone(),
    };
    assert!(out.status.success(), "restore --from s3: {}", text(&out));
    assert_eq!(restored.markers(), "m1,m2");
    let conf = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("''--from'' ''s3://pitr/steward''"), "{conf}");
    assert!(
        !conf.contains("pitr-secret"),
        "no credential in the restored configuration: {conf}"
    );
}
