//! Any bytes as a nginx stub_status page; the harness is
//! `steward_exporters::fuzzing::stub_status` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_exporters::fuzzing::stub_status(data);
});
