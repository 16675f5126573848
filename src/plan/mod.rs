//! The isolation planner: NetworkManager's `Config`/`Ip4Config`/`Ip6Config` dicts, as the stock
//! plugin's helper (nm-openvpn's, nm-openconnect's) sends them, plus the validated settings -> an
//! [`IsolationPlan`].
//!
//! Pure: nothing here touches the system. The agent runs it on the raw inputs of every request, so
//! each value is checked here, once, and every error names the dict, the key and the value.
//!
//! - this file: the plan's types, [`PlanError`] and [`build`];
//! - [`settings`]: the `netns-*` keys of `vpn.data` and what they need from the connection;
//! - [`mirror`]: their copy in the connection's `user` setting, and the edits that write it;
//! - [`nm`]: NetworkManager's dicts and the one typed [`nm::Reader`] for all of them;
//! - [`plugin`]: the VPN plugins whose connections are isolated, and what sets them apart;
//! - [`family`]: how IPv4 and IPv6 values are encoded in NM's dicts;
//! - [`dns`]: the namespace's `resolv.conf` and `nsswitch.conf`.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub mod dns;
pub mod family;
pub mod mirror;
pub mod nm;
pub mod plugin;
pub mod settings;

pub use nm::{owned, var_dict, DictName, VarDict};

use dns::{check_domain, render_nsswitch, render_resolv_conf};
use family::{Family, NmReader};
use nm::{
    ADDRESS, DNS, DOMAIN, DOMAINS, HAS_IP4, HAS_IP6, INTERNAL_GATEWAY, MTU, NEVER_DEFAULT, PREFIX,
    PRESERVE_ROUTES, PTP, TUNDEV,
};
use settings::NetnsName;

/// Every way planning can fail. Each message names the dict, the key and the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{dict} key \"{key}\" must be {expected}, got type {found}: {value}")]
    WrongType {
        dict: DictName,
        key: &'static str,
        expected: &'static str,
        found: String,
        value: String,
    },
    #[error("{dict} key \"{key}\" is missing: {reason}")]
    MissingKey {
        dict: DictName,
        key: &'static str,
        reason: String,
    },
    #[error("{dict} key \"{key}\" has an invalid value {value}: {reason}")]
    InvalidValue {
        dict: DictName,
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("Config key \"{key}\" is true but no {dict} was received")]
    MissingDict { dict: DictName, key: &'static str },
    #[error("an {dict} was received but Config key \"{key}\" is not true")]
    UnexpectedDict { dict: DictName, key: &'static str },
    #[error("vpn.data key \"tunnel-mtu\" has an invalid value {value}: {reason}")]
    TunnelMtu { value: u32, reason: &'static str },
    #[error("invalid interface name {value:?}: {reason}")]
    InvalidIfName { value: String, reason: &'static str },
    #[error("{list}: {count} exceeds the cap of {cap}")]
    TooLong {
        list: &'static str,
        count: usize,
        cap: usize,
    },
}

/// Where iproute2 mounts named network namespaces (`NETNS_RUN_DIR` of ip/ip_common.h): the agent
/// mounts its namespaces there so that `ip netns exec` finds them, and the command looks there.
pub const NETNS_RUN_DIR: &str = "/run/netns";
/// Where iproute2 keeps each namespace's own `/etc` files (`NETNS_ETC_DIR`), which `ip netns exec`
/// and `nm-vpn-netns exec` bind over `/etc`.
pub const NETNS_ETC_DIR: &str = "/etc/netns";

// Caps on the server's lists. The agent turns each route into a netlink message on its one
// executor thread and each domain into resolv.conf text, so a hostile server must not be able
// to make either unbounded. Each cap is far above what a real VPN pushes.
/// Routes per family, counted as the server sent them, before repeats are dropped.
pub const MAX_ROUTES: usize = 1024;
/// DNS servers of both families together.
pub const MAX_DNS_SERVERS: usize = 16;
/// Distinct search domains of both families together.
pub const MAX_SEARCH_DOMAINS: usize = 64;
/// The bytes of those distinct search domains, added up.
pub const MAX_SEARCH_BYTES: usize = 4096;

/// Refuses a list of `count` entries past `cap`.
pub(crate) fn check_cap(list: &'static str, count: usize, cap: usize) -> Result<(), PlanError> {
    if count > cap {
        return Err(PlanError::TooLong { list, count, cap });
    }
    Ok(())
}

/// A valid Linux interface name, by the kernel's `dev_valid_name()` rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_ifname(s).map_err(|reason| PlanError::InvalidIfName {
            value: s.to_owned(),
            reason,
        })?;
        Ok(IfName(s.to_owned()))
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_ifname(s: &str) -> Result<(), &'static str> {
    // IFNAMSIZ is 16 including the terminating NUL.
    match s.len() {
        0 => return Err("it is empty"),
        16.. => return Err("it is longer than 15 bytes"),
        _ => {}
    }
    if s == "." || s == ".." {
        return Err("\".\" and \"..\" are not allowed");
    }
    // The kernel's isspace() works on Latin-1 bytes, so 0xa0 (no-break space) counts as well.
    if s.bytes().any(|b| {
        matches!(
            b,
            b'/' | b':' | b'\0' | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0
        )
    }) {
        return Err("'/', ':', NUL and whitespace are not allowed");
    }
    Ok(())
}

/// The raw inputs of one isolation, as the agent receives them.
#[derive(Debug)]
pub struct PlanInput<'a> {
    pub netns: NetnsName,
    /// The profile's `ipv4.never-default`.
    pub never_default_v4: bool,
    /// The profile's `ipv6.never-default`.
    pub never_default_v6: bool,
    /// The profile's `tunnel-mtu`, which overrides `Config`'s `mtu`.
    pub tunnel_mtu: Option<u32>,
    pub config: &'a VarDict,
    pub ip4_config: Option<&'a VarDict>,
    pub ip6_config: Option<&'a VarDict>,
    /// The host's `/etc/nsswitch.conf`; empty if it has none.
    pub host_nsswitch: &'a str,
}

/// Everything the executor applies inside the namespace, all of it validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationPlan {
    pub netns: NetnsName,
    pub link: LinkPlan,
    /// `None`: the VPN configured no IPv4, so the namespace gets no IPv4 route at all.
    pub ipv4: Option<FamilyPlan<Ipv4Addr>>,
    /// `None`: the VPN configured no IPv6, so the namespace gets no IPv6 route at all.
    pub ipv6: Option<FamilyPlan<Ipv6Addr>>,
    /// Content of `/etc/netns/NAME/resolv.conf`.
    pub resolv_conf: String,
    /// Content of `/etc/netns/NAME/nsswitch.conf`.
    pub nsswitch_conf: String,
}

/// `ip link set NAME netns NETNS mtu MTU up`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    pub name: IfName,
    pub mtu: Option<u32>,
}

/// One address family on the tun: `ip addr add ADDRESS/PREFIX [peer PEER] dev TUN`, then the
/// routes, then the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPlan<A> {
    pub address: A,
    pub prefix: u8,
    /// The `ptp` peer; as with `ip addr add`, the prefix then belongs to the peer.
    pub peer: Option<A>,
    /// `ip route add DEST/PREFIX [via VIA] dev TUN [metric METRIC]`, in the order pushed, less a
    /// host route to the VPN server, any pushed default route and repeats.
    pub routes: Vec<Route<A>>,
    /// `ip route add default [via VIA] dev TUN`; `None` when never-default applies.
    pub default_route: Option<DefaultRoute<A>>,
    /// openvpn restarted (`--up-restart`) and sent no routes: keep the routes already in the
    /// namespace rather than flushing them. `routes` is then empty.
    pub preserve_routes: bool,
}

/// A pushed route. `dest` has its host bits cleared; `metric` 0 means the kernel's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<A> {
    pub dest: A,
    pub prefix: u8,
    /// A tun forwards without neighbours, yet the kernel still refuses a next hop that no
    /// link route covers unless the route is added `onlink`.
    pub via: Option<A>,
    pub metric: u32,
}

/// The default route through the tun; `via` is NetworkManager's `internal-gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute<A> {
    pub via: Option<A>,
}

/// Builds the plan, validating every input.
pub fn build(input: &PlanInput<'_>) -> Result<IsolationPlan, PlanError> {
    let config = NmReader::new(DictName::Config, input.config);
    let gateway = config.gateway()?;
    let has_ip4 = config.bool(HAS_IP4)?.unwrap_or(false);
    let has_ip6 = config.bool(HAS_IP6)?.unwrap_or(false);

    // nm-openvpn's and nm-openconnect's helpers give up without a device, so a Config without one
    // never comes from them; there is nothing to move into the namespace either way.
    let tundev = config.str(TUNDEV)?.ok_or_else(|| {
        config.missing(
            TUNDEV,
            format!("no device to move into the namespace (has-ip4={has_ip4}, has-ip6={has_ip6})"),
        )
    })?;
    let name = check_ifname(tundev)
        .map(|()| IfName(tundev.to_owned()))
        .map_err(|reason| config.invalid(TUNDEV, format!("{tundev:?}"), reason))?;

    let ip4 = family_dict(has_ip4, input.ip4_config, DictName::Ip4Config, HAS_IP4)?;
    let ip6 = family_dict(has_ip6, input.ip6_config, DictName::Ip6Config, HAS_IP6)?;

    let mut nameservers = Vec::new();
    let mut search = Vec::new();
    let ipv4 = ip4
        .map(|r| {
            family::<Ipv4Addr>(
                &r,
                input.never_default_v4,
                gateway,
                &mut nameservers,
                &mut search,
            )
        })
        .transpose()?;
    let ipv6 = ip6
        .map(|r| {
            family::<Ipv6Addr>(
                &r,
                input.never_default_v6,
                gateway,
                &mut nameservers,
                &mut search,
            )
        })
        .transpose()?;
    check_cap("search domains", search.len(), MAX_SEARCH_DOMAINS)?;
    let search_bytes = search.iter().map(String::len).sum();
    check_cap("search domain bytes", search_bytes, MAX_SEARCH_BYTES)?;

    // openvpn runs with --ifconfig-noexec, so the agent alone sets the tun's MTU, and nm-openvpn's
    // helper reports 1500 in Config even when openvpn runs with --tun-mtu from tunnel-mtu.
    // openconnect sets the MTU on the tun itself, and nm-openconnect's helper reports it in
    // Config's `mtu`; `tunnel_mtu` is nm-openvpn's key and so absent then.
    let config_mtu = config.u32(MTU)?;
    let mtu = input.tunnel_mtu.or(config_mtu);
    if let Some(mtu) = mtu {
        // Below 68 the kernel drops a device's IPv4 setup, below 1280 its IPv6 setup, and a tun
        // takes no more than 65535.
        let (min, why) = if ipv6.is_some() {
            (1280, "with IPv6 on the tun it must be 1280-65535")
        } else {
            (68, "it must be 68-65535")
        };
        if !(min..=65535).contains(&mtu) {
            return Err(match input.tunnel_mtu {
                Some(_) => PlanError::TunnelMtu {
                    value: mtu,
                    reason: why,
                },
                None => config.invalid(MTU, mtu, why),
            });
        }
    }

    Ok(IsolationPlan {
        netns: input.netns.clone(),
        link: LinkPlan { name, mtu },
        ipv4,
        ipv6,
        resolv_conf: render_resolv_conf(&input.netns, &nameservers, &search),
        nsswitch_conf: render_nsswitch(input.host_nsswitch),
    })
}

fn family_dict<'a>(
    announced: bool,
    dict: Option<&'a VarDict>,
    name: DictName,
    key: &'static str,
) -> Result<Option<NmReader<'a>>, PlanError> {
    // NM ignores an IP dict that Config did not announce; here that means the shim and the agent
    // disagree about the connection, which is a bug worth stopping on.
    match (announced, dict) {
        (true, Some(d)) => Ok(Some(NmReader::new(name, d))),
        (true, None) => Err(PlanError::MissingDict { dict: name, key }),
        (false, Some(_)) => Err(PlanError::UnexpectedDict { dict: name, key }),
        (false, None) => Ok(None),
    }
}

fn family<A: Family>(
    r: &NmReader<'_>,
    never_default_profile: bool,
    ext_gateway: IpAddr,
    nameservers: &mut Vec<IpAddr>,
    search: &mut Vec<String>,
) -> Result<FamilyPlan<A>, PlanError> {
    let (address, prefix) = address::<A>(r)?;
    let peer = A::read(r, PTP)?;
    let internal_gateway = A::read(r, INTERNAL_GATEWAY)?;
    let (routes, preserve_routes) = routes::<A>(r, ext_gateway)?;

    // A server-pushed `never-default` is honoured as NM honours it (nm-openvpn never sends one;
    // nm-openconnect's helper does with every split-include route the server pushes). Dropping a default route inside the namespace cannot
    // leak: there is no other path out, so traffic the VPN does not route fails closed.
    let pushed_never_default = r.bool(NEVER_DEFAULT)?.unwrap_or(false);
    let default_route =
        (!(never_default_profile || pushed_never_default)).then_some(DefaultRoute {
            via: internal_gateway,
        });

    nameservers.extend(A::read_list(r, DNS)?.into_iter().map(Into::into));
    check_cap("dns servers", nameservers.len(), MAX_DNS_SERVERS)?;
    search_domains(r, search)?;

    Ok(FamilyPlan {
        address,
        prefix,
        peer,
        routes,
        default_route,
        preserve_routes,
    })
}

/// The tun's address and prefix in this family.
fn address<A: Family>(r: &NmReader<'_>) -> Result<(A, u8), PlanError> {
    // NM would configure routes on a family with no address; nm-openvpn and nm-openconnect never
    // send that (they announce a family only with its address), and an address-less tun in the
    // namespace would only hide the mistake.
    let address = A::read(r, ADDRESS)?
        .ok_or_else(|| r.missing(ADDRESS, "the VPN announced this family without an address"))?;
    // Without `prefix`, use NM's own default so the namespace gets the address NM would set.
    let prefix = match r.u32(PREFIX)? {
        None => A::DEFAULT_PREFIX,
        Some(p) => u8::try_from(p)
            .ok()
            .filter(|p| (1..=A::MAX_PREFIX).contains(p))
            .ok_or_else(|| r.invalid(PREFIX, p, format!("must be 1-{}", A::MAX_PREFIX)))?,
    };
    Ok((address, prefix))
}

/// The pushed routes the namespace gets, and whether to keep the ones it has instead.
fn routes<A: Family>(
    r: &NmReader<'_>,
    ext_gateway: IpAddr,
) -> Result<(Vec<Route<A>>, bool), PlanError> {
    let mut routes: Vec<Route<A>> = Vec::new();
    for route in A::read_routes(r)? {
        // NM drops host routes to the VPN server because it routes the server itself on the
        // uplink. Inside the namespace such a route (openvpn's `net_gateway`) names a gateway
        // that only exists on the uplink, so adding it would fail; the tun reaches the server.
        let to_server = route.prefix == A::MAX_PREFIX && route.dest.into() == ext_gateway;
        // A pushed default route would collide with `default_route` and bypass never-default.
        let default = route.prefix == 0;
        // The kernel refuses a second route with the same destination and metric.
        let duplicate = routes.iter().any(|kept| {
            (kept.dest, kept.prefix, kept.metric) == (route.dest, route.prefix, route.metric)
        });
        if !(to_server || default || duplicate) {
            routes.push(route);
        }
    }
    // NM ignores `routes` when told to preserve the previous ones.
    let preserve_routes = r.bool(PRESERVE_ROUTES)?.unwrap_or(false);
    if preserve_routes {
        routes.clear();
    }
    Ok((routes, preserve_routes))
}

/// Adds this family's `domain` and `domains` to `search`, in order and without repeats.
fn search_domains(r: &NmReader<'_>, search: &mut Vec<String>) -> Result<(), PlanError> {
    let domain = r.str(DOMAIN)?.map(|d| (DOMAIN, d));
    let domains = r.strs(DOMAINS)?.into_iter().map(|d| (DOMAINS, d));
    // A set, so that a server's long list costs linear time before its cap refuses it.
    let mut seen: HashSet<String> = search.iter().cloned().collect();
    for (key, domain) in domain.into_iter().chain(domains) {
        check_domain(domain).map_err(|reason| r.invalid(key, format!("{domain:?}"), reason))?;
        if seen.insert(domain.to_owned()) {
            search.push(domain.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
