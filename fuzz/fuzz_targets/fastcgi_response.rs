//! Any bytes as a FastCGI response around a PHP-FPM status page; the harness is
//! `steward_exporters::fuzzing::fastcgi_response` (its seeds are a unit test there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    steward_exporters::fuzzing::fastcgi_response(data);
});
