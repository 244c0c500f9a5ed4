//! Any bytes as a object key from a bucket listing; the harness is
//! `steward_backup::fuzzing::bucket_key` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_backup::fuzzing::bucket_key(data);
});
