//! Any bytes as a PHP-FPM `?json&full` status page: parse, and when it
//! parses, build and encode every family including per-process ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_exporters::phpfpm::{families, parse_status};

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = parse_status(data) {
        let fams = families(Some(&status), &status.pool, "unix:///x;/status", 0, true, true);
        let _ = steward_exporters::exposition::encode(&fams);
    }
});
