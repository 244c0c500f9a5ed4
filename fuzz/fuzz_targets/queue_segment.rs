//! Any bytes as a telemetry queue segment (and ledger) found at startup; the harness is
//! `steward_telemetry::fuzzing::queue_segment` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_telemetry::fuzzing::queue_segment(data);
});
