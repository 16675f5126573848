//! The agent's D-Bus facade on a peer-to-peer connection, over the recording fake: request
//! decoding, leases and the mapping of errors to D-Bus names. The real kernel and the real system
//! bus are covered by tests/privileged.rs and the e2e rig.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};

use common::agent::{
    agent, is_root, isolate, leased_record, proxy, release, request, serve_p2p, sys_with_leases,
    sys_with_links,
};
use common::ov;
use nm_vpn_netns::agent::sys::Process;
use zbus::{OwnedVariant, Variant};

const ERR: &str = "io.github.NmVpnNetns.Agent1.Error.";

#[tokio::test(flavor = "current_thread")]
async fn isolate_lease_and_release() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
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
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
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

/// What a previous agent leased over a peer-to-peer connection ended with it, and a holder that
/// is not on the bus (none is, here) is gone: a starting agent releases both.
#[tokio::test(flavor = "current_thread")]
async fn a_starting_agent_releases_what_no_live_holder_holds() {
    if !is_root() {
        return;
    }
    let records = [leased_record("work", ""), leased_record("gone", ":1.9")];
    let keys = |ns| [("netns-isolate", "yes"), ("netns-name", ns)];

    // Not adopted, the leases keep both names in use.
    let (_server, client) = serve_p2p(agent(sys_with_leases(&records))).await;
    let p = proxy(&client).await;
    let (name, msg) = isolate(&p, request(7, "tun0", &keys("work")))
        .await
        .unwrap_err();
    assert_eq!(name, format!("{ERR}InUse"), "{msg}");

    let mut starting = agent(sys_with_leases(&records));
    assert_eq!(
        starting.holders_at_start(),
        BTreeSet::from([":1.9".to_owned()])
    );
    starting.adopt(&HashSet::new()).await;
    let (_server, client) = serve_p2p(starting).await;
    let p = proxy(&client).await;
    for (ns, ifindex, tun) in [("work", 7, "tun0"), ("gone", 8, "tun1")] {
        let (name, msg) = release(&p, ns).await.unwrap_err();
        assert!(msg.contains("not leased"), "{name}: {msg}");
        isolate(&p, request(ifindex, tun, &keys(ns))).await.unwrap();
        release(&p, ns).await.unwrap();
    }
}

/// `ReleaseWithReport` is `Release` that names the processes left in the namespace it deleted.
#[tokio::test(flavor = "current_thread")]
async fn release_with_report_names_the_stranded_processes() {
    if !is_root() {
        return;
    }
    let mut sys = sys_with_links();
    let sleeper = Process {
        pid: 4242,
        comm: "sleep".into(),
    };
    sys.world
        .processes
        .insert("/run/netns/work".into(), vec![sleeper]);
    let (_server, client) = serve_p2p(agent(sys)).await;
    let p = proxy(&client).await;
    let report = |ns: &'static str| {
        let p = p.clone();
        async move {
            p.call::<_, _, HashMap<String, OwnedVariant>>("ReleaseWithReport", &(ns,))
                .await
                .unwrap()
        }
    };
    let keys = [("netns-isolate", "yes"), ("netns-name", "work")];
    isolate(&p, request(7, "tun0", &keys)).await.unwrap();
    let got = report("work").await;
    assert_eq!(got["stranded"], ov(vec![(4242u32, "sleep")]), "{got:?}");

    // The same processes in a namespace that stays are not stranded.
    let keys = [
        ("netns-isolate", "yes"),
        ("netns-name", "work"),
        ("netns-persistent", "yes"),
    ];
    isolate(&p, request(8, "tun1", &keys)).await.unwrap();
    let got = report("work").await;
    assert_eq!(got["stranded"], ov(Vec::<(u32, &str)>::new()), "{got:?}");
}
