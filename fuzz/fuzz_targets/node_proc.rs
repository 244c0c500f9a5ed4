//! Any bytes as a node `/proc` or textfile `*.prom` file, named on the first line; the harness is
//! `steward_exporters::fuzzing::node_proc` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_exporters::fuzzing::node_proc(data);
});
