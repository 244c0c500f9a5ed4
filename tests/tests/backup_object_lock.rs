//! Object Lock on an S3 target (moto, bucket created with Object Lock):
//! every object of a snapshot, the multi-part one included, carries the
//! configured retention, and retention/prune leave a locked snapshot whole
//! and listed, saying why in one line, instead of hiding it behind delete
//! markers or half-deleting it.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use steward_tests::backup_env::{random_file, BackupEnv, HOST};
use steward_tests::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

/// Seconds since the epoch of an RFC 3339 / ISO 8601 date (GNU `date`).
fn epoch_secs(date: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a date: {date:?}"))
}

/// The value of response header `name` in a raw HTTP head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[test]
fn locked_objects_carry_retention_and_prune_keeps_them_whole() {
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Incompressible 11 MiB: the archive goes up in 3 parts of 5 MiB.
    random_file(&data.join("big.bin"), 11 * 1024 * 1024, 3);
    let s3 = S3Server::start().expect("start moto");
    s3.create_bucket("locked", true).unwrap();
    env.write_config(&format!(
        "[backup.targets.vault]\nkind = \"s3\"\nbucket = \"locked\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY_ID}\"\nsecret_access_key = \"{SECRET_ACCESS_KEY}\"\npart_size_bytes = 5242880\nobject_lock_mode = \"GOVERNANCE\"\nobject_lock_days = 2\nretention = {{ keep_last = 1 }}\n\n\
         [backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\ntargets = [\"vault\"]\n",
        s3.endpoint(),
        data.display()
    ));

    let (code, first, stderr) = env.run_job("files");
    assert_eq!(code, 0, "{stderr}\n{first:#}\nmoto log:\n{}", s3.log());
    let first_id = first["snapshot_id"]
        .as_str()
        .expect("snapshot_id")
        .to_string();
    let keys = s3
        .list_keys("locked", &format!("steward/{HOST}/files/{first_id}/"))
        .unwrap();
    assert!(
        keys.iter().any(|k| k.ends_with("manifest.json"))
            && keys.iter().any(|k| k.ends_with(".age")),
        "{keys:?}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for key in &keys {
        let head = s3.head("locked", key).unwrap();
        assert_eq!(
            header(&head, "x-amz-object-lock-mode").as_deref(),
            Some("GOVERNANCE"),
            "{key} has no Object Lock mode:\n{head}"
        );
        let until = header(&head, "x-amz-object-lock-retain-until-date")
            .unwrap_or_else(|| panic!("{key} has no retain-until date:\n{head}"));
        let days = (epoch_secs(&until) - now) as f64 / 86400.0;
        assert!(
            (1.9..=2.1).contains(&days),
            "{key} retained until {until}, {days:.2} days from now (want 2)"
        );
    }

    // The second run's retention (keep_last = 1) cannot remove the first
    // snapshot: the run still succeeds and says why the snapshot stays.
    let (code, second, stderr) = env.run_job("files");
    assert_eq!(code, 0, "{stderr}\n{second:#}");
    let target = &second["targets"][0];
    assert!(target["retention_error"].is_null(), "{second:#}");
    let kept = target["retention"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == first_id.as_str())
        .unwrap_or_else(|| panic!("no decision for {first_id}: {second:#}"));
    assert!(
        kept["locked"]
            .as_str()
            .is_some_and(|l| l.contains("GOVERNANCE")),
        "{kept:#}"
    );

    // `steward backup prune`: one line naming the snapshot and the lock,
    // exit 0 (locked snapshots are an expected outcome), nothing deleted.
    let out = env.steward(&["backup", "prune"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&first_id))
        .unwrap_or_else(|| panic!("prune does not name {first_id}:\n{stdout}"));
    assert!(
        line.trim_start().starts_with("locked")
            && line.contains("Object Lock (GOVERNANCE) until")
            && line.contains("not removed"),
        "{line}"
    );
    assert_eq!(
        s3.list_keys("locked", &format!("steward/{HOST}/files/{first_id}/"))
            .unwrap(),
        keys,
        "the locked snapshot must stay whole (manifest included)"
    );
    let listed: Vec<String> = env
        .list("files")
        .iter()
        .filter_map(|s| s["snapshot_id"].as_str().map(str::to_string))
        .collect();
    assert!(listed.contains(&first_id), "{listed:?}");
    assert_eq!(listed.len(), 2, "{listed:?}");
}
