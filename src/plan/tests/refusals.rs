//! What the planner refuses, and how its errors name the dict, the key and the value.

use zbus::OwnedVariant;

use super::*;

/// Builds with one key of one dict replaced (or removed with `None`).
fn build_with(
    dict: DictName,
    key: &str,
    value: Option<OwnedVariant>,
) -> Result<IsolationPlan, PlanError> {
    let (mut c, mut i4, mut i6) = (config(true), ip4_subnet(), ip6());
    let target = match dict {
        DictName::Config => &mut c,
        DictName::Ip4Config => &mut i4,
        DictName::Ip6Config => &mut i6,
    };
    match value {
        Some(v) => target.insert(key.to_owned(), v),
        None => target.remove(key),
    };
    build(&input(&c, Some(&i4), Some(&i6)))
}

pub(crate) fn wrong_type(
    dict: DictName,
    key: &'static str,
    expected: &'static str,
    found: &str,
    value: &str,
) -> PlanError {
    PlanError::WrongType {
        dict,
        key,
        expected,
        found: found.to_owned(),
        value: value.to_owned(),
    }
}

pub(crate) fn invalid(dict: DictName, key: &'static str, value: &str, reason: &str) -> PlanError {
    PlanError::InvalidValue {
        dict,
        key,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

#[test]
fn wrong_types() {
    use DictName::*;
    for (dict, key, value, expected, found) in [
        (Config, TUNDEV, ov(5u32), "a string (s)", "u"),
        (Config, HAS_IP4, ov("yes"), "a boolean (b)", "s"),
        (Config, MTU, ov(1500i32), "a uint32 (u)", "i"),
        (
            Config,
            GATEWAY,
            ov("198.18.0.1"),
            "an IPv4 address as uint32 (u) or an IPv6 address as bytes (ay)",
            "s",
        ),
        (
            Ip4Config,
            ADDRESS,
            ov("198.19.0.2"),
            "an IPv4 address as uint32 (u)",
            "s",
        ),
        (Ip4Config, PREFIX, ov(24u8), "a uint32 (u)", "y"),
        (
            Ip4Config,
            DNS,
            ov(vec![ay("fd00:198:19::1")]),
            "an array of IPv4 addresses as uint32 (au)",
            "aay",
        ),
        (
            Ip4Config,
            ROUTES,
            ov(vec![v4("198.18.64.0"), 18]),
            "an array of [dest, prefix, next-hop, metric] uint32 arrays (aau)",
            "au",
        ),
        (
            Ip4Config,
            DOMAINS,
            ov("vpn.test"),
            "an array of strings (as)",
            "s",
        ),
        (Ip4Config, NEVER_DEFAULT, ov(1u32), "a boolean (b)", "u"),
        (
            Ip6Config,
            ADDRESS,
            ov(v4("198.19.0.2")),
            "an IPv6 address as bytes (ay)",
            "u",
        ),
        (
            Ip6Config,
            ROUTES,
            ov(vec![vec![1u32, 2, 3, 4]]),
            "an array of (dest, prefix, next-hop, metric) structs (a(ayuayu))",
            "aau",
        ),
        (
            Ip6Config,
            DNS,
            ov(vec![v4("198.19.0.1")]),
            "an array of IPv6 addresses as bytes (aay)",
            "au",
        ),
    ] {
        let shown = value.to_string();
        assert_eq!(
            build_with(dict, key, Some(value)),
            Err(wrong_type(dict, key, expected, found, &shown)),
            "{dict} {key}"
        );
    }
}

#[test]
fn ipv4_zero_is_refused() {
    use DictName::*;
    for (dict, key, value) in [
        (Config, GATEWAY, ov(0u32)),
        (Ip4Config, ADDRESS, ov(0u32)),
        (Ip4Config, PTP, ov(0u32)),
        (Ip4Config, INTERNAL_GATEWAY, ov(0u32)),
        (Ip4Config, DNS, ov(vec![v4("198.19.0.1"), 0])),
    ] {
        assert_eq!(
            build_with(dict, key, Some(value)),
            Err(invalid(
                dict,
                key,
                "0.0.0.0",
                "the address 0.0.0.0 is not usable"
            ))
        );
    }
    assert_eq!(
        build_with(Ip6Config, ADDRESS, Some(ov(ay("::")))),
        Err(invalid(
            Ip6Config,
            ADDRESS,
            "::",
            "the address :: is not usable"
        ))
    );
}

#[test]
fn prefixes_out_of_range_are_refused() {
    use DictName::*;
    for (dict, p, range) in [
        (Ip4Config, 33u32, "must be 1-32"),
        (Ip4Config, 0, "must be 1-32"),
        (Ip6Config, 129, "must be 1-128"),
        (Ip6Config, 0, "must be 1-128"),
        (Ip6Config, 4096, "must be 1-128"),
    ] {
        assert_eq!(
            build_with(dict, PREFIX, Some(ov(p))),
            Err(invalid(dict, PREFIX, &p.to_string(), range))
        );
    }

    let route4 = ov(vec![vec![v4("198.18.64.0"), 33, v4("198.19.0.1"), 0]]);
    let entry = match &*route4 {
        Variant::Array(a) => a.inner()[0].to_string(),
        _ => unreachable!(),
    };
    assert_eq!(
        build_with(Ip4Config, ROUTES, Some(route4)),
        Err(invalid(Ip4Config, ROUTES, &entry, "prefix 33 is over 32"))
    );

    let route6 = (ay("fd00:198:19:1::"), 129u32, ay("::"), 0u32);
    let entry = ov(route6.clone()).to_string();
    assert_eq!(
        build_with(Ip6Config, ROUTES, Some(ov(vec![route6]))),
        Err(invalid(Ip6Config, ROUTES, &entry, "prefix 129 is over 128"))
    );
}

#[test]
fn ipv4_route_of_the_wrong_length_is_refused() {
    let routes = ov(vec![vec![v4("198.18.64.0"), 18, v4("198.19.0.1")]]);
    let entry = match &*routes {
        Variant::Array(a) => a.inner()[0].to_string(),
        _ => unreachable!(),
    };
    assert_eq!(
        build_with(DictName::Ip4Config, ROUTES, Some(routes)),
        Err(invalid(
            DictName::Ip4Config,
            ROUTES,
            &entry,
            "a route is [dest, prefix, next-hop, metric], got 3 items"
        ))
    );
}

#[test]
fn truncated_ipv6_is_refused() {
    use DictName::*;
    let short = ay("fd00:198:19::1000")[..8].to_vec();
    let route = (short.clone(), 64u32, ay("::"), 0u32);
    let address = ov(short.clone()).to_string();
    for (dict, key, value, shown) in [
        (Ip6Config, ADDRESS, ov(short.clone()), address.clone()),
        (Ip6Config, PTP, ov(short.clone()), address.clone()),
        (Config, GATEWAY, ov(short.clone()), address.clone()),
        (Ip6Config, DNS, ov(vec![short.clone()]), address.clone()),
        (
            Ip6Config,
            ROUTES,
            ov(vec![route.clone()]),
            ov(route).to_string(),
        ),
    ] {
        assert_eq!(
            build_with(dict, key, Some(value)),
            Err(invalid(
                dict,
                key,
                &shown,
                "an IPv6 address needs 16 bytes, got 8"
            )),
            "{dict} {key}"
        );
    }
}

#[test]
fn missing_tundev_is_refused() {
    let err = build_with(DictName::Config, TUNDEV, None).unwrap_err();
    assert_eq!(
        err,
        PlanError::MissingKey {
            dict: DictName::Config,
            key: TUNDEV,
            reason: "no device to move into the namespace (has-ip4=true, has-ip6=true)".to_owned(),
        }
    );
    assert_eq!(
        err.to_string(),
        "Config key \"tundev\" is missing: no device to move into the namespace \
         (has-ip4=true, has-ip6=true)"
    );
}

#[test]
fn missing_gateway_or_address_is_refused() {
    for (dict, key) in [
        (DictName::Config, GATEWAY),
        (DictName::Ip4Config, ADDRESS),
        (DictName::Ip6Config, ADDRESS),
    ] {
        let got = build_with(dict, key, None);
        assert!(
            matches!(&got, Err(PlanError::MissingKey { dict: d, key: k, .. }) if *d == dict && *k == key),
            "{dict} {key}: {got:?}"
        );
    }
}

#[test]
fn ip_dicts_must_match_has_ip() {
    let (c, i4, i6) = (config(true), ip4_subnet(), ip6());
    assert_eq!(
        build(&input(&c, Some(&i4), None)),
        Err(PlanError::MissingDict {
            dict: DictName::Ip6Config,
            key: HAS_IP6,
        })
    );
    let c = config(false);
    assert_eq!(
        build(&input(&c, Some(&i4), Some(&i6))),
        Err(PlanError::UnexpectedDict {
            dict: DictName::Ip6Config,
            key: HAS_IP6,
        })
    );
    let mut c = config(false);
    c.insert(HAS_IP4.to_owned(), ov(false));
    assert_eq!(
        build(&input(&c, Some(&i4), None)),
        Err(PlanError::UnexpectedDict {
            dict: DictName::Ip4Config,
            key: HAS_IP4,
        })
    );
}

#[test]
fn bad_tundev_is_refused() {
    assert_eq!(
        build_with(DictName::Config, TUNDEV, Some(ov("../tun0"))),
        Err(invalid(
            DictName::Config,
            TUNDEV,
            "\"../tun0\"",
            "'/', ':', NUL and whitespace are not allowed"
        ))
    );
}

#[test]
fn ifname_rules() {
    for ok in ["tun0", "tap-vpn.1", "a", "abcdefghijklmno", "tün0"] {
        assert_eq!(ok.parse::<IfName>().unwrap().as_str(), ok);
    }
    for (bad, reason) in [
        ("", "it is empty"),
        ("abcdefghijklmnop", "it is longer than 15 bytes"),
        ("tünnelnummer000", "it is longer than 15 bytes"),
        (".", "\".\" and \"..\" are not allowed"),
        ("..", "\".\" and \"..\" are not allowed"),
        ("tun/0", "'/', ':', NUL and whitespace are not allowed"),
        ("tun:0", "'/', ':', NUL and whitespace are not allowed"),
        ("tun 0", "'/', ':', NUL and whitespace are not allowed"),
        ("tun\t0", "'/', ':', NUL and whitespace are not allowed"),
        ("tun\n", "'/', ':', NUL and whitespace are not allowed"),
        ("tun\0", "'/', ':', NUL and whitespace are not allowed"),
        ("tun\u{a0}", "'/', ':', NUL and whitespace are not allowed"),
    ] {
        assert_eq!(
            bad.parse::<IfName>(),
            Err(PlanError::InvalidIfName {
                value: bad.to_owned(),
                reason,
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn search_domain_that_would_break_resolv_conf_is_refused() {
    let reason = "whitespace and control characters are not allowed in a search domain";
    assert_eq!(
        build_with(
            DictName::Ip4Config,
            DOMAINS,
            Some(ov(vec!["vpn.test\nnameserver 198.18.0.53"]))
        ),
        Err(invalid(
            DictName::Ip4Config,
            DOMAINS,
            "\"vpn.test\\nnameserver 198.18.0.53\"",
            reason
        ))
    );
    assert_eq!(
        build_with(DictName::Ip6Config, DOMAIN, Some(ov("a b"))),
        Err(invalid(DictName::Ip6Config, DOMAIN, "\"a b\"", reason))
    );
    assert_eq!(
        build_with(DictName::Ip4Config, DOMAIN, Some(ov(""))),
        Err(invalid(DictName::Ip4Config, DOMAIN, "\"\"", "it is empty"))
    );
}

#[test]
fn mtu_out_of_range_is_refused() {
    let (mut c, i4) = (config(false), ip4_subnet());
    for mtu in [0u32, 67, 65536] {
        c.insert(MTU.to_owned(), ov(mtu));
        assert_eq!(
            build(&input(&c, Some(&i4), None)),
            Err(invalid(
                DictName::Config,
                MTU,
                &mtu.to_string(),
                "it must be 68-65535"
            ))
        );
    }
    c.insert(MTU.to_owned(), ov(1200u32));
    assert!(build(&input(&c, Some(&i4), None)).is_ok());
    assert_eq!(
        build_with(DictName::Config, MTU, Some(ov(1200u32))),
        Err(invalid(
            DictName::Config,
            MTU,
            "1200",
            "with IPv6 on the tun it must be 1280-65535"
        ))
    );
}

/// The profile's `tunnel-mtu` wins over Config's `mtu`, and a refusal names it.
#[test]
fn tunnel_mtu_overrides_config_and_is_checked() {
    let (mut c, i4) = (config(false), ip4_subnet());
    c.insert(MTU.to_owned(), ov(1500u32));
    let with = |tunnel_mtu| {
        build(&PlanInput {
            tunnel_mtu,
            ..input(&c, Some(&i4), None)
        })
    };
    assert_eq!(with(Some(1400)).unwrap().link.mtu, Some(1400));
    assert_eq!(with(None).unwrap().link.mtu, Some(1500));
    let e = with(Some(40)).unwrap_err();
    assert_eq!(
        e,
        PlanError::TunnelMtu {
            value: 40,
            reason: "it must be 68-65535"
        }
    );
    assert_eq!(
        e.to_string(),
        "vpn.data key \"tunnel-mtu\" has an invalid value 40: it must be 68-65535"
    );
}

#[test]
fn error_messages_name_dict_key_and_value() {
    assert_eq!(
        build_with(DictName::Ip4Config, ADDRESS, Some(ov(0u32)))
            .unwrap_err()
            .to_string(),
        "Ip4Config key \"address\" has an invalid value 0.0.0.0: the address 0.0.0.0 is not \
         usable"
    );
    assert_eq!(
        build_with(DictName::Config, TUNDEV, Some(ov(5u32)))
            .unwrap_err()
            .to_string(),
        "Config key \"tundev\" must be a string (s), got type u: uint32 5"
    );
    assert_eq!(
        build_with(DictName::Ip6Config, PREFIX, Some(ov(129u32)))
            .unwrap_err()
            .to_string(),
        "Ip6Config key \"prefix\" has an invalid value 129: must be 1-128"
    );
}
