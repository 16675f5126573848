//! The agent's D-Bus facade on a peer-to-peer connection, over the recording fake: request
//! decoding, leases and the mapping of errors to D-Bus names. The real kernel and the real system
//! bus are covered by tests/privileged.rs and the e2e rig.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::agent::{
    agent, dellink, is_root, isolate, leased_record, proxy, release, request, run_netns_dir,
    serve_p2p, sleep_in, sys_with_leases, sys_with_links, watch_peer, watching_agent,
};
use common::ov;
use futures_util::StreamExt;
use nm_vpn_netns::contract::LINK_LOST;
use zbus::MessageStream;
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

/// Without `permissions`, a user's connection would pass for a system one.
#[tokio::test(flavor = "current_thread")]
async fn a_request_without_permissions_is_refused() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    let mut req = request(7, "tun0", &[("netns-isolate", "yes")]);
    req.remove("permissions");
    let (name, msg) = isolate(&p, req).await.unwrap_err();
    assert_eq!(name, format!("{ERR}InvalidArgs"), "{msg}");
    assert!(msg.contains("\"permissions\" is missing"), "{msg}");
}

/// A user's connection gets a name of its own, which the reply carries and Release takes.
#[tokio::test(flavor = "current_thread")]
async fn a_users_namespace_name_is_prefixed() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    let keys = [("netns-isolate", "yes"), ("netns-name", "work")];
    let mut req = request(7, "tun0", &keys);
    // Root is the one user every system has; the prefix is its uid.
    req.insert("permissions".into(), ov(vec!["user:root:"]));
    let out = isolate(&p, req).await.unwrap();
    assert_eq!(*out["netns"], Variant::from("u0-work"));
    let (name, msg) = release(&p, "work").await.unwrap_err();
    assert!(msg.contains("not leased"), "{name}: {msg}");
    release(&p, "u0-work").await.unwrap();

    let mut req = request(7, "tun0", &keys);
    req.insert("permissions".into(), ov(vec!["user:al ice:"]));
    let (name, msg) = isolate(&p, req).await.unwrap_err();
    assert_eq!(name, format!("{ERR}AccessDenied"), "{msg}");
    assert!(msg.contains("no user \"al ice\" exists"), "{msg}");
}

static LOOKING_UP: AtomicBool = AtomicBool::new(false);
static OTHER_SERVED: AtomicBool = AtomicBool::new(false);

/// A name service as slow as a remote one: it answers "no such user" once another call was
/// served meanwhile, or fails after 5 s.
fn slow_uid_of(_user: &str) -> nix::Result<Option<u32>> {
    LOOKING_UP.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !OTHER_SERVED.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return Err(nix::Error::ETIMEDOUT);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None)
}

/// A user's uid comes from NSS, which may wait on SSSD or an LDAP server: the agent serves other
/// calls meanwhile. Had it looked up on its event loop (one thread here), nothing else would run
/// until the lookup gave up.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_user_lookup_stalls_no_other_call() {
    if !is_root() {
        return;
    }
    let agent = agent(sys_with_links()).with_uid_of(slow_uid_of);
    let (_server, client) = serve_p2p(agent).await;
    let p = proxy(&client).await;
    let mut req = request(
        7,
        "tun0",
        &[("netns-isolate", "yes"), ("netns-name", "work")],
    );
    req.insert("permissions".into(), ov(vec!["user:alice:"]));
    let other = async {
        while !LOOKING_UP.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let released = release(&p, "other").await;
        OTHER_SERVED.store(true, Ordering::SeqCst);
        released
    };
    let (isolated, released) = tokio::join!(isolate(&p, req), other);
    let (_, msg) = released.unwrap_err();
    assert!(msg.contains("not leased"), "{msg}");
    let (name, msg) = isolated.unwrap_err();
    assert_eq!(name, format!("{ERR}AccessDenied"), "{msg}");
    let want = "no user \"alice\" exists";
    assert!(msg.contains(want), "expected {want:?}, got {msg:?}");
}

/// Hostile requests over the wire: oversized, mistyped, missing fields. Each is refused with
/// InvalidArgs naming the field, or served when the excess is only keys the agent does not read,
/// and the agent serves the next valid request after it.
#[tokio::test(flavor = "current_thread")]
async fn hostile_requests_are_refused_and_the_agent_serves_on() {
    if !is_root() {
        return;
    }
    type Request = HashMap<String, OwnedVariant>;
    type Change = Box<dyn Fn(&mut Request)>;
    let keys = [("netns-isolate", "yes"), ("netns-name", "work")];
    // A tun for each request, as a released namespace takes its tun along.
    let tun = |i: u32| (100 + i, format!("tun{}", 100 + i));
    let valid = |i: u32| request(tun(i).0, &tun(i).1, &keys);
    let set = |field: &'static str, value: OwnedVariant| -> Change {
        Box::new(move |r| {
            r.insert(field.to_owned(), value.try_clone().unwrap());
        })
    };
    let unset = |field: &'static str| -> Change {
        Box::new(move |r| {
            r.remove(field);
        })
    };
    let big = |mib: usize| "x".repeat(mib << 20);
    let extra: Request = (0..100_000u32).map(|i| (format!("k{i}"), ov(i))).collect();
    let netns_keys: HashMap<String, String> = (0..10_000)
        .map(|i| (format!("netns-k{i}"), "1".to_owned()))
        .collect();
    let mut long_tundev = common::openvpn_config("tun0", false);
    long_tundev.insert("tundev".into(), ov(big(1)));
    let nested = OwnedVariant::try_from(Variant::new(Variant::new(7u32))).unwrap();
    let text_address = HashMap::from([("address", ov("198.19.0.2"))]);
    let sv_settings = HashMap::from([("netns-isolate", ov("yes"))]);
    // What the answer must contain; "ok" when it is served. An id or uuid of any length is
    // served today: the agent caps neither.
    let cases: Vec<(&str, Change, &[&str])> = vec![
        (
            "100k keys it does not read",
            Box::new(move |r| {
                r.extend(
                    extra
                        .iter()
                        .map(|(k, v)| (k.clone(), v.try_clone().unwrap())),
                )
            }),
            &["ok"],
        ),
        (
            "10k netns keys",
            set("netns-settings", ov(netns_keys)),
            &["unknown key \"netns-k"],
        ),
        ("a 10 MiB id", set("id", ov(big(10))), &["field \"id\" has"]),
        (
            "a 1 MiB uuid",
            set("uuid", ov(big(1))),
            &["field \"uuid\" has"],
        ),
        (
            "a 1 MiB tundev",
            set("config", ov(long_tundev)),
            &["InvalidArgs"],
        ),
        (
            "ifindex as a string",
            set("ifindex", ov("7")),
            &["field \"ifindex\" is invalid"],
        ),
        (
            "ifindex in a variant",
            set("ifindex", nested),
            &["field \"ifindex\" is invalid"],
        ),
        (
            "id as a u32",
            set("id", ov(7u32)),
            &["field \"id\" is invalid"],
        ),
        (
            "permissions as a string",
            set("permissions", ov("user:alice:")),
            &["field \"permissions\" is invalid"],
        ),
        (
            "netns-settings as a{sv}",
            set("netns-settings", ov(sv_settings)),
            &["field \"netns-settings\" is invalid"],
        ),
        (
            "config as a string",
            set("config", ov("tun0")),
            &["field \"config\" is invalid"],
        ),
        (
            "an address as a string",
            set("ip4-config", ov(text_address)),
            &["key \"address\""],
        ),
        ("no id", unset("id"), &["field \"id\" is missing"]),
        ("no uuid", unset("uuid"), &["field \"uuid\" is missing"]),
        (
            "no ifindex",
            unset("ifindex"),
            &["field \"ifindex\" is missing"],
        ),
        (
            "no config",
            unset("config"),
            &["field \"config\" is missing"],
        ),
        (
            "no netns-settings",
            unset("netns-settings"),
            &["does not ask for isolation"],
        ),
    ];
    let mut sys = sys_with_links();
    for i in 0..2 * cases.len() as u32 {
        sys.add_link(tun(i).0, &tun(i).1, Some("tun"), None);
    }
    let (_server, client) = serve_p2p(agent(sys)).await;
    let p = proxy(&client).await;
    for (i, (what, change, want)) in (0..).step_by(2).zip(cases) {
        let mut req = valid(i);
        change(&mut req);
        let got = match isolate(&p, req).await {
            Ok(_) => {
                release(&p, "work").await.unwrap();
                "ok".to_owned()
            }
            Err((name, msg)) => {
                assert_eq!(name, format!("{ERR}InvalidArgs"), "{what}: {msg:.300}");
                format!("{name}: {msg:.300}")
            }
        };
        assert!(
            want.iter().any(|w| got.contains(w)),
            "{what}: {got}; expected one of {want:?}"
        );
        isolate(&p, valid(i + 1)).await.unwrap();
        release(&p, "work").await.unwrap();
    }
}

/// `ReleaseWithReport` is `Release` that names the processes left in the namespace it deleted.
#[tokio::test(flavor = "current_thread")]
async fn release_with_report_names_the_stranded_processes() {
    if !is_root() {
        return;
    }
    let mut sys = sys_with_links();
    sleep_in(&mut sys, "work");
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

/// The tun's removal reaches the lease holder as `LinkLost` (`rtmsg`'s unit tests check that no
/// other message does), and the release closes the watch.
#[tokio::test(flavor = "current_thread")]
async fn a_lost_link_is_reported_to_the_holder() {
    if !is_root() {
        return;
    }
    let run_netns = run_netns_dir("p2p");
    let (_server, client) = serve_p2p(watching_agent(sys_with_links(), run_netns.clone())).await;
    let p = proxy(&client).await;
    let mut messages = MessageStream::from(&client);
    let keys = [("netns-isolate", "yes"), ("netns-name", "work")];
    isolate(&p, request(7, "tun0", &keys)).await.unwrap();
    let peer = watch_peer();
    peer.send(&dellink(8)).unwrap();
    peer.send(&dellink(7)).unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let msg = messages.next().await.unwrap().unwrap();
            if msg.header().member().map(|m| m.as_str()) == Some(LINK_LOST) {
                return msg;
            }
        }
    })
    .await
    .expect("expected LinkLost within 5 s");
    let body: (String, String, String) = lost.body().deserialize().unwrap();
    let expected = ("work", "tun0", "link-removed");
    assert_eq!((&*body.0, &*body.1, &*body.2), expected);

    release(&p, "work").await.unwrap();
    let closed = async {
        while peer.send(&dellink(7)).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("expected the release to close the watch");
    let _ = std::fs::remove_dir_all(&run_netns);
}
