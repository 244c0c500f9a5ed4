//! The netstat collector: protocol counters of /proc/net/netstat,
//! /proc/net/snmp and /proc/net/snmp6 that `netstat_fields` selects. The files
//! come in two layouts (header/value line pairs; one `name value` per line),
//! hence two parsers.

use super::read::{num, read_optional, read_text};
use super::{NameFilter, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

pub(crate) fn netstat(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    let mut out = Vec::with_capacity(64);
    for file in ["net/netstat", "net/snmp"] {
        let text = read_text(&s.proc_path(file))?;
        netstat_pairs_from(&text, &s.netstat_fields, &mut out);
    }
    if let Some(text) = read_optional(&s.proc_path("net/snmp6"))? {
        snmp6_from(&text, &s.netstat_fields, &mut out);
    }
    Ok(out)
}

fn netstat_family(proto: &str, field: &str, value: &str) -> MetricFamily {
    MetricFamily::untyped(
        format!("node_netstat_{proto}_{field}"),
        format!("Statistic {proto}{field}."),
    )
    .value(num(value))
}

/// /proc/net/{netstat,snmp}: a header line of names then a line of values
/// per protocol.
pub(crate) fn netstat_pairs_from(text: &str, fields: &NameFilter, out: &mut Vec<MetricFamily>) {
    let mut fields = fields.pass();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        let mut key = String::with_capacity(48);
        for (name, value) in names
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            key.clear();
            key.push_str(proto);
            key.push('_');
            key.push_str(name);
            if fields.is_match(&key) {
                out.push(netstat_family(proto, name, value));
            }
        }
    }
}

/// /proc/net/snmp6: `Ip6InOctets 128` lines; the protocol ends at the `6`.
pub(crate) fn snmp6_from(text: &str, fields: &NameFilter, out: &mut Vec<MetricFamily>) {
    let mut fields = fields.pass();
    let mut key = String::with_capacity(48);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(six) = name.find('6') else { continue };
        let (proto, field) = name.split_at(six + 1);
        key.clear();
        key.push_str(proto);
        key.push('_');
        key.push_str(field);
        if fields.is_match(&key) {
            out.push(netstat_family(proto, field, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::{re, text};

    #[test]
    fn netstat_snmp_and_snmp6_with_default_fields() {
        let netstat = "TcpExt: SyncookiesSent ListenDrops TCPTimeouts PruneCalled\nTcpExt: 0 3 2 9\nIpExt: InOctets OutOctets InMcastPkts\nIpExt: 155496767 261840 4\n";
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 100\nTcp: RtoMin ActiveOpens CurrEstab InErrs\nTcp: 200 34 4 0\nUdpLite: InDatagrams InErrors\nUdpLite: 0 0\n";
        let snmp6 = "Ip6InReceives                   \t1\nIp6InOctets 128\nIcmp6InMsgs 1\nUdpLite6InErrors 0\nUdp6NoPorts 0\n";
        let fields = re(crate::node::DEFAULT_NETSTAT_FIELDS);
        let mut fams = Vec::new();
        netstat_pairs_from(netstat, &fields, &mut fams);
        netstat_pairs_from(snmp, &fields, &mut fams);
        snmp6_from(snmp6, &fields, &mut fams);
        let out = text(&fams);
        for want in [
            "node_netstat_TcpExt_SyncookiesSent 0\n",
            "node_netstat_TcpExt_ListenDrops 3\n",
            "node_netstat_TcpExt_TCPTimeouts 2\n",
            "node_netstat_IpExt_InOctets 1.55496767e+08\n",
            "node_netstat_Ip_Forwarding 2\n",
            "node_netstat_Tcp_ActiveOpens 34\n",
            "node_netstat_Tcp_CurrEstab 4\n",
            "node_netstat_Tcp_InErrs 0\n",
            "node_netstat_UdpLite_InErrors 0\n",
            "node_netstat_Ip6_InOctets 128\n",
            "node_netstat_Icmp6_InMsgs 1\n",
            "node_netstat_UdpLite6_InErrors 0\n",
            "node_netstat_Udp6_NoPorts 0\n",
            "# TYPE node_netstat_Tcp_InErrs untyped\n",
        ] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
        assert!(!out.contains("PruneCalled"));
        assert!(!out.contains("DefaultTTL"));
        assert!(!out.contains("Ip6_InReceives"));
        assert!(!out.contains("InMcastPkts"));
    }
}
