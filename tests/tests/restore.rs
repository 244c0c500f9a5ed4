//! Restore, verify and drills through the real binary against real
//! services: PostgreSQL and MariaDB round trips compared by fresh dumps, a
//! files tree (modes, symlinks, mtimes) compared by a tree hash, S3 (moto)
//! objects corrupted, truncated and deleted, the wrong key, a key file
//! readable by others, restores onto non-empty databases, restores with no
//! configuration from `--from`, and drills that pass and miss their RTO.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use steward_tests::mariadb::Mariadb;
use steward_tests::postgres::Postgres;
use steward_tests::{free_port, http_get, steward_bin, wait_for_http, wait_for_tcp, ChildGuard};

/// A work dir with an age key pair and a config file being assembled.
struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    recipient: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("backup.key");
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .output()
            .expect("age-keygen is missing: install the Debian package `age`");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = std::fs::read_to_string(&key).unwrap();
        let recipient = text
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("public key line")
            .to_string();
        Setup {
            dir,
            key,
            recipient,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `steward.toml` with [agent] (host web1, state in the dir),
    /// the recipient and `rest`.
    fn config(&self, rest: &str) -> PathBuf {
        let path = self.path("steward.toml");
        std::fs::write(
            &path,
            format!(
                "[agent]\nhostname = \"web1\"\nstate_dir = \"{}\"\n[backup]\nrecipients = [\"{}\"]\n{rest}",
                self.path("state").display(),
                self.recipient
            ),
        )
        .unwrap();
        path
    }

    /// A second, unrelated key (the wrong one).
    fn other_key(&self) -> PathBuf {
        let key = self.path("other.key");
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        key
    }
}

fn steward(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(steward_bin());
    cmd.args(args).stdin(Stdio::null());
    // No ambient configuration or credentials.
    cmd.env_remove("STEWARD_CONFIG")
        .env_remove("STEWARD_IDENTITY")
        .env_remove("STEWARD_IDENTITY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run steward")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn failed(o: Output) -> String {
    assert!(!o.status.success(), "expected failure:\n{}", text(&o));
    let t = text(&o);
    assert!(!t.contains("panicked"), "{t}");
    assert!(!t.contains("AGE-SECRET-KEY"), "a key leaked: {t}");
    t
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tree hash computed by the test itself: path, type, mode, mtime
/// (whole seconds), owner, size, content or link target, for every entry.
fn tree_hash(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let detail = if ft.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                format!(
                    "dir {:o} {} {}:{}",
                    m.mode() & 0o7777,
                    m.mtime(),
                    m.uid(),
                    m.gid()
                )
            } else {
                let content = std::fs::read(&p).unwrap();
                format!(
                    "file {:o} {} {}:{} {} {:x}",
                    m.mode() & 0o7777,
                    m.mtime(),
                    m.uid(),
                    m.gid(),
                    content.len(),
                    content
                        .iter()
                        .fold(0u64, |h, b| h.wrapping_mul(1_099_511_628_211)
                            ^ u64::from(*b))
                )
            };
            out.push(format!("{rel} {detail}"));
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn set_mtime(p: &Path, secs: u64) {
    let f = std::fs::File::open(p).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// A files tree with odd modes, a symlink, a nested dir, old mtimes, a
/// file owned by another user.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("shared/storage/private")).unwrap();
    std::fs::write(root.join("index.php"), "<?php echo 'hi';\n").unwrap();
    std::fs::write(root.join("shared/.env"), "APP_KEY=base64:xyz\n").unwrap();
    // Incompressible, so stored objects are large enough to damage.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(root.join("shared/storage/blob.bin"), big).unwrap();
    std::fs::write(root.join("shared/storage/private/secret.txt"), "s").unwrap();
    std::os::unix::fs::symlink("shared/.env", root.join(".env")).unwrap();
    std::fs::set_permissions(
        root.join("shared/.env"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("index.php"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(root.join("index.php"), Some(33), Some(33)).unwrap();
    std::fs::set_permissions(
        root.join("shared/storage/private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    for (p, t) in [
        ("index.php", 1_600_000_000),
        ("shared/.env", 1_600_000_100),
        ("shared/storage/blob.bin", 1_600_000_200),
        ("shared/storage/private/secret.txt", 1_600_000_300),
        ("shared/storage/private", 1_600_000_400),
        ("shared/storage", 1_600_000_500),
        ("shared", 1_600_000_600),
    ] {
        set_mtime(&root.join(p), t);
    }
}

#[test]
fn files_round_trip_keeps_modes_symlinks_mtimes_and_paths_filter() {
    let setup = Setup::new();
    let src = setup.path("www");
    make_tree(&src);
    let config = setup.config(&format!(
        "[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\n",
        setup.path("repo").display(),
        src.display()
    ));
    ok(steward(&["-c", s(&config), "backup", "run", "files"], &[]));
    let before = tree_hash(&src);

    let out = setup.path("restored");
    let o = ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "files",
            "latest",
            "--to",
            s(&out),
        ],
        &[],
    ));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("tree hash"), "{stdout}");
    let restored_root = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(tree_hash(&restored_root), before);

    // Into a non-empty directory: refused without --force.
    let t = failed(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "files",
            "--to",
            s(&out),
        ],
        &[],
    ));
    assert!(t.contains("not empty") && t.contains("--force"), "{t}");

    // Never over the live system without --in-place.
    let t = failed(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "files",
            "--to",
            "/",
        ],
        &[],
    ));
    assert!(t.contains("--in-place"), "{t}");

    // --path: only the storage subtree.
    let part = setup.path("partial");
    let glob = format!(
        "{}/shared/storage/**",
        src.strip_prefix("/").unwrap().display()
    );
    ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "files",
            "--to",
            s(&part),
            "--path",
            &glob,
        ],
        &[],
    ));
    let root = part.join(src.strip_prefix("/").unwrap());
    assert!(root.join("shared/storage/blob.bin").is_file());
    assert!(!root.join("index.php").exists());
    assert!(!root.join("shared/.env").exists());

    // Config-style diff against the live files: change one, check output.
    std::fs::write(src.join("shared/.env"), "APP_KEY=base64:CHANGED\n").unwrap();
    let o = ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "files",
            "--diff",
        ],
        &[],
    ));
    let diff = String::from_utf8_lossy(&o.stdout);
    assert!(
        diff.contains("modified") && diff.contains("shared/.env"),
        "{diff}"
    );
    assert!(
        diff.contains("-APP_KEY=base64:xyz") && diff.contains("+APP_KEY=base64:CHANGED"),
        "{diff}"
    );
    assert!(!diff.contains("blob.bin"), "{diff}");
}

#[test]
fn postgres_round_trip_equal_by_fresh_dump_and_non_empty_refused() {
    let pg = Postgres::start().unwrap();
    pg.psql("CREATE DATABASE app").unwrap();
    pg.psql_db(
        "app",
        "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, created timestamptz DEFAULT now());\
         CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int REFERENCES users(id), total numeric(10,2), note text);\
         CREATE INDEX orders_user ON orders(user_id);\
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;\
         INSERT INTO users(email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 500) g;\
         INSERT INTO orders(user_id, total, note) SELECT (g % 500) + 1, g * 1.5, repeat('x', g % 50) FROM generate_series(1, 3000) g;",
    )
    .unwrap();
    let setup = Setup::new();
    let config = setup.config(&format!(
        "[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.db]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\ndatabases = [\"app\"]\nbin_dir = \"{}\"\n",
        setup.path("repo").display(),
        pg.port,
        pg.superuser,
        pg.password,
        pg.bin_dir.display()
    ));
    ok(steward(&["-c", s(&config), "backup", "run", "db"], &[]));

    // Onto the existing, non-empty source database: refused.
    let t = failed(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "db",
            "latest",
        ],
        &[],
    ));
    assert!(
        t.contains("database app") && t.contains("--force") && t.contains("--into"),
        "{t}"
    );

    // With no configuration at all, from the directory, into a new name,
    // with parallel pg_restore: connection from libpq's environment.
    let port = pg.port.to_string();
    let path = format!(
        "{}:{}",
        pg.bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env: Vec<(&str, &str)> = vec![
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", &port),
        ("PGUSER", &pg.superuser),
        ("PGPASSWORD", &pg.password),
        ("PATH", &path),
    ];
    let repo = setup.path("repo");
    let o = ok(steward(
        &[
            "restore",
            "--from",
            s(&repo),
            "-i",
            s(&setup.key),
            "db",
            "latest",
            "--into",
            "app_copy",
            "-j",
            "2",
        ],
        &env,
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("row counts") && out.contains("3500 rows"),
        "{out}"
    );
    // Where it restores from is the location given, not a target name.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("from {}\n", repo.display())), "{err}");

    let dump = |db: &str| {
        let o = pg
            .command("pg_dump")
            .args(["--schema-only", "--no-owner", "--no-privileges", "-d", db])
            .output()
            .unwrap();
        assert!(o.status.success());
        let schema = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| {
                !l.starts_with("-- Dumped")
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .collect::<Vec<_>>()
            .join("\n");
        let data = pg
            .psql_db(db, "SELECT string_agg(u::text, ';' ORDER BY id) FROM users u; SELECT md5(string_agg(o::text, ';' ORDER BY id)) FROM orders o;")
            .unwrap();
        (schema, data)
    };
    assert_eq!(dump("app_copy"), dump("app"));

    // --force replaces the objects of the dump in a non-empty database.
    pg.psql_db("app_copy", "DELETE FROM orders WHERE id > 10")
        .unwrap();
    ok(steward(
        &[
            "restore",
            "--from",
            s(&repo),
            "-i",
            s(&setup.key),
            "db",
            "--into",
            "app_copy",
            "--force",
        ],
        &env,
    ));
    assert_eq!(dump("app_copy"), dump("app"));
}

#[test]
fn mariadb_round_trip_equal_by_fresh_dump() {
    let db = Mariadb::start().unwrap();
    db.mysql(
        "CREATE DATABASE shop; USE shop;\
         CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), price DECIMAL(8,2), data BLOB);\
         CREATE TABLE tags (item_id INT, tag VARCHAR(20), PRIMARY KEY(item_id, tag));\
         INSERT INTO items(name, price, data) SELECT CONCAT('item', seq), seq * 0.5, UNHEX(MD5(seq)) FROM seq_1_to_2000;\
         INSERT INTO tags SELECT seq, 'a' FROM seq_1_to_700;\
         CREATE PROCEDURE cheap() SELECT * FROM items WHERE price < 1;",
    )
    .unwrap();
    let setup = Setup::new();
    let config = setup.config(&format!(
        "[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.shop]\nkind = \"mysql\"\nsocket = \"{}\"\nuser = \"root\"\npassword = \"{}\"\ndatabases = [\"shop\"]\n",
        setup.path("repo").display(),
        db.socket.display(),
        db.root_password
    ));
    ok(steward(&["-c", s(&config), "backup", "run", "shop"], &[]));
    let t = failed(steward(
        &["-c", s(&config), "restore", "-i", s(&setup.key), "shop"],
        &[],
    ));
    assert!(t.contains("--force"), "{t}");
    let o = ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "shop",
            "latest",
            "--into",
            "shop_copy",
        ],
        &[],
    ));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2700 rows"),
        "{}",
        text(&o)
    );
    let dump = |name: &str| {
        let o = db
            .command("mariadb-dump")
            .args([
                "--skip-dump-date",
                "--routines",
                "--hex-blob",
                "--skip-comments",
                name,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(dump("shop_copy"), dump("shop"));
}

/// moto on loopback with one bucket.
struct Moto {
    _guard: ChildGuard,
    port: u16,
}

impl Moto {
    fn start(bucket: &str) -> Moto {
        let port = free_port();
        let log = tempfile::tempfile().unwrap();
        let guard = ChildGuard::spawn(
            "moto_server",
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .expect(
            "moto_server is missing: pip install 'moto[server]' (scripts/python-requirements.txt)",
        );
        wait_for_tcp(port, Duration::from_secs(30)).unwrap();
        let m = Moto {
            _guard: guard,
            port,
        };
        let (status, _) = m.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "create bucket");
        m
    }

    /// A raw path-style request; moto does not check signatures but wants
    /// an Authorization header to identify the caller.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).to_string();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, raw[split + 4..].to_vec())
    }

    fn keys(&self, bucket: &str) -> Vec<String> {
        let (_, body) = self.request("GET", &format!("/{bucket}?list-type=2"), b"");
        let xml = String::from_utf8_lossy(&body).to_string();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|p| p.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn s3_faults_each_get_a_distinct_error_and_restore_works_without_config() {
    let moto = Moto::start("bkp");
    let setup = Setup::new();
    let src = setup.path("www");
    make_tree(&src);
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let config = setup.config(&format!(
        "[backup.targets.s3]\nkind = \"s3\"\nbucket = \"bkp\"\nprefix = \"steward\"\nendpoint = \"{endpoint}\"\npath_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n[backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\ntargets = [\"s3\"]\n",
        src.display()
    ));
    ok(steward(&["-c", s(&config), "backup", "run", "files"], &[]));
    let aws = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let from = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--from",
            "s3://bkp/steward",
            "--endpoint",
            &endpoint,
            "--path-style",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |sub: &[&str], extra: &[&str]| {
        let mut args: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
        args.extend(from(extra));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        steward(&refs, &aws)
    };
    let key = s(&setup.key);

    // A fresh server: no config, bucket and key only.
    let o = ok(run(&["restore"], &["list"]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("files"),
        "{}",
        text(&o)
    );
    let out = setup.path("fresh");
    ok(run(
        &["restore"],
        &["-i", key, "files", "latest", "--to", s(&out)],
    ));
    assert_eq!(
        tree_hash(&out.join(src.strip_prefix("/").unwrap())),
        tree_hash(&src)
    );
    ok(run(&["backup", "verify"], &["-i", key]));

    // The wrong key.
    let other = setup.other_key();
    let t = failed(run(&["backup", "verify"], &["-i", s(&other), "files"]));
    assert!(t.contains("wrong key"), "{t}");

    // A key file others can read.
    std::fs::set_permissions(&setup.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = failed(run(
        &["restore"],
        &["-i", key, "files", "--to", s(&setup.path("x"))],
    ));
    assert!(
        t.contains(&format!("chmod 600 {key}")) && t.contains("0644"),
        "{t}"
    );
    std::fs::set_permissions(&setup.key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let object = moto
        .keys("bkp")
        .into_iter()
        .find(|k| k.ends_with(".age"))
        .expect("an object");
    let snapshot = object.split('/').nth(3).unwrap().to_string();
    let (status, original) = moto.request("GET", &format!("/bkp/{object}"), b"");
    assert!(
        status == 200 && original.len() > 1000,
        "GET {object}: {status} {}",
        String::from_utf8_lossy(&original[..original.len().min(500)])
    );

    // One flipped byte in the middle.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    assert_eq!(
        moto.request("PUT", &format!("/bkp/{object}"), &flipped).0,
        200
    );
    let t = failed(run(&["backup", "verify"], &["-i", key, "files"]));
    assert!(
        t.contains("corrupt") && t.contains(&snapshot) && t.contains("files.tar"),
        "{t}"
    );
    let restore_dir = setup.path("bad");
    let t = failed(run(
        &["restore"],
        &["-i", key, "files", "--to", s(&restore_dir)],
    ));
    assert!(t.contains("corrupt"), "{t}");
    assert!(!t.contains("verified"), "{t}");

    // Truncated.
    let cut = &original[..original.len() - 100];
    assert_eq!(moto.request("PUT", &format!("/bkp/{object}"), cut).0, 200);
    let t = failed(run(&["backup", "verify"], &["-i", key, "files"]));
    assert!(t.contains("truncated") && t.contains(&snapshot), "{t}");

    // Deleted.
    assert_eq!(
        moto.request("DELETE", &format!("/bkp/{object}"), b"").0,
        204
    );
    let t = failed(run(&["backup", "verify"], &["-i", key, "files"]));
    assert!(t.contains("missing") && t.contains(&snapshot), "{t}");
    let t = failed(run(
        &["restore"],
        &["-i", key, "files", "--to", s(&setup.path("gone"))],
    ));
    assert!(t.contains("missing"), "{t}");

    // Put back: whole again.
    assert_eq!(
        moto.request("PUT", &format!("/bkp/{object}"), &original).0,
        200
    );
    ok(run(&["backup", "verify"], &["-i", key, "files"]));
}

#[test]
fn drill_passes_then_misses_its_rto_and_metrics_say_so() {
    let pg = Postgres::start().unwrap();
    pg.psql("CREATE DATABASE app").unwrap();
    pg.psql_db(
        "app",
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000);",
    )
    .unwrap();
    let setup = Setup::new();
    let src = setup.path("www");
    make_tree(&src);
    let config = setup.config(&format!(
        "[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\
         [backup.jobs.db]\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\ndatabases = [\"app\"]\nbin_dir = \"{}\"\n\
         [backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\n\
         [backup.drill.objectives.db]\nrto_secs = 3600\nrpo_secs = 900\n\
         [backup.drill.objectives.files]\nrto_secs = 7200\nrpo_secs = 86400\n",
        setup.path("repo").display(),
        pg.port,
        pg.superuser,
        pg.password,
        pg.bin_dir.display(),
        src.display()
    ));
    ok(steward(&["-c", s(&config), "backup", "run", "db"], &[]));
    ok(steward(&["-c", s(&config), "backup", "run", "files"], &[]));

    let report = setup.path("drill.json");
    let o = ok(steward(
        &[
            "-c",
            s(&config),
            "drill",
            "-i",
            s(&setup.key),
            "--report",
            s(&report),
        ],
        &[],
    ));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("drill passed"), "{table}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["jobs"].as_array().unwrap().len(), 2);
    // Scratch databases are gone, the source untouched.
    let dbs = pg
        .psql(
            "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'steward_drill%'",
        )
        .unwrap();
    assert_eq!(dbs, "");
    assert_eq!(pg.psql_db("app", "SELECT count(*) FROM t").unwrap(), "1000");

    // An RTO no restore can meet: the drill fails and says why.
    let o = steward(
        &[
            "-c",
            s(&config),
            "drill",
            "db",
            "-i",
            s(&setup.key),
            "--rto-secs",
            "0.001",
            "--json",
        ],
        &[],
    );
    let t = failed(o);
    assert!(t.contains("\"success\": false"), "{t}");
    let o = steward(
        &[
            "-c",
            s(&config),
            "drill",
            "db",
            "-i",
            s(&setup.key),
            "--rto-secs",
            "0.001",
        ],
        &[],
    );
    let t = failed(o);
    assert!(
        t.contains("RTO MISSED") && t.contains("RTO objective is 1ms"),
        "{t}"
    );

    // The daemon's metrics read the last drills (same state dir).
    let (_agent, port) = spawn_agent(&config);
    wait_for_http(port, "/livez", Duration::from_secs(30)).unwrap();
    let (status, _, body) = http_get(port, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&body);
    assert!(
        metrics.contains("steward_drill_success{job=\"db\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steward_drill_success{job=\"files\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steward_drill_restore_seconds{job=\"db\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steward_drill_last_run_timestamp_seconds{job=\"files\"}"),
        "{metrics}"
    );
}

/// `steward agent -c config` on a free loopback port, quiet; stopped when
/// the guard is dropped.
fn spawn_agent(config: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let agent = ChildGuard::spawn(
        "steward",
        Command::new(steward_bin())
            .args([
                "agent",
                "-c",
                s(config),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    (agent, port)
}

/// The stored object files of a local target under `repo`.
fn stored_objects(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![repo.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "age") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn files_restore_guards_the_host_setuid_foreign_dirs_and_damaged_in_place() {
    let setup = Setup::new();
    let src = setup.path("www");
    make_tree(&src);
    // Incompressible and several MiB, so damage at its end is found only
    // after the first MiB of the archive (index.php) was handed on.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("zz.bin"), big).unwrap();
    std::fs::create_dir(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let repo = setup.path("repo");
    let config = setup.config(&format!(
        "[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.files]\nkind = \"files\"\npaths = [\"{}\"]\n",
        repo.display(),
        src.display()
    ));
    ok(steward(&["-c", s(&config), "backup", "run", "files"], &[]));
    let restore = |extra: &[&str]| {
        let mut args = vec!["-c", s(&config), "restore", "-i", s(&setup.key), "files"];
        args.extend_from_slice(extra);
        steward(&args, &[])
    };
    let tool_mode = |root: &Path| {
        std::fs::metadata(root.join(src.strip_prefix("/").unwrap()).join("bin/tool"))
            .unwrap()
            .mode()
            & 0o7777
    };

    // --to: setuid/setgid dropped unless asked for.
    let plain = setup.path("plain");
    ok(restore(&["--to", s(&plain)]));
    assert_eq!(tool_mode(&plain), 0o755);
    let kept = setup.path("kept");
    ok(restore(&["--to", s(&kept), "--keep-setuid"]));
    assert_eq!(tool_mode(&kept), 0o4755);

    // A --to directory another user owns is refused, even with --force.
    let foreign = setup.path("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let t = failed(restore(&["--to", s(&foreign), "--force"]));
    assert!(t.contains("owned by uid 65534"), "{t}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 0);

    // --in-place from an object damaged near its end (found only after the
    // first files were decrypted): the live files stay as they are.
    std::fs::write(src.join("index.php"), "live v2").unwrap();
    let objects = stored_objects(&repo);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let original = std::fs::read(&objects[0]).unwrap();
    assert!(original.len() > 2_500_000, "{}", original.len());
    let mut tampered = original.clone();
    let near_end = tampered.len() - 50;
    tampered[near_end] ^= 0x01;
    std::fs::write(&objects[0], &tampered).unwrap();
    let t = failed(restore(&["--in-place"]));
    assert!(t.contains("corrupt"), "{t}");
    assert_eq!(
        std::fs::read_to_string(src.join("index.php")).unwrap(),
        "live v2"
    );

    // And a whole object restores in place, setuid bits included.
    std::fs::write(&objects[0], &original).unwrap();
    ok(restore(&["--in-place"]));
    assert_eq!(
        std::fs::read_to_string(src.join("index.php")).unwrap(),
        "<?php echo 'hi';\n"
    );
    assert_eq!(tool_mode(Path::new("/")), 0o4755);
}

/// Issue 21: a watched config job snapshots the live tree when the agent
/// starts (reason `baseline`), so the state before the first change can be
/// rolled back to exactly: content, modes and owners back, the file added
/// since removed (after `--diff` named it), the job's excluded files kept.
#[test]
fn config_rollback_to_the_baseline_is_exact() {
    use std::os::unix::fs::MetadataExt;
    let setup = Setup::new();
    let etc = setup.path("etc/app");
    std::fs::create_dir_all(etc.join("conf.d")).unwrap();
    std::fs::write(etc.join("app.conf"), "workers = 4\n").unwrap();
    std::fs::set_permissions(etc.join("app.conf"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(etc.join("conf.d/site.conf"), "listen 80;\n").unwrap();
    std::os::unix::fs::chown(etc.join("conf.d/site.conf"), Some(33), Some(33)).unwrap();
    std::fs::write(etc.join("state.tmp"), "excluded before").unwrap();
    let config = setup.config(&format!(
        "[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n[backup.jobs.etc]\nkind = \"config\"\npaths = [\"{}\"]\nexclude = [\"*.tmp\"]\nwatch = true\nwatch_interval_secs = 1\ndebounce_secs = 1\n",
        setup.path("repo").display(),
        etc.display()
    ));
    let before = tree_hash(&etc);
    let list = || {
        let o = ok(steward(
            &[
                "-c",
                s(&config),
                "restore",
                "list",
                "--job",
                "etc",
                "--json",
            ],
            &[],
        ));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array().unwrap().clone()
    };
    assert!(list().is_empty(), "a snapshot exists before the agent ran");

    let (agent, _) = spawn_agent(&config);
    let wait_for = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let l = list();
            if l.len() >= n {
                return l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} snapshots expected, have {l:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let snapshots = wait_for(1);
    let baseline = snapshots[0].clone();
    assert!(
        baseline.to_string().contains("baseline"),
        "the first snapshot's reason: {baseline}"
    );
    let baseline_id = baseline["manifest"]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The change that breaks the service.
    std::fs::write(etc.join("app.conf"), "workers = 400\n").unwrap();
    std::fs::set_permissions(etc.join("app.conf"), std::fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(etc.join("conf.d/site.conf"), Some(0), Some(0)).unwrap();
    std::fs::write(etc.join("conf.d/broken.conf"), "listen 81;\n").unwrap();
    std::fs::write(etc.join("state.tmp"), "excluded after").unwrap();
    wait_for(2);
    drop(agent);

    let o = ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "etc",
            &baseline_id,
            "--diff",
        ],
        &[],
    ));
    let t = text(&o);
    assert!(
        t.contains("conf.d/broken.conf") && t.contains("--exact removes it"),
        "{t}"
    );
    assert!(!t.contains("state.tmp"), "an excluded file is listed: {t}");

    // Without --exact the added file stays; with it, the tree is exact.
    ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "etc",
            &baseline_id,
            "--in-place",
        ],
        &[],
    ));
    assert!(etc.join("conf.d/broken.conf").exists());
    let o = ok(steward(
        &[
            "-c",
            s(&config),
            "restore",
            "-i",
            s(&setup.key),
            "etc",
            &baseline_id,
            "--in-place",
            "--exact",
        ],
        &[],
    ));
    assert!(text(&o).contains("removed 1 entries"), "{}", text(&o));
    assert!(!etc.join("conf.d/broken.conf").exists());
    assert_eq!(
        std::fs::read_to_string(etc.join("state.tmp")).unwrap(),
        "excluded after",
        "an excluded file was touched"
    );
    std::fs::write(etc.join("state.tmp"), "excluded before").unwrap();
    let after = tree_hash(&etc);
    // state.tmp was rewritten by the test: compare everything else exactly.
    let strip = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|l| !l.starts_with("state.tmp"))
            .collect()
    };
    assert_eq!(strip(after), strip(before));
    assert_eq!(
        std::fs::metadata(etc.join("conf.d/site.conf"))
            .unwrap()
            .uid(),
        33
    );
}
