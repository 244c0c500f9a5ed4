//! Restores that download an object as parallel byte ranges, against moto
//! behind a proxy that counts the ranged GETs and cuts one off half-way:
//! the big object comes back byte-exact with small ranges, the cut range is
//! fetched again on its own, no more ranges are in flight than configured,
//! and a corrupt or truncated object is still refused.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use steward_tests::backup_env::{random_file, sha256_file, BackupEnv};
use steward_tests::s3::{RangeProxy, S3Server};
use steward_tests::steward_bin;

const PART: u64 = 1024 * 1024;
const CONCURRENCY: usize = 3;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `steward <args> --from s3://bkp/steward` through `endpoint`, with no
/// configuration file and ranges of PART bytes, CONCURRENCY at once.
fn from_s3(endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(steward_bin());
    with_s3_source(&mut cmd, endpoint, args)
        .output()
        .expect("run steward")
}

/// Appends `args` and the bucket, endpoint, range settings and
/// credentials of a restore with no configuration file to `cmd`.
fn with_s3_source<'a>(cmd: &'a mut Command, endpoint: &str, args: &[&str]) -> &'a mut Command {
    let (part, conc) = (PART.to_string(), CONCURRENCY.to_string());
    cmd.args(args)
        .args(["--from", "s3://bkp/steward", "--endpoint", endpoint])
        .args(["--path-style", "--restore-part-size", &part])
        .args(["--restore-concurrency", &conc])
        .env_remove("STEWARD_CONFIG")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
}

struct Fixture {
    moto: S3Server,
    env: BackupEnv,
    data: std::path::PathBuf,
    /// The archive object's key and stored size.
    object: String,
    stored: u64,
}

/// A files snapshot in moto holding a 5 MiB incompressible file (so the
/// stored object spans six 1 MiB ranges, twice the concurrency) and a few
/// small ones. Small because debug builds decrypt slowly.
fn fixture() -> Fixture {
    let moto = S3Server::start().unwrap();
    moto.create_bucket("bkp", false).unwrap();
    let env = BackupEnv::new();
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    random_file(&data.join("big.bin"), 5 * 1024 * 1024 + 12_345, 7);
    for i in 0..5 {
        random_file(
            &data.join(format!("sub/small{i}")),
            1000 + i * 777,
            i as u64 + 1,
        );
    }
    env.write_config(&format!(
        "[backup.targets.s3]\nkind = \"s3\"\nbucket = \"bkp\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n\n[backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\ntargets = [\"s3\"]\n",
        moto.endpoint(),
        data.display()
    ));
    let (code, _, stderr) = env.run_job("files");
    assert_eq!(code, 0, "backup failed: {stderr}");
    let object = moto
        .list_keys("bkp", "steward/")
        .unwrap()
        .into_iter()
        .find(|k| k.ends_with(".age"))
        .expect("the archive object");
    let stored = moto.get("bkp", &object).unwrap().len() as u64;
    assert!(stored > 5 * PART, "stored object of {stored} bytes");
    Fixture {
        moto,
        env,
        data,
        object,
        stored,
    }
}

fn same_files(data: &Path, restored_root: &Path) {
    let restored = restored_root.join(data.strip_prefix("/").unwrap());
    let mut names = vec!["big.bin".to_string()];
    names.extend((0..5).map(|i| format!("sub/small{i}")));
    for name in names {
        assert_eq!(
            sha256_file(&restored.join(&name)),
            sha256_file(&data.join(&name)),
            "{name} differs after the restore"
        );
    }
}

#[test]
fn big_object_comes_back_byte_exact_when_a_range_is_cut_off() {
    let f = fixture();
    // The 3rd ranged GET (the first is the one that finds the size) is cut
    // half-way through its body.
    let proxy = RangeProxy::start(f.moto.port, Some(2)).unwrap();
    let out = f.env.dir.path().join("restored");
    let key = f.env.key.to_str().unwrap().to_string();
    let o = from_s3(
        &proxy.endpoint(),
        &[
            "restore",
            "-q",
            "-i",
            &key,
            "files",
            "latest",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    same_files(&f.data, &out);
    let parts = f.stored.div_ceil(PART) as usize;
    let ranges = proxy.ranges.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(proxy.cut.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Every range once, the cut one once more: not the whole object again.
    assert_eq!(ranges, parts + 1, "{parts} parts of {} bytes", f.stored);
    let peak = proxy
        .peak_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    // The bound, not the parallelism: how many overlap depends on
    // scheduling (the library's unit test shows every permit in use).
    assert!(
        (1..=CONCURRENCY).contains(&peak),
        "ranged GETs in flight at once: {peak} (configured {CONCURRENCY})"
    );
}

#[test]
fn corrupt_and_truncated_objects_are_refused_through_ranges() {
    let f = fixture();
    let key = f.env.key.to_str().unwrap().to_string();
    let original = f.moto.get("bkp", &f.object).unwrap();
    let endpoint = f.moto.endpoint();

    // One flipped byte in the 4th range.
    let mut flipped = original.clone();
    flipped[3 * PART as usize + 100] ^= 0x10;
    f.moto.put("bkp", &f.object, &flipped).unwrap();
    let proxy = RangeProxy::start(f.moto.port, None).unwrap();
    let out = f.env.dir.path().join("corrupt");
    let o = from_s3(
        &proxy.endpoint(),
        &[
            "restore",
            "-q",
            "-i",
            &key,
            "files",
            "latest",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    let t = text(&o);
    assert!(!o.status.success() && t.contains("corrupt"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    assert!(
        proxy.ranges.load(std::sync::atomic::Ordering::SeqCst) > 1,
        "the corrupt object was read in ranges"
    );
    let o = from_s3(&endpoint, &["backup", "verify", "-i", &key, "files"]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("corrupt"), "{t}");

    // Cut short by one range and a bit: named truncated.
    let cut = &original[..original.len() - PART as usize - 10];
    f.moto.put("bkp", &f.object, cut).unwrap();
    let o = from_s3(&endpoint, &["backup", "verify", "-i", &key, "files"]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("truncated"), "{t}");

    // Whole again: verified.
    f.moto.put("bkp", &f.object, &original).unwrap();
    let o = from_s3(&endpoint, &["backup", "verify", "-i", &key, "files"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Runs `steward <args> --from s3://bkp/steward` like [`from_s3`] under
/// GNU time (scripts/apt-packages.txt) and returns its exit status, stderr
/// and peak resident set size in KiB (the child's own, not that of the
/// test process's other children: moto is one).
fn from_s3_peak_rss(endpoint: &str, args: &[&str], scratch: &Path) -> (i32, String, u64) {
    let rss_file = scratch.with_extension("rss");
    let mut time = Command::new("/usr/bin/time");
    time.args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(steward_bin());
    let o = with_s3_source(&mut time, endpoint, args)
        .output()
        .expect("run steward under /usr/bin/time (apt install time)");
    let written = std::fs::read_to_string(&rss_file).unwrap_or_default();
    let kib = written
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from /usr/bin/time: {written:?}\n{}", text(&o)));
    (o.status.code().unwrap_or(-1), text(&o), kib)
}

#[test]
fn peak_memory_of_a_ranged_restore_does_not_grow_with_the_object() {
    let f = fixture();
    let key = f.env.key.to_str().unwrap().to_string();
    let endpoint = f.moto.endpoint();
    let restore = |name: &str| {
        let out = f.env.dir.path().join(name);
        let (code, stderr, kib) = from_s3_peak_rss(
            &endpoint,
            &[
                "restore",
                "-q",
                "-i",
                &key,
                "files",
                "latest",
                "--to",
                out.to_str().unwrap(),
            ],
            &out,
        );
        assert_eq!(code, 0, "restore {name}: {stderr}");
        kib
    };
    // The fixture's snapshot: a stored object of ~5 MiB, six ranges.
    let small = restore("small");
    // A second snapshot whose object is 32 MiB larger (incompressible):
    // 38 ranges of 1 MiB, still at most CONCURRENCY part buffers.
    random_file(&f.data.join("bigger.bin"), 32 * 1024 * 1024, 99);
    let (code, _, stderr) = f.env.run_job("files");
    assert_eq!(code, 0, "second backup failed: {stderr}");
    let large = restore("large");
    assert_eq!(
        sha256_file(&f.data.join("bigger.bin")),
        sha256_file(
            &f.env
                .dir
                .path()
                .join("large")
                .join(f.data.strip_prefix("/").unwrap())
                .join("bigger.bin")
        ),
        "bigger.bin differs after the restore"
    );
    // Memory is part size x concurrency plus fixed queues: a restore that
    // held a fraction of the object (a buffer that grows with it) would
    // show a good part of the 32 MiB here.
    let grown_mib = (large as f64 - small as f64) / 1024.0;
    eprintln!("peak RSS: {small} KiB (5 MiB object), {large} KiB (37 MiB object)");
    assert!(
        grown_mib < 10.0,
        "peak RSS {small} KiB for the 5 MiB object, {large} KiB for the 37 MiB one: {grown_mib:.1} MiB more"
    );
}
