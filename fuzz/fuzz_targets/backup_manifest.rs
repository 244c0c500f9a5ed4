//! Any bytes as a backup `manifest.json` read from a bucket; the harness is
//! `steward_backup::fuzzing::backup_manifest` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_backup::fuzzing::backup_manifest(data);
});
