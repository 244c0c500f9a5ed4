//! Any bytes as a PHP-FPM `?json&full` status page; the harness is
//! `steward_exporters::fuzzing::phpfpm_status` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_exporters::fuzzing::phpfpm_status(data);
});
