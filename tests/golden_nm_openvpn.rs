//! Golden plans for dicts captured from the real nm-openvpn 1.10.2 with openvpn 2.6.14 on the e2e rig
//! (`dbus-monitor --system` on the sandbox's bus while `nmcli connection up` ran), byte for byte:
//! both captures, `topology subnet` and `topology net30`, are in `common`.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::{openvpn_config, openvpn_ip4, openvpn_ip6, openvpn_net30, VarDict};
use nm_vpn_netns::plan::{self, DefaultRoute, FamilyPlan, PlanInput, Route};
use nm_vpn_netns::shim::codec;
use zbus::Variant;

const HOST_NSSWITCH: &str =
    "passwd: files\nhosts: files mdns4_minimal [NOTFOUND=return] dns myhostname\n";

fn build(config: &VarDict, ip4: Option<&VarDict>, ip6: Option<&VarDict>) -> plan::IsolationPlan {
    plan::build(&PlanInput {
        netns: "work".parse().unwrap(),
        never_default_v4: false,
        never_default_v6: false,
        tunnel_mtu: None,
        config,
        ip4_config: ip4,
        ip6_config: ip6,
        host_nsswitch: HOST_NSSWITCH,
    })
    .unwrap()
}

/// `topology subnet` with `server-ipv6 fd00:198:19::/64`: 198.19.0.2/24 and fd00:198:19::1000/64.
#[test]
fn topology_subnet_with_ipv6() {
    let (config, ip4, ip6) = (
        openvpn_config("tun0", true),
        openvpn_ip4("tun0"),
        openvpn_ip6(),
    );
    let plan = build(&config, Some(&ip4), Some(&ip6));

    assert_eq!(plan.link.name.as_str(), "tun0");
    assert_eq!(plan.link.mtu, Some(1500));
    assert_eq!(
        plan.ipv4,
        Some(FamilyPlan {
            address: Ipv4Addr::new(198, 19, 0, 2),
            prefix: 24,
            peer: None,
            routes: vec![],
            default_route: Some(DefaultRoute { via: None }),
            preserve_routes: false,
        })
    );
    assert_eq!(
        plan.ipv6,
        Some(FamilyPlan {
            address: "fd00:198:19::1000".parse::<Ipv6Addr>().unwrap(),
            prefix: 64,
            peer: None,
            routes: vec![],
            default_route: Some(DefaultRoute { via: None }),
            preserve_routes: false,
        })
    );
    let resolv: Vec<&str> = plan
        .resolv_conf
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(resolv, ["nameserver 198.19.0.1", "search vpn.test"]);
    assert_eq!(
        plan.nsswitch_conf, "passwd: files\nhosts: files dns\n",
        "only the hosts line changes"
    );
    // The gateway (198.18.0.1) is the VPN server on the uplink; NM routes it, never the namespace.
    assert!(plan.resolv_conf.lines().all(|l| !l.contains("198.18.")));
}

/// `topology net30`: a /32 with a ptp peer, and the server's pushed route to its own tunnel end.
#[test]
fn topology_net30_ipv4_only() {
    let (config, ip4) = openvpn_net30();
    let plan = build(&config, Some(&ip4), None);

    let peer = Ipv4Addr::new(198, 19, 2, 5);
    assert_eq!(
        plan.ipv4,
        Some(FamilyPlan {
            address: Ipv4Addr::new(198, 19, 2, 6),
            prefix: 32,
            peer: Some(peer),
            routes: vec![Route {
                dest: Ipv4Addr::new(198, 19, 2, 1),
                prefix: 32,
                via: Some(peer),
                metric: 0,
            }],
            default_route: Some(DefaultRoute { via: Some(peer) }),
            preserve_routes: false,
        })
    );
    assert_eq!(
        plan.ipv6, None,
        "no IPv6 from the VPN: no IPv6 route at all"
    );

    let reduced = codec::isolated_nm_config(&config).unwrap();
    let mut keys: Vec<&str> = reduced.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["can-persist", "gateway", "has-ip4", "has-ip6"]);
    assert_eq!(*reduced["has-ip4"], Variant::from(false));
    assert_eq!(*reduced["has-ip6"], Variant::from(false));
}
