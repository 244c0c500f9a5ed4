//! The udp_queues collector: bytes waiting in UDP receive and send queues,
//! summed over sockets. It asks sock_diag when it can (see `sockdiag`) and
//! reads /proc/net/udp{,6} otherwise.

use std::path::Path;

use super::read::{hex, read_optional};
use super::Settings;
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn udp_queues(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let mut f = MetricFamily::gauge(
        "node_udp_queues",
        "Number of allocated memory in the kernel for UDP datagrams in bytes.",
    );
    use super::sockdiag::{udp_queue_totals, Family};
    // sock_diag answers for this process's network namespace, procfs for
    // the one it was mounted in: the dump is only used with the host's own
    // /proc, for a family whose file exists (no IPv6, no v6 series, as
    // node_exporter), and the file is read when the dump fails.
    let host_proc = s.proc == Path::new("/proc");
    for (file, ip, family) in [
        ("net/udp", "v4", Family::V4),
        ("net/udp6", "v6", Family::V6),
    ] {
        let path = s.proc_path(file);
        let dumped = if host_proc && path.exists() {
            udp_queue_totals(family)
                .map_err(|e| tracing::debug!(error = %e, "sock_diag dump failed; reading {file}"))
                .ok()
        } else {
            None
        };
        let totals = match dumped {
            Some(totals) => Some(totals),
            None => read_optional(&path)?.map(|text| udp_queues_from(&text)),
        };
        if let Some((tx, rx)) = totals {
            f.push([("ip", ip), ("queue", "rx")], rx);
            f.push([("ip", ip), ("queue", "tx")], tx);
        }
    }
    Ok(vec![f])
}

/// Sums the `tx_queue:rx_queue` column of /proc/net/udp{,6}.
pub(crate) fn udp_queues_from(text: &str) -> (f64, f64) {
    let (mut tx, mut rx) = (0.0, 0.0);
    for line in text.lines().skip(1) {
        if let Some((t, r)) = line
            .split_ascii_whitespace()
            .nth(4)
            .and_then(|q| q.split_once(':'))
        {
            tx += hex(t);
            rx += hex(r);
        }
    }
    (tx, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_queues_sum_the_hex_queue_column() {
        let udp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000:0044 00000000:0000 07 00000010:00000100 00:00000000 00000000     0        0 1 2 0 0\n  2: 00000000:0045 00000000:0000 07 00000001:00000001 00:00000000 00000000     0        0 1 2 0 0\n";
        assert_eq!(udp_queues_from(udp), (17.0, 257.0));
    }
}
