//! The daemon's scheduler end to end: the real `steward agent` runs a files
//! job on a cron schedule with a seconds field, the snapshot appears in the
//! catalog, the `steward_backup_*` metrics on `/metrics` move, and a CLI
//! run of the same job while the daemon's run holds the job lock is
//! refused with a clear message.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use steward_tests::backup_env::{random_file, require_tool};
use steward_tests::{steward_bin, StewardAgent};

/// The value of the first sample of `name` whose labels contain every
/// `label="value"` pair in `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        if !labels.iter().all(|want| rest.contains(want)) {
            return None;
        }
        rest.rsplit(' ').next()?.parse().ok()
    })
}

fn steward(config: &Path, args: &[&str]) -> Output {
    Command::new(steward_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .expect("run steward")
}

fn age_recipient(dir: &Path) -> String {
    require_tool("age-keygen");
    let key = dir.join("backup.key");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen failed");
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn scheduled_run_makes_a_snapshot_moves_metrics_and_locks_out_the_cli() {
    let work = tempfile::Builder::new()
        .prefix("steward-daemon-backup-")
        .tempdir()
        .unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // 24 MiB of incompressible bytes through sha256, zstd and age: each
    // run lasts long enough (seconds in a debug build) to catch it holding
    // the lock.
    random_file(&data.join("big.bin"), 24 * 1024 * 1024, 11);
    std::fs::write(data.join("small.txt"), b"hello").unwrap();
    let store = work.path().join("store");
    let recipient = age_recipient(work.path());
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let agent = StewardAgent::start(
        &format!(
            "[node]\nenabled = false\n\n[backup]\nrecipients = [\"{recipient}\"]\n\n[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\n\
             [backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\n# every 4 seconds (6 fields: seconds first)\nschedule = \"*/4 * * * * *\"\nzstd_workers = 1\n",
            store.display(),
            data.display()
        ),
        "hostname = \"testhost\"",
    )
    .expect("start steward agent");

    // The scheduler publishes the next due time as soon as it starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (before, next_run) = loop {
        let m = agent.scrape().unwrap();
        if let Some(t) = sample(
            &m,
            "steward_backup_next_run_timestamp_seconds",
            &["job=\"files\""],
        ) {
            break (m, t);
        }
        assert!(
            Instant::now() < deadline,
            "no next run time published:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // (`started` is taken before the agent, whose first start may include
    // building the binary.)
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        next_run >= now - 5.0 && next_run <= now + 5.0,
        "the next run ({next_run}) is due within seconds of {now}:\n{before}"
    );
    let runs_before = sample(
        &before,
        "steward_backup_runs_total",
        &["job=\"files\"", "result=\"success\""],
    )
    .unwrap_or(0.0);

    // The first scheduled run: a snapshot in the catalog and the metrics.
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let m = agent.scrape().unwrap();
        let runs = sample(
            &m,
            "steward_backup_runs_total",
            &["job=\"files\"", "result=\"success\""],
        )
        .unwrap_or(0.0);
        if runs > runs_before {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no successful scheduled run after 120 s\nmetrics:\n{m}\nlog:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let last_success = sample(
        &metrics,
        "steward_backup_last_success_timestamp_seconds",
        &["job=\"files\"", "target=\"local\""],
    )
    .unwrap_or_else(|| panic!("no last success timestamp:\n{metrics}"));
    assert!(last_success >= started, "{last_success} < {started}");
    assert_eq!(
        sample(
            &metrics,
            "steward_backup_last_run_success",
            &["job=\"files\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    let out = steward(
        &agent.config_path,
        &["backup", "list", "--job", "files", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!list.is_empty(), "no snapshot in the catalog");
    assert_eq!(list[0]["job"], "files", "{list:?}");

    // While a scheduled run holds the lock, `steward backup run files` is
    // refused with one clear line. Runs follow each other every few seconds;
    // a few attempts in case one lands between two runs.
    let mut refused = None;
    for _ in 0..5 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = agent.scrape().unwrap();
            if sample(&m, "steward_backup_running", &["job=\"files\""]) == Some(1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the scheduler started no further run in 60 s:\n{m}\nlog:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = steward(&agent.config_path, &["backup", "run", "files", "--quiet"]);
        if !out.status.success() {
            refused = Some(out);
            break;
        }
    }
    let out = refused.expect("a CLI run while the daemon's run held the lock was never refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("job files is already running") && stderr.contains("files.lock"),
        "{stderr}"
    );
    assert!(
        stderr.trim().lines().count() <= 2,
        "one clear message, not a dump:\n{stderr}"
    );

    // The runs counter keeps moving and a later success is recorded.
    let runs_now = sample(
        &agent.scrape().unwrap(),
        "steward_backup_runs_total",
        &["job=\"files\"", "result=\"success\""],
    )
    .unwrap_or(0.0);
    assert!(runs_now > runs_before, "{runs_now} <= {runs_before}");
}
