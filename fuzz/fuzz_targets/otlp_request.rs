//! Any bytes as a OTLP/HTTP request body as the receiver takes it; the harness is
//! `steward_telemetry::fuzzing::otlp_request` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_telemetry::fuzzing::otlp_request(data);
});
