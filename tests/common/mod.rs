//! Fixtures shared by the integration tests: the agent served over the recording fake (`agent`), a
//! private bus daemon (`bus`), a fake of NetworkManager's settings (`nm`), and NetworkManager's dicts as the real nm-openvpn 1.10.2
//! (with openvpn 2.6.14) sent them on the e2e rig, captured with `dbus-monitor --system` while
//! `nmcli connection up` ran, and the helpers to write such dicts.
//!
//! The rig's server: underlay gateway 198.18.0.1, `topology subnet` on 198.19.0.0/24 with
//! `server-ipv6 fd00:198:19::/64`, and pushed `dhcp-option DNS 198.19.0.1` and `DOMAIN vpn.test`.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

pub mod agent;
pub mod bus;
pub mod nm;

use std::net::{Ipv4Addr, Ipv6Addr};

pub use nm_vpn_netns::plan::{owned as ov, var_dict as dict, VarDict};

/// The uuid of the test connection.
pub const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";

/// An IPv4 address as NM's dicts carry it: its bytes read as a native-endian u32.
pub fn v4(s: &str) -> u32 {
    u32::from_ne_bytes(s.parse::<Ipv4Addr>().unwrap().octets())
}

/// An IPv6 address as NM's dicts carry it: `ay`.
pub fn ay(s: &str) -> Vec<u8> {
    s.parse::<Ipv6Addr>().unwrap().octets().to_vec()
}

/// The captured `Config` for a tun named `tundev`; `has-ip6` only when the server pushed IPv6.
pub fn openvpn_config(tundev: &str, has_ip6: bool) -> VarDict {
    let mut config = dict(vec![
        ("gateway", ov(v4("198.18.0.1"))),
        ("can-persist", ov(true)),
        ("tundev", ov(tundev)),
        ("mtu", ov(1500u32)),
        ("has-ip4", ov(true)),
    ]);
    if has_ip6 {
        config.insert("has-ip6".to_owned(), ov(true));
    }
    config
}

/// The captured `Ip4Config` of `topology subnet`: 198.19.0.2/24. NM's plugin library adds
/// `tundev`, `gateway` and `mtu`, which the planner must accept.
pub fn openvpn_ip4(tundev: &str) -> VarDict {
    dict(vec![
        ("address", ov(v4("198.19.0.2"))),
        ("prefix", ov(24u32)),
        ("dns", ov(vec![v4("198.19.0.1")])),
        ("domains", ov(vec!["vpn.test"])),
        ("tundev", ov(tundev)),
        ("gateway", ov(v4("198.18.0.1"))),
        ("mtu", ov(1500u32)),
    ])
}

/// The captured `Ip6Config`: fd00:198:19::1000/64, with the search domain and no DNS server.
pub fn openvpn_ip6() -> VarDict {
    dict(vec![
        ("address", ov(ay("fd00:198:19::1000"))),
        ("prefix", ov(64u32)),
        ("domains", ov(vec!["vpn.test"])),
    ])
}

/// The captured `Config` and `Ip4Config` of `topology net30` (openvpn's default for IPv4-only
/// servers): a /32 with a ptp peer, and the server's pushed route to its own tunnel end.
pub fn openvpn_net30() -> (VarDict, VarDict) {
    let config = dict(vec![
        ("gateway", ov(16782022u32)),
        ("can-persist", ov(true)),
        ("tundev", ov("tun0")),
        ("mtu", ov(1500u32)),
        ("has-ip4", ov(true)),
    ]);
    let ip4 = dict(vec![
        ("internal-gateway", ov(84022214u32)),
        ("address", ov(100799430u32)),
        ("ptp", ov(84022214u32)),
        ("prefix", ov(32u32)),
        ("routes", ov(vec![vec![16913350u32, 32, 84022214, 0]])),
        ("dns", ov(vec![16782278u32])),
        ("domains", ov(vec!["vpn.test"])),
        ("tundev", ov("tun0")),
        ("gateway", ov(16782022u32)),
        ("mtu", ov(1500u32)),
    ]);
    (config, ip4)
}
