//! The Debian package as an administrator meets it: `scripts/build-deb`
//! packages the debug binary (same files, same scripts as a release
//! package), lintian judges it, and dpkg installs, reinstalls, upgrades and
//! purges it for real, with its maintainer scripts creating and deleting
//! the `steward` user. All dpkg work happens in a private mount namespace
//! whose /etc, /usr and /var are overlays of the machine's: the machine
//! (and tests running beside this one, which must not find an
//! /etc/steward/steward.toml) sees nothing of it, and what the package
//! left behind is exactly what the overlays' upper layers hold.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use steward_tests::steward_bin;

/// The overlaid trees: everything dpkg, adduser and the maintainer scripts
/// write is under these.
const OVERLAID: [&str; 3] = ["etc", "usr", "var"];

/// A root file system of our own on top of the machine's.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "the package test runs dpkg and mounts overlays: run it as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        for d in OVERLAID {
            std::fs::create_dir_all(dir.path().join(d).join("upper")).unwrap();
            std::fs::create_dir_all(dir.path().join(d).join("work")).unwrap();
        }
        Sandbox { dir }
    }

    fn upper(&self, tree: &str) -> PathBuf {
        self.dir.path().join(tree).join("upper")
    }

    /// Runs `script` (bash) as root inside a new mount namespace with the
    /// overlays mounted; each call sees what the previous ones left.
    fn run(&self, script: &str) -> Output {
        let mounts: String = OVERLAID
            .iter()
            .map(|d| {
                format!(
                    "mount -t overlay overlay -o lowerdir=/{d},upperdir={s}/{d}/upper,workdir={s}/{d}/work /{d}\n",
                    s = self.dir.path().display()
                )
            })
            .collect();
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "bash", "-euc"])
            .arg(format!("{mounts}{script}"))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run unshare (util-linux)")
    }

    /// Like `run`, and fails the test with both outputs unless it exits 0.
    fn ok(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "{script}\nexit {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every path an upper layer holds, as an absolute path of the sandbox.
    fn changed(&self) -> Vec<PathBuf> {
        let mut all = Vec::new();
        for tree in OVERLAID {
            walk(&self.upper(tree), &Path::new("/").join(tree), &mut all);
        }
        all
    }
}

fn walk(dir: &Path, shown: &Path, all: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = shown.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            walk(&entry.path(), &path, all);
        }
        all.push(path);
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `scripts/build-deb --binary <debug steward>`; returns the .deb's path.
fn build_deb(out: &Path, revision: u32) -> PathBuf {
    let output = Command::new(workspace().join("scripts/build-deb"))
        .arg("--binary")
        .arg(steward_bin())
        .arg("--out")
        .arg(out)
        .args(["--revision", &revision.to_string(), "--fast"])
        .current_dir(workspace())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "build-deb failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default());
    assert!(deb.is_file(), "build-deb printed {deb:?}");
    deb
}

#[test]
fn the_package_passes_lintian_installs_keeps_edits_and_purges_clean() {
    let debs = tempfile::tempdir().unwrap();
    let deb = build_deb(debs.path(), 1);
    let upgrade = build_deb(debs.path(), 2);
    assert!(deb.ends_with(format!(
        "steward_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        String::from_utf8(
            Command::new("dpkg")
                .arg("--print-architecture")
                .output()
                .unwrap()
                .stdout
        )
        .unwrap()
        .trim()
    )));

    // lintian: no error and no warning left unexplained (the overrides the
    // package ships carry their reasons).
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .arg(&deb)
        .output()
        .expect("cannot run lintian (apt-get install lintian)");
    let report = String::from_utf8_lossy(&lintian.stdout);
    assert!(
        lintian.status.success()
            && !report
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian:\n{report}\n{}",
        String::from_utf8_lossy(&lintian.stderr)
    );

    let sandbox = Sandbox::new();
    let deb = deb.display();
    let upgrade = upgrade.display();
    sandbox.ok(&format!("dpkg -i {deb}"));

    // The binary, its version and its documentation.
    let version = sandbox.ok("steward --version");
    assert!(
        version.starts_with(&format!("steward {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let listing = sandbox.ok("dpkg -L steward");
    for path in [
        "/usr/bin/steward",
        "/lib/systemd/system/steward.service",
        "/etc/steward/steward.toml",
        "/usr/share/man/man1/steward.1.gz",
        "/usr/share/man/man1/steward-agent.1.gz",
        "/usr/share/bash-completion/completions/steward",
        "/usr/share/zsh/vendor-completions/_steward",
        "/usr/share/fish/vendor_completions.d/steward.fish",
        "/usr/share/steward/alerts/host.rules.yml",
        "/usr/share/steward/dashboards/host.json",
        "/usr/share/steward/examples/steward.toml",
        "/usr/share/doc/steward/copyright",
    ] {
        assert!(
            listing.lines().any(|l| l == path),
            "{path} not in:\n{listing}"
        );
    }
    let man = sandbox.ok("man -w steward-agent && zcat /usr/share/man/man1/steward-agent.1.gz");
    assert!(man.contains("web.config.file"), "{man}");
    sandbox.ok(
        "bash -c 'source /usr/share/bash-completion/completions/steward && complete -p steward'",
    );
    sandbox.ok("zsh_line=$(head -1 /usr/share/zsh/vendor-completions/_steward); [ \"$zsh_line\" = '#compdef steward' ]");
    sandbox.ok("grep -q 'complete -c steward' /usr/share/fish/vendor_completions.d/steward.fish");

    // The user, its groups, its private directories, the enabled unit.
    let user = sandbox.ok("getent passwd steward; id -nG steward");
    assert!(
        user.contains(":/var/lib/steward:/usr/sbin/nologin"),
        "{user}"
    );
    assert!(
        user.lines().nth(1).unwrap().split(' ').any(|g| g == "adm"),
        "{user}"
    );
    let dirs = sandbox.ok("stat -c '%n %a %U %G' /var/lib/steward /var/backups/steward");
    assert_eq!(
        dirs,
        "/var/lib/steward 700 steward steward\n/var/backups/steward 700 steward steward\n"
    );
    sandbox.ok("test -L /etc/systemd/system/multi-user.target.wants/steward.service");
    // The installed configuration is valid, read as the service reads it.
    sandbox.ok("runuser -u steward -- steward config check --config /etc/steward/steward.toml");

    // The unit as installed: systemd accepts it, and rates it 3.0 or better.
    let verify = sandbox.run("systemd-analyze verify /lib/systemd/system/steward.service");
    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && verify_err.trim().is_empty(),
        "systemd-analyze verify: {verify_err}"
    );
    let security = sandbox.ok(
        "systemd-analyze security --offline=true --no-pager /lib/systemd/system/steward.service",
    );
    let exposure: f64 = security
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for steward.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{security}"))
        .parse()
        .unwrap();
    assert!(exposure <= 3.0, "exposure {exposure}:\n{security}");

    // An edited conffile survives a reinstall and an upgrade.
    sandbox.ok("echo '# edited by the administrator' >> /etc/steward/steward.toml");
    sandbox.ok(&format!("dpkg -i {deb}"));
    sandbox.ok("grep -qx '# edited by the administrator' /etc/steward/steward.toml");
    sandbox.ok(&format!("dpkg -i {upgrade}"));
    let installed = sandbox.ok("dpkg-query -W -f '${Version}' steward");
    assert_eq!(installed, format!("{}-2", env!("CARGO_PKG_VERSION")));
    sandbox.ok("grep -qx '# edited by the administrator' /etc/steward/steward.toml");
    // State written while installed goes with the purge.
    sandbox.ok("runuser -u steward -- touch /var/lib/steward/state-file");

    // Remove keeps the configuration; purge leaves nothing.
    sandbox.ok("dpkg -r steward");
    sandbox.ok("test -f /etc/steward/steward.toml && ! test -e /usr/bin/steward");
    sandbox.ok("dpkg --purge steward");
    sandbox.ok("! getent passwd steward && ! getent group steward");
    sandbox.ok("! ls /var/lib/dpkg/info | grep '^steward\\.'");
    let left: Vec<PathBuf> = sandbox
        .changed()
        .into_iter()
        .filter(|p| !same_as_before(&sandbox, p) && !bookkeeping(p))
        .collect();
    assert!(left.is_empty(), "left behind after purge: {left:#?}");

    // Snapshots in the local target are the administrator's: a purge keeps
    // them and says so.
    sandbox.ok(&format!("dpkg -i {deb}"));
    sandbox.ok("runuser -u steward -- touch /var/backups/steward/a-snapshot");
    let purge = sandbox.run("dpkg --purge steward");
    assert!(purge.status.success());
    assert!(
        String::from_utf8_lossy(&purge.stderr).contains("kept /var/backups/steward"),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    sandbox.ok("test -f /var/backups/steward/a-snapshot && ! test -e /var/lib/steward");
}

/// A path of the upper layer that equals the machine's own: a directory
/// that exists below, or a file rewritten with its old content (adduser
/// then deluser rewrite /etc/passwd to what it was).
fn same_as_before(sandbox: &Sandbox, shown: &Path) -> bool {
    let rel = shown.strip_prefix("/").unwrap();
    let tree = rel.iter().next().unwrap().to_str().unwrap();
    let in_upper = sandbox.upper(tree).join(rel.strip_prefix(tree).unwrap());
    let meta = std::fs::symlink_metadata(&in_upper).unwrap();
    let Ok(lower) = std::fs::symlink_metadata(shown) else {
        return false;
    };
    if meta.is_dir() {
        return lower.is_dir();
    }
    meta.is_file() && lower.is_file() && std::fs::read(&in_upper).ok() == std::fs::read(shown).ok()
}

/// Records of what happened, which outlive any package by design: dpkg's
/// database and log, the previous copies of the account files that
/// adduser and deluser keep, and man-db's cache (its index and formatted
/// pages, which man-db's daily job expires). None is the package's.
fn bookkeeping(p: &Path) -> bool {
    let s = p.to_str().unwrap();
    s.starts_with("/var/lib/dpkg/")
        || s.starts_with("/var/cache/man/")
        || s == "/var/log/dpkg.log"
        || matches!(
            s,
            "/etc/passwd-"
                | "/etc/group-"
                | "/etc/shadow-"
                | "/etc/gshadow-"
                | "/etc/subuid-"
                | "/etc/subgid-"
        )
}
