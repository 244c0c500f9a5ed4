//! Profiling aid: runs N scrapes of the default node collectors and encodes
//! each, on a current-thread runtime, so `valgrind --tool=callgrind` or
//! `perf` see only the collect + merge + encode path.
//!
//!     cargo build --release -p steward-exporters --example node_scrape
//!     valgrind --tool=callgrind target/release/examples/node_scrape 20

use std::time::{Duration, Instant};

use steward_exporters::{exposition, node, ScrapeOptions, Scraper};

fn main() {
    let scrapes: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("node_scrape: cannot start a Tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let scraper = Scraper::new(node::collectors(&node::NodeConfig::default()));
    let options = ScrapeOptions {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let started = Instant::now();
    let mut bytes = 0;
    runtime.block_on(async {
        for _ in 0..scrapes {
            let output = scraper.scrape(&options).await;
            bytes = exposition::encode(&output.families).len();
        }
    });
    let per = started.elapsed() / scrapes.max(1) as u32;
    println!("{scrapes} scrapes, {bytes} bytes each, {per:?} wall per scrape");
}
