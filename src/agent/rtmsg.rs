//! The pure half of the agent's netlink work: which rtnetlink messages to send and what the
//! kernel's answers mean. Nothing here opens a socket, so every decision is tested without root;
//! [`crate::agent::netlink`] only sends what this module builds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};

use crate::agent::sys::Link;
use crate::plan::FamilyPlan;

/// The metric IPv6 gives a route added without one.
const IPV6_DEFAULT_METRIC: u32 = 1024;

/// One address family of a plan, with the address type erased: what `ip addr add` and
/// `ip route add` get for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySetup {
    pub family: AddressFamily,
    pub address: IpAddr,
    pub prefix: u8,
    pub peer: Option<IpAddr>,
    /// Destination, prefix, next hop and metric of each route.
    pub routes: Vec<(IpAddr, u8, Option<IpAddr>, u32)>,
    /// `Some(via)`: a default route, through `via` if there is one.
    pub default_via: Option<Option<IpAddr>>,
    pub preserve_routes: bool,
}

impl FamilySetup {
    pub fn new<A: Copy + Into<IpAddr>>(plan: &FamilyPlan<A>) -> Self {
        let address = plan.address.into();
        FamilySetup {
            family: match address {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            },
            address,
            prefix: plan.prefix,
            peer: plan.peer.map(Into::into),
            routes: plan
                .routes
                .iter()
                .map(|r| (r.dest.into(), r.prefix, r.via.map(Into::into), r.metric))
                .collect(),
            default_via: plan.default_route.as_ref().map(|d| d.via.map(Into::into)),
            preserve_routes: plan.preserve_routes,
        }
    }

    /// `inet` or `inet6`, as `ip` names the family.
    pub fn label(&self) -> &'static str {
        match self.address {
            IpAddr::V4(_) => "inet",
            IpAddr::V6(_) => "inet6",
        }
    }

    fn any(&self) -> IpAddr {
        match self.family {
            AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        }
    }
}

/// Whether a netlink error is EEXIST: the object is already there.
pub fn already_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(Errno::EEXIST as i32)
}

/// The [`Link`] in a `RTM_NEWLINK` reply; `None` for any other message.
pub fn link_from(msg: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(msg) = msg else {
        return None;
    };
    let mut link = Link {
        ifindex: msg.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Some(link)
}

/// Whether `data`, what a socket in the `RTNLGRP_LINK` group received, reports that the link with
/// this index left the socket's namespace: `RTM_DELLINK` comes both when the link is destroyed and
/// when it moves to another namespace. The answer to [`link_query`] counts too: `ENODEV` says the
/// link is gone, and the watch sends no other request, so an error on its socket can only be
/// that answer. A message that does not decode ends the scan, and what follows it is ignored: the
/// kernel sends whole messages, so only a foreign datagram is cut.
pub fn link_removed(data: &[u8], ifindex: u32) -> bool {
    let mut rest = data;
    while let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) {
        match &msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                if link.header.index == ifindex =>
            {
                return true;
            }
            NetlinkPayload::Error(e) if e.to_io().raw_os_error() == Some(Errno::ENODEV as i32) => {
                return true;
            }
            _ => {}
        }
        let len = (msg.header.length as usize).next_multiple_of(4);
        match rest.get(len..) {
            Some(next) if len > 0 && !next.is_empty() => rest = next,
            _ => break,
        }
    }
    false
}

/// `ip link show dev INDEX`, as the bytes a watch's socket sends when the kernel dropped some of
/// its messages, one of which may have been the link's removal: the answer is the link, or the
/// error [`link_removed`] takes for its removal. No `NLM_F_ACK`: a link that is there answers with
/// itself alone.
pub fn link_query(ifindex: u32) -> Vec<u8> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    let mut packet = NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg));
    packet.header.flags = NLM_F_REQUEST;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// `ip link show dev NAME`, as a request.
pub fn link_get_by_name(name: &str) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
    msg
}

/// `ip link set dev INDEX [up]` with `attributes`.
pub fn link_set(index: u32, attributes: Vec<LinkAttribute>, up: bool) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if up {
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
    }
    msg.attributes = attributes;
    msg
}

/// `ip link set dev IFINDEX netns NETNS [name NAME]`.
pub fn link_set_netns(ifindex: u32, netns: RawFd, name: Option<&str>) -> LinkMessage {
    let mut attributes = vec![LinkAttribute::NetNsFd(netns)];
    if let Some(name) = name {
        attributes.push(LinkAttribute::IfName(name.to_owned()));
    }
    link_set(ifindex, attributes, false)
}

/// `ip link set dev INDEX netns AGENT name … mtu … [up]`: back to the agent's namespace with the
/// name, MTU and state the link had there.
pub fn link_set_netns_back(
    index: u32,
    agent_netns: RawFd,
    link: &str,
    original: &Link,
) -> LinkMessage {
    let mut attributes = vec![LinkAttribute::NetNsFd(agent_netns)];
    if link != original.name {
        attributes.push(LinkAttribute::IfName(original.name.clone()));
    }
    if original.mtu > 0 {
        attributes.push(LinkAttribute::Mtu(original.mtu));
    }
    link_set(index, attributes, original.up)
}

/// `ip link del dev INDEX`, as an `RTM_DELLINK` request: by index alone, which the kernel looks up
/// first (net/core/rtnetlink.c, `rtnl_dellink`), so that no link that merely has the name goes.
pub fn link_del(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

/// `ip link set dev … addrgenmode none`, as an attribute.
///
/// A tun needs no link-local address; without one the kernel sends no router solicitations or MLD
/// reports into the tunnel, and the namespace holds only the routes of the plan. It must be set
/// before `up`, which is when the kernel makes one.
pub fn addrgenmode_none() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

/// `ip addr add ADDRESS[/PREFIX] [peer PEER] dev INDEX`, with its text for messages.
pub fn address_add(index: u32, plan: &FamilySetup) -> (AddressMessage, String) {
    let mut msg = AddressMessage::default();
    msg.header.family = plan.family;
    msg.header.prefix_len = plan.prefix;
    msg.header.index = index;
    if plan.family == AddressFamily::Inet6 {
        // The far end of a tun is openvpn, which answers no neighbour solicitation: duplicate
        // address detection would only hold the address back as tentative.
        msg.header.flags = AddressHeaderFlags::Nodad;
    }
    msg.attributes.push(AddressAttribute::Local(plan.address));
    msg.attributes
        .push(AddressAttribute::Address(plan.peer.unwrap_or(plan.address)));
    let what = match plan.peer {
        Some(peer) => format!(
            "{} {} peer {peer}/{}",
            plan.label(),
            plan.address,
            plan.prefix
        ),
        None => format!("{} {}/{}", plan.label(), plan.address, plan.prefix),
    };
    (msg, what)
}

/// An address message's own address: `IFA_LOCAL`, which differs from `IFA_ADDRESS` on a
/// point-to-point link (where that one is the peer's), or else `IFA_ADDRESS`.
pub fn address_local(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(a) => Some(*a),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(a) => Some(*a),
        _ => None,
    });
    local.or(address)
}

/// Whether an address of a dump is stale: on link `index` but not the one `plan` has. Returns
/// the address's text (`ADDRESS/PREFIX`) if it is.
pub fn stale_address(
    msg: &AddressMessage,
    index: u32,
    plan: Option<&FamilySetup>,
) -> Option<String> {
    let local = address_local(msg);
    let keep = plan.is_some_and(|p| local == Some(p.address) && msg.header.prefix_len == p.prefix);
    if msg.header.index != index || keep {
        return None;
    }
    Some(format!(
        "{}/{}",
        local.map_or("?".into(), |a| a.to_string()),
        msg.header.prefix_len
    ))
}

/// A route's destination; `None` for a default route.
pub fn route_dest(msg: &RouteMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::from(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::from(*a)),
        _ => None,
    })
}

/// Whether a route of a dump is stale: one the agent added (main table, proto static) through
/// link `index`. Returns the route's text (`DEST/PREFIX` or `default`) if it is.
pub fn stale_route(msg: &RouteMessage, index: u32) -> Option<String> {
    let ours = msg.header.table == RouteHeader::RT_TABLE_MAIN
        && msg.header.protocol == RouteProtocol::Static
        && msg.attributes.contains(&RouteAttribute::Oif(index));
    if !ours {
        return None;
    }
    Some(match route_dest(msg) {
        Some(dest) => format!("{dest}/{}", msg.header.destination_prefix_length),
        None => "default".to_owned(),
    })
}

/// `ip route add DEST/PREFIX|default [via VIA] dev INDEX [metric METRIC] proto static`, with its
/// text for messages.
pub fn route_add(
    index: u32,
    plan: &FamilySetup,
    dest: Option<(IpAddr, u8)>,
    via: Option<IpAddr>,
    metric: u32,
) -> (RouteMessage, String) {
    let mut msg = RouteMessage::default();
    msg.header.address_family = plan.family;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    // Static marks the routes the agent added, for `stale_route` to find.
    msg.header.protocol = RouteProtocol::Static;
    msg.header.kind = RouteType::Unicast;
    // As `ip route add`: a route with no next hop is on the link.
    msg.header.scope = if via.is_none() && plan.family == AddressFamily::Inet {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    let (dest_addr, prefix) = dest.unwrap_or((plan.any(), 0));
    if dest.is_some() {
        msg.header.destination_prefix_length = prefix;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dest_addr)));
    }
    if let Some(via) = via {
        // A tun has no neighbours, so any next hop is reachable on it; onlink spares the
        // kernel's check for a link route that covers it, which a pushed gateway may lack.
        msg.header.flags = RouteFlags::Onlink;
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(via)));
    }
    msg.attributes.push(RouteAttribute::Oif(index));
    if metric > 0 {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    (msg, route_text(plan.label(), dest, via, metric))
}

fn route_text(label: &str, dest: Option<(IpAddr, u8)>, via: Option<IpAddr>, metric: u32) -> String {
    let dest_text = match dest {
        Some((d, p)) => format!("{d}/{p}"),
        None => "default".to_owned(),
    };
    let via_text = via.map_or(String::new(), |v| format!(" via {v}"));
    let metric_text = if metric > 0 {
        format!(" metric {metric}")
    } else {
        String::new()
    };
    format!("{label} {dest_text}{via_text}{metric_text}")
}

/// After `route_add` failed with EEXIST: whether the route dump `routes` has the same route (main
/// table, destination, metric) through link `index`, so that it can be reused.
///
/// A pushed route to the tunnel's own subnet, which the address already made, is such a route.
/// On another link it would carry the namespace's traffic past the VPN, so it is no reuse.
pub fn route_on_link(
    routes: &[RouteNetlinkMessage],
    family: AddressFamily,
    dest: Option<(IpAddr, u8)>,
    metric: u32,
    index: u32,
) -> bool {
    let metric = match (family, metric) {
        (AddressFamily::Inet6, 0) => IPV6_DEFAULT_METRIC,
        (_, m) => m,
    };
    routes.iter().any(|r| {
        let RouteNetlinkMessage::NewRoute(r) = r else {
            return false;
        };
        let priority = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        });
        r.header.table == RouteHeader::RT_TABLE_MAIN
            && route_dest(r).map(|d| (d, r.header.destination_prefix_length)) == dest
            && priority.unwrap_or(0) == metric
            && r.attributes.contains(&RouteAttribute::Oif(index))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DefaultRoute;

    /// The executor tests' IPv4 plan, with a route metric and a default route on the link.
    fn v4() -> FamilySetup {
        let mut plan = crate::agent::executor::tests::plan().ipv4.unwrap();
        plan.routes[0].metric = 5;
        plan.default_route = Some(DefaultRoute { via: None });
        FamilySetup::new(&plan)
    }

    fn v6() -> FamilySetup {
        let plan = FamilyPlan {
            address: "fd00:198:19::2".parse::<Ipv6Addr>().unwrap(),
            prefix: 64,
            peer: Some("fd00:198:19::1".parse().unwrap()),
            routes: Vec::new(),
            default_route: None,
            preserve_routes: true,
        };
        FamilySetup::new(&plan)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `data` holding `msgs`, as the kernel packs several messages into one datagram.
    fn datagram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut data = Vec::new();
        for msg in msgs {
            let mut packet = NetlinkMessage::from(msg);
            packet.finalize();
            let mut buf = vec![0; packet.buffer_len()];
            packet.serialize(&mut buf);
            buf.resize(buf.len().next_multiple_of(4), 0);
            data.extend(buf);
        }
        data
    }

    fn link_msg(index: u32) -> LinkMessage {
        let mut msg = link_get_by_name("tun0");
        msg.header.index = index;
        msg
    }

    #[test]
    fn only_the_removal_of_the_watched_link_counts() {
        let del = |i| RouteNetlinkMessage::DelLink(link_msg(i));
        let new = |i| RouteNetlinkMessage::NewLink(link_msg(i));
        assert!(link_removed(&datagram(vec![del(7)]), 7));
        assert!(link_removed(&datagram(vec![new(7), del(3), del(7)]), 7));
        assert!(
            !link_removed(&datagram(vec![new(7)]), 7),
            "a change of the link"
        );
        assert!(!link_removed(&datagram(vec![del(3)]), 7), "another link");
        assert!(!link_removed(&[], 7));
        assert!(!link_removed(&[0xff; 9], 7), "garbage");
        let mut cut = datagram(vec![del(7)]);
        cut.truncate(cut.len() - 8);
        assert!(!link_removed(&cut, 7), "a cut message");
    }

    #[test]
    fn the_query_after_lost_messages_asks_for_the_link_and_enodev_is_its_removal() {
        let query = link_query(7);
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&query).unwrap();
        assert_eq!(msg.header.flags, NLM_F_REQUEST);
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(link)) => {
                assert_eq!(link.header.index, 7);
            }
            other => panic!("expected RTM_GETLINK of link 7, got {other:?}"),
        }
        let error = |errno: Errno| {
            let mut e = rtnetlink::packet_core::ErrorMessage::default();
            e.code = std::num::NonZeroI32::new(-(errno as i32));
            let mut packet = NetlinkMessage::<RouteNetlinkMessage>::new(
                Default::default(),
                NetlinkPayload::Error(e),
            );
            packet.finalize();
            let mut buf = vec![0; packet.buffer_len()];
            packet.serialize(&mut buf);
            buf
        };
        assert!(link_removed(&error(Errno::ENODEV), 7), "the link is gone");
        assert!(!link_removed(&error(Errno::EPERM), 7), "another error");
        assert!(
            !link_removed(
                &datagram(vec![RouteNetlinkMessage::NewLink(link_msg(7))]),
                7
            ),
            "the link is there"
        );
    }

    #[test]
    fn family_setup_erases_the_address_type() {
        let f = v4();
        assert_eq!(f.address, ip("198.19.0.2"));
        assert_eq!(
            f.routes,
            [(ip("198.18.64.0"), 18, Some(ip("198.19.0.1")), 5)]
        );
        assert_eq!(f.default_via, Some(None));
        assert_eq!(f.any(), ip("0.0.0.0"));
        assert_eq!(v6().any(), ip("::"));
        assert!(v6().preserve_routes && v6().default_via.is_none());
    }

    #[test]
    fn link_replies_become_links() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.flags = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName("tun0".into()),
            LinkAttribute::Mtu(1400),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                netlink_packet_route::link::InfoKind::Tun,
            )]),
        ];
        let link = link_from(RouteNetlinkMessage::NewLink(msg)).unwrap();
        assert_eq!(
            link,
            Link {
                ifindex: 7,
                name: "tun0".into(),
                kind: Some("tun".into()),
                mtu: 1400,
                up: true
            }
        );
        let other = RouteNetlinkMessage::NewAddress(AddressMessage::default());
        assert_eq!(link_from(other), None);
        assert_eq!(
            link_get_by_name("lo").attributes,
            [LinkAttribute::IfName("lo".into())]
        );
    }

    #[test]
    fn link_set_messages() {
        let up = link_set(3, vec![LinkAttribute::Mtu(1300)], true);
        assert_eq!(up.header.index, 3);
        assert_eq!(
            (up.header.flags, up.header.change_mask),
            (LinkFlags::Up, LinkFlags::Up)
        );
        assert_eq!(up.attributes, [LinkAttribute::Mtu(1300)]);
        let down = link_set(3, Vec::new(), false);
        assert!(down.header.change_mask.is_empty());

        let moved = link_set_netns(7, 42, Some("vpn0"));
        assert_eq!(
            moved.attributes,
            [
                LinkAttribute::NetNsFd(42),
                LinkAttribute::IfName("vpn0".into())
            ]
        );
        assert_eq!(
            link_set_netns(7, 42, None).attributes,
            [LinkAttribute::NetNsFd(42)]
        );
        assert!(matches!(&addrgenmode_none(), LinkAttribute::AfSpecUnspec(s) if s.len() == 1));
    }

    #[test]
    fn a_link_is_deleted_by_its_index_alone() {
        let del = link_del(12);
        assert_eq!(del.header.index, 12);
        assert!(del.header.flags.is_empty() && del.header.change_mask.is_empty());
        assert_eq!(del.attributes, []);
    }

    #[test]
    fn a_link_goes_back_as_it_was() {
        let original = Link {
            ifindex: 7,
            name: "tun0".into(),
            kind: Some("tun".into()),
            mtu: 1400,
            up: true,
        };
        let back = link_set_netns_back(3, 9, "vpn0", &original);
        assert_eq!(back.header.index, 3);
        assert_eq!(back.header.change_mask, LinkFlags::Up);
        assert_eq!(
            back.attributes,
            [
                LinkAttribute::NetNsFd(9),
                LinkAttribute::IfName("tun0".into()),
                LinkAttribute::Mtu(1400)
            ]
        );
        let plain = Link {
            mtu: 0,
            up: false,
            ..original.clone()
        };
        let back = link_set_netns_back(3, 9, "tun0", &plain);
        assert_eq!(back.attributes, [LinkAttribute::NetNsFd(9)]);
        assert!(back.header.change_mask.is_empty());
    }

    #[test]
    fn address_add_messages() {
        let (msg, what) = address_add(5, &v4());
        assert_eq!(what, "inet 198.19.0.2/24");
        assert_eq!((msg.header.index, msg.header.prefix_len), (5, 24));
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert!(msg.header.flags.is_empty());
        assert_eq!(
            msg.attributes,
            [
                AddressAttribute::Local(ip("198.19.0.2")),
                AddressAttribute::Address(ip("198.19.0.2"))
            ]
        );
        let (msg, what) = address_add(5, &v6());
        assert_eq!(what, "inet6 fd00:198:19::2 peer fd00:198:19::1/64");
        assert_eq!(msg.header.flags, AddressHeaderFlags::Nodad);
        assert_eq!(
            msg.attributes[1],
            AddressAttribute::Address(ip("fd00:198:19::1"))
        );
    }

    fn address(index: u32, local: &str, prefix: u8) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = prefix;
        msg.attributes.push(AddressAttribute::Address(ip(local)));
        msg
    }

    #[test]
    fn stale_addresses_are_the_ones_the_plan_lacks_on_this_link() {
        let plan = v4();
        assert_eq!(
            stale_address(&address(5, "198.19.0.2", 24), 5, Some(&plan)),
            None
        );
        assert_eq!(
            stale_address(&address(5, "198.19.0.2", 16), 5, Some(&plan)).as_deref(),
            Some("198.19.0.2/16")
        );
        assert_eq!(
            stale_address(&address(5, "198.19.0.3", 24), 5, Some(&plan)).as_deref(),
            Some("198.19.0.3/24")
        );
        assert_eq!(
            stale_address(&address(5, "198.19.0.2", 24), 5, None).as_deref(),
            Some("198.19.0.2/24")
        );
        // Another link's address is never this link's to remove.
        assert_eq!(stale_address(&address(1, "127.0.0.1", 8), 5, None), None);
        // IFA_LOCAL wins over IFA_ADDRESS, which is the peer on a point-to-point link.
        let mut p2p = address(5, "198.19.0.1", 24);
        p2p.attributes
            .push(AddressAttribute::Local(ip("198.19.0.2")));
        assert_eq!(stale_address(&p2p, 5, Some(&plan)), None);
        let mut bare = AddressMessage::default();
        bare.header.index = 5;
        assert_eq!(stale_address(&bare, 5, None).as_deref(), Some("?/0"));
    }

    #[test]
    fn route_add_messages() {
        let plan = v4();
        let (msg, what) = route_add(
            5,
            &plan,
            Some((ip("198.18.64.0"), 18)),
            Some(ip("198.19.0.1")),
            5,
        );
        assert_eq!(what, "inet 198.18.64.0/18 via 198.19.0.1 metric 5");
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(msg.header.protocol, RouteProtocol::Static);
        assert_eq!(msg.header.kind, RouteType::Unicast);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(msg.header.flags, RouteFlags::Onlink);
        assert_eq!(msg.header.destination_prefix_length, 18);
        assert_eq!(
            msg.attributes,
            [
                RouteAttribute::Destination(RouteAddress::from(ip("198.18.64.0"))),
                RouteAttribute::Gateway(RouteAddress::from(ip("198.19.0.1"))),
                RouteAttribute::Oif(5),
                RouteAttribute::Priority(5),
            ]
        );
        let (msg, what) = route_add(5, &plan, None, None, 0);
        assert_eq!(what, "inet default");
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(msg.attributes, [RouteAttribute::Oif(5)]);
        let (msg, what) = route_add(5, &v6(), None, None, 0);
        assert_eq!(what, "inet6 default");
        assert_eq!(msg.header.scope, RouteScope::Universe);
    }

    #[test]
    fn stale_routes_are_the_agents_own_on_this_link() {
        let plan = v4();
        let (ours, _) = route_add(5, &plan, Some((ip("198.18.64.0"), 18)), None, 0);
        assert_eq!(stale_route(&ours, 5).as_deref(), Some("198.18.64.0/18"));
        let (default, _) = route_add(5, &plan, None, None, 0);
        assert_eq!(stale_route(&default, 5).as_deref(), Some("default"));
        assert_eq!(stale_route(&ours, 6), None);
        let mut kernel = ours.clone();
        kernel.header.protocol = RouteProtocol::Kernel;
        assert_eq!(stale_route(&kernel, 5), None);
        let mut local = ours;
        local.header.table = 255; // RT_TABLE_LOCAL
        assert_eq!(stale_route(&local, 5), None);
    }

    #[test]
    fn an_existing_route_is_reused_only_on_this_link() {
        let plan = v4();
        let dest = Some((ip("198.19.0.0"), 24));
        let (mut kernel, _) = route_add(5, &plan, dest, None, 0);
        kernel.header.protocol = RouteProtocol::Kernel;
        let dump = [RouteNetlinkMessage::NewRoute(kernel)];
        assert!(route_on_link(&dump, AddressFamily::Inet, dest, 0, 5));
        assert!(!route_on_link(&dump, AddressFamily::Inet, dest, 0, 6));
        assert!(!route_on_link(&dump, AddressFamily::Inet, dest, 7, 5));
        assert!(!route_on_link(&dump, AddressFamily::Inet, None, 0, 5));
        assert!(!route_on_link(&[], AddressFamily::Inet, dest, 0, 5));

        // IPv6 stores a route added without a metric with 1024.
        let dest6 = Some((ip("fd00:198:19::"), 64));
        let (v6_route, _) = route_add(5, &v6(), dest6, None, IPV6_DEFAULT_METRIC);
        let dump = [RouteNetlinkMessage::NewRoute(v6_route)];
        assert!(route_on_link(&dump, AddressFamily::Inet6, dest6, 0, 5));

        assert!(already_exists(&io::Error::from_raw_os_error(
            Errno::EEXIST as i32
        )));
        assert!(!already_exists(&io::Error::from_raw_os_error(
            Errno::ENOENT as i32
        )));
    }
}
