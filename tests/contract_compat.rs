//! The agent's D-Bus contract stays compatible with the previous release, 0.1.0, both ways:
//! - an old shim still running after an upgrade calls a new agent: every method, argument and
//!   property of 0.1.0's interface is still served with the same types (`tests/data/agent1-0.1.0.xml`
//!   is 0.1.0's own introspection, from its served interface), and 0.1.0's `Isolate` request decodes;
//! - a new shim calls an old agent still running: the request keeps every key 0.1.0 sends, and
//!   keys an agent does not know are ignored, so what a newer shim adds breaks no older agent.
//!
//! See ARCHITECTURE.md, "Compatibility between releases".

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::agent::{agent, is_root, isolate, proxy, release, serve_p2p, sys_with_links};
use common::{dict, openvpn_config, openvpn_ip4, openvpn_ip6, ov, VarDict, UUID};
use nm_vpn_netns::contract::{self, IsolateRequest, BUS_NAME, OBJECT_PATH};
use nm_vpn_netns::shim::codec::{self, ConfigSet, NetnsIntent};
use zbus::Proxy;

/// 0.1.0's introspection of the agent's object.
const GOLDEN_0_1_0: &str = include_str!("data/agent1-0.1.0.xml");

/// One interface member: its kind and name, and what its wire form is made of, in order (an
/// argument's direction and type, a property's type and access). Argument names are not on the
/// wire, so they may change.
type Members = BTreeMap<String, Vec<String>>;

/// The members of each interface of an introspection document. The format is D-Bus's
/// introspection DTD as bus implementations write it: one element a tag, attributes in double
/// quotes; comments and annotations are skipped.
fn members(xml: &str) -> BTreeMap<String, Members> {
    let mut out: BTreeMap<String, Members> = BTreeMap::new();
    let (mut interface, mut member) = (String::new(), String::new());
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("every tag is closed") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let element = tag.split_whitespace().next().unwrap_or_default();
        let attr = |name: &str| {
            let key = format!(" {name}=\"");
            tag.find(&key).map(|i| {
                let value = &tag[i + key.len()..];
                value[..value.find('"').expect("quoted")].to_owned()
            })
        };
        match element {
            "interface" => interface = attr("name").expect("an interface has a name"),
            "method" | "signal" | "property" => {
                member = format!("{element} {}", attr("name").expect("a member has a name"));
                let parts = out.entry(interface.clone()).or_default();
                let entry = parts.entry(member.clone()).or_default();
                if element == "property" {
                    entry.push(format!(
                        "{} {}",
                        attr("type").unwrap(),
                        attr("access").unwrap()
                    ));
                }
            }
            "arg" => {
                // A signal's arguments have no direction; they are all out.
                let direction = attr("direction").unwrap_or_else(|| "out".to_owned());
                let arg = format!("{direction} {}", attr("type").expect("an arg has a type"));
                out.get_mut(&interface)
                    .unwrap()
                    .get_mut(&member)
                    .unwrap()
                    .push(arg);
            }
            _ => {}
        }
    }
    out
}

async fn introspect(conn: &zbus::Connection) -> String {
    let p = Proxy::new(
        conn,
        BUS_NAME,
        OBJECT_PATH,
        "org.freedesktop.DBus.Introspectable",
    )
    .await
    .unwrap();
    p.call("Introspect", &()).await.unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_served_interface_keeps_every_member_of_0_1_0() {
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let served_xml = introspect(&client).await;
    let served = members(&served_xml);
    let golden = members(GOLDEN_0_1_0);
    assert!(
        golden[contract::INTERFACE].len() >= 4,
        "the golden file lists the agent's interface: {golden:?}"
    );
    let mut missing = Vec::new();
    for (interface, parts) in &golden {
        for (member, wire) in parts {
            let now = served.get(interface).and_then(|p| p.get(member));
            // A member may be added, but one that 0.1.0 had keeps its exact wire form: a caller
            // of 0.1.0 sends exactly these arguments and reads exactly these results.
            if now != Some(wire) {
                missing.push(format!(
                    "{interface} {member}: expected {wire:?}, got {now:?}"
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the served interface lost or changed what 0.1.0 had:\n{}\nserved:\n{served_xml}",
        missing.join("\n")
    );
}

#[test]
fn the_golden_parser_reads_members() {
    let parsed = members(
        r#"<node><!-- c --><interface name="a.B"><method name="M"><arg name="x" type="s" direction="in"/>
        <annotation name="n" value="v"/></method><method name="N"/><signal name="S"><arg type="u"/></signal>
        <property name="P" type="u" access="read"/></interface></node>"#,
    );
    let want: Members = [
        ("method M", vec!["in s"]),
        ("method N", vec![]),
        ("signal S", vec!["out u"]),
        ("property P", vec!["u read"]),
    ]
    .into_iter()
    .map(|(m, w)| (m.to_owned(), w.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(parsed, BTreeMap::from([("a.B".to_owned(), want)]));
}

/// The intent of the connection the captured dicts came from.
fn intent() -> NetnsIntent {
    NetnsIntent {
        id: "work vpn".into(),
        uuid: UUID.into(),
        permissions: vec![],
        netns_settings: BTreeMap::from([
            ("netns-isolate".into(), "yes".into()),
            ("netns-name".into(), "work".into()),
        ]),
        from_mirror: false,
        never_default_v4: false,
        never_default_v6: true,
        tunnel_mtu: None,
        timeout: Duration::from_secs(2),
        connect_timeout: None,
    }
}

/// `Isolate`'s request exactly as 0.1.0's shim sent it for [`intent`] and the captured dicts on
/// tun `tun0` (ifindex 7): written out key by key, so that a change of today's encoder cannot
/// change it too.
fn request_0_1_0() -> VarDict {
    let settings: HashMap<String, String> = intent().netns_settings.into_iter().collect();
    dict(vec![
        ("id", ov("work vpn")),
        ("uuid", ov(UUID)),
        ("permissions", ov(Vec::<String>::new())),
        ("netns-settings", ov(settings)),
        ("never-default-v4", ov(false)),
        ("never-default-v6", ov(true)),
        ("ifindex", ov(7u32)),
        ("config", ov(openvpn_config("tun0", true))),
        ("ip4-config", ov(openvpn_ip4("tun0"))),
        ("ip6-config", ov(openvpn_ip6())),
    ])
}

/// The request today's shim sends for the same connection and dicts, as it crosses the bus.
fn request_now() -> VarDict {
    let set = ConfigSet {
        config: openvpn_config("tun0", true),
        ip4: Some(openvpn_ip4("tun0")),
        ip6: Some(openvpn_ip6()),
    };
    let request: IsolateRequest = codec::isolate_request(&intent(), 7, &set);
    let ctxt = zbus::wire::serialized::Context::new(zbus::wire::LE, 0);
    let data = zbus::wire::to_bytes(ctxt, &request).unwrap();
    data.deserialize::<VarDict>().unwrap().0
}

#[test]
fn todays_shim_sends_every_key_of_0_1_0() {
    let now = request_now();
    for (key, value) in request_0_1_0() {
        // An older agent needs each of these, with the same type; more keys are fine (below).
        assert_eq!(now.get(&key), Some(&value), "key {key:?}");
    }
}

#[test]
fn a_0_1_0_request_decodes_and_unknown_keys_are_ignored() {
    let old: IsolateRequest = contract::from_dict(&request_0_1_0()).unwrap();
    assert_eq!(old.ifindex, 7);
    assert_eq!(old.never_default_v6, Some(true));
    let mut newer = request_0_1_0();
    newer.insert("netns-from-a-later-release".into(), ov(vec![1u32, 2]));
    newer.insert("config-v2".into(), ov(dict(vec![("x", ov("y"))])));
    let decoded: IsolateRequest = contract::from_dict(&newer).unwrap();
    assert_eq!(decoded, old);
}

/// The same over the bus, through the agent's own decoding, planning and execution.
#[tokio::test(flavor = "current_thread")]
async fn the_agent_isolates_for_a_0_1_0_request_with_unknown_keys() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    let mut req = request_0_1_0();
    req.insert("netns-from-a-later-release".into(), ov(true));
    let out = isolate(&p, req).await.unwrap();
    assert_eq!(out["netns"], ov("work"));
    release(&p, "work").await.unwrap();
}
