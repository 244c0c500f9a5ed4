//! A backup test environment: an age key pair made with the stock
//! `age-keygen`, a state directory, a local target directory and a config
//! file, plus helpers to run `steward backup ...` and to decrypt stored
//! objects with the stock `age` and `zstd` CLIs (the escape hatch).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::process::steward_bin;

/// Host name the tests put in `[agent]` (the snapshot key's host segment).
pub const HOST: &str = "testhost";

#[derive(Debug)]
pub struct BackupEnv {
    pub dir: tempfile::TempDir,
    /// The age identity file (private key).
    pub key: PathBuf,
    /// Its recipient (`age1...`).
    pub recipient: String,
    pub state: PathBuf,
    /// Root of the `local` target.
    pub store: PathBuf,
    pub config: PathBuf,
}

/// Fails with a clear message when a stock tool is missing.
pub fn require_tool(tool: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: install the Debian package listed in scripts/apt-packages.txt"
    );
}

impl BackupEnv {
    pub fn new() -> Self {
        require_tool("age");
        require_tool("age-keygen");
        require_tool("zstd");
        let dir = tempfile::Builder::new()
            .prefix("steward-backup-")
            .tempdir()
            .expect("tempdir");
        let key = dir.path().join("backup.key");
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&key)
            .output()
            .expect("age-keygen");
        assert!(
            out.status.success(),
            "age-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(&key)
            .output()
            .expect("age-keygen -y");
        let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(recipient.starts_with("age1"), "{recipient}");
        let state = dir.path().join("state");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&state).unwrap();
        let config = dir.path().join("steward.toml");
        BackupEnv {
            dir,
            key,
            recipient,
            state,
            store,
            config,
        }
    }

    /// `[agent]` + `[backup]` header (recipients, `local` target) followed
    /// by `rest` (more targets and jobs, as `[backup.jobs.x]` tables).
    pub fn config_text(&self, rest: &str) -> String {
        format!(
            "[agent]\nhostname = \"{HOST}\"\nstate_dir = \"{}\"\nlisten = \"127.0.0.1:1\"\n\n[backup]\nrecipients = [\"{}\"]\n\n[backup.targets.local]\nkind = \"local\"\npath = \"{}\"\n\n{rest}\n",
            self.state.display(),
            self.recipient,
            self.store.display()
        )
    }

    pub fn write_config(&self, rest: &str) {
        std::fs::write(&self.config, self.config_text(rest)).unwrap();
    }

    /// Runs `steward <args> --config <config>`.
    pub fn steward(&self, args: &[&str]) -> Output {
        Command::new(steward_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run steward")
    }

    /// `steward backup run JOB --json`: (exit code, report JSON or Null, stderr).
    pub fn run_job(&self, job: &str) -> (i32, serde_json::Value, String) {
        let out = self.steward(&["backup", "run", job, "--json", "--quiet"]);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code().unwrap_or(-1),
            report,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// `steward backup list --json` (all targets).
    pub fn list(&self, job: &str) -> Vec<serde_json::Value> {
        let out = self.steward(&["backup", "list", "--job", job, "--json"]);
        assert!(
            out.status.success(),
            "list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("list JSON")
    }

    /// Every file under the local store (relative paths).
    pub fn stored_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.store, &self.store, &mut out);
        out.sort();
        out
    }

    /// Manifests in the local store for `job`.
    pub fn manifests(&self, job: &str) -> Vec<String> {
        self.stored_files()
            .into_iter()
            .filter(|f| f.starts_with(&format!("{HOST}/{job}/")) && f.ends_with("/manifest.json"))
            .collect()
    }

    /// Decrypts and decompresses an encrypted object with the stock CLIs:
    /// `age -d -i KEY FILE | zstd -d > OUT`.
    pub fn decrypt_to(&self, encrypted: &Path, out: &Path) {
        let status = Command::new("bash")
            .arg("-c")
            .arg("set -o pipefail; age -d -i \"$1\" \"$2\" | zstd -d -q -f -o \"$3\"")
            .arg("bash")
            .arg(&self.key)
            .arg(encrypted)
            .arg(out)
            .status()
            .expect("sh");
        assert!(
            status.success(),
            "age -d | zstd -d failed for {}",
            encrypted.display()
        );
    }
}

impl Default for BackupEnv {
    fn default() -> Self {
        Self::new()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.display().to_string());
        }
    }
}

/// sha256 of a file, hex (with `sha256sum`, a stock tool).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// BLAKE3 of a file, hex (with `b3sum`, Debian's stock tool): what a
/// manifest of format 2 records for the plaintext.
pub fn b3sum_file(path: &Path) -> String {
    let out = Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .expect("b3sum (Debian package b3sum, in scripts/apt-packages.txt)");
    assert!(out.status.success(), "b3sum {}: {out:?}", path.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `len` bytes of pseudo-random, incompressible data (fast, no
/// /dev/urandom reads per byte).
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).unwrap();
}
