//! Sets the `fuzzing` cfg for this crate, so the agent's `config/env.rs`
//! (compiled here as a module, see fuzz_targets/config_env.rs) has its
//! harness under both `cargo fuzz` and a plain `cargo check`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    println!("cargo::rustc-cfg=fuzzing");
}
