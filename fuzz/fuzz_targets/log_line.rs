//! Any bytes as a log record, parser named on the first line; the harness is
//! `steward_telemetry::fuzzing::log_line` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_telemetry::fuzzing::log_line(data);
});
