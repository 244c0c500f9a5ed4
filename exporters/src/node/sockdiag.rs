//! UDP queue totals over NETLINK_SOCK_DIAG (what `ss -u` uses): one dump per
//! address family walks the kernel's UDP hash table once. Reading
//! /proc/net/udp walks all of it at least twice per file, because every
//! read(2) of that seq file starts over from the first bucket and the
//! end-of-file read is one more walk; on an idle host those walks were the
//! largest single kernel cost of a node scrape.

use std::io;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use super::rtnetlink::{align4, u16_at, u32_at};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HEADER_LEN: usize = 16;
const IPPROTO_UDP: u8 = 17;
/// `struct inet_diag_req_v2`: family, protocol, extensions, pad, states,
/// then a 48-byte `inet_diag_sockid` left zero (any address, any port).
const REQUEST_LEN: usize = 56;
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
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(rustix::net::netlink::SOCK_DIAG),
    )?;
    let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
    let sequence: u32 = 1;
    rustix::net::sendto(
        &socket,
        &dump_request(family, sequence),
        SendFlags::empty(),
        &kernel,
    )?;
    let mut totals = (0.0, 0.0);
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let (_, len) = rustix::net::recv(&socket, &mut buffer[..], RecvFlags::empty())?;
        if len > buffer.len() {
            return Err(io::Error::other("sock_diag message larger than the buffer"));
        }
        if len == 0 {
            return Err(io::Error::other(
                "sock_diag socket closed before the dump ended",
            ));
        }
        if add_messages(&buffer[..len], sequence, &mut totals)? {
            return Ok(totals);
        }
    }
}

fn dump_request(family: Family, sequence: u32) -> Vec<u8> {
    let total = NLMSG_HEADER_LEN + REQUEST_LEN;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&sequence.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(&[family as u8, IPPROTO_UDP, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every socket state
    m.extend_from_slice(&[0u8; 48]);
    m
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed sock_diag reply: {what}"),
    )
}

/// Adds the sockets of one datagram of the dump; true once the dump is done.
fn add_messages(mut data: &[u8], sequence: u32, totals: &mut (f64, f64)) -> io::Result<bool> {
    while data.len() >= NLMSG_HEADER_LEN {
        let len = u32_at(data, 0).ok_or_else(|| malformed("header"))? as usize;
        let kind = u16_at(data, 4).ok_or_else(|| malformed("header"))?;
        let seq = u32_at(data, 8).ok_or_else(|| malformed("header"))?;
        if len < NLMSG_HEADER_LEN || len > data.len() {
            return Err(malformed("message length"));
        }
        let body = &data[NLMSG_HEADER_LEN..len];
        if seq == sequence {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = u32_at(body, 0).ok_or_else(|| malformed("error message"))? as i32;
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                SOCK_DIAG_BY_FAMILY => {
                    let rx = u32_at(body, RQUEUE_AT).ok_or_else(|| malformed("socket message"))?;
                    let tx = u32_at(body, WQUEUE_AT).ok_or_else(|| malformed("socket message"))?;
                    totals.0 += f64::from(tx);
                    totals.1 += f64::from(rx);
                }
                _ => {}
            }
        }
        data = &data[align4(len).min(data.len())..];
    }
    Ok(false)
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
        let (proc_tx, proc_rx) = crate::node::procfs::udp_queues_from(&proc);
        assert!(rx > 0.0, "five queued datagrams must show in rx ({rx})");
        assert_eq!((tx, rx), (proc_tx, proc_rx));
        drop(receiver);
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        let mut totals = (0.0, 0.0);
        assert!(add_messages(&[0xff; 20], 1, &mut totals).is_err());
        let mut short = Vec::new();
        short.extend_from_slice(&20u32.to_ne_bytes());
        short.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        short.extend_from_slice(&[0, 0]);
        short.extend_from_slice(&1u32.to_ne_bytes());
        short.extend_from_slice(&[0; 8]);
        assert!(add_messages(&short, 1, &mut totals).is_err());
        assert_eq!(totals, (0.0, 0.0));
    }
}
