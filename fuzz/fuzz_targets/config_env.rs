//! Any bytes as an environment (first line) and TOML configuration text
//! for the agent's `${VAR}` substitution and secret scrubbing. The agent
//! is a binary crate, so this target compiles its `config/env.rs` as a
//! module of its own (build.rs sets the `fuzzing` cfg its harness is under).
#![no_main]

#[path = "../../agent/src/config/env.rs"]
mod env;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    env::fuzz_substitute(data);
});
