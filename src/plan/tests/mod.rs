//! Tests of the planner: what it makes of nm-openvpn's dicts here, what it refuses in
//! `refusals`. `pub(crate)` so that other modules' tests build their dicts the same way.

use zbus::Variant;

use super::nm::*;
use super::*;

/// How nm-openvpn's helper encodes an IPv4 address: `inet_pton` into a `u32`, sent as is.
pub(crate) fn v4(s: &str) -> u32 {
    u32::from_ne_bytes(s.parse::<Ipv4Addr>().unwrap().octets())
}

pub(crate) fn ay(s: &str) -> Vec<u8> {
    s.parse::<Ipv6Addr>().unwrap().octets().to_vec()
}

use super::{owned as ov, var_dict as dict};

fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A host's nsswitch.conf, cut down: every line but `hosts:` must come through unchanged.
const HOST_NSSWITCH: &str = "\
# /etc/nsswitch.conf

passwd:         files systemd
group:          files systemd
hosts:          files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname
networks:       files
netgroup:       nis
";

const NETNS_NSSWITCH: &str = "\
# /etc/nsswitch.conf

passwd:         files systemd
group:          files systemd
hosts: files dns
networks:       files
netgroup:       nis
";

/// Config as nm-openvpn 1.10 sends it (helper key order: gateway, can-persist, tundev, mtu,
/// has-ip4, has-ip6).
pub(crate) fn config(has_ip6: bool) -> VarDict {
    let mut d = dict(vec![
        (GATEWAY, ov(v4("198.18.0.1"))),
        (CAN_PERSIST, ov(true)),
        (TUNDEV, ov("tun0")),
        (MTU, ov(1500u32)),
        (HAS_IP4, ov(true)),
    ]);
    if has_ip6 {
        d.insert(HAS_IP6.to_owned(), ov(true));
    }
    d
}

/// An Ip4Config as nm-openvpn's helper sends it: the server's tunnel address as
/// `internal-gateway`, our `address`/`prefix` (and the gateway as `ptp` for a point-to-point
/// link), one pushed route through the gateway, DNS 198.19.0.1 and the domain vpn.test.
fn ip4_config(gateway: &str, address: &str, ptp: bool, prefix: u32, route: (&str, u32)) -> VarDict {
    let mut d = dict(vec![
        (INTERNAL_GATEWAY, ov(v4(gateway))),
        (ADDRESS, ov(v4(address))),
        (PREFIX, ov(prefix)),
        (ROUTES, ov(vec![vec![v4(route.0), route.1, v4(gateway), 0]])),
        (DNS, ov(vec![v4("198.19.0.1")])),
        (DOMAINS, ov(vec!["vpn.test"])),
    ]);
    if ptp {
        d.insert(PTP.to_owned(), ov(v4(gateway)));
    }
    d
}

/// `topology subnet`: ifconfig_local 198.19.0.2, ifconfig_netmask 255.255.255.0,
/// route_vpn_gateway 198.19.0.1, `push "route 198.18.64.0 255.255.192.0"`.
fn ip4_subnet() -> VarDict {
    ip4_config("198.19.0.1", "198.19.0.2", false, 24, ("198.18.64.0", 18))
}

/// `topology net30`: ifconfig_local 198.19.0.6, ifconfig_remote 198.19.0.5 and no netmask,
/// so the helper sends `ptp` and a /32; the server pushes a route to its own tun address.
fn ip4_net30() -> VarDict {
    ip4_config("198.19.0.5", "198.19.0.6", true, 32, ("198.19.0.1", 32))
}

/// `server-ipv6 fd00:198:19::/64`: ifconfig_ipv6_local fd00:198:19::1000/64, remote
/// fd00:198:19::1 (the helper's next hop for routes without one),
/// `push "route-ipv6 fd00:198:19:1::/64"`, `push "dhcp-option DNS fd00:198:19::1"`.
fn ip6() -> VarDict {
    dict(vec![
        (ADDRESS, ov(ay("fd00:198:19::1000"))),
        (PREFIX, ov(64u32)),
        (
            ROUTES,
            ov(vec![(
                ay("fd00:198:19:1::"),
                64u32,
                ay("fd00:198:19::1"),
                0u32,
            )]),
        ),
        (DNS, ov(vec![ay("fd00:198:19::1")])),
        (DOMAINS, ov(vec!["vpn.test"])),
    ])
}

fn netns() -> NetnsName {
    "work".parse().unwrap()
}

fn input<'a>(
    config: &'a VarDict,
    ip4: Option<&'a VarDict>,
    ip6: Option<&'a VarDict>,
) -> PlanInput<'a> {
    PlanInput {
        netns: netns(),
        never_default_v4: false,
        never_default_v6: false,
        tunnel_mtu: None,
        config,
        ip4_config: ip4,
        ip6_config: ip6,
        host_nsswitch: HOST_NSSWITCH,
    }
}

fn tun0() -> LinkPlan {
    LinkPlan {
        name: "tun0".parse().unwrap(),
        mtu: Some(1500),
    }
}

/// The plan for [`ip4_config`] with the same arguments: the address, the peer on a
/// point-to-point link, the pushed route and the default route, all through the gateway.
fn v4_plan(
    gateway: &str,
    address: &str,
    ptp: bool,
    prefix: u8,
    route: (&str, u8),
) -> FamilyPlan<Ipv4Addr> {
    let via = Some(a4(gateway));
    FamilyPlan {
        address: a4(address),
        prefix,
        peer: via.filter(|_| ptp),
        routes: vec![Route {
            dest: a4(route.0),
            prefix: route.1,
            via,
            metric: 0,
        }],
        default_route: Some(DefaultRoute { via }),
        preserve_routes: false,
    }
}

fn subnet_v4_plan() -> FamilyPlan<Ipv4Addr> {
    v4_plan("198.19.0.1", "198.19.0.2", false, 24, ("198.18.64.0", 18))
}

fn net30_v4_plan() -> FamilyPlan<Ipv4Addr> {
    v4_plan("198.19.0.5", "198.19.0.6", true, 32, ("198.19.0.1", 32))
}

fn v6_plan() -> FamilyPlan<Ipv6Addr> {
    FamilyPlan {
        address: a6("fd00:198:19::1000"),
        prefix: 64,
        peer: None,
        routes: vec![Route {
            dest: a6("fd00:198:19:1::"),
            prefix: 64,
            via: Some(a6("fd00:198:19::1")),
            metric: 0,
        }],
        default_route: Some(DefaultRoute { via: None }),
        preserve_routes: false,
    }
}

const RESOLV_V4: &str = "\
# Written by nm-vpn-netns for the VPN in network namespace work.
nameserver 198.19.0.1
search vpn.test
";

const RESOLV_V4_V6: &str = "\
# Written by nm-vpn-netns for the VPN in network namespace work.
nameserver 198.19.0.1
nameserver fd00:198:19::1
search vpn.test
";

const RESOLV_NO_DNS: &str = "\
# Written by nm-vpn-netns for the VPN in network namespace work.
# The VPN pushed no DNS server. Lookups fail closed: they never reach the host's resolver.
";

/// Each captured Ip4Config, alone and with the captured Ip6Config, gives exactly this plan.
#[test]
fn golden_plans() {
    for (name, ip4, ipv4) in [
        ("subnet", ip4_subnet(), subnet_v4_plan()),
        ("net30", ip4_net30(), net30_v4_plan()),
    ] {
        for ipv6 in [false, true] {
            let (c, i6) = (config(ipv6), ip6());
            assert_eq!(
                build(&input(&c, Some(&ip4), ipv6.then_some(&i6))).unwrap(),
                IsolationPlan {
                    netns: netns(),
                    link: tun0(),
                    ipv4: Some(ipv4.clone()),
                    ipv6: ipv6.then(v6_plan),
                    resolv_conf: if ipv6 { RESOLV_V4_V6 } else { RESOLV_V4 }.to_owned(),
                    nsswitch_conf: NETNS_NSSWITCH.to_owned(),
                },
                "{name}, ipv6 {ipv6}"
            );
        }
    }
}

#[test]
fn ipv4_is_decoded_in_native_byte_order() {
    let raw = u32::from_ne_bytes([198, 19, 0, 2]);
    let d = dict(vec![(ADDRESS, ov(raw))]);
    let r = Reader::new(DictName::Ip4Config, &d);
    assert_eq!(Ipv4Addr::read(&r, ADDRESS), Ok(Some(a4("198.19.0.2"))));
}

#[test]
fn ipv6_only() {
    let mut c = config(true);
    c.remove(HAS_IP4);
    let i6 = ip6();
    let plan = build(&input(&c, None, Some(&i6))).unwrap();
    assert_eq!(plan.ipv4, None);
    assert_eq!(plan.ipv6, Some(v6_plan()));
    assert_eq!(
        plan.resolv_conf,
        "# Written by nm-vpn-netns for the VPN in network namespace work.\n\
         nameserver fd00:198:19::1\n\
         search vpn.test\n"
    );
}

#[test]
fn tap_without_ip_config_gets_no_family_and_no_dns() {
    let c = dict(vec![
        (GATEWAY, ov(v4("198.18.0.1"))),
        (CAN_PERSIST, ov(true)),
        (TUNDEV, ov("tap0")),
        (MTU, ov(1500u32)),
    ]);
    let plan = build(&input(&c, None, None)).unwrap();
    assert_eq!(plan.link.name.as_str(), "tap0");
    assert_eq!((plan.ipv4, plan.ipv6), (None, None));
    assert_eq!(plan.resolv_conf, RESOLV_NO_DNS);
}

/// The profile's `never-default` of one family drops that family's default route only.
#[test]
fn never_default_from_profile() {
    let (c, i4, i6) = (config(true), ip4_subnet(), ip6());
    for (v4, v6) in [(true, false), (false, true)] {
        let plan = build(&PlanInput {
            never_default_v4: v4,
            never_default_v6: v6,
            tunnel_mtu: None,
            ..input(&c, Some(&i4), Some(&i6))
        })
        .unwrap();
        let (got4, got6) = (plan.ipv4.unwrap(), plan.ipv6.unwrap());
        let (want4, want6) = (subnet_v4_plan(), v6_plan());
        assert_eq!(got4.routes, want4.routes);
        assert_eq!(got6.routes, want6.routes);
        assert_eq!(got4.default_route, want4.default_route.filter(|_| !v4));
        assert_eq!(got6.default_route, want6.default_route.filter(|_| !v6));
    }
}

#[test]
fn never_default_pushed_by_the_server_is_honoured() {
    let c = config(true);
    let mut i4 = ip4_subnet();
    i4.insert(NEVER_DEFAULT.to_owned(), ov(true));
    let mut i6 = ip6();
    i6.insert(NEVER_DEFAULT.to_owned(), ov(false));
    let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
    assert_eq!(plan.ipv4.unwrap().default_route, None);
    assert_eq!(
        plan.ipv6.unwrap().default_route,
        Some(DefaultRoute { via: None })
    );
}

#[test]
fn no_dns_pushed() {
    let c = config(false);
    let mut i4 = ip4_subnet();
    i4.remove(DNS);
    i4.remove(DOMAINS);
    let plan = build(&input(&c, Some(&i4), None)).unwrap();
    assert_eq!(plan.resolv_conf, RESOLV_NO_DNS);
    assert!(!plan.resolv_conf.contains("nameserver"));
}

#[test]
fn search_domains_are_merged_in_order_without_repeats() {
    let c = config(true);
    let mut i4 = ip4_subnet();
    i4.insert(DOMAIN.to_owned(), ov("corp.test"));
    i4.insert(DOMAINS.to_owned(), ov(vec!["vpn.test", "corp.test"]));
    let mut i6 = ip6();
    i6.insert(DOMAINS.to_owned(), ov(vec!["vpn.test", "lab.test"]));
    let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
    assert!(plan
        .resolv_conf
        .ends_with("\nsearch corp.test vpn.test lab.test\n"));
}

#[test]
fn routes_are_cleaned_up_like_nm_does() {
    let c = config(false);
    let mut i4 = ip4_subnet();
    i4.insert(
        ROUTES.to_owned(),
        ov(vec![
            // host bits set: becomes 198.18.64.0/18
            vec![v4("198.18.64.7"), 18, v4("198.19.0.1"), 0],
            // the same route again
            vec![v4("198.18.64.0"), 18, v4("198.19.0.1"), 0],
            // the same destination with another metric is another route
            vec![v4("198.18.64.0"), 18, v4("198.19.0.1"), 50],
            // host route to the VPN server through the uplink (`net_gateway`)
            vec![v4("198.18.0.1"), 32, v4("198.18.255.254"), 0],
            // a pushed default route
            vec![0, 0, v4("198.19.0.1"), 0],
            // no next hop
            vec![v4("198.18.128.0"), 24, 0, 0],
        ]),
    );
    let plan = build(&input(&c, Some(&i4), None)).unwrap();
    let v4 = plan.ipv4.unwrap();
    assert_eq!(
        v4.routes,
        vec![
            Route {
                dest: a4("198.18.64.0"),
                prefix: 18,
                via: Some(a4("198.19.0.1")),
                metric: 0,
            },
            Route {
                dest: a4("198.18.64.0"),
                prefix: 18,
                via: Some(a4("198.19.0.1")),
                metric: 50,
            },
            Route {
                dest: a4("198.18.128.0"),
                prefix: 24,
                via: None,
                metric: 0,
            },
        ]
    );
    assert_eq!(v4.default_route, subnet_v4_plan().default_route);
}

#[test]
fn ipv6_route_host_bits_and_missing_next_hop() {
    let c = config(true);
    let i4 = ip4_subnet();
    let mut i6 = ip6();
    i6.insert(
        ROUTES.to_owned(),
        ov(vec![(ay("fd00:198:19:2::99"), 64u32, ay("::"), 0u32)]),
    );
    let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
    assert_eq!(
        plan.ipv6.unwrap().routes,
        vec![Route {
            dest: a6("fd00:198:19:2::"),
            prefix: 64,
            via: None,
            metric: 0,
        }]
    );
}

#[test]
fn preserve_routes_on_restart() {
    let c = config(false);
    let mut i4 = ip4_subnet();
    i4.remove(ROUTES);
    i4.insert(PRESERVE_ROUTES.to_owned(), ov(true));
    let v4 = build(&input(&c, Some(&i4), None)).unwrap().ipv4.unwrap();
    assert!(v4.preserve_routes);
    assert_eq!(v4.routes, vec![]);
    assert_eq!(v4.default_route, subnet_v4_plan().default_route);
}

#[test]
fn missing_prefix_uses_nm_defaults() {
    let c = config(true);
    let mut i4 = ip4_subnet();
    i4.remove(PREFIX);
    let mut i6 = ip6();
    i6.remove(PREFIX);
    let plan = build(&input(&c, Some(&i4), Some(&i6))).unwrap();
    assert_eq!(plan.ipv4.unwrap().prefix, 24);
    assert_eq!(plan.ipv6.unwrap().prefix, 128);
}

#[test]
fn no_mtu_leaves_the_link_mtu_alone() {
    let mut c = config(false);
    c.remove(MTU);
    let i4 = ip4_subnet();
    assert_eq!(build(&input(&c, Some(&i4), None)).unwrap().link.mtu, None);
}

mod caps;
mod mirror;
mod refusals;

pub(crate) use refusals::{invalid, wrong_type};

#[test]
fn nsswitch_hosts_line_is_replaced_and_the_rest_kept() {
    assert_eq!(render_nsswitch(HOST_NSSWITCH), NETNS_NSSWITCH);
    // glibc skips leading blanks, allows blanks before ':' and takes the last `hosts` line.
    assert_eq!(
        render_nsswitch("  hosts : resolve\npasswd: files\r\nhosts\tfiles myhostname"),
        "hosts: files dns\npasswd: files\r\nhosts: files dns"
    );
    // Comments and other databases that start with "hosts" are not the hosts database.
    assert_eq!(
        render_nsswitch("#hosts: resolve\nhostsfoo: x\n"),
        "#hosts: resolve\nhostsfoo: x\nhosts: files dns\n"
    );
}

#[test]
fn nsswitch_without_hosts_line_gets_one() {
    assert_eq!(render_nsswitch(""), "hosts: files dns\n");
    assert_eq!(
        render_nsswitch("passwd: files"),
        "passwd: files\nhosts: files dns\n"
    );
    assert_eq!(
        render_nsswitch("passwd: files\n"),
        "passwd: files\nhosts: files dns\n"
    );
}
