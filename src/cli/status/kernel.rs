//! What `status` reads of the kernel: the links, addresses and routes of a network namespace,
//! through rtnetlink (the agent's own client, [`Rtnl`]), decoded into plain values
//! ([`NetState`]) for the pure checks of [`super::leak`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::agent::netlink::Rtnl;
use crate::agent::rtmsg::{address_local, link_from, route_dest};
use crate::agent::sys::SysError;

/// `RT_TABLE_MAIN` of <linux/rtnetlink.h>: the table `ip route` shows.
pub const MAIN_TABLE: u32 = 254;

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub link: String,
    pub address: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A route of any table, as `ip route show table all` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination and its prefix length; `None` for a default route.
    pub dest: Option<(IpAddr, u8)>,
    /// An IPv6 route: its default route is written `::/0`, which ip-route(8) takes for `default`
    /// too, so that the two families' default routes read apart.
    pub ipv6: bool,
    pub via: Option<IpAddr>,
    /// The link it goes out of; `None` for one with none, such as an `unreachable` route.
    pub dev: Option<String>,
    pub table: u32,
    /// `unicast`, `local`, `broadcast`, `unreachable`, … (`ip route`'s words).
    pub kind: String,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != "unicast" {
            write!(f, "{} ", self.kind)?;
        }
        match self.dest {
            Some((dest, prefix)) => write!(f, "{dest}/{prefix}")?,
            None if self.ipv6 => f.write_str("::/0")?,
            None => f.write_str("default")?,
        }
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// A namespace's links (by name), addresses and routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetState {
    pub links: Vec<String>,
    pub addresses: Vec<Addr>,
    pub routes: Vec<Route>,
}

impl NetState {
    /// The routes of the main table, as `ip route` shows them.
    pub fn main_routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().filter(|r| r.table == MAIN_TABLE)
    }
}

/// The state of the calling thread's namespace: this one, or another on a thread that
/// [`crate::agent::linux::in_netns`] joined to it.
pub fn read_own() -> Result<NetState, SysError> {
    let mut rtnl = Rtnl::open("this namespace")?;
    let dump = |rtnl: &mut Rtnl, what: &'static str, query| {
        rtnl.dump(query)
            .map_err(|e| SysError::os(what, "this namespace", e))
    };
    let links = dump(
        &mut rtnl,
        "link_list",
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )?;
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut query = AddressMessage::default();
        query.header.family = family;
        addresses.extend(dump(
            &mut rtnl,
            "addr_list",
            RouteNetlinkMessage::GetAddress(query),
        )?);
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        routes.extend(dump(
            &mut rtnl,
            "route_list",
            RouteNetlinkMessage::GetRoute(query),
        )?);
    }
    Ok(decode(links, addresses, routes))
}

/// The dumps' messages as plain values, links named.
pub fn decode(
    links: Vec<RouteNetlinkMessage>,
    addresses: Vec<RouteNetlinkMessage>,
    routes: Vec<RouteNetlinkMessage>,
) -> NetState {
    let names: HashMap<u32, String> = links
        .into_iter()
        .filter_map(link_from)
        .map(|l| (l.ifindex, l.name))
        .collect();
    let name = |index: u32| {
        names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    };
    let mut state = NetState {
        links: names.values().cloned().collect(),
        ..NetState::default()
    };
    state.links.sort();
    for msg in addresses {
        if let RouteNetlinkMessage::NewAddress(a) = msg {
            if let Some(address) = address_local(&a) {
                state.addresses.push(Addr {
                    link: name(a.header.index),
                    address,
                    prefix: a.header.prefix_len,
                });
            }
        }
    }
    for msg in routes {
        if let RouteNetlinkMessage::NewRoute(r) = msg {
            state.routes.push(route_of(&r, &name));
        }
    }
    state
}

fn route_of(r: &RouteMessage, name: &impl Fn(u32) -> String) -> Route {
    let mut route = Route {
        dest: route_dest(r).map(|d| (d, r.header.destination_prefix_length)),
        ipv6: r.header.address_family == AddressFamily::Inet6,
        via: None,
        dev: None,
        table: u32::from(r.header.table),
        kind: route_kind(r.header.kind),
    };
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.via = Some(IpAddr::from(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => route.via = Some(IpAddr::from(*a)),
            RouteAttribute::Oif(index) => route.dev = Some(name(*index)),
            // A table above 255 is only in this attribute (rtnetlink(7)).
            RouteAttribute::Table(table) => route.table = *table,
            _ => {}
        }
    }
    route
}

/// `ip route`'s word for a route type (iproute2's rtnl_rtntype_n2a).
fn route_kind(kind: RouteType) -> String {
    match kind {
        RouteType::Unicast => "unicast",
        RouteType::Local => "local",
        RouteType::Broadcast => "broadcast",
        RouteType::Anycast => "anycast",
        RouteType::Multicast => "multicast",
        RouteType::BlackHole => "blackhole",
        RouteType::Unreachable => "unreachable",
        RouteType::Prohibit => "prohibit",
        RouteType::Throw => "throw",
        RouteType::Nat => "nat",
        other => return format!("{other:?}").to_lowercase(),
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use netlink_packet_route::address::AddressAttribute;
    use netlink_packet_route::link::LinkAttribute;
    use netlink_packet_route::route::RouteHeader;

    use super::*;

    fn link(index: u32, name: &str) -> RouteNetlinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(msg)
    }

    fn route(
        family: AddressFamily,
        (table, prefix): (u8, u8),
        attributes: Vec<RouteAttribute>,
    ) -> RouteNetlinkMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        msg.header.destination_prefix_length = prefix;
        msg.header.table = table;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = attributes;
        RouteNetlinkMessage::NewRoute(msg)
    }

    /// The dumps as `ip` reads them: a point-to-point address is its local one, links by name,
    /// each family's default route apart, and the local table's routes marked.
    #[test]
    fn dumps_decode_as_ip_shows_them() {
        let mut address = AddressMessage::default();
        address.header.index = 5;
        address.header.prefix_len = 24;
        address.attributes = vec![
            AddressAttribute::Address("198.19.0.1".parse().unwrap()),
            AddressAttribute::Local("198.19.0.2".parse().unwrap()),
        ];
        let gateway = RouteAttribute::Gateway(RouteAddress::Inet("198.19.0.1".parse().unwrap()));
        let routes = vec![
            route(
                AddressFamily::Inet,
                (RouteHeader::RT_TABLE_MAIN, 0),
                vec![gateway, RouteAttribute::Oif(5)],
            ),
            route(
                AddressFamily::Inet6,
                (RouteHeader::RT_TABLE_MAIN, 0),
                vec![RouteAttribute::Oif(5)],
            ),
            route(
                AddressFamily::Inet6,
                (255, 128),
                vec![
                    RouteAttribute::Destination(RouteAddress::Inet6(Ipv6Addr::LOCALHOST)),
                    RouteAttribute::Oif(1),
                ],
            ),
            route(
                AddressFamily::Inet,
                (0, 0),
                vec![RouteAttribute::Table(1000), RouteAttribute::Oif(9)],
            ),
        ];
        let state = decode(
            vec![link(5, "tun0"), link(1, "lo")],
            vec![RouteNetlinkMessage::NewAddress(address)],
            routes,
        );
        assert_eq!(state.links, ["lo", "tun0"]);
        let addresses: Vec<String> = state
            .addresses
            .iter()
            .map(|a| format!("{a} {}", a.link))
            .collect();
        assert_eq!(addresses, ["198.19.0.2/24 tun0"]);
        let shown: Vec<String> = state.routes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "default via 198.19.0.1 dev tun0",
                "::/0 dev tun0",
                "::1/128 dev lo table 255",
                "default dev if9 table 1000"
            ]
        );
        assert_eq!(state.main_routes().count(), 2);
    }
}
