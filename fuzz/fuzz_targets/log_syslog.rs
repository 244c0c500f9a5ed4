//! Log file bytes assembled into records and parsed as the tailer does;
//! the harness is `steward_telemetry::fuzzing::log_syslog` (its seeds are a unit
//! test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_telemetry::fuzzing::log_syslog(data);
});
