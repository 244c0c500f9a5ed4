//! Any bytes as an nginx stub_status page: parse, and when it parses, the
//! metric families built from it encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_exporters::nginx::{families, parse_stub_status};

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = parse_stub_status(data) {
        let text = steward_exporters::exposition::encode(&families(Some(&status), &Vec::new()));
        assert!(text.contains("nginx_up 1\n"));
    }
});
