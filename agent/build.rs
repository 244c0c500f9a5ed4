//! Bakes the git revision into the binary for `--version` and
//! `steward_build_info{revision}`.

fn main() {
    let revision = std::env::var("STEWARD_REVISION").ok().or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let revision = revision.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=STEWARD_REVISION_OR_UNKNOWN={revision}");
    println!("cargo:rerun-if-env-changed=STEWARD_REVISION");
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
