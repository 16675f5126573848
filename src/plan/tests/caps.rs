//! The caps on the server's lists: each is accepted at its cap and refused one past it, with an
//! error that names the list, the count and the cap.

use zbus::OwnedVariant;

use super::*;

/// `n` distinct IPv4 routes, 10.X.Y.0/24 through the subnet's gateway.
fn v4_routes(n: u32) -> OwnedVariant {
    let routes: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            vec![
                v4(&format!("10.{}.{}.0", i / 256, i % 256)),
                24,
                v4("198.19.0.1"),
                0,
            ]
        })
        .collect();
    ov(routes)
}

/// `n` distinct IPv6 routes, fd00:1:X::/48 through the server.
fn v6_routes(n: u32) -> OwnedVariant {
    let routes: Vec<(Vec<u8>, u32, Vec<u8>, u32)> = (0..n)
        .map(|i| (ay(&format!("fd00:1:{i:x}::")), 48, ay("fd00:198:19::1"), 0))
        .collect();
    ov(routes)
}

/// Builds IPv4 and IPv6 with `key` of `dict` set to `value`.
fn build_dual(dict: DictName, key: &str, value: OwnedVariant) -> Result<IsolationPlan, PlanError> {
    let (c, mut i4, mut i6) = (config(true), ip4_subnet(), ip6());
    let target = if dict == DictName::Ip4Config {
        &mut i4
    } else {
        &mut i6
    };
    target.insert(key.to_owned(), value);
    build(&input(&c, Some(&i4), Some(&i6)))
}

fn too_long(list: &'static str, count: usize, cap: usize) -> Result<IsolationPlan, PlanError> {
    Err(PlanError::TooLong { list, count, cap })
}

#[test]
fn routes_are_capped_per_family() {
    let plan = build_dual(DictName::Ip4Config, ROUTES, v4_routes(1024)).unwrap();
    assert_eq!(plan.ipv4.unwrap().routes.len(), 1024);
    assert_eq!(
        build_dual(DictName::Ip4Config, ROUTES, v4_routes(1025)),
        too_long("ipv4 routes", 1025, MAX_ROUTES)
    );
    let plan = build_dual(DictName::Ip6Config, ROUTES, v6_routes(1024)).unwrap();
    assert_eq!(plan.ipv6.unwrap().routes.len(), 1024);
    assert_eq!(
        build_dual(DictName::Ip6Config, ROUTES, v6_routes(1500)),
        too_long("ipv6 routes", 1500, MAX_ROUTES)
    );
}

#[test]
fn dns_servers_are_capped_over_both_families() {
    // Ip6Config brings one server of its own.
    let servers = |n: u32| {
        ov((1..=n)
            .map(|i| v4(&format!("10.0.0.{i}")))
            .collect::<Vec<_>>())
    };
    let plan = build_dual(DictName::Ip4Config, DNS, servers(15)).unwrap();
    assert_eq!(plan.resolv_conf.matches("nameserver ").count(), 16);
    assert_eq!(
        build_dual(DictName::Ip4Config, DNS, servers(16)),
        too_long("dns servers", 17, MAX_DNS_SERVERS)
    );
}

#[test]
fn search_domains_are_capped_in_number_and_bytes() {
    // Ip6Config brings vpn.test, which the list repeats: repeats count once.
    let domains = |n: usize| {
        let mut d: Vec<String> = (1..n).map(|i| format!("d{i}.test")).collect();
        d.push("vpn.test".into());
        ov(d)
    };
    let plan = build_dual(DictName::Ip4Config, DOMAINS, domains(64)).unwrap();
    assert!(plan.resolv_conf.contains(" d63.test vpn.test\n"));
    assert_eq!(
        build_dual(DictName::Ip4Config, DOMAINS, domains(65)),
        too_long("search domains", 65, MAX_SEARCH_DOMAINS)
    );

    // 4088 bytes here and the 8 of vpn.test make the cap exactly.
    let long = |last: usize| {
        let mut d: Vec<String> = (0..15).map(|i| format!("{i:0>256}")).collect();
        d.push("x".repeat(last));
        ov(d)
    };
    assert!(build_dual(DictName::Ip4Config, DOMAINS, long(248)).is_ok());
    let err = build_dual(DictName::Ip4Config, DOMAINS, long(249)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "search domain bytes: 4097 exceeds the cap of 4096"
    );
}
