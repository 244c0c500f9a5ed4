//! Bakes the git revision into the binary for `--version` and
//! `steward_build_info{revision}`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let revision = std::env::var("STEWARD_REVISION")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    let revision = revision.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=STEWARD_REVISION_OR_UNKNOWN={revision}");
    println!("cargo:rerun-if-env-changed=STEWARD_REVISION");
    // HEAD itself only names the branch; a commit moves the branch's ref
    // (loose, or in packed-refs), so watch those too or the revision in a
    // rebuilt binary goes stale.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        let head = git_dir.join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let Some(reference) = std::fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            let loose = git_dir.join(&reference);
            if loose.exists() {
                println!("cargo:rerun-if-changed={}", loose.display());
            }
        }
        let packed = git_dir.join("packed-refs");
        if packed.exists() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
}
