//! Debian's prometheus-node-exporter on a free loopback port, the reference
//! the node tests compare Steward with.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, http_get, wait_for_http, ChildGuard};

pub struct NodeExporter {
    // Held for its Drop: stops node_exporter when the test ends.
    _guard: ChildGuard,
    pub port: u16,
}

impl NodeExporter {
    /// Starts node_exporter with `args` after its listen address (none:
    /// its defaults, reading the host) and waits until it serves /metrics.
    pub fn start(args: &[String]) -> NodeExporter {
        let port = free_port();
        let mut cmd = Command::new("prometheus-node-exporter");
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = ChildGuard::spawn("prometheus-node-exporter", &mut cmd)
            .unwrap_or_else(|e| panic!("{e}; install the Debian package prometheus-node-exporter"));
        wait_for_http(port, "/metrics", Duration::from_secs(30))
            .expect("node_exporter did not start");
        NodeExporter {
            _guard: guard,
            port,
        }
    }

    /// One scrape's text.
    pub fn scrape(&self) -> String {
        let (status, _, body) = http_get(self.port, "/metrics", &[]).expect("scrape node_exporter");
        assert_eq!(status, 200);
        String::from_utf8(body).expect("utf-8")
    }
}
