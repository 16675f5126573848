//! The dicts the shim passes on: NetworkManager's connection to the stock service, the stock
//! service's config to the agent, and the agent's answer back. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use zbus::{OwnedVariant, Variant};

use crate::contract::{IsolateRequest, PrepareRequest};
use crate::plan::mirror::{self, Origin};
use crate::plan::nm::{DictName, Reader, BANNER, CAN_PERSIST, GATEWAY, HAS_IP4, HAS_IP6};
use crate::plan::settings::{self, ConnectionInfo, NmConnection};
use crate::plan::{PlanError, VarDict};

use super::ShimError;

/// What the agent needs to isolate a connection, taken from the dict of Connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsIntent {
    pub id: String,
    pub uuid: String,
    pub permissions: Vec<String>,
    /// The connection's `netns-*` keys as in `vpn.data`: the agent validates them itself.
    pub netns_settings: BTreeMap<String, String>,
    /// The keys came from the mirror: `vpn.data` lost them, and gets them back once the VPN is up.
    pub from_mirror: bool,
    pub never_default_v4: bool,
    pub never_default_v6: bool,
    /// nm-openvpn's `tunnel-mtu`: the agent sets it on the tun, as openvpn does not
    /// (`--ifconfig-noexec`). Always `None` for another service ([`settings::tunnel_mtu`]).
    pub tunnel_mtu: Option<u32>,
    /// `netns-timeout`, which the agent enforces.
    pub timeout: Duration,
    /// `vpn.timeout` in seconds, if the profile sets it: the agent undoes a preparation that no
    /// isolation took by then.
    pub connect_timeout: Option<u32>,
}

/// A connection dict of Connect, ConnectInteractive or NeedSecrets after the shim checked it.
#[derive(Debug)]
pub struct Checked {
    /// What the stock service gets: `vpn.data` without `netns-*`.
    pub connection: NmConnection,
    /// `Some` when `netns-isolate` is on.
    pub intent: Option<NetnsIntent>,
}

/// Validates every `netns-*` key of a connection of the VPN `service`, even with isolation off, so
/// that a typo refuses the connection instead of being ignored, and strips them for the stock
/// service: nm-openvpn refuses unknown keys, nm-openconnect logs them and goes on
/// (`validate_one_property`). The keys come from `vpn.data`, or from the mirror in `user.data`
/// when `vpn.data` has none ([`mirror::decide`]); the mirror stays in the connection, as the stock
/// service ignores `user`.
pub fn check(connection: NmConnection, service: &str) -> Result<Checked, ShimError> {
    let info = ConnectionInfo::from_nm(&connection).map_err(ShimError::Config)?;
    let data = settings::vpn_data_from_nm(&connection).map_err(ShimError::Config)?;
    let decided = mirror::decide(&connection, &info).map_err(ShimError::Config)?;
    let settings = decided.settings;
    // Without isolation, the key is the stock service's alone.
    let tunnel_mtu = match settings.isolate {
        true => settings::tunnel_mtu(service, &data).map_err(ShimError::Config)?,
        false => None,
    };
    let connect_timeout = match settings.isolate {
        true => settings::vpn_timeout_from_nm(&connection).map_err(ShimError::Config)?,
        false => None,
    };
    let intent = settings.isolate.then(|| NetnsIntent {
        id: info.id,
        uuid: info.uuid,
        permissions: info.permissions,
        netns_settings: decided.keys,
        from_mirror: decided.origin == Origin::Mirror,
        never_default_v4: settings.never_default_v4,
        never_default_v6: settings.never_default_v6,
        tunnel_mtu,
        timeout: settings.timeout,
        connect_timeout,
    });
    Ok(Checked {
        connection: strip_data(connection, &data),
        intent,
    })
}

/// Only strips: NewSecrets carries the whole connection again, already checked at Connect.
pub fn strip(connection: NmConnection) -> Result<NmConnection, ShimError> {
    let data = settings::vpn_data_from_nm(&connection).map_err(ShimError::Config)?;
    Ok(strip_data(connection, &data))
}

fn strip_data(mut connection: NmConnection, data: &BTreeMap<String, String>) -> NmConnection {
    // Leave a dict without our keys exactly as NM sent it.
    if data.keys().any(|k| settings::is_netns_key(k)) {
        let kept: HashMap<String, String> = settings::strip_netns_keys(data).into_iter().collect();
        if let Some(vpn) = connection.get_mut("vpn") {
            vpn.insert("data".to_owned(), OwnedVariant::from(kept));
        }
    }
    connection
}

/// The tun that the stock service's Config names, which the agent is to move.
pub fn tundev(config: &VarDict) -> Result<&str, ShimError> {
    match config.get("tundev").map(|v| &**v) {
        Some(Variant::Str(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(ShimError::NoTunDev),
    }
}

/// A complete set from the stock service: its Config, and the Ip4Config and Ip6Config that the
/// Config announced.
#[derive(Debug, PartialEq)]
pub struct ConfigSet {
    pub config: VarDict,
    pub ip4: Option<VarDict>,
    pub ip6: Option<VarDict>,
}

/// The agent's `Isolate` request.
/// `Prepare`'s request: what Connect tells of the connection.
pub fn prepare_request(intent: &NetnsIntent) -> PrepareRequest {
    PrepareRequest {
        id: intent.id.clone(),
        uuid: intent.uuid.clone(),
        permissions: Some(intent.permissions.clone()),
        netns_settings: Some(intent.netns_settings.clone().into_iter().collect()),
        never_default_v4: Some(intent.never_default_v4),
        never_default_v6: Some(intent.never_default_v6),
        tunnel_mtu: intent.tunnel_mtu,
        connect_timeout: intent.connect_timeout,
    }
}

pub fn isolate_request(intent: &NetnsIntent, ifindex: u32, set: &ConfigSet) -> IsolateRequest {
    IsolateRequest {
        id: intent.id.clone(),
        uuid: intent.uuid.clone(),
        permissions: Some(intent.permissions.clone()),
        netns_settings: Some(intent.netns_settings.clone().into_iter().collect()),
        never_default_v4: Some(intent.never_default_v4),
        never_default_v6: Some(intent.never_default_v6),
        tunnel_mtu: intent.tunnel_mtu,
        ifindex,
        config: set.config.clone(),
        ip4_config: set.ip4.clone(),
        ip6_config: set.ip6.clone(),
    }
}

/// The addresses of NM's Ip4Config/Ip6Config, for the one line logged per isolation.
pub fn addresses(set: &ConfigSet) -> Vec<String> {
    let (ip4, ip6) = (set.ip4.as_ref(), set.ip6.as_ref());
    let prefix = |d: &VarDict| match d.get("prefix").map(|v| &**v) {
        Some(Variant::U32(p)) => format!("/{p}"),
        _ => String::new(),
    };
    let v4 = ip4.and_then(|d| match d.get("address").map(|v| &**v) {
        // NM's IPv4 addresses are the address bytes read as a native-endian u32.
        Some(Variant::U32(a)) => Some(format!("{}{}", Ipv4Addr::from(a.to_ne_bytes()), prefix(d))),
        _ => None,
    });
    let v6 = ip6.and_then(|d| {
        let bytes = Vec::<u8>::try_from(d.get("address")?.try_clone().ok()?).ok()?;
        let octets: [u8; 16] = bytes.try_into().ok()?;
        Some(format!("{}{}", Ipv6Addr::from(octets), prefix(d)))
    });
    v4.into_iter().chain(v6).collect()
}

/// The `Config` the shim reports to NetworkManager for an isolated connection: the external
/// gateway, `banner` and `can-persist` forwarded, `has-ip4`/`has-ip6` false, nothing else. NM
/// then reaches ACTIVATED without installing anything in the root namespace; a `tundev` would
/// make it look the tun up there, and any IP setting would land on the host.
pub fn isolated_nm_config(config: &VarDict) -> Result<VarDict, PlanError> {
    let reader = Reader::new(DictName::Config, config);
    let gateway = match reader.gateway()? {
        IpAddr::V4(a) => OwnedVariant::from(u32::from_ne_bytes(a.octets())),
        IpAddr::V6(a) => OwnedVariant::try_from(Variant::from(a.octets().to_vec()))
            .expect("a byte array holds no file descriptor"),
    };
    let mut out = VarDict::from([
        (GATEWAY.to_owned(), gateway),
        (HAS_IP4.to_owned(), OwnedVariant::from(false)),
        (HAS_IP6.to_owned(), OwnedVariant::from(false)),
    ]);
    if let Some(banner) = reader.str(BANNER)? {
        out.insert(
            BANNER.to_owned(),
            OwnedVariant::from(zbus::Str::from(banner.to_owned())),
        );
    }
    if let Some(can_persist) = reader.bool(CAN_PERSIST)? {
        out.insert(CAN_PERSIST.to_owned(), OwnedVariant::from(can_persist));
    }
    Ok(out)
}

/// Adds the line that names the VPN's namespace and the command that runs an app there to the
/// banner NM shows (`VPN.BANNER` in `nmcli connection show`, the desktop's notification), below
/// a banner the server sent.
pub fn add_netns_banner(reduced: &mut VarDict, netns: &str) {
    let line = format!(
        "This VPN is isolated in network namespace \"{netns}\": run apps there with: \
         nm-vpn-netns exec {netns} -- COMMAND"
    );
    let banner = match reduced.get(BANNER).map(|v| &**v) {
        Some(Variant::Str(server)) if !server.trim_end().is_empty() => {
            format!("{}\n{line}", server.as_str().trim_end_matches('\n'))
        }
        _ => line,
    };
    reduced.insert(
        BANNER.to_owned(),
        OwnedVariant::from(zbus::Str::from(banner)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::settings::SettingsError;

    const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";

    use crate::plan::nm::{MTU, TUNDEV};
    use crate::plan::settings::OPENVPN_SERVICE;
    use crate::plan::tests::{ay, config, invalid, v4, wrong_type};
    use crate::plan::{owned as ov, var_dict as dict};

    fn connection(data: &[(&str, &str)]) -> NmConnection {
        let data: HashMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secrets: HashMap<String, String> =
            [("password".to_owned(), "hunter2".to_owned())].into();
        NmConnection::from([
            (
                "connection".to_owned(),
                HashMap::from([
                    ("id".to_owned(), ov("Work VPN")),
                    ("uuid".to_owned(), ov(UUID)),
                    ("permissions".to_owned(), ov(vec!["user:alice:"])),
                ]),
            ),
            (
                "vpn".to_owned(),
                HashMap::from([
                    ("data".to_owned(), OwnedVariant::from(data)),
                    ("secrets".to_owned(), OwnedVariant::from(secrets)),
                ]),
            ),
            (
                "ipv6".to_owned(),
                HashMap::from([("never-default".to_owned(), ov(true))]),
            ),
        ])
    }

    fn vpn_data(c: &NmConnection) -> BTreeMap<String, String> {
        settings::vpn_data_from_nm(c).unwrap()
    }

    #[test]
    fn isolated_connection_is_stripped_and_described() {
        let c = connection(&[
            ("remote", "vpn.example.com"),
            ("netns-isolate", "yes"),
            ("netns-timeout", "2500"),
        ]);
        let checked = check(c, OPENVPN_SERVICE).unwrap();
        assert_eq!(
            vpn_data(&checked.connection).keys().collect::<Vec<_>>(),
            ["remote"]
        );
        // Everything but vpn.data reaches the stock service as it came, secrets included.
        let secrets = &checked.connection["vpn"]["secrets"];
        assert_eq!(
            HashMap::<String, String>::try_from(secrets.clone()).unwrap()["password"],
            "hunter2"
        );
        assert_eq!(checked.connection["ipv6"]["never-default"], ov(true));
        assert_eq!(
            checked.intent,
            Some(NetnsIntent {
                id: "Work VPN".into(),
                uuid: UUID.into(),
                permissions: vec!["user:alice:".into()],
                netns_settings: BTreeMap::from([
                    ("netns-isolate".into(), "yes".into()),
                    ("netns-timeout".into(), "2500".into()),
                ]),
                from_mirror: false,
                never_default_v4: false,
                never_default_v6: true,
                tunnel_mtu: None,
                timeout: Duration::from_millis(2500),
                connect_timeout: None,
            })
        );
    }

    #[test]
    fn keys_are_stripped_without_isolation() {
        let checked = check(
            connection(&[("remote", "x"), ("netns-isolate", "no")]),
            OPENVPN_SERVICE,
        )
        .unwrap();
        assert_eq!(checked.intent, None);
        assert_eq!(
            vpn_data(&checked.connection).keys().collect::<Vec<_>>(),
            ["remote"]
        );
        let stripped = strip(connection(&[("remote", "x"), ("netns-bogus", "1")])).unwrap();
        assert_eq!(vpn_data(&stripped).keys().collect::<Vec<_>>(), ["remote"]);
    }

    #[test]
    fn dicts_without_our_keys_stay_as_sent() {
        let c = connection(&[("remote", "x")]);
        let before = format!("{c:?}");
        let checked = check(c, OPENVPN_SERVICE).unwrap();
        assert_eq!(format!("{:?}", checked.connection), before);
    }

    #[test]
    fn bad_keys_refuse_even_without_isolation() {
        let e = check(
            connection(&[("netns-isolate", "no"), ("netns-timeout", "0")]),
            OPENVPN_SERVICE,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            ShimError::Config(SettingsError::InvalidValue {
                key: "netns-timeout",
                ..
            })
        ));
        let text = crate::report::chain(&e);
        assert!(
            text.contains("netns-timeout") && text.contains("\"0\""),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn static_settings_refuse_an_isolated_connection() {
        let mut c = connection(&[("netns-isolate", "yes")]);
        c.insert(
            "ipv4".into(),
            HashMap::from([("dns".to_owned(), ov(vec![0x0100_0a0au32]))]),
        );
        let text = crate::report::chain(&check(c, OPENVPN_SERVICE).unwrap_err());
        assert!(text.contains("ipv4.dns is set"), "{text}");
    }

    #[test]
    fn request_has_the_idl_fields() {
        let intent = check(
            connection(&[("netns-isolate", "yes"), ("remote", "x")]),
            OPENVPN_SERVICE,
        )
        .unwrap()
        .intent
        .unwrap();
        let config = dict(vec![("tundev", ov("tun0")), ("has-ip4", ov(true))]);
        let ip4 = dict(vec![("address", ov(0x0200_13c6u32))]);
        let set = ConfigSet {
            config: config.clone(),
            ip4: Some(ip4.clone()),
            ip6: None,
        };
        let r = isolate_request(&intent, 7, &set);
        assert_eq!(
            r,
            IsolateRequest {
                id: "Work VPN".into(),
                uuid: intent.uuid.clone(),
                permissions: Some(vec!["user:alice:".into()]),
                netns_settings: Some(HashMap::from([(
                    "netns-isolate".to_owned(),
                    "yes".to_owned()
                )])),
                never_default_v4: Some(false),
                never_default_v6: Some(true),
                tunnel_mtu: None,
                ifindex: 7,
                config,
                ip4_config: Some(ip4),
                ip6_config: None,
            }
        );
    }

    /// The agent sets the tun's MTU (openvpn runs with --ifconfig-noexec), so it needs the
    /// profile's `tunnel-mtu`, which also stays in nm-openvpn's `vpn.data`.
    #[test]
    fn tunnel_mtu_is_read_and_sent() {
        let c = connection(&[("netns-isolate", "yes"), ("tunnel-mtu", "1400")]);
        let checked = check(c, OPENVPN_SERVICE).unwrap();
        assert!(vpn_data(&checked.connection).contains_key("tunnel-mtu"));
        let intent = checked.intent.unwrap();
        assert_eq!(intent.tunnel_mtu, Some(1400));
        let set = ConfigSet {
            config: dict(vec![("tundev", ov("tun0"))]),
            ip4: None,
            ip6: None,
        };
        assert_eq!(isolate_request(&intent, 7, &set).tunnel_mtu, Some(1400));
        let unset = check(
            connection(&[("netns-isolate", "yes"), ("tunnel-mtu", "")]),
            OPENVPN_SERVICE,
        )
        .unwrap();
        assert_eq!(unset.intent.unwrap().tunnel_mtu, None);
        let text = crate::report::chain(
            &check(
                connection(&[("netns-isolate", "yes"), ("tunnel-mtu", "big")]),
                OPENVPN_SERVICE,
            )
            .unwrap_err(),
        );
        assert!(
            text.contains("tunnel-mtu") && text.contains("\"big\""),
            "{text}"
        );
        // Without isolation the key is nm-openvpn's to judge.
        let passed = check(
            connection(&[("netns-isolate", "no"), ("tunnel-mtu", "big")]),
            OPENVPN_SERVICE,
        );
        assert!(passed.is_ok());
        // Nor is it ours for another plugin: nm-openconnect has no such key.
        let openconnect = "org.freedesktop.NetworkManager.openconnect";
        let other = check(
            connection(&[("netns-isolate", "yes"), ("tunnel-mtu", "big")]),
            openconnect,
        )
        .unwrap();
        assert_eq!(other.intent.unwrap().tunnel_mtu, None);
    }

    #[test]
    fn tundev_is_required() {
        assert_eq!(tundev(&dict(vec![("tundev", ov("tun0"))])).unwrap(), "tun0");
        for bad in [
            dict(vec![]),
            dict(vec![("tundev", ov(""))]),
            dict(vec![("tundev", ov(1u32))]),
        ] {
            assert!(matches!(tundev(&bad), Err(ShimError::NoTunDev)));
        }
    }

    #[test]
    fn addresses_for_the_log() {
        let ip4 = dict(vec![
            ("address", ov(u32::from_ne_bytes([198, 19, 0, 2]))),
            ("prefix", ov(24u32)),
        ]);
        let v6: Vec<u8> = "fd00:198:19::1000"
            .parse::<Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        let ip6 = dict(vec![("address", ov(v6)), ("prefix", ov(64u32))]);
        let set = |ip4, ip6| ConfigSet {
            config: VarDict::new(),
            ip4,
            ip6,
        };
        assert_eq!(
            addresses(&set(Some(ip4), Some(ip6))),
            ["198.19.0.2/24", "fd00:198:19::1000/64"]
        );
        assert!(addresses(&set(None, None)).is_empty());
    }

    /// What NM gets for an isolated VPN: the gateway, no IP config of ours, and `extra`.
    fn reduced(gateway: OwnedVariant, extra: Vec<(&str, OwnedVariant)>) -> VarDict {
        let mut d = dict(vec![
            (GATEWAY, gateway),
            (HAS_IP4, ov(false)),
            (HAS_IP6, ov(false)),
        ]);
        d.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        d
    }

    #[test]
    fn isolated_nm_config_keeps_only_what_nm_needs() {
        let mut c = config(true);
        c.insert(BANNER.to_owned(), ov("Welcome to vpn.test"));
        c.insert("pac".to_owned(), ov("http://198.18.0.80/proxy.pac"));
        assert_eq!(
            isolated_nm_config(&c).unwrap(),
            reduced(
                ov(v4("198.18.0.1")),
                vec![(BANNER, ov("Welcome to vpn.test")), (CAN_PERSIST, ov(true))]
            )
        );
    }

    #[test]
    fn isolated_nm_config_with_ipv6_gateway_and_nothing_optional() {
        let gateway = ov(ay("fd00:198:19:ffff::1"));
        let c = dict(vec![
            (GATEWAY, gateway.clone()),
            (TUNDEV, ov("tun0")),
            (MTU, ov(1500u32)),
            (HAS_IP6, ov(true)),
        ]);
        assert_eq!(isolated_nm_config(&c).unwrap(), reduced(gateway, vec![]));
    }

    #[test]
    fn isolated_nm_config_refuses_bad_values() {
        for (key, value, want) in [
            (
                BANNER,
                ov(1u32),
                wrong_type(DictName::Config, BANNER, "a string (s)", "u", "uint32 1"),
            ),
            (
                CAN_PERSIST,
                ov("yes"),
                wrong_type(
                    DictName::Config,
                    CAN_PERSIST,
                    "a boolean (b)",
                    "s",
                    "\"yes\"",
                ),
            ),
            (
                GATEWAY,
                ov(0u32),
                invalid(
                    DictName::Config,
                    GATEWAY,
                    "0.0.0.0",
                    "the address 0.0.0.0 is not usable",
                ),
            ),
        ] {
            let mut c = config(false);
            c.insert(key.to_owned(), value);
            assert_eq!(isolated_nm_config(&c), Err(want), "{key}");
        }
        let mut c = config(false);
        c.remove(GATEWAY);
        assert!(matches!(
            isolated_nm_config(&c),
            Err(PlanError::MissingKey { key: GATEWAY, .. })
        ));
    }

    #[test]
    fn the_banner_names_the_namespace_below_the_servers() {
        let line = "This VPN is isolated in network namespace \"u1000-work\": run apps there \
                    with: nm-vpn-netns exec u1000-work -- COMMAND";
        for (server, want) in [
            (None, line.to_owned()),
            (Some(""), line.to_owned()),
            (Some("Welcome\n"), format!("Welcome\n{line}")),
            (
                Some("Welcome\nto vpn.test"),
                format!("Welcome\nto vpn.test\n{line}"),
            ),
        ] {
            let mut c = config(false);
            if let Some(server) = server {
                c.insert(BANNER.to_owned(), ov(server));
            }
            let mut reduced = isolated_nm_config(&c).unwrap();
            add_netns_banner(&mut reduced, "u1000-work");
            assert_eq!(reduced[BANNER], ov(want.as_str()), "{server:?}");
        }
    }
}
