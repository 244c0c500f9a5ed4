//! Any bytes as what a FastCGI server answers, fed in two pieces at a
//! split the input chooses, then the CGI header split and the status parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_exporters::phpfpm::{fastcgi, parse_status};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| usize::from(*b)).unwrap_or(0).min(data.len());
    let mut decoder = fastcgi::ResponseDecoder::new(1 << 20);
    let complete = match decoder.push(&data[..split]) {
        Ok(true) => true,
        Ok(false) => matches!(decoder.push(&data[split..]), Ok(true)),
        Err(_) => return,
    };
    if complete {
        if let Ok(response) = decoder.finish() {
            if let Ok((_, body)) = fastcgi::split_cgi(&response.stdout) {
                let _ = parse_status(body);
            }
        }
    }
});
