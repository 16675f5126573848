//! The agent's D-Bus facade on a peer-to-peer connection, over the recording fake: request
//! decoding, leases and the mapping of errors to D-Bus names. The real kernel and the real system
//! bus are covered by tests/privileged.rs and the e2e rig.

mod common;

use std::collections::HashMap;

use common::ov;
use nm_vpn_netns::agent::executor::{Executor, Paths};
use nm_vpn_netns::agent::fake::RecordingSys;
use nm_vpn_netns::agent::Agent;
use nm_vpn_netns::contract::{BUS_NAME, INTERFACE, OBJECT_PATH};
use zbus::connection::Builder;
use zbus::{Connection, OwnedVariant, Proxy, Variant};

const ERR: &str = "io.github.NmVpnNetns.Agent1.Error.";

async fn connect(sys: RecordingSys) -> (Connection, Connection) {
    let (server_end, client_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let agent = Agent::new(Executor::new(sys, Paths::default()).unwrap()).unwrap();
    let server = Builder::unix_stream(server_end)
        .server(zbus::Guid::generate())
        .p2p()
        .serve_at(OBJECT_PATH, agent)
        .build();
    let client = Builder::unix_stream(client_end).p2p().build();
    let (server, client) = tokio::join!(server, client);
    (server.unwrap(), client.unwrap())
}

fn sys_with_links() -> RecordingSys {
    let mut sys = RecordingSys::default();
    sys.add_link(7, "tun0", Some("tun"), None);
    sys.add_link(8, "tun1", Some("tun"), None);
    sys.add_link(9, "veth0", Some("veth"), None);
    sys.add_file("/etc/nsswitch.conf", "hosts: files dns\n");
    sys
}

/// An `Isolate` request as the shim sends it, for tun `ifindex`/`tundev` and these netns keys.
fn request(ifindex: u32, tundev: &str, keys: &[(&str, &str)]) -> HashMap<String, OwnedVariant> {
    let ip4 = |a: [u8; 4]| u32::from_ne_bytes(a);
    let config: HashMap<String, OwnedVariant> = HashMap::from([
        ("tundev".into(), ov(tundev.to_owned())),
        ("gateway".into(), ov(ip4([198, 18, 0, 1]))),
        ("has-ip4".into(), ov(true)),
    ]);
    let ip4_config: HashMap<String, OwnedVariant> = HashMap::from([
        ("address".into(), ov(ip4([198, 19, 0, 2]))),
        ("prefix".into(), ov(24u32)),
        ("dns".into(), ov(vec![ip4([198, 19, 0, 1])])),
    ]);
    let settings: HashMap<String, String> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HashMap::from([
        ("id".into(), ov("work vpn")),
        ("uuid".into(), ov("0b5d5a0e-8f4c-4a55-9b8e-3c6b1f0e2d11")),
        ("netns-settings".into(), ov(settings)),
        ("ifindex".into(), ov(ifindex)),
        ("config".into(), ov(config)),
        ("ip4-config".into(), ov(ip4_config)),
    ])
}

async fn proxy(conn: &Connection) -> Proxy<'static> {
    Proxy::new(conn, BUS_NAME, OBJECT_PATH, INTERFACE)
        .await
        .unwrap()
}

async fn isolate(
    p: &Proxy<'_>,
    req: HashMap<String, OwnedVariant>,
) -> Result<HashMap<String, OwnedVariant>, (String, String)> {
    p.call("Isolate", &(req,)).await.map_err(method_error)
}

async fn release(p: &Proxy<'_>, ns: &str) -> Result<(), (String, String)> {
    p.call::<_, _, ()>("Release", &(ns,))
        .await
        .map_err(method_error)
}

fn method_error(e: zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => (name.to_string(), msg.unwrap_or_default()),
        e => panic!("not a method error: {e:?}"),
    }
}

/// The peer is this process, and only root may call: as anyone else these tests have nothing to
/// check here (the e2e rig's t_agent_refusals calls as uid 65534 over the real bus).
fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: the agent only answers root");
    }
    root
}

#[tokio::test(flavor = "current_thread")]
async fn isolate_lease_and_release() {
    if !is_root() {
        return;
    }
    let (_server, client) = connect(sys_with_links()).await;
    let p = proxy(&client).await;
    assert_eq!(p.get_property::<u32>("Version").await.unwrap(), 1);

    let keys = [("netns-isolate", "yes"), ("netns-name", "work")];
    let out = isolate(&p, request(7, "tun0", &keys)).await.unwrap();
    assert_eq!(*out["netns"], Variant::from("work"));
    assert_eq!(*out["link"], Variant::from("tun0"));
    assert_eq!(*out["created"], Variant::from(true));
    assert!(out.contains_key("elapsed-us"));

    // One VPN per namespace.
    let (name, msg) = isolate(&p, request(8, "tun1", &keys)).await.unwrap_err();
    assert_eq!(name, format!("{ERR}InUse"), "{msg}");
    assert!(msg.contains("work"), "{msg}");

    release(&p, "work").await.unwrap();
    let (name, msg) = release(&p, "work").await.unwrap_err();
    assert_eq!(name, format!("{ERR}InvalidArgs"));
    assert!(msg.contains("not leased"), "{msg}");

    // Released, the name is free again.
    isolate(&p, request(8, "tun1", &keys)).await.unwrap();
    release(&p, "work").await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn bad_requests_name_the_problem() {
    if !is_root() {
        return;
    }
    let (_server, client) = connect(sys_with_links()).await;
    let p = proxy(&client).await;
    let invalid = format!("{ERR}InvalidArgs");

    let cases: Vec<(HashMap<String, OwnedVariant>, &str)> = vec![
        (
            request(
                7,
                "tun0",
                &[("netns-isolate", "yes"), ("netns-name", "../x")],
            ),
            "netns-name",
        ),
        (
            request(7, "tun0", &[("netns-isolate", "maybe")]),
            "netns-isolate",
        ),
        (
            request(7, "tun0", &[("netns-isolate", "yes"), ("netns-foo", "1")]),
            "netns-foo",
        ),
        (
            request(
                7,
                "tun0",
                &[("netns-isolate", "yes"), ("netns-timeout", "0")],
            ),
            "netns-timeout",
        ),
        (request(7, "tun0", &[("netns-isolate", "no")]), "isolation"),
        (
            request(9, "veth0", &[("netns-isolate", "yes")]),
            "not a tun",
        ),
        (
            request(42, "tun9", &[("netns-isolate", "yes")]),
            "does not exist",
        ),
        (
            {
                let mut r = request(7, "tun0", &[("netns-isolate", "yes")]);
                r.remove("ifindex");
                r
            },
            "ifindex",
        ),
        (
            {
                let mut r = request(7, "tun0", &[("netns-isolate", "yes")]);
                r.insert(
                    "ip4-config".into(),
                    ov(HashMap::from([("address", ov(0u32))])),
                );
                r
            },
            "address",
        ),
    ];
    for (req, needle) in cases {
        let (name, msg) = isolate(&p, req).await.unwrap_err();
        assert_eq!(name, invalid, "{msg}");
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
    }
    // Every refusal left the name free.
    isolate(&p, request(7, "tun0", &[("netns-isolate", "yes")]))
        .await
        .unwrap();
}
