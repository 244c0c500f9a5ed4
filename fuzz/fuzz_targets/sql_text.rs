//! Any bytes as a MySQL/PostgreSQL result set as text, query named on the first line; the harness is
//! `steward_exporters::fuzzing::sql_text` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_exporters::fuzzing::sql_text(data);
});
