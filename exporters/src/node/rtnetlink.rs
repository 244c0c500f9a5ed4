//! The network interfaces as the kernel reports them over rtnetlink: one
//! RTM_GETLINK dump instead of a dozen sysfs files per interface for the
//! attributes the netclass collector exports that the link messages carry.

use std::io;

use super::netlink::{self, align4, u16_at, u32_at};

const RTM_GETLINK: u16 = 18;

const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKMODE: u16 = 17;
const IFLA_IFALIAS: u16 = 20;
const IFLA_GROUP: u16 = 27;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_CARRIER: u16 = 33;
const IFLA_CARRIER_CHANGES: u16 = 35;
const IFLA_CARRIER_UP_COUNT: u16 = 47;
const IFLA_CARRIER_DOWN_COUNT: u16 = 48;
/// Leave the statistics out of the dump: netclass does not export them
/// and they are most of each message.
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

const IFF_UP: u32 = 0x1;
const IFF_DORMANT: u32 = 0x20000;

const IFINFOMSG_LEN: usize = 16;

/// One interface of the dump, with what sysfs would show for it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Link {
    pub name: String,
    pub index: u32,
    /// `ifi_type`: sysfs `type`.
    pub link_type: u16,
    /// `ifi_flags`: the kernel's computed flags (not sysfs `flags`, which
    /// is the raw `dev->flags` and can differ in PROMISC/ALLMULTI).
    pub flags: u32,
    pub mtu: Option<u32>,
    pub iflink: Option<u32>,
    pub tx_queue_len: Option<u32>,
    pub operstate: Option<u8>,
    pub link_mode: Option<u8>,
    pub group: Option<u32>,
    pub carrier: Option<u8>,
    pub carrier_changes: Option<u32>,
    pub carrier_up_count: Option<u32>,
    pub carrier_down_count: Option<u32>,
    pub address: Option<Vec<u8>>,
    pub broadcast: Option<Vec<u8>>,
    pub alias: Option<String>,
}

impl Link {
    /// The text of sysfs attribute `attr` of this interface as the kernel
    /// would print it: `Some(Some(text))`, `Some(None)` where sysfs answers
    /// with an error (`carrier` and `dormant` of an interface that is not
    /// up), or `None` when the link message does not carry that attribute
    /// and sysfs has to be read.
    pub fn sysfs_attr(&self, attr: &str) -> Option<Option<String>> {
        // netif_running(): the kernel sets IFF_UP in the same step.
        let running = self.flags & IFF_UP != 0;
        let text = |v: Option<u32>| Some(v.map(|v| v.to_string()));
        match attr {
            "ifindex" => text(Some(self.index)),
            "type" => text(Some(u32::from(self.link_type))),
            "mtu" => text(self.mtu),
            // Absent from the message when it equals the interface's own
            // index, which is what sysfs then prints.
            "iflink" => text(Some(self.iflink.unwrap_or(self.index))),
            "tx_queue_len" => text(self.tx_queue_len),
            "link_mode" => text(self.link_mode.map(u32::from)),
            "netdev_group" => text(self.group),
            "carrier_changes" => text(self.carrier_changes),
            "carrier_up_count" => text(self.carrier_up_count),
            "carrier_down_count" => text(self.carrier_down_count),
            "carrier" => Some(if running {
                self.carrier.map(|c| u8::from(c != 0).to_string())
            } else {
                None
            }),
            "dormant" => Some(running.then(|| u8::from(self.flags & IFF_DORMANT != 0).to_string())),
            "operstate" => Some(self.operstate.map(|s| operstate_name(s).to_string())),
            "address" => Some(Some(mac_text(self.address.as_deref().unwrap_or(&[])))),
            "broadcast" => Some(Some(mac_text(self.broadcast.as_deref().unwrap_or(&[])))),
            "ifalias" => Some(Some(self.alias.clone().unwrap_or_default())),
            _ => None,
        }
    }
}

/// The kernel's names for `IF_OPER_*` (RFC 2863), as in sysfs `operstate`.
fn operstate_name(state: u8) -> &'static str {
    match state {
        1 => "notpresent",
        2 => "down",
        3 => "lowerlayerdown",
        4 => "testing",
        5 => "dormant",
        6 => "up",
        _ => "unknown",
    }
}

/// `aa:bb:cc:...` in lower-case hex, as sysfs prints hardware addresses.
fn mac_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Every interface of this process's network namespace.
pub(crate) fn links() -> io::Result<Vec<Link>> {
    let mut links = Vec::new();
    netlink::dump(None, "rtnetlink", &dump_request(), |kind, body| {
        if kind == RTM_NEWLINK {
            links.push(parse_link(body)?);
        }
        Ok(())
    })?;
    Ok(links)
}

/// RTM_GETLINK with NLM_F_DUMP, all address families, statistics skipped.
fn dump_request() -> Vec<u8> {
    let attribute_len: usize = 4 + 4;
    let mut payload = Vec::with_capacity(IFINFOMSG_LEN + attribute_len);
    payload.extend_from_slice(&[0u8; IFINFOMSG_LEN]); // AF_UNSPEC, any interface
    payload.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
    payload.extend_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
    payload.extend_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    netlink::dump_request(RTM_GETLINK, &payload)
}

fn malformed(what: &str) -> io::Error {
    netlink::malformed("rtnetlink", what)
}

/// Appends the links of one datagram of the dump; true once the dump is done.
#[cfg(test)]
fn parse_messages(data: &[u8], sequence: u32, links: &mut Vec<Link>) -> io::Result<bool> {
    netlink::walk_messages(data, sequence, "rtnetlink", &mut |kind, body| {
        if kind == RTM_NEWLINK {
            links.push(parse_link(body)?);
        }
        Ok(())
    })
}

const RTM_NEWLINK: u16 = 16;

fn parse_link(body: &[u8]) -> io::Result<Link> {
    if body.len() < IFINFOMSG_LEN {
        return Err(malformed("ifinfomsg"));
    }
    let mut link = Link {
        link_type: u16_at(body, 2).unwrap_or(0),
        index: u32_at(body, 4).unwrap_or(0),
        flags: u32_at(body, 8).unwrap_or(0),
        ..Link::default()
    };
    let mut attrs = &body[IFINFOMSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0).unwrap_or(0) as usize;
        // The top bits of the type are the nested/byte-order flags.
        let kind = u16_at(attrs, 2).unwrap_or(0) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return Err(malformed("attribute length"));
        }
        let value = &attrs[4..len];
        let as_u32 = || u32_at(value, 0);
        let as_u8 = || value.first().copied();
        let as_text = || {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            String::from_utf8_lossy(&value[..end]).into_owned()
        };
        match kind {
            IFLA_IFNAME => link.name = as_text(),
            IFLA_ADDRESS => link.address = Some(value.to_vec()),
            IFLA_BROADCAST => link.broadcast = Some(value.to_vec()),
            IFLA_MTU => link.mtu = as_u32(),
            IFLA_LINK => link.iflink = as_u32(),
            IFLA_TXQLEN => link.tx_queue_len = as_u32(),
            IFLA_OPERSTATE => link.operstate = as_u8(),
            IFLA_LINKMODE => link.link_mode = as_u8(),
            IFLA_IFALIAS => link.alias = Some(as_text()),
            IFLA_GROUP => link.group = as_u32(),
            IFLA_CARRIER => link.carrier = as_u8(),
            IFLA_CARRIER_CHANGES => link.carrier_changes = as_u32(),
            IFLA_CARRIER_UP_COUNT => link.carrier_up_count = as_u32(),
            IFLA_CARRIER_DOWN_COUNT => link.carrier_down_count = as_u32(),
            _ => {}
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    if link.name.is_empty() {
        return Err(malformed("link without a name"));
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::netlink::{NLMSG_DONE, NLMSG_ERROR, NLMSG_HEADER_LEN};

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn message(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HEADER_LEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m
    }

    fn eth0(flags: u32) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[2..4].copy_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        body[4..8].copy_from_slice(&2u32.to_ne_bytes());
        body[8..12].copy_from_slice(&flags.to_ne_bytes());
        body.extend(attribute(IFLA_IFNAME, b"eth0\0"));
        body.extend(attribute(IFLA_ADDRESS, &[0x52, 0x54, 0, 0x12, 0xab, 0x0f]));
        body.extend(attribute(IFLA_MTU, &1500u32.to_ne_bytes()));
        body.extend(attribute(IFLA_OPERSTATE, &[6]));
        body.extend(attribute(IFLA_CARRIER, &[1]));
        body.extend(attribute(IFLA_CARRIER_UP_COUNT, &3u32.to_ne_bytes()));
        body
    }

    #[test]
    fn a_dump_parses_into_links_with_sysfs_text() {
        let mut data = message(RTM_NEWLINK, 7, &eth0(IFF_UP | 0x1000));
        data.extend(message(NLMSG_DONE, 7, &0u32.to_ne_bytes()));
        let mut links = Vec::new();
        assert!(parse_messages(&data, 7, &mut links).unwrap());
        let link = &links[0];
        assert_eq!(link.name, "eth0");
        assert_eq!(
            link.sysfs_attr("address"),
            Some(Some("52:54:00:12:ab:0f".into()))
        );
        assert_eq!(link.sysfs_attr("broadcast"), Some(Some(String::new())));
        assert_eq!(link.sysfs_attr("iflink"), Some(Some("2".into())));
        assert_eq!(link.sysfs_attr("carrier"), Some(Some("1".into())));
        assert_eq!(link.sysfs_attr("dormant"), Some(Some("0".into())));
        assert_eq!(link.sysfs_attr("operstate"), Some(Some("up".into())));
        assert_eq!(link.sysfs_attr("carrier_up_count"), Some(Some("3".into())));
        assert_eq!(link.sysfs_attr("carrier_down_count"), Some(None));
        assert_eq!(link.sysfs_attr("speed"), None, "sysfs only");
        assert_eq!(link.sysfs_attr("flags"), None, "sysfs only");
    }

    #[test]
    fn an_interface_that_is_down_has_no_carrier_or_dormant() {
        let mut data = message(RTM_NEWLINK, 1, &eth0(0x1000));
        data.extend(message(NLMSG_DONE, 1, &0u32.to_ne_bytes()));
        let mut links = Vec::new();
        parse_messages(&data, 1, &mut links).unwrap();
        assert_eq!(links[0].sysfs_attr("carrier"), Some(None));
        assert_eq!(links[0].sysfs_attr("dormant"), Some(None));
    }

    #[test]
    fn errors_and_truncation_are_reported_not_panicked() {
        let err = message(NLMSG_ERROR, 1, &(-13i32).to_ne_bytes());
        assert_eq!(
            parse_messages(&err, 1, &mut Vec::new())
                .unwrap_err()
                .raw_os_error(),
            Some(13)
        );
        let mut truncated = message(RTM_NEWLINK, 1, &eth0(IFF_UP));
        truncated.truncate(truncated.len() - 3);
        assert!(parse_messages(&truncated, 1, &mut Vec::new()).is_err());
        let mut bad_attr = message(RTM_NEWLINK, 1, &eth0(IFF_UP));
        bad_attr[NLMSG_HEADER_LEN + IFINFOMSG_LEN] = 0xff;
        assert!(parse_messages(&bad_attr, 1, &mut Vec::new()).is_err());
    }

    #[test]
    fn this_host_lists_loopback() {
        let links = links().expect("rtnetlink dump");
        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.sysfs_attr("type"), Some(Some("772".into())));
        assert_eq!(
            lo.sysfs_attr("address"),
            Some(Some("00:00:00:00:00:00".into()))
        );
    }
}
