//! The netlink plumbing the rtnetlink and sock_diag readers share: open a
//! socket, send one dump request, walk the reply datagrams until
//! NLMSG_DONE, turning NLMSG_ERROR into the errno it carries.

use std::io;

use rustix::net::{AddressFamily, Protocol, RecvFlags, SendFlags, SocketFlags, SocketType};

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLMSG_HEADER_LEN: usize = 16;

/// Sequence number of every request: one request per socket.
pub(super) const SEQUENCE: u32 = 1;

/// A dump request: the netlink header for `kind`, then `payload`.
pub(super) fn dump_request(kind: u16, payload: &[u8]) -> Vec<u8> {
    let total = NLMSG_HEADER_LEN + payload.len();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&SEQUENCE.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(payload);
    m
}

/// Sends `request` on a new socket of `protocol` (None: NETLINK_ROUTE) and
/// hands each reply message's type and body to `on_message` until the dump
/// ends. `what` names the protocol in errors.
pub(super) fn dump(
    protocol: Option<Protocol>,
    what: &str,
    request: &[u8],
    mut on_message: impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        protocol,
    )?;
    let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&socket, request, SendFlags::empty(), &kernel)?;
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let (_, len) = rustix::net::recv(&socket, &mut buffer[..], RecvFlags::empty())?;
        if len > buffer.len() {
            return Err(io::Error::other(format!(
                "{what} message larger than the buffer"
            )));
        }
        if len == 0 {
            return Err(io::Error::other(format!(
                "{what} socket closed before the dump ended"
            )));
        }
        if walk_messages(&buffer[..len], SEQUENCE, what, &mut on_message)? {
            return Ok(());
        }
    }
}

/// Walks the messages of one datagram of a dump; true once the dump is done.
pub(super) fn walk_messages(
    mut data: &[u8],
    sequence: u32,
    what: &str,
    on_message: &mut impl FnMut(u16, &[u8]) -> io::Result<()>,
) -> io::Result<bool> {
    while data.len() >= NLMSG_HEADER_LEN {
        let len = u32_at(data, 0).ok_or_else(|| malformed(what, "header"))? as usize;
        let kind = u16_at(data, 4).ok_or_else(|| malformed(what, "header"))?;
        let seq = u32_at(data, 8).ok_or_else(|| malformed(what, "header"))?;
        if len < NLMSG_HEADER_LEN || len > data.len() {
            return Err(malformed(what, "message length"));
        }
        let body = &data[NLMSG_HEADER_LEN..len];
        if seq == sequence {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno =
                        u32_at(body, 0).ok_or_else(|| malformed(what, "error message"))? as i32;
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                _ => on_message(kind, body)?,
            }
        }
        data = &data[align4(len).min(data.len())..];
    }
    Ok(false)
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(super) fn malformed(what: &str, part: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed {what} reply: {part}"),
    )
}
