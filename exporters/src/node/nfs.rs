//! The nfs collector: NFS client RPC and per-procedure counters of
//! /proc/net/rpc/nfs; nothing until the NFS client module is loaded.

use std::collections::BTreeMap;

use super::read::read_optional;
use super::{counter, Settings};
use crate::collector::CollectError;
use crate::metrics::MetricFamily;

/// /proc/net/rpc/nfs exists once the NFS client module is loaded.
pub(crate) fn nfs(s: &Settings) -> Result<Vec<MetricFamily>, CollectError> {
    Ok(match read_optional(&s.proc_path("net/rpc/nfs"))? {
        Some(text) => nfs_from(&text),
        None => Vec::new(),
    })
}

/// Procedure names of the `proc2`, `proc3` and `proc4` lines, in the
/// kernel's order, as node_exporter spells them in `method`.
const NFS_V2_PROCEDURES: [&str; 18] = [
    "Null", "GetAttr", "SetAttr", "Root", "Lookup", "ReadLink", "Read", "WrCache", "Write",
    "Create", "Remove", "Rename", "Link", "SymLink", "MkDir", "RmDir", "ReadDir", "FsStat",
];
const NFS_V3_PROCEDURES: [&str; 22] = [
    "Null",
    "GetAttr",
    "SetAttr",
    "Lookup",
    "Access",
    "ReadLink",
    "Read",
    "Write",
    "Create",
    "MkDir",
    "SymLink",
    "MkNod",
    "Remove",
    "RmDir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadDirPlus",
    "FsStat",
    "FsInfo",
    "PathConf",
    "Commit",
];
const NFS_V4_CLIENT_PROCEDURES: [&str; 59] = [
    "Null",
    "Read",
    "Write",
    "Commit",
    "Open",
    "OpenConfirm",
    "OpenNoattr",
    "OpenDowngrade",
    "Close",
    "Setattr",
    "FsInfo",
    "Renew",
    "SetClientID",
    "SetClientIDConfirm",
    "Lock",
    "Lockt",
    "Locku",
    "Access",
    "Getattr",
    "Lookup",
    "LookupRoot",
    "Remove",
    "Rename",
    "Link",
    "Symlink",
    "Create",
    "Pathconf",
    "StatFs",
    "ReadLink",
    "ReadDir",
    "ServerCaps",
    "DelegReturn",
    "GetACL",
    "SetACL",
    "FsLocations",
    "ReleaseLockowner",
    "Secinfo",
    "FsidPresent",
    "ExchangeID",
    "CreateSession",
    "DestroySession",
    "Sequence",
    "GetLeaseTime",
    "ReclaimComplete",
    "LayoutGet",
    "GetDeviceInfo",
    "LayoutCommit",
    "LayoutReturn",
    "SecinfoNoName",
    "TestStateID",
    "FreeStateID",
    "GetDeviceList",
    "BindConnToSession",
    "DestroyClientID",
    "Seek",
    "Allocate",
    "DeAllocate",
    "LayoutStats",
    "Clone",
];

/// NFS client counters from /proc/net/rpc/nfs: `net` (packets by
/// transport, TCP connections), `rpc` (calls, retransmissions, credential
/// refreshes) and `procN` (a count, then one number per procedure). As
/// with node_exporter, a line the file lacks counts as zeros (every
/// procedure of every version is exported); a malformed line is left out.
pub(crate) fn nfs_from(text: &str) -> Vec<MetricFamily> {
    let mut lines: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(key) = words.next() else { continue };
        let values: Option<Vec<u64>> = words.map(|w| w.parse().ok()).collect();
        match values {
            Some(v) if !v.is_empty() => {
                lines.insert(key, v);
            }
            _ => tracing::debug!(line, "malformed /proc/net/rpc/nfs line"),
        }
    }
    // The numbers of a line with exactly `n` of them, zeros when absent.
    let fixed = |key: &str, n: usize| -> Option<Vec<u64>> {
        match lines.get(key) {
            None => Some(vec![0; n]),
            Some(v) if v.len() == n => Some(v.clone()),
            Some(_) => None,
        }
    };
    // A procN line: its count, then that many numbers; `min` procedures at
    // least, except NFSv4 whose older kernels list fewer (the rest are 0).
    let procedures = |key: &str, names: &[&str], min: usize| -> Option<Vec<u64>> {
        let Some(v) = lines.get(key) else {
            return Some(vec![0; names.len()]);
        };
        let count = usize::try_from(v[0]).ok()?;
        if v.len() - 1 != count || count < min {
            return None;
        }
        let mut out: Vec<u64> = v[1..].iter().copied().take(names.len()).collect();
        out.resize(names.len(), 0);
        Some(out)
    };
    let mut families = Vec::with_capacity(6);
    if let Some(net) = fixed("net", 4) {
        families.push(
            MetricFamily::counter(
                "node_nfs_packets_total",
                "NFS client network packets sent and received, by transport.",
            )
            .with([("protocol", "udp")], net[1] as f64)
            .with([("protocol", "tcp")], net[2] as f64),
        );
        families.push(counter(
            "node_nfs_connections_total",
            "TCP connections the NFS client made.",
            net[3] as f64,
        ));
    }
    if let Some(rpc) = fixed("rpc", 3) {
        families.push(counter(
            "node_nfs_rpcs_total",
            "RPC calls the NFS client made.",
            rpc[0] as f64,
        ));
        families.push(counter(
            "node_nfs_rpc_retransmissions_total",
            "RPC calls the NFS client retransmitted.",
            rpc[1] as f64,
        ));
        families.push(counter(
            "node_nfs_rpc_authentication_refreshes_total",
            "RPC credential refreshes of the NFS client.",
            rpc[2] as f64,
        ));
    }
    let mut requests = MetricFamily::counter(
        "node_nfs_requests_total",
        "NFS procedures the client called, by protocol version and procedure.",
    );
    for (key, proto, names, min) in [
        ("proc2", "2", &NFS_V2_PROCEDURES[..], 18),
        ("proc3", "3", &NFS_V3_PROCEDURES[..], 22),
        ("proc4", "4", &NFS_V4_CLIENT_PROCEDURES[..], 0),
    ] {
        let Some(values) = procedures(key, names, min) else {
            tracing::debug!(key, "malformed /proc/net/rpc/nfs procedure line");
            continue;
        };
        for (method, v) in names.iter().zip(values) {
            requests.push([("proto", proto), ("method", method)], v as f64);
        }
    }
    families.push(requests);
    families
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::test_support::text;

    #[test]
    fn nfs_client_lines_and_zero_defaults() {
        let out = text(&nfs_from(
            "net 18628 0 18628 6\nrpc 4329785 7 4338291\nproc3 22 1 4084749 29200 94754 32580 186 47747 7840 4572 5 0 0 0 3 0 0 0 0 12 2 2 0\nproc4 4 5 6 7 8\n",
        ));
        assert!(
            out.contains("node_nfs_packets_total{protocol=\"tcp\"} 18628\n"),
            "{out}"
        );
        assert!(out.contains("node_nfs_connections_total 6\n"));
        assert!(out.contains("node_nfs_rpc_retransmissions_total 7\n"));
        assert!(
            out.contains("node_nfs_requests_total{proto=\"3\",method=\"GetAttr\"} 4.084749e+06\n")
        );
        assert!(
            out.contains("node_nfs_requests_total{proto=\"2\",method=\"FsStat\"} 0\n"),
            "absent proc2 is zeros"
        );
        assert!(
            out.contains("node_nfs_requests_total{proto=\"4\",method=\"Commit\"} 8\n"),
            "{out}"
        );
        assert!(out.contains("node_nfs_requests_total{proto=\"4\",method=\"Clone\"} 0\n"));
        let bad = text(&nfs_from("net 1 2 3\nproc3 5 1 2\n"));
        assert!(!bad.contains("node_nfs_packets_total"), "{bad}");
        assert!(!bad.contains("proto=\"3\""), "{bad}");
        assert!(bad.contains("proto=\"2\""), "{bad}");
    }
}
