//! Bakes the git revision into the binary for `--version` and
//! `steward_build_info{revision}`, and lays out the release executable so
//! that the code a running agent uses sits together (see `link_layout`).

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
    revision();
    link_layout();
}

/// Release builds on x86_64 Linux, linked by rustc's bundled LLD (the
/// default since Rust 1.90), get two linker options that cut the agent's
/// resident memory without changing a line of code:
///
/// - `-z pack-relative-relocs`: PIE relocations as DT_RELR, a few KiB
///   instead of a 2 MiB `.rela.dyn` table the loader reads at every start.
/// - `--symbol-ordering-file=agent/hot-symbols.txt`: the functions a
///   running agent executes (recorded by `scripts/gen-hot-symbols`) are
///   placed first in `.text`. The kernel maps executable pages 64 KiB at a
///   time around each page fault, so hot code scattered over a 20 MB
///   `.text` costs several MiB of RSS; packed together it costs little
///   more than its own size. Names missing from the current build (the
///   list is older than the code) are skipped silently: the layout
///   degrades, the build never fails.
///
/// `STEWARD_PLAIN_LINK=1`, or rustflags that choose another linker, turn
/// both off.
fn link_layout() {
    println!("cargo:rerun-if-env-changed=STEWARD_PLAIN_LINK");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order_file = manifest_dir.join("hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", order_file.display());
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let bundled_lld = std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && !std::env::var("CARGO_ENCODED_RUSTFLAGS")
            .unwrap_or_default()
            .contains("link");
    if !release || !bundled_lld || std::env::var_os("STEWARD_PLAIN_LINK").is_some() {
        return;
    }
    println!("cargo:rustc-link-arg-bin=steward=-Wl,-z,pack-relative-relocs");
    if order_file.exists() {
        println!(
            "cargo:rustc-link-arg-bin=steward=-Wl,--symbol-ordering-file={}",
            order_file.display()
        );
        println!("cargo:rustc-link-arg-bin=steward=-Wl,--no-warn-symbol-ordering");
    }
}

fn revision() {
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
