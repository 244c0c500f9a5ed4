//! Async WAL archiving (`archive_async = true`) against a real PostgreSQL
//! 15 whose `archive_command` is `steward wal push`: the push only spools
//! the segment and a running `steward agent` uploads it to every target.
//! Under writes every segment ends up in the bucket exactly once; with the
//! agent down the spool grows until `spool_max_bytes`, then pushes fail and
//! PostgreSQL keeps the segment; once the agent runs, everything is
//! archived.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::backup_env::HOST;
use steward_tests::pitr::{job_config, s, start_archiving, switch_and_wait, Pitr};
use steward_tests::postgres::{test_owner, Postgres};
use steward_tests::s3::{S3Server, SwitchProxy};
use steward_tests::{free_port, http_get, steward_bin, wait_for_http, ChildGuard};

/// A `steward agent` run as the test's own user (root: it may remove what
/// the server's user spooled) on the PITR environment's configuration.
struct Agent {
    guard: ChildGuard,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn start(p: &Pitr) -> Agent {
        let port = free_port();
        let log = p.env.dir.path().join(format!("agent-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(steward_bin());
        cmd.args(["agent", "--config", s(&p.env.config), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let guard = ChildGuard::spawn("steward agent", &mut cmd).unwrap();
        let agent = Agent { guard, port, log };
        if let Err(e) = wait_for_http(port, "/livez", Duration::from_secs(60)) {
            panic!("agent did not start: {e}\n{}", agent.log());
        }
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, _, body) = http_get(self.port, "/metrics", &[]).ok()?;
        String::from_utf8_lossy(&body)
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

/// The spool directory, made for the server's user (0700) before the
/// environment is handed to it.
fn spool_dir(p: &Pitr) -> PathBuf {
    let d = p.env.dir.path().join("spool");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn async_job(pg: &Postgres, targets: &str, spool: &Path, max: Option<u64>) -> String {
    let mut job = format!(
        "{}archive_async = true\nspool_dir = \"{}\"\n",
        job_config(pg, targets),
        spool.display()
    );
    if let Some(m) = max {
        job.push_str(&format!("spool_max_bytes = {m}\n"));
    }
    job
}

/// The 24-character segment names among `names` (keys or file names),
/// sorted, duplicates kept.
fn segments<I: IntoIterator<Item = String>>(names: I) -> Vec<String> {
    let mut out: Vec<String> = names
        .into_iter()
        .map(|n| n.rsplit('/').next().unwrap_or_default().to_string())
        .filter(|n| {
            n.len() > 25
                && n.as_bytes()[24] == b'.'
                && n[..24].bytes().all(|b| b.is_ascii_hexdigit())
                && !n.contains(".backup.")
                && !n.contains(".partial.")
        })
        .map(|n| n[..24].to_string())
        .collect();
    out.sort();
    out
}

fn segno(name: &str) -> u64 {
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&name[r], 16).unwrap();
    hex(8..16) * 256 + hex(16..24)
}

/// The first segment of timeline 1.
const FIRST: &str = "000000010000000000000001";

/// Every segment of timeline 1 from `first` through `last`, each once;
/// none twice anywhere.
fn assert_complete(what: &str, archived: &[String], first: &str, last: &str) {
    let want: Vec<String> = (segno(first)..=segno(last))
        .map(|n| format!("00000001{:08X}{:08X}", n / 256, n % 256))
        .collect();
    let upto: Vec<String> = archived
        .iter()
        .filter(|n| n.as_str() >= first && n.as_str() <= last)
        .cloned()
        .collect();
    assert_eq!(upto, want, "{what}: segments {first} through {last}");
    let mut once = archived.to_vec();
    once.dedup();
    assert_eq!(once.len(), archived.len(), "{what}: a segment twice");
}

/// The segment a base backup started in, from its `.backup` history
/// file among `keys`.
fn base_start(keys: &[String]) -> String {
    keys.iter()
        .filter_map(|k| k.rsplit('/').next())
        .find(|n| n.len() > 24 && n.contains(".backup."))
        .map(|n| n[..24].to_string())
        .unwrap_or_else(|| panic!("no .backup file among {keys:?}"))
}

fn local_wal(p: &Pitr) -> Vec<String> {
    let dir = p.env.store.join(HOST).join("db").join("wal");
    segments(
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()),
    )
}

fn spooled(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} after {secs}s\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Some WAL: a few MB of rows.
fn write_rows(pg: &Postgres) {
    pg.psql("INSERT INTO load SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 5000) g")
        .unwrap();
}

#[test]
fn async_archiving_under_writes_ends_with_every_segment_in_the_bucket() {
    let moto = S3Server::start().expect("moto");
    moto.create_bucket("pitr", false).unwrap();
    let p = Pitr::new();
    let spool = spool_dir(&p);
    p.configure("");
    let pg = start_archiving(&p);
    let s3 = format!(
        "[backup.targets.s3]\nkind = \"s3\"\nbucket = \"pitr\"\nprefix = \"steward\"\nendpoint = \"{}\"\npath_style = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n\n",
        moto.endpoint()
    );
    p.configure(&format!(
        "{s3}{}",
        async_job(&pg, "\"local\", \"s3\"", &spool, None)
    ));
    let agent = Agent::start(&p);
    pg.psql("CREATE TABLE load (id int, pad text)").unwrap();
    let run = p.with_config(&["backup", "run", "db", "--quiet"]);
    assert!(
        run.status.success(),
        "base backup: {}",
        steward_tests::pitr::text(&run)
    );

    let mut last = String::new();
    for _ in 0..6 {
        write_rows(&pg);
        write_rows(&pg);
        // Spooled (that is what archive_command reports) ...
        last = switch_and_wait(&pg);
    }
    // ... and uploaded by the agent, which empties the spool.
    wait_until(
        "the spool is not empty",
        120,
        || spooled(&spool).is_empty(),
        || format!("spool: {:?}\nagent log:\n{}", spooled(&spool), agent.log()),
    );
    // Segments before the base backup's start may be gone: the backup
    // run prunes WAL that no kept base backup needs, and whether the
    // agent had uploaded one before that prune is a race.
    let keys = moto.list_keys("pitr", "steward/testhost/db/wal/").unwrap();
    let first = base_start(&keys);
    assert_complete("s3", &segments(keys), &first, &last);
    assert_complete("local", &local_wal(&p), &first, &last);
    let failed = pg
        .psql("SELECT failed_count FROM pg_stat_archiver")
        .unwrap();
    assert_eq!(failed, "0", "no push failed: {}", pg.log());
    // The spool: the server's user's, private.
    let meta = std::fs::metadata(&spool).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    if let Some(owner) = test_owner().unwrap() {
        assert_eq!(meta.uid(), owner.uid);
    }
    assert_eq!(
        agent.metric("steward_wal_spool_files{job=\"db\"}"),
        Some(0.0),
        "{}",
        agent.log()
    );

    // The agent's look at the archive: the chain from the base backup is
    // whole on both targets; a reload looks again at once.
    let chain = |target: &str| {
        agent.metric(&format!(
            "steward_wal_chain_ok{{job=\"db\",target=\"{target}\"}}"
        ))
    };
    agent.guard.signal(libc::SIGHUP);
    wait_until(
        "the chain is not reported whole",
        60,
        || chain("s3") == Some(1.0) && chain("local") == Some(1.0),
        || agent.log(),
    );
    // A segment removed from the local target breaks its chain, not S3's.
    let wal_dir = p.env.store.join(HOST).join("db").join("wal");
    let victim = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.len() > 24 && n[..24] < *last.as_str() && n[..24] > *"000000010000000000000003"
        })
        .find(|n| n.as_bytes()[24] == b'.' && !n.contains(".backup."))
        .expect("a segment after the base backup's start");
    std::fs::remove_file(wal_dir.join(&victim)).unwrap();
    agent.guard.signal(libc::SIGHUP);
    wait_until(
        "the broken chain is not reported",
        60,
        || chain("local") == Some(0.0),
        || agent.log(),
    );
    assert_eq!(chain("s3"), Some(1.0));
}

#[test]
fn with_the_agent_down_the_spool_fills_then_pushes_fail_and_nothing_is_lost() {
    let p = Pitr::new();
    let spool = spool_dir(&p);
    p.configure("");
    let pg = start_archiving(&p);
    // Room for two 16 MiB segments, not three.
    p.configure(&async_job(&pg, "\"local\"", &spool, Some(40 << 20)));
    pg.psql("CREATE TABLE load (id int, pad text)").unwrap();

    // No agent: each push spools, nothing reaches the target.
    let first = switch_and_wait(&pg);
    write_rows(&pg);
    let second = switch_and_wait(&pg);
    assert_eq!(spooled(&spool), [first.clone(), second.clone()]);
    assert!(local_wal(&p).is_empty(), "{:?}", local_wal(&p));

    // The third does not fit: the push fails, PostgreSQL keeps the segment
    // and says why.
    write_rows(&pg);
    let third = pg.psql("SELECT pg_walfile_name(pg_switch_wal())").unwrap();
    wait_until(
        "no failed push",
        60,
        || {
            pg.psql("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver")
                .unwrap()
                == third
        },
        || pg.log(),
    );
    assert!(
        pg.log().contains("is full") && pg.log().contains("spool_max_bytes = 41943040"),
        "{}",
        pg.log()
    );
    let pg_wal = pg.data_dir.join("pg_wal");
    assert!(pg_wal.join(&third).exists(), "PostgreSQL keeps {third}");
    assert!(pg_wal
        .join("archive_status")
        .join(format!("{third}.ready"))
        .exists());
    assert_eq!(spooled(&spool), [first.clone(), second.clone()]);

    // The agent drains the spool; PostgreSQL's next attempt goes through.
    let agent = Agent::start(&p);
    wait_until(
        "the spool is not empty",
        60,
        || spooled(&spool).is_empty(),
        || format!("agent log:\n{}", agent.log()),
    );
    write_rows(&pg);
    let fourth = switch_and_wait(&pg);
    wait_until(
        "the spool is not empty",
        60,
        || spooled(&spool).is_empty(),
        || format!("agent log:\n{}", agent.log()),
    );
    assert_complete("local", &local_wal(&p), FIRST, &fourth);
    assert!(agent.metric("steward_wal_spool_bytes{job=\"db\"}") == Some(0.0));
}

#[test]
fn a_file_spooled_with_other_content_is_refused() {
    let p = Pitr::new();
    let spool = spool_dir(&p);
    p.configure(&format!(
        "[backup.jobs.db]\nkind = \"postgres_pitr\"\narchive_async = true\nspool_dir = \"{}\"\n",
        spool.display()
    ));
    let seg = p.env.dir.path().join("000000010000000000000007");
    std::fs::write(&seg, vec![1u8; 4096]).unwrap();
    let push = || p.with_config(&["wal", "push", "db", s(&seg)]);
    let out = push();
    assert!(out.status.success(), "{}", steward_tests::pitr::text(&out));
    assert!(push().status.success(), "the same content again");
    std::fs::write(&seg, vec![2u8; 4096]).unwrap();
    let out = push();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in the WAL spool") && err.contains("different content"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(spool.join("000000010000000000000007")).unwrap(),
        vec![1u8; 4096],
        "nothing replaced"
    );
    let mode = std::fs::metadata(spool.join("000000010000000000000007"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn with_s3_down_the_spool_keeps_the_wal_and_every_segment_arrives_once_it_is_back() {
    let moto = S3Server::start().expect("moto");
    moto.create_bucket("pitr", false).unwrap();
    let upstream: u16 = moto.endpoint().rsplit(':').next().unwrap().parse().unwrap();
    let switch = SwitchProxy::start(upstream);
    let p = Pitr::new();
    let spool = spool_dir(&p);
    p.configure("");
    let pg = start_archiving(&p);
    let s3 = format!(
        "[backup.targets.s3]\nkind = \"s3\"\nbucket = \"pitr\"\nprefix = \"steward\"\nendpoint = \"http://127.0.0.1:{}\"\npath_style = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\nrequest_timeout_secs = 5\n\n",
        switch.port
    );
    p.configure(&format!(
        "{s3}{}",
        async_job(&pg, "\"local\", \"s3\"", &spool, None)
    ));
    let agent = Agent::start(&p);
    pg.psql("CREATE TABLE load (id int, pad text)").unwrap();
    write_rows(&pg);
    switch_and_wait(&pg);
    wait_until(
        "the spool is not empty",
        60,
        || spooled(&spool).is_empty(),
        || agent.log(),
    );

    // The store goes away: pushes still succeed (spooled), nothing leaves
    // the spool, and the agent says why.
    switch.set_down(true);
    let mut during = Vec::new();
    for _ in 0..3 {
        write_rows(&pg);
        during.push(switch_and_wait(&pg));
    }
    std::thread::sleep(Duration::from_secs(3));
    let waiting = spooled(&spool);
    for seg in &during {
        assert!(
            waiting.contains(seg),
            "{seg} not kept in the spool: {waiting:?}"
        );
    }
    wait_until(
        "no upload failure counted",
        60,
        || {
            agent
                .metric("steward_wal_archive_failures_total{job=\"db\"}")
                .unwrap_or(0.0)
                >= 1.0
        },
        || agent.log(),
    );
    assert!(
        agent.log().contains("async WAL archiving"),
        "{}",
        agent.log()
    );

    // Back: the spool drains, every segment is in the bucket once.
    switch.set_down(false);
    wait_until(
        "the spool is not empty",
        120,
        || spooled(&spool).is_empty(),
        || format!("spool: {:?}\n{}", spooled(&spool), agent.log()),
    );
    let last = during.last().unwrap();
    let keys = moto.list_keys("pitr", "steward/testhost/db/wal/").unwrap();
    assert_complete("s3", &segments(keys), FIRST, last);
    assert_complete("local", &local_wal(&p), FIRST, last);
}
