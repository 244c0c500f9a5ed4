//! Backups through the real binary against real services, restored with the
//! stock tools alone (`age -d -i key | zstd -d | pg_restore/mariadb/tar`):
//! files to the local target, PostgreSQL to local + moto S3, MariaDB, the
//! catalog commands, retention and the job lock.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use steward_tests::backup_env::{b3sum_file, random_file, sha256_file, BackupEnv, HOST};
use steward_tests::mariadb::Mariadb;
use steward_tests::postgres::Postgres;
use steward_tests::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

#[test]
fn files_round_trip_keeps_modes_owners_mtimes_and_symlinks() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(data.join("app/cache")).unwrap();
    std::fs::write(data.join("app/index.php"), "<?php echo 1;").unwrap();
    std::fs::set_permissions(
        data.join("app/index.php"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(data.join("app/cache/x.tmp"), "cache").unwrap();
    std::os::unix::fs::symlink("index.php", data.join("app/link.php")).unwrap();
    random_file(&data.join("app/blob.bin"), 300_000, 7);
    let chown = Command::new("chown")
        .args(["-h", "1234:2345"])
        .arg(data.join("app/index.php"))
        .status()
        .unwrap();
    assert!(chown.success());
    env.write_config(&format!(
        "[backup.jobs.site]\nkind = \"files\"\npaths = [\"{}\"]\nexclude = [\"app/cache\"]\n",
        data.display()
    ));

    let (code, report, stderr) = env.run_job("site");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["status"], "success");
    let id = report["snapshot_id"].as_str().unwrap().to_string();

    // The manifest describes the object exactly as stored.
    let manifest_path = env.store.join(format!("{HOST}/site/{id}/manifest.json"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 2);
    assert_eq!(manifest["kind"], "files");
    assert_eq!(manifest["host"], HOST);
    assert!(manifest["recipients"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let object = &manifest["objects"][0];
    let stored = env.store.join(format!(
        "{HOST}/site/{id}/{}",
        object["name"].as_str().unwrap()
    ));
    assert_eq!(
        sha256_file(&stored),
        object["stored_sha256"].as_str().unwrap()
    );
    assert_eq!(
        std::fs::metadata(&stored).unwrap().len(),
        object["stored_bytes"].as_u64().unwrap()
    );
    assert_eq!(manifest["files"]["symlinks"], 1);

    // Escape hatch: age + zstd + tar only.
    let tar = env.dir.path().join("out.tar");
    env.decrypt_to(&stored, &tar);
    assert_eq!(
        b3sum_file(&tar),
        object["plaintext_blake3"].as_str().unwrap()
    );
    let restore = env.dir.path().join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    let ok = Command::new("tar")
        .args(["-x", "--same-owner", "-p", "-f"])
        .arg(&tar)
        .arg("-C")
        .arg(&restore)
        .status()
        .unwrap();
    assert!(ok.success());
    let back = restore.join(data.strip_prefix("/").unwrap());
    let orig = std::fs::metadata(data.join("app/index.php")).unwrap();
    let meta = std::fs::metadata(back.join("app/index.php")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1234, 2345));
    assert_eq!(meta.mtime(), orig.mtime());
    assert_eq!(
        std::fs::read_link(back.join("app/link.php"))
            .unwrap()
            .to_str(),
        Some("index.php")
    );
    assert_eq!(
        sha256_file(&back.join("app/blob.bin")),
        sha256_file(&data.join("app/blob.bin"))
    );
    assert!(
        !back.join("app/cache").exists(),
        "excluded directory was archived"
    );

    // Catalog commands.
    let list = env.list("site");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["snapshot_id"], id.as_str());
    let show = env.steward(&["backup", "show", &id]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("files.tar.zst.age") && text.contains(&env.recipient),
        "{text}"
    );
    let missing = env.steward(&["backup", "show", "20000101T000000Z-0000"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no snapshot"));
}

#[test]
fn postgres_to_local_and_s3_restores_with_pg_restore() {
    let env = BackupEnv::new();
    let pg = Postgres::start().expect("start PostgreSQL");
    pg.psql("CREATE DATABASE shop").unwrap();
    pg.psql_db(
        "shop",
        "CREATE TABLE items(id int primary key, name text, price numeric);\
         INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 5000) g;\
         CREATE TABLE empty_one(x int);",
    )
    .unwrap();
    pg.psql("CREATE ROLE reporting LOGIN").unwrap();
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("backups", false).unwrap();
    env.write_config(&format!(
        "[backup.targets.offsite]\nkind = \"s3\"\nbucket = \"backups\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\n\n\
         [backup.jobs.db]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\nbin_dir = \"{}\"\ndatabases = [\"shop\"]\ntargets = [\"local\", \"offsite\"]\n",
        s3.endpoint(),
        pg.port,
        pg.superuser,
        pg.password,
        pg.bin_dir.display()
    ));
    let (code, report, stderr) = env.run_job("db");
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    assert!(!stderr.contains(&pg.password), "password leaked: {stderr}");
    let id = report["snapshot_id"].as_str().unwrap().to_string();

    // Both targets list it; the manifest records row counts for drills.
    let list = env.list("db");
    let targets: Vec<&str> = list.iter().map(|m| m["target"].as_str().unwrap()).collect();
    assert_eq!(targets.len(), 2, "{list:#?}");
    assert!(targets.contains(&"local") && targets.contains(&"offsite"));
    let m = &list[0];
    let tables = m["databases"][0]["tables"].as_array().unwrap();
    let items = tables.iter().find(|t| t["name"] == "public.items").unwrap();
    assert_eq!(items["rows"], 5000);
    assert!(m["tools"]["pg_dump"]
        .as_str()
        .unwrap()
        .contains("PostgreSQL"));
    let roles: Vec<&str> = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["postgres_globals", "postgres_dump"]);

    // From S3, with the stock tools: age -d | zstd -d > dump; pg_restore.
    let keys = s3.list_keys("backups", "steward/").unwrap();
    let dump_key = keys
        .iter()
        .find(|k| k.ends_with("shop.pgdump.zst.age"))
        .expect("dump in bucket")
        .clone();
    assert!(
        keys.contains(&format!("steward/{HOST}/db/{id}/manifest.json")),
        "{keys:?}"
    );
    let enc = env.dir.path().join("shop.age");
    std::fs::write(&enc, s3.get("backups", &dump_key).unwrap()).unwrap();
    let dump = env.dir.path().join("shop.pgdump");
    env.decrypt_to(&enc, &dump);
    let ok = std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o644));
    assert!(ok.is_ok());
    pg.psql("CREATE DATABASE shop_restored").unwrap();
    let out = pg
        .command("pg_restore")
        .args(["--no-owner", "-d", "shop_restored"])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.psql_db("shop_restored", "SELECT count(*), sum(price) FROM items")
            .unwrap(),
        "5000|18753750.0"
    );

    // Globals hold the role.
    let globals_key = keys
        .iter()
        .find(|k| k.ends_with("globals.sql.zst.age"))
        .unwrap();
    let enc = env.dir.path().join("globals.age");
    std::fs::write(&enc, s3.get("backups", globals_key).unwrap()).unwrap();
    let sql = env.dir.path().join("globals.sql");
    env.decrypt_to(&enc, &sql);
    assert!(std::fs::read_to_string(&sql)
        .unwrap()
        .contains("CREATE ROLE reporting"));
}

#[test]
fn mariadb_dump_restores_with_the_mariadb_client() {
    let env = BackupEnv::new();
    let db = Mariadb::start().expect("start MariaDB");
    db.mysql(
        "CREATE DATABASE app; CREATE TABLE app.users(id INT PRIMARY KEY, name VARCHAR(50), photo BLOB);\
         INSERT INTO app.users VALUES (1, 'ana', 0x00FF10), (2, 'bo', NULL), (3, 'cy', 0xDEADBEEF);",
    )
    .unwrap();
    env.write_config(&format!(
        "[backup.jobs.mysql]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\n",
        db.socket.display(),
        db.root_password
    ));
    let (code, report, stderr) = env.run_job("mysql");
    assert_eq!(code, 0, "{stderr}\n{report:#}");
    let id = report["snapshot_id"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.store.join(format!("{HOST}/mysql/{id}/manifest.json"))).unwrap(),
    )
    .unwrap();
    let dbs: Vec<&str> = manifest["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(dbs, vec!["app"], "system schemas are left out");
    assert_eq!(manifest["databases"][0]["tables"][0]["rows"], 3);

    let enc = env
        .store
        .join(format!("{HOST}/mysql/{id}/mysql/app.sql.zst.age"));
    let sql = env.dir.path().join("app.sql");
    env.decrypt_to(&enc, &sql);
    assert!(std::fs::read_to_string(&sql)
        .unwrap()
        .contains("-- Dump completed"));
    db.mysql("DROP DATABASE app").unwrap();
    let out = db
        .command("mariadb")
        .stdin(std::fs::File::open(&sql).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        db.mysql("SELECT name, HEX(photo) FROM app.users WHERE id = 3")
            .unwrap(),
        "cy\tDEADBEEF"
    );
}

#[test]
fn retention_keeps_last_and_prune_explains_each_decision() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("etc");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.conf"), "x=1").unwrap();
    let job = |keep: u32| {
        format!(
            "[backup.jobs.cfg]\nkind = \"files\"\npaths = [\"{}\"]\nretention.local = {{ keep_last = {keep} }}\n",
            data.display()
        )
    };
    env.write_config(&job(2));
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, report, stderr) = env.run_job("cfg");
        assert_eq!(code, 0, "{stderr}");
        ids.push(report["snapshot_id"].as_str().unwrap().to_string());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let listed: Vec<String> = env
        .list("cfg")
        .iter()
        .map(|m| m["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        ids[1..].to_vec(),
        "retention after the run keeps the 2 newest"
    );
    assert_eq!(env.manifests("cfg").len(), 2);
    assert!(
        !env.stored_files().iter().any(|f| f.contains(&ids[0])),
        "the removed snapshot's objects are gone too"
    );

    // keep_last 1 in a dry run: one keep, one would-remove, with reasons.
    env.write_config(&job(1));
    let out = env.steward(&["backup", "prune", "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("would remove {}", ids[1])) || text.contains("would remove"),
        "{text}"
    );
    assert!(text.contains("newest snapshot"), "{text}");
    assert!(text.contains("matches no keep rule"), "{text}");
    assert_eq!(env.manifests("cfg").len(), 2, "dry run removed something");
    let out = env.steward(&["backup", "prune"]);
    assert!(out.status.success());
    assert_eq!(env.manifests("cfg").len(), 1);
    assert!(env.manifests("cfg")[0].contains(&ids[2]));
}

#[test]
fn a_running_job_blocks_a_second_run_and_the_lock_dies_with_its_holder() {
    let env = BackupEnv::new();
    // A dump tool that hangs, so the first run holds the lock.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["psql", "pg_dumpall"] {
        let script = if tool == "psql" {
            "#!/bin/sh\necho app\n"
        } else {
            "#!/bin/sh\necho '-- globals'\n"
        };
        std::fs::write(bin.join(tool), script).unwrap();
    }
    std::fs::write(
        bin.join("pg_dump"),
        "#!/bin/sh\necho partial\nexec sleep 60\n",
    )
    .unwrap();
    for tool in ["psql", "pg_dumpall", "pg_dump"] {
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.write_config(&format!(
        "[backup.jobs.db]\nkind = \"postgres\"\nbin_dir = \"{}\"\ntable_stats = false\n",
        bin.display()
    ));
    let mut first = steward_tests::ChildGuard::spawn(
        "steward backup run",
        Command::new(steward_tests::steward_bin())
            .args(["backup", "run", "db", "-q", "--config"])
            .arg(&env.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )
    .unwrap();
    let lock = env.state.join("backup/locks/db.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "first run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, _, stderr) = env.run_job("db");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("job db is already running")
            && stderr.contains(&format!("pid {}", first.pid())),
        "{stderr}"
    );
    first.kill(); // SIGKILL: the kernel drops the flock
    std::fs::write(bin.join("pg_dump"), "#!/bin/sh\necho partial\nexit 3\n").unwrap();
    let (code, report, stderr) = env.run_job("db");
    assert!(
        !stderr.contains("already running"),
        "stale lock after SIGKILL: {stderr}"
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["status"], "failed", "{report:#}");
    assert!(
        stderr.contains("job db") && stderr.contains("exited with status 3"),
        "{stderr}"
    );
    assert!(env.manifests("db").is_empty());
}

/// A snapshot dated a year ahead (written while the clock was wrong) and
/// `keep_last = 1`: the run must keep what it just wrote, remove nothing,
/// and say why; `prune` refuses too, with a non-zero exit.
#[test]
fn a_future_dated_snapshot_stops_pruning_instead_of_eating_new_ones() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("etc");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.conf"), "x=1").unwrap();
    env.write_config(&format!(
        "[backup.jobs.cfg]\nkind = \"files\"\npaths = [\"{}\"]\nretention.local = {{ keep_last = 1 }}\n",
        data.display()
    ));
    let (code, first, stderr) = env.run_job("cfg");
    assert_eq!(code, 0, "{stderr}");
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();

    // Forge the future snapshot from the real one: same objects, its
    // manifest dated next year.
    let job_dir = env.store.join(HOST).join("cfg");
    let future_id = "29990101T000000Z-future";
    let future_dir = job_dir.join(future_id);
    std::fs::create_dir_all(&future_dir).unwrap();
    for entry in std::fs::read_dir(job_dir.join(&first_id)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), future_dir.join(entry.file_name())).unwrap();
    }
    let manifest_path = future_dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["snapshot_id"] = future_id.into();
    manifest["started_at"] = "2999-01-01T00:00:00Z".into();
    manifest["finished_at"] = "2999-01-01T00:01:00Z".into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, second, stderr) = env.run_job("cfg");
    assert_eq!(code, 0, "{stderr}");
    let second_id = second["snapshot_id"].as_str().unwrap().to_string();
    let manifests = env.manifests("cfg");
    assert_eq!(manifests.len(), 3, "nothing may be removed: {manifests:?}");
    for id in [&first_id, &second_id, &future_id.to_string()] {
        assert!(
            manifests.iter().any(|m| m.contains(id.as_str())),
            "{id} was removed: {manifests:?}"
        );
    }
    let refused = second["targets"][0]["retention_refused"]
        .as_str()
        .unwrap_or_default();
    assert!(refused.contains(future_id), "{second:#}");
    assert!(refused.contains("2999-01-01"), "{second:#}");
    assert!(
        stderr.contains("pruning refused"),
        "the log says so: {stderr}"
    );

    let out = env.steward(&["backup", "prune"]);
    assert!(!out.status.success(), "a refused prune must not exit 0");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pruning refused"), "{text}");
    assert_eq!(env.manifests("cfg").len(), 3);
}

/// Another machine with the same host name (a cloned VM) is uploading a
/// snapshot under the shared prefix: no manifest yet, objects fresh. A run
/// here must not clean it up.
#[test]
fn another_writers_snapshot_in_progress_is_not_cleaned() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("etc");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.conf"), "x=1").unwrap();
    env.write_config(&format!(
        "[backup.jobs.cfg]\nkind = \"files\"\npaths = [\"{}\"]\n",
        data.display()
    ));
    let other = env.store.join(HOST).join("cfg/20260101T000000Z-clone");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("files.tar.zst.age"), "in progress").unwrap();
    std::fs::write(other.join("more.tar.zst.age.partial"), "in prog").unwrap();

    let (code, report, stderr) = env.run_job("cfg");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        report["targets"][0]["cleaned"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{report:#}"
    );
    assert!(other.join("files.tar.zst.age").exists());
    assert!(other.join("more.tar.zst.age.partial").exists());
}
