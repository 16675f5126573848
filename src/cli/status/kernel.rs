//! What `status` reads of the kernel: the links, addresses and routes of a network namespace,
//! through rtnetlink (the agent's own client, [`Rtnl`]), decoded into plain values
//! ([`NetState`]) for the pure checks of [`super::leak`].

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;

use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::sched::{self, CloneFlags};

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

/// The state of the calling thread's namespace.
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

/// The state of the namespace mounted at `path`, read on a thread of its own that joins it
/// (setns(2) changes the calling thread only; it needs CAP_SYS_ADMIN).
pub fn read_netns(path: &Path) -> Result<NetState, SysError> {
    let netns = File::open(path).map_err(|e| SysError::os("open", path.display(), e))?;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("status-netns".to_owned())
            .spawn_scoped(scope, || {
                sched::setns(&netns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| SysError::os("setns", path.display(), e))?;
                read_own()
            })
            .map_err(|e| SysError::os("spawn a thread for namespace", path.display(), e))?
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
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
