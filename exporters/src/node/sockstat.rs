//! The sockstat collector: sockets in use per protocol and their memory,
//! from /proc/net/sockstat and sockstat6.

use super::read::{num, read_optional};
use super::{gauge, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn sockstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let page = rustix::param::page_size() as f64;
    let mut out = Vec::with_capacity(24);
    if let Some(text) = read_optional(&s.proc_path("net/sockstat"))? {
        sockstat_from(&text, page, &mut out);
    }
    if let Some(text) = read_optional(&s.proc_path("net/sockstat6"))? {
        sockstat_from(&text, page, &mut out);
    }
    Ok(out)
}

/// `TCP: inuse 6 orphan 0 ... mem 335` becomes `node_sockstat_TCP_inuse`
/// etc.; `mem` (pages) also as `_mem_bytes`.
pub(crate) fn sockstat_from(text: &str, page_size: f64, out: &mut Vec<MetricFamily>) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        for pair in words.chunks(2) {
            let [key, value] = pair else { continue };
            let value = num(value);
            if proto == "sockets" {
                if *key == "used" {
                    out.push(gauge(
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                        value,
                    ));
                }
                continue;
            }
            out.push(gauge(
                &format!("node_sockstat_{proto}_{key}"),
                &format!("Number of {proto} sockets in state {key}."),
                value,
            ));
            if *key == "mem" {
                out.push(gauge(
                    &format!("node_sockstat_{proto}_mem_bytes"),
                    &format!("Memory of {proto} sockets, in bytes."),
                    value * page_size,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn sockstat_fields_and_mem_bytes() {
        let fixture = "sockets: used 24\nTCP: inuse 6 orphan 0 tw 1 alloc 6 mem 335\nUDP: inuse 0 mem 0\nFRAG: inuse 0 memory 0\nTCP6: inuse 2\n";
        let mut fams = Vec::new();
        sockstat_from(fixture, 4096.0, &mut fams);
        let out = text(&fams);
        for want in [
            "node_sockstat_sockets_used 24\n",
            "node_sockstat_TCP_inuse 6\n",
            "node_sockstat_TCP_tw 1\n",
            "node_sockstat_TCP_mem 335\n",
            "node_sockstat_TCP_mem_bytes 1.37216e+06\n",
            "node_sockstat_UDP_mem_bytes 0\n",
            "node_sockstat_FRAG_memory 0\n",
            "node_sockstat_TCP6_inuse 2\n",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
    }
}
