//! The fuzz targets' entry points, one per target, each taking the fuzzer's raw bytes. The main
//! crate's `tests/fuzz_replay.rs` compiles this same file and replays the committed corpus and
//! every regression through it, so a plain `cargo test` runs what the fuzzers found.
//!
//! Each entry point panics when the product panics or when a promise below breaks; an `Err` from
//! the product is a refusal, which is the right answer to most of what a fuzzer makes up.

use std::collections::BTreeMap;

use nm_vpn_netns::agent::request;
use nm_vpn_netns::contract::AgentError;
use nm_vpn_netns::plan::settings::{self, ConnectionInfo, Key, NetnsName, STATIC_IP_KEYS};
use nm_vpn_netns::plan::{self, IsolationPlan, PlanInput, VarDict};
use nm_vpn_netns::report::chain;
use nm_vpn_netns::shim::codec;
use zbus::wire::serialized::{Context, Data};
use zbus::wire::LE;

/// A target's entry point.
pub type Target = fn(&[u8]);

/// The targets by name, as under `fuzz/fuzz_targets/`, `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: [(&str, Target); 3] = [
    ("vpn_data", vpn_data),
    ("nm_dicts", nm_dicts),
    ("agent_request", agent_request),
];

/// The host's nsswitch.conf for [`nm_dicts`]; the agent reads the real one.
const HOST_NSSWITCH: &str = "passwd: files\nhosts: files mdns4_minimal [NOTFOUND=return] dns\n";

/// `vpn.data` and the few connection fields `settings::parse` reads, as text: one `key=value` a
/// line. `connection.id`, `connection.uuid` and `connection.permissions` (once per entry) fill
/// the connection; `ipv4.never-default`/`ipv6.never-default` set that flag and any other
/// `ipv4.KEY`/`ipv6.KEY` marks a static setting; every other line is a `vpn.data` entry.
pub fn vpn_data(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut conn = ConnectionInfo::default();
    let mut vpn_data = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let ip = match key.split_once('.') {
            Some(("ipv4", k)) => Some((&mut conn.ipv4, k)),
            Some(("ipv6", k)) => Some((&mut conn.ipv6, k)),
            _ => None,
        };
        match (key, ip) {
            ("connection.id", _) => conn.id = value.to_owned(),
            ("connection.uuid", _) => conn.uuid = value.to_owned(),
            ("connection.permissions", _) => conn.permissions.push(value.to_owned()),
            (_, Some((ip, "never-default"))) => ip.never_default = true,
            (_, Some((ip, k))) => ip
                .static_keys
                .extend(STATIC_IP_KEYS.iter().find(|s| **s == k)),
            _ => drop(vpn_data.insert(key.to_owned(), value.to_owned())),
        }
    }

    let stripped = settings::strip_netns_keys(&vpn_data);
    assert!(stripped.keys().all(|k| !settings::is_netns_key(k)));
    assert_eq!(
        stripped.len()
            + vpn_data
                .keys()
                .filter(|k| settings::is_netns_key(k))
                .count(),
        vpn_data.len(),
        "only the netns-* keys are stripped"
    );
    if let Some(name) = settings::name_from_id(&conn.id) {
        assert_valid_name(&name);
    }

    let settings = match settings::parse(&vpn_data, &conn) {
        Ok(settings) => settings,
        Err(e) => return assert_one_line(&chain(&e)),
    };
    let unknown = vpn_data
        .keys()
        .filter(|k| settings::is_netns_key(k))
        .find(|k| k.parse::<Key>().is_err());
    assert_eq!(unknown, None, "an unknown netns-* key is accepted");
    let statics = conn.ipv4.static_keys.len() + conn.ipv6.static_keys.len();
    assert!(
        !(settings.isolate && statics > 0),
        "an isolated connection with static settings is accepted"
    );
    assert_valid_name(&settings.name);
    assert_eq!(settings.system_connection, conn.permissions.is_empty());
}

/// NetworkManager's `Config`, `Ip4Config` and `Ip6Config` as a D-Bus body of signature
/// `a{sv}a{sv}a{sv}`, as `Reapply` carries them: an empty `Ip4Config`/`Ip6Config` is absent.
/// Planned as the agent plans them, and reduced as the shim reduces `Config` for NM.
pub fn nm_dicts(data: &[u8]) {
    let Ok(((config, ip4, ip6), _)) =
        Data::new(data, Context::new(LE, 0)).deserialize::<(VarDict, VarDict, VarDict)>()
    else {
        return;
    };
    match codec::isolated_nm_config(&config) {
        Ok(reduced) => assert!(
            reduced.keys().all(
                |k| ["gateway", "banner", "can-persist", "has-ip4", "has-ip6"]
                    .contains(&k.as_str())
            ),
            "the Config for NM carries more than its gateway, banner and can-persist: {reduced:?}"
        ),
        Err(e) => assert_one_line(&chain(&e)),
    }
    let input = PlanInput {
        netns: "fuzz".parse().expect("a valid name"),
        never_default_v4: false,
        never_default_v6: false,
        tunnel_mtu: None,
        config: &config,
        ip4_config: (!ip4.is_empty()).then_some(&ip4),
        ip6_config: (!ip6.is_empty()).then_some(&ip6),
        host_nsswitch: HOST_NSSWITCH,
    };
    match plan::build(&input) {
        Ok(plan) => assert_plan(&plan),
        Err(e) => assert_one_line(&chain(&e)),
    }
}

/// `Isolate`'s argument as a D-Bus body of signature `a{sv}`, through everything the agent checks
/// before it touches the system: the typed request, the `netns-*` settings and the plan.
pub fn agent_request(data: &[u8]) {
    let Ok((request, _)) = Data::new(data, Context::new(LE, 0)).deserialize::<VarDict>() else {
        return;
    };
    if let Err(e) = request::validate_request(&request) {
        // A bad request is InvalidArgs; a user's name the policy cannot form is AccessDenied.
        let (AgentError::InvalidArgs(msg) | AgentError::AccessDenied(msg)) = &e else {
            panic!("a refused request is neither InvalidArgs nor AccessDenied: {e:?}");
        };
        assert_one_line(msg);
    }
}

/// A refusal ends up in NetworkManager's log and the journal as one line, whatever a hostile
/// server or profile put in it.
fn assert_one_line(msg: &str) {
    assert!(
        !msg.contains(['\n', '\r']),
        "a refusal spans lines: {msg:?}"
    );
}

fn assert_valid_name(name: &NetnsName) {
    assert_eq!(name.as_str().parse::<NetnsName>().as_ref(), Ok(name));
}

/// What a plan promises, whatever the server sent: `resolv.conf` has only its own lines, and every
/// prefix and the MTU are in range.
fn assert_plan(plan: &IsolationPlan) {
    for line in plan.resolv_conf.lines() {
        assert!(
            ["# ", "nameserver ", "search "]
                .iter()
                .any(|start| line.starts_with(start)),
            "resolv.conf has a line of the server's own: {line:?}"
        );
    }
    assert!(plan.nsswitch_conf.contains("\nhosts: files dns\n"));
    if let Some(v4) = &plan.ipv4 {
        assert!(v4.prefix <= 32 && v4.routes.iter().all(|r| r.prefix <= 32));
    }
    if let Some(v6) = &plan.ipv6 {
        assert!(v6.prefix <= 128 && v6.routes.iter().all(|r| r.prefix <= 128));
    }
    if let Some(mtu) = plan.link.mtu {
        assert!((68..=65535).contains(&mtu));
    }
}
