//! The live leak check of `status`, pure: from what was read in the VPN's namespace, in its DNS
//! file and in the root namespace, the list of what of the VPN shows where it must not.
//!
//! Nothing of the VPN may be in the root namespace: none of the tun's addresses, no route into
//! one of the VPN's networks (the tun's own subnets and the networks it routes), and none of its
//! DNS servers in `/etc/resolv.conf`. Inside, every route must stay there or leave through the
//! tun: one through any other link is a way around the VPN.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::kernel::{Addr, NetState, Route};

/// The VPN as seen in its namespace.
#[derive(Debug, Clone, Copy)]
pub struct Vpn<'a> {
    /// The tun's name inside; `None` when the VPN is down (a kept namespace).
    pub tun: Option<&'a str>,
    pub inside: &'a NetState,
    /// The name servers of `/etc/netns/NAME/resolv.conf`.
    pub dns: &'a [IpAddr],
}

/// The root namespace, where the command runs.
#[derive(Debug, Clone, Copy)]
pub struct Root<'a> {
    pub state: &'a NetState,
    /// The name servers of its `/etc/resolv.conf`.
    pub dns: &'a [IpAddr],
}

/// One sign of the VPN where it must not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leak {
    Address(Addr),
    Route { route: Route, network: (IpAddr, u8) },
    Dns(IpAddr),
    Inside(Route),
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leak::Address(a) => write!(
                f,
                "the root namespace has the VPN's address {a} (on {})",
                a.link
            ),
            Leak::Route {
                route,
                network: (net, prefix),
            } => write!(
                f,
                "the root namespace has a route into the VPN's network {net}/{prefix}: {route}"
            ),
            Leak::Dns(server) => write!(
                f,
                "/etc/resolv.conf of the root namespace names the VPN's DNS server {server}"
            ),
            Leak::Inside(route) => write!(
                f,
                "the namespace has a route that leaves through another link than the tun: {route}"
            ),
        }
    }
}

/// The VPN's networks: the subnets of the tun's addresses, and the networks routed through it.
pub fn vpn_networks(vpn: &Vpn<'_>) -> Vec<(IpAddr, u8)> {
    let Some(tun) = vpn.tun else {
        return Vec::new();
    };
    let subnets = vpn
        .inside
        .addresses
        .iter()
        .filter(|a| a.link == tun)
        .map(|a| (network(a.address, a.prefix), a.prefix));
    let routed = vpn
        .inside
        .main_routes()
        .filter(|r| r.dev.as_deref() == Some(tun))
        .filter_map(|r| r.dest)
        .filter(|(_, prefix)| *prefix > 0)
        .map(|(dest, prefix)| (network(dest, prefix), prefix));
    let mut all: Vec<(IpAddr, u8)> = subnets.chain(routed).collect();
    all.sort();
    all.dedup();
    all
}

/// Every sign of the VPN where it must not be; none: the check passes.
pub fn check(vpn: &Vpn<'_>, root: &Root<'_>) -> Vec<Leak> {
    let mut leaks = Vec::new();
    let tun_addresses: Vec<IpAddr> = vpn
        .inside
        .addresses
        .iter()
        .filter(|a| Some(a.link.as_str()) == vpn.tun)
        .map(|a| a.address)
        .collect();
    leaks.extend(
        root.state
            .addresses
            .iter()
            .filter(|a| tun_addresses.contains(&a.address))
            .cloned()
            .map(Leak::Address),
    );
    let networks = vpn_networks(vpn);
    for route in &root.state.routes {
        let Some((dest, prefix)) = route.dest.filter(|(_, p)| *p > 0) else {
            continue;
        };
        if let Some(net) = networks.iter().find(|n| within((dest, prefix), **n)) {
            leaks.push(Leak::Route {
                route: route.clone(),
                network: *net,
            });
        }
    }
    leaks.extend(
        root.dns
            .iter()
            .filter(|s| vpn.dns.contains(s))
            .map(|s| Leak::Dns(*s)),
    );
    leaks.extend(
        vpn.inside
            .routes
            .iter()
            .filter(|r| {
                r.dev
                    .as_deref()
                    .is_some_and(|d| d != "lo" && Some(d) != vpn.tun)
            })
            .cloned()
            .map(Leak::Inside),
    );
    leaks
}

/// `addr` with the bits past `prefix` cleared.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::from(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::from(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// Whether the network `inner` lies within `outer` (or is it).
fn within(inner: (IpAddr, u8), outer: (IpAddr, u8)) -> bool {
    inner.0.is_ipv4() == outer.0.is_ipv4()
        && inner.1 >= outer.1
        && network(inner.0, outer.1) == outer.0
}

/// The `nameserver` addresses of a resolv.conf (resolv.conf(5)); lines that do not parse are
/// skipped, as the resolver skips them.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The `search` domains of a resolv.conf; the last `search` line wins (resolv.conf(5)).
pub fn search_domains(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("search"))
        .rfind(|rest| rest.starts_with([' ', '\t']))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::status::kernel::MAIN_TABLE;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addr(link: &str, a: &str, prefix: u8) -> Addr {
        Addr {
            link: link.into(),
            address: ip(a),
            prefix,
        }
    }

    fn route(dest: Option<(&str, u8)>, via: Option<&str>, dev: Option<&str>, table: u32) -> Route {
        Route {
            dest: dest.map(|(d, p)| (ip(d), p)),
            ipv6: false,
            via: via.map(ip),
            dev: dev.map(Into::into),
            table,
            kind: "unicast".into(),
        }
    }

    /// The rig's VPN inside its namespace: 198.19.0.2/24 on tun0, a default route and one
    /// pushed network through it, and the local table's routes on lo and tun0.
    fn inside() -> NetState {
        NetState {
            links: vec!["lo".into(), "tun0".into()],
            addresses: vec![addr("lo", "127.0.0.1", 8), addr("tun0", "198.19.0.2", 24)],
            routes: vec![
                route(None, Some("198.19.0.1"), Some("tun0"), MAIN_TABLE),
                route(
                    Some(("198.18.64.0", 18)),
                    Some("198.19.0.1"),
                    Some("tun0"),
                    MAIN_TABLE,
                ),
                route(Some(("198.19.0.0", 24)), None, Some("tun0"), MAIN_TABLE),
                route(Some(("127.0.0.1", 32)), None, Some("lo"), 255),
                route(Some(("198.19.0.2", 32)), None, Some("tun0"), 255),
            ],
        }
    }

    /// A host on a LAN, with a default route and DNS of its own.
    fn root() -> NetState {
        NetState {
            links: vec!["eth0".into(), "lo".into()],
            addresses: vec![addr("eth0", "192.0.2.10", 24)],
            routes: vec![
                route(None, Some("192.0.2.1"), Some("eth0"), MAIN_TABLE),
                route(Some(("192.0.2.0", 24)), None, Some("eth0"), MAIN_TABLE),
                route(
                    Some(("198.18.0.0", 15)),
                    Some("192.0.2.1"),
                    Some("eth0"),
                    MAIN_TABLE,
                ),
            ],
        }
    }

    fn checked(inside: &NetState, root_state: &NetState, root_dns: &[IpAddr]) -> Vec<Leak> {
        let vpn = Vpn {
            tun: Some("tun0"),
            inside,
            dns: &[ip("198.19.0.1")],
        };
        check(
            &vpn,
            &Root {
                state: root_state,
                dns: root_dns,
            },
        )
    }

    #[test]
    fn a_clean_vpn_passes_and_each_leak_is_found() {
        let host_dns = [ip("192.0.2.1")];
        assert_eq!(checked(&inside(), &root(), &host_dns), []);

        let mut planted = root();
        let r = route(
            Some(("198.19.0.0", 24)),
            Some("192.0.2.1"),
            Some("eth0"),
            MAIN_TABLE,
        );
        planted.routes.push(r.clone());
        let host = route(Some(("198.18.64.7", 32)), None, Some("eth0"), MAIN_TABLE);
        planted.routes.push(host.clone());
        planted.addresses.push(addr("eth0", "198.19.0.2", 24));
        let got = checked(&inside(), &planted, &[ip("192.0.2.1"), ip("198.19.0.1")]);
        let want = vec![
            Leak::Address(addr("eth0", "198.19.0.2", 24)),
            Leak::Route {
                route: r,
                network: (ip("198.19.0.0"), 24),
            },
            Leak::Route {
                route: host,
                network: (ip("198.18.64.0"), 18),
            },
            Leak::Dns(ip("198.19.0.1")),
        ];
        assert_eq!(got, want);
        assert_eq!(
            got[1].to_string(),
            "the root namespace has a route into the VPN's network 198.19.0.0/24: \
             198.19.0.0/24 via 192.0.2.1 dev eth0"
        );

        let mut around = inside();
        around.links.push("veth0".into());
        let r = route(Some(("10.0.0.0", 8)), None, Some("veth0"), MAIN_TABLE);
        around.routes.push(r.clone());
        around.routes.push(Route {
            kind: "unreachable".into(),
            ..route(Some(("10.1.0.0", 16)), None, None, MAIN_TABLE)
        });
        assert_eq!(checked(&around, &root(), &host_dns), [Leak::Inside(r)]);
    }

    #[test]
    fn a_kept_namespace_without_its_tun_has_no_networks() {
        let lo_only = NetState {
            links: vec!["lo".into()],
            addresses: vec![addr("lo", "127.0.0.1", 8)],
            routes: vec![route(Some(("127.0.0.1", 32)), None, Some("lo"), 255)],
        };
        let vpn = Vpn {
            tun: None,
            inside: &lo_only,
            dns: &[ip("198.19.0.1")],
        };
        assert_eq!(vpn_networks(&vpn), []);
        let dns = [ip("198.19.0.1")];
        let root_state = root();
        let got = check(
            &vpn,
            &Root {
                state: &root_state,
                dns: &dns,
            },
        );
        assert_eq!(got, [Leak::Dns(ip("198.19.0.1"))]);
    }

    #[test]
    fn networks_compare_by_prefix() {
        let n = (ip("198.19.0.0"), 24);
        assert!(within((ip("198.19.0.128"), 25), n));
        assert!(within(n, n));
        assert!(
            !within((ip("198.19.0.0"), 16), n),
            "a wider route is the host's"
        );
        assert!(!within((ip("fd00::"), 64), n));
        assert_eq!(network(ip("fd00:198:19::2"), 64), ip("fd00:198:19::"));
        assert_eq!(network(ip("198.19.0.2"), 0), ip("0.0.0.0"));
    }

    #[test]
    fn resolv_conf_servers_and_search() {
        let text = "# x\nnameserver 198.19.0.1\nnameserver  fd00::1 \nnameserver bogus\n\
                    search a.test\nsearch vpn.test b.test\nsearchx no\n";
        assert_eq!(nameservers(text), [ip("198.19.0.1"), ip("fd00::1")]);
        assert_eq!(search_domains(text), ["vpn.test", "b.test"]);
        assert!(search_domains("nameserver 1.1.1.1\n").is_empty());
    }
}
