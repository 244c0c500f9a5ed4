//! The failure behaviour, one test each: dump tool exits non-zero
//! or is killed, a truncated MySQL dump, database unreachable, S3
//! unreachable, S3 errors mid-upload, disk full on the local target, the
//! process SIGKILLed mid-upload, a wrong recipient. Each: one clear error
//! naming the job and the cause, the run failed in the report, no snapshot
//! committed, no multipart upload left after the next run, earlier
//! snapshots untouched.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::backup_env::{random_file, BackupEnv};
use steward_tests::s3::{FaultyProxy, S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use steward_tests::{free_port, steward_bin, ChildGuard};

/// Fake client tools in `dir`: psql lists one database, pg_dumpall works,
/// pg_dump runs `dump_body`.
fn fake_pg_tools(dir: &Path, dump_body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for (tool, body) in [
        ("psql", "echo app"),
        ("pg_dumpall", "echo '-- globals'"),
        ("pg_dump", dump_body),
    ] {
        std::fs::write(dir.join(tool), format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(dir.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn files_job(env: &BackupEnv, name: &str, data: &Path, extra: &str) -> String {
    let _ = env;
    format!(
        "[backup.jobs.{name}]\nkind = \"files\"\npaths = [\"{}\"]\n{extra}\n",
        data.display()
    )
}

/// A good snapshot first, so "earlier snapshots untouched" can be checked.
fn seed_snapshot(env: &BackupEnv, rest: &str) -> String {
    let data = env.dir.path().join("seed");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "seed").unwrap();
    env.write_config(&format!("{}\n{rest}", files_job(env, "seed", &data, "")));
    let (code, report, stderr) = env.run_job("seed");
    assert_eq!(code, 0, "{stderr}");
    report["snapshot_id"].as_str().unwrap().to_string()
}

fn assert_failed(
    env: &BackupEnv,
    job: &str,
    code: i32,
    report: &serde_json::Value,
    stderr: &str,
    cause: &str,
) {
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["status"], "failed", "{report:#}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("");
    assert!(
        line.contains(&format!("job {job}")),
        "error does not name the job: {stderr}"
    );
    assert!(
        line.contains(cause),
        "error does not name the cause {cause:?}: {stderr}"
    );
    assert!(
        env.manifests(job).is_empty(),
        "a snapshot was committed: {:?}",
        env.stored_files()
    );
    assert!(
        !env.stored_files()
            .iter()
            .any(|f| f.contains(&format!("/{job}/"))),
        "objects left behind: {:?}",
        env.stored_files()
    );
    // The report on disk says the same.
    let dir = env.state.join(format!("backup/reports/{job}"));
    let saved: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(saved.len(), 1);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved[0].path()).unwrap()).unwrap();
    assert_eq!(saved["status"], "failed");
}

#[test]
fn dump_tool_failing_or_killed_commits_nothing() {
    let env = BackupEnv::new();
    let seed = seed_snapshot(&env, "");
    let bin = env.dir.path().join("bin");
    let job = |env: &BackupEnv| {
        let data = env.dir.path().join("seed");
        env.write_config(&format!(
            "{}\n[backup.jobs.db]\nkind = \"postgres\"\nbin_dir = \"{}\"\ntable_stats = false\n",
            files_job(env, "seed", &data, ""),
            bin.display()
        ));
    };
    fake_pg_tools(
        &bin,
        "head -c 300000 /dev/zero; echo 'pg_dump: error: query failed' >&2; exit 1",
    );
    job(&env);
    let (code, report, stderr) = env.run_job("db");
    assert_failed(&env, "db", code, &report, &stderr, "exited with status 1");
    assert!(
        stderr.contains("query failed"),
        "the tool's stderr is quoted: {stderr}"
    );

    let _ = std::fs::remove_dir_all(env.state.join("backup/reports/db"));
    fake_pg_tools(&bin, "head -c 300000 /dev/zero; kill -9 $$");
    let (code, report, stderr) = env.run_job("db");
    assert_failed(&env, "db", code, &report, &stderr, "killed by signal 9");
    assert_eq!(env.manifests("seed").len(), 1);
    assert!(env.manifests("seed")[0].contains(&seed));
}

#[test]
fn truncated_mysql_dump_without_trailer_fails() {
    let env = BackupEnv::new();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (tool, body) in [
        ("mariadb", "if [[ \"$*\" == *information_schema* ]]; then echo t; elif [[ \"$*\" == *COUNT* ]]; then printf 't\\t1\\n'; else echo app; fi"),
        ("mariadb-dump", "echo 'CREATE TABLE t (x int);'; echo 'INSERT INTO t VALUES'; exit 0"),
    ] {
        std::fs::write(bin.join(tool), format!("#!/bin/bash\n{body}\n")).unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    env.write_config(&format!(
        "[backup.jobs.my]\nkind = \"mysql\"\nbin_dir = \"{}\"\n",
        bin.display()
    ));
    let (code, report, stderr) = env.run_job("my");
    assert_failed(&env, "my", code, &report, &stderr, "-- Dump completed");
}

#[test]
fn unreachable_database_fails_with_its_address() {
    let env = BackupEnv::new();
    let port = free_port();
    let pg_bin = steward_tests::postgres::pg_bin_dir().expect("PostgreSQL client tools");
    env.write_config(&format!(
        "[backup.jobs.db]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\npassword = \"secret-pw-x\"\nbin_dir = \"{}\"\n",
        pg_bin.display()
    ));
    let (code, report, stderr) = env.run_job("db");
    assert_failed(
        &env,
        "db",
        code,
        &report,
        &stderr,
        &format!("127.0.0.1:{port}"),
    );
    assert!(!stderr.contains("secret-pw-x") && !report.to_string().contains("secret-pw-x"));
}

fn s3_target(endpoint: &str, bucket: &str, extra: &str) -> String {
    format!(
        "[backup.targets.s3]\nkind = \"s3\"\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\npart_size_bytes = 5242880\nrequest_timeout_secs = 20\n{extra}\n"
    )
}

#[test]
fn s3_unreachable_fails_the_target_and_names_it() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), "a").unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    env.write_config(&format!(
        "{}\n{}",
        s3_target(&endpoint, "backups", ""),
        files_job(&env, "f", &data, "targets = [\"s3\"]")
    ));
    let (code, report, stderr) = env.run_job("f");
    assert_failed(&env, "f", code, &report, &stderr, "target s3");
    assert!(!stderr.contains(SECRET_ACCESS_KEY));
}

#[test]
fn s3_errors_mid_upload_abort_the_multipart_upload() {
    let env = BackupEnv::new();
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("backups", false).unwrap();
    let proxy = FaultyProxy::start(s3.port, 1).unwrap();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    random_file(&data.join("big.bin"), 16 * 1024 * 1024, 3);
    env.write_config(&format!(
        "{}\n{}",
        s3_target(&proxy.endpoint(), "backups", ""),
        files_job(&env, "f", &data, "targets = [\"s3\"]")
    ));
    let (code, report, stderr) = env.run_job("f");
    assert_failed(&env, "f", code, &report, &stderr, "part");
    assert!(
        proxy.parts_failed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "no part upload was refused"
    );
    assert!(
        s3.list_keys("backups", "").unwrap().is_empty(),
        "{:?}",
        s3.list_keys("backups", "")
    );
    assert!(
        s3.list_uploads("backups").unwrap().is_empty(),
        "multipart upload left behind"
    );
}

#[test]
fn disk_full_on_the_local_target_leaves_no_partial_file() {
    let env = BackupEnv::new();
    let seed = seed_snapshot(&env, "");
    // A 3 MiB filesystem as the store.
    let small = env.dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(
        mount.success(),
        "mounting a small tmpfs needs root (the suite runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    random_file(&data.join("big.bin"), 6 * 1024 * 1024, 5);
    let seed_data = env.dir.path().join("seed");
    env.write_config(&format!(
        "{}\n[backup.targets.small]\nkind = \"local\"\npath = \"{}\"\n{}",
        files_job(&env, "seed", &seed_data, ""),
        small.display(),
        files_job(&env, "f", &data, "targets = [\"small\"]")
    ));
    let (code, report, stderr) = env.run_job("f");
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["status"], "failed");
    assert!(
        stderr.contains("job f") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let mut left = Vec::new();
    for e in walkdir(&small) {
        left.push(e);
    }
    assert!(left.is_empty(), "left on the full disk: {left:?}");
    assert!(env.manifests("seed")[0].contains(&seed));
}

fn walkdir(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn sigkill_mid_upload_leaves_nothing_after_the_next_run() {
    let env = BackupEnv::new();
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("backups", false).unwrap();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    random_file(&data.join("big.bin"), 24 * 1024 * 1024, 9);
    env.write_config(&format!(
        "{}\n{}",
        s3_target(&s3.endpoint(), "backups", "upload_concurrency = 1"),
        files_job(&env, "f", &data, "targets = [\"s3\"]")
    ));
    let mut run = ChildGuard::spawn(
        "steward backup run",
        Command::new(steward_bin())
            .args(["backup", "run", "f", "-q", "--config"])
            .arg(&env.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s3.list_uploads("backups").unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no multipart upload started");
        assert!(
            run.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run.kill();
    assert_eq!(
        s3.list_uploads("backups").unwrap().len(),
        1,
        "the killed run's upload is still open"
    );
    assert!(!s3
        .list_keys("backups", "")
        .unwrap()
        .iter()
        .any(|k| k.ends_with("manifest.json")));

    // The next run cleans up and commits.
    std::fs::write(data.join("big.bin"), "small now").unwrap();
    let (code, report, stderr) = env.run_job("f");
    assert_eq!(code, 0, "{stderr}");
    let cleaned = report["targets"][0]["cleaned"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!cleaned.is_empty(), "{report:#}");
    assert!(
        s3.list_uploads("backups").unwrap().is_empty(),
        "orphaned multipart upload after the next run"
    );
    let manifests: Vec<_> = s3
        .list_keys("backups", "")
        .unwrap()
        .into_iter()
        .filter(|k| k.ends_with("manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1);
}

#[test]
fn wrong_or_missing_recipient_is_refused_with_the_key_path() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let text = env
        .config_text(&files_job(&env, "f", &data, ""))
        .replace(&env.recipient, "age1notarealrecipient");
    std::fs::write(&env.config, text).unwrap();
    let out = env.steward(&["backup", "run", "f"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup.recipients[0]") && stderr.contains("age-keygen"),
        "{stderr}"
    );

    let text = env.config_text(&files_job(&env, "f", &data, "")).replace(
        &format!("recipients = [\"{}\"]", env.recipient),
        "recipients = []",
    );
    std::fs::write(&env.config, text).unwrap();
    let out = env.steward(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup.recipients: backups are always encrypted"),
        "{stderr}"
    );
}
