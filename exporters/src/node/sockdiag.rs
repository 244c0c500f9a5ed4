//! UDP queue totals over NETLINK_SOCK_DIAG (what `ss -u` uses): one dump per
//! address family walks the kernel's UDP hash table once. Reading
//! /proc/net/udp walks all of it at least twice per file, because every
//! read(2) of that seq file starts over from the first bucket and the
//! end-of-file read is one more walk; on an idle host those walks were the
//! largest single kernel cost of a node scrape.

use std::io;

use super::netlink::{self, u32_at};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const IPPROTO_UDP: u8 = 17;
/// Offsets in `struct inet_diag_msg` (4 bytes of family/state/timer/
/// retransmits, the 48-byte socket id, then expires, rqueue, wqueue).
const RQUEUE_AT: usize = 56;
const WQUEUE_AT: usize = 60;

/// Which family to dump: the constants are the kernel's AF_INET/AF_INET6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4 = 2,
    V6 = 10,
}

/// Sum of (tx, rx) queue bytes of every UDP socket of `family`, the same
/// `sk_wmem_alloc_get` / `udp_rqueue_get` values /proc/net/udp prints as
/// `tx_queue:rx_queue`.
pub(crate) fn udp_queue_totals(family: Family) -> io::Result<(f64, f64)> {
    let mut totals = (0.0, 0.0);
    netlink::dump(
        Some(rustix::net::netlink::SOCK_DIAG),
        "sock_diag",
        &dump_request(family),
        |kind, body| add_socket(kind, body, &mut totals),
    )?;
    Ok(totals)
}

/// `struct inet_diag_req_v2`: family, protocol, extensions, pad, states
/// (all), then a 48-byte `inet_diag_sockid` left zero (any address, port).
fn dump_request(family: Family) -> Vec<u8> {
    let mut payload = Vec::with_capacity(56);
    payload.extend_from_slice(&[family as u8, IPPROTO_UDP, 0, 0]);
    payload.extend_from_slice(&u32::MAX.to_ne_bytes());
    payload.extend_from_slice(&[0u8; 48]);
    netlink::dump_request(SOCK_DIAG_BY_FAMILY, &payload)
}

fn add_socket(kind: u16, body: &[u8], totals: &mut (f64, f64)) -> io::Result<()> {
    if kind == SOCK_DIAG_BY_FAMILY {
        let malformed = || netlink::malformed("sock_diag", "socket message");
        let rx = u32_at(body, RQUEUE_AT).ok_or_else(malformed)?;
        let tx = u32_at(body, WQUEUE_AT).ok_or_else(malformed)?;
        totals.0 += f64::from(tx);
        totals.1 += f64::from(rx);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Datagrams nobody reads sit in the receiver's queue: the dump must
    /// count exactly what /proc/net/udp shows at the same moment.
    #[test]
    fn totals_match_proc_net_udp_with_queued_datagrams() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..5 {
            sender
                .send_to(&[7u8; 300], receiver.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (tx, rx) = udp_queue_totals(Family::V4).expect("sock_diag dump");
        let proc = std::fs::read_to_string("/proc/net/udp").unwrap();
        let (proc_tx, proc_rx) = crate::node::udp_queues::udp_queues_from(&proc);
        assert!(rx > 0.0, "five queued datagrams must show in rx ({rx})");
        assert_eq!((tx, rx), (proc_tx, proc_rx));
        drop(receiver);
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        let mut totals = (0.0, 0.0);
        let mut add = |kind: u16, body: &[u8]| add_socket(kind, body, &mut totals);
        assert!(netlink::walk_messages(&[0xff; 20], 1, "sock_diag", &mut add).is_err());
        let mut short = Vec::new();
        short.extend_from_slice(&20u32.to_ne_bytes());
        short.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        short.extend_from_slice(&[0, 0]);
        short.extend_from_slice(&1u32.to_ne_bytes());
        short.extend_from_slice(&[0; 8]);
        assert!(netlink::walk_messages(&short, 1, "sock_diag", &mut add).is_err());
        assert_eq!(totals, (0.0, 0.0));
    }
}
