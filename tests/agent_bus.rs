//! The agent on a bus daemon of the test's own, run as `nm-vpn-netns-agent` runs it
//! (`lifecycle::run`), over the recording fake: the leases it takes back when it starts, and its
//! exit after the last release once its binary was replaced.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::{
    agent, dellink, is_root, isolate, leased_record, method_error, proxy, release, request,
    run_netns_dir, sleep_in, sys_with_leases, sys_with_links, watch_peer, watching_agent,
    REQUEST_UUID,
};
use common::bus::Bus;
use common::{dict, ov, VarDict};
use futures_util::StreamExt;
use nm_vpn_netns::agent::fake::Call;
use nm_vpn_netns::agent::lifecycle::{self, Exe, FileId};
use nm_vpn_netns::agent::Agent;
use nm_vpn_netns::contract::{
    Agent1Proxy, AgentError, DeleteReport, LinkLostStream, NetnsEntry, BUS_NAME, INTERFACE,
    OBJECT_PATH,
};
use tokio::task::JoinHandle;
use zbus::{fdo, Connection, MatchRule, MessageStream, Proxy};

const ERR: &str = "io.github.NmVpnNetns.Agent1.Error.";
const WAIT: Duration = Duration::from_secs(10);

/// Runs `agent` on the bus, and waits until it owns its name.
async fn start(bus: &Bus, agent: Agent, exe: Option<Exe>) -> JoinHandle<zbus::Result<()>> {
    let task = tokio::spawn(lifecycle::run(bus.connect().await, agent, exe));
    let watcher = bus.connect().await;
    assert!(
        eventually(|| async { name_owned(&watcher).await }).await,
        "the agent never owned {BUS_NAME}"
    );
    task
}

async fn name_owned(conn: &Connection) -> bool {
    let dbus = fdo::DBusProxy::new(conn).await.unwrap();
    dbus.name_has_owner(BUS_NAME.try_into().unwrap())
        .await
        .unwrap()
}

/// Whether `check` holds within [`WAIT`], tried every 50 ms.
async fn eventually<F: std::future::Future<Output = bool>>(check: impl Fn() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn keys(ns: &str) -> [(&str, &str); 2] {
    [("netns-isolate", "yes"), ("netns-name", ns)]
}

async fn reapply(p: &Proxy<'_>, ns: &str) -> Result<(), (String, String)> {
    let config = dict(vec![
        ("tundev", ov("tun0")),
        ("gateway", ov(0x0100_12c6u32)),
        ("has-ip4", ov(true)),
    ]);
    let ip4 = dict(vec![("address", ov(0x0200_13c6u32)), ("prefix", ov(24u32))]);
    p.call::<_, _, ()>("Reapply", &(ns, config, ip4, VarDict::new()))
        .await
        .map_err(method_error)
}

#[tokio::test(flavor = "current_thread")]
async fn leases_of_holders_still_on_the_bus_are_taken_back() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("adopt");
    let holder = bus.connect().await;
    let leaver = bus.connect().await;
    let name = |c: &Connection| c.unique_name().unwrap().to_string();
    let records = [
        leased_record("held", &name(&holder)),
        leased_record("left", &name(&leaver)),
        leased_record("gone", ":1.999"),
        leased_record("p2p", ""),
    ];
    let mut sys = sys_with_leases(&records);
    sys.add_link(10, "tun2", Some("tun"), None);
    let _agent = start(&bus, agent(sys), None).await;
    let p = proxy(&holder).await;

    // Taken back: its holder may Reapply and Release it; nobody else may.
    let (err, msg) = release(&proxy(&leaver).await, "held").await.unwrap_err();
    assert_eq!(err, format!("{ERR}AccessDenied"), "{msg}");
    reapply(&p, "held").await.unwrap();
    release(&p, "held").await.unwrap();

    // Released at start: the names are free.
    for (ns, ifindex, tun) in [("gone", 7, "tun0"), ("p2p", 8, "tun1")] {
        isolate(&p, request(ifindex, tun, &keys(ns))).await.unwrap();
        release(&p, ns).await.unwrap();
    }

    // Taken back for a holder that then leaves the bus: released as it leaves, which ends the
    // wait of the same connection's new request.
    let (isolated, closed) = tokio::join!(isolate(&p, request(10, "tun2", &keys("left"))), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaver.close().await
    });
    closed.unwrap();
    isolated.expect("the agent kept the lease on 'left' after its holder left the bus");
    release(&p, "left").await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn exits_after_the_last_release_once_its_binary_was_replaced() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("retire");
    let path = bus.dir.join("agent-binary");
    fs::write(&path, "0.1.0").unwrap();
    let exe = Exe {
        started: FileId::of(&fs::metadata(&path).unwrap()),
        path: path.clone(),
    };
    let mut sys = sys_with_links();
    sys.add_link(10, "tun2", Some("tun"), None);
    sys.add_link(11, "tun3", Some("tun"), None);
    let task = start(&bus, agent(sys), Some(exe)).await;
    let client = bus.connect().await;
    let p = proxy(&client).await;

    // The binary unchanged, the last release changes nothing.
    isolate(&p, request(7, "tun0", &keys("a"))).await.unwrap();
    release(&p, "a").await.unwrap();
    isolate(&p, request(8, "tun1", &keys("a"))).await.unwrap();
    isolate(&p, request(10, "tun2", &keys("b"))).await.unwrap();

    // Replaced as a package manager does it: a new file renamed over the old one. A release
    // that leaves a lease changes nothing either.
    let new = bus.dir.join("agent-binary.new");
    fs::write(&new, "0.2.0").unwrap();
    fs::rename(&new, &path).unwrap();
    release(&p, "a").await.unwrap();
    isolate(&p, request(11, "tun3", &keys("a"))).await.unwrap();
    release(&p, "a").await.unwrap();
    assert!(!task.is_finished());

    // The last one ends the agent, once its reply is out.
    release(&p, "b").await.unwrap();
    let ended = tokio::time::timeout(WAIT, task).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the agent did not exit: {ended:?}"
    );
    assert!(!name_owned(&client).await, "{BUS_NAME} is still owned");
}

/// Calls Isolate (a request valid for [`sys_with_links`]), Reapply, Release, List and Delete of
/// namespace `work` on the bus at argv[1] as whoever runs it, and prints one line per call: the
/// method, then `ok` or the error's name and message. First it prints its uid.
const CLIENT: &str = r#"
import os, sys
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib
V = GLib.Variant
flags = Gio.DBusConnectionFlags
conn = Gio.DBusConnection.new_for_address_sync(
    sys.argv[1], flags.AUTHENTICATION_CLIENT | flags.MESSAGE_BUS_CONNECTION, None, None)
name, path, iface, uuid = sys.argv[2:6]
request = {
    "id": V("s", "work vpn"), "uuid": V("s", uuid), "ifindex": V("u", 7),
    "permissions": V("as", []),
    "netns-settings": V("a{ss}", {"netns-isolate": "yes", "netns-name": "work"}),
    "config": V("a{sv}", {"tundev": V("s", "tun0"), "gateway": V("u", 0x010012c6),
                          "has-ip4": V("b", True)}),
    "ip4-config": V("a{sv}", {"address": V("u", 0x020013c6), "prefix": V("u", 24)}),
}
print("uid", os.getuid())
for method, args in [
    ("Isolate", V("(a{sv})", (request,))),
    ("Reapply", V("(sa{sv}a{sv}a{sv})", ("work", {}, {}, {}))),
    ("Release", V("(s)", ("work",))),
    ("List", None),
    ("Delete", V("(sb)", ("work", True))),
]:
    try:
        conn.call_sync(name, path, iface, method, args, None, 0, -1, None)
        print(method, "ok")
    except GLib.Error as e:
        remote = Gio.DBusError.get_remote_error(e)
        print(method, remote, e.message.split(": ", 1)[-1] if remote else e.message)
"#;

/// The agent itself refuses a caller that is not root, even on a bus whose policy lets anyone
/// call it (a policy loosened by mistake): a real process of uid 65534, whose uid the agent asks
/// of the bus. Nothing reaches the system, no lease is taken, and root is served after it.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_that_is_not_root_is_refused_and_changes_nothing() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("not-root");
    let calls = Arc::new(AtomicUsize::new(0));
    let mut sys = sys_with_links();
    let counted = calls.clone();
    sys.fail_when(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        false
    });
    let _agent = start(&bus, agent(sys), None).await;
    let before = calls.load(Ordering::SeqCst);

    // Run beside the runtime, which serves the agent meanwhile.
    let address = bus.address.clone();
    let client = move || {
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(CLIENT)
            .args([&address, BUS_NAME, OBJECT_PATH, INTERFACE, REQUEST_UUID])
            .uid(65534)
            .gid(65534)
            .output()
    };
    let out = tokio::task::spawn_blocking(client).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let denied = |method: &str| {
        format!("{method} {ERR}AccessDenied only root may call {method}; the caller has uid 65534")
    };
    let want = [
        "uid 65534".to_owned(),
        denied("Isolate"),
        denied("Reapply"),
        denied("Release"),
        denied("List"),
        denied("Delete"),
    ];
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        want,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "the agent worked on the system for a caller it refused"
    );

    // Nothing was leased: root gets the namespace, and it was not in use.
    let root = bus.connect().await;
    let p = proxy(&root).await;
    isolate(&p, request(7, "tun0", &keys("work")))
        .await
        .unwrap();
    release(&p, "work").await.unwrap();
}

/// `List` shows every namespace on record, connected or kept; `Delete` removes a kept one, and
/// refuses a connected one, one with processes inside unless forced, and one it does not know.
/// Through the contract's own proxy, as the command calls them.
#[tokio::test(flavor = "current_thread")]
async fn list_and_delete_through_the_contracts_proxy() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("list-delete");
    let mut sys = sys_with_links();
    sleep_in(&mut sys, "kept");
    let _agent = start(&bus, agent(sys), None).await;
    let client = bus.connect().await;
    let (p, agent1) = (
        proxy(&client).await,
        Agent1Proxy::new(&client).await.unwrap(),
    );
    let kept_keys = [
        ("netns-isolate", "yes"),
        ("netns-name", "kept"),
        ("netns-persistent", "yes"),
    ];
    isolate(&p, request(7, "tun0", &kept_keys)).await.unwrap();
    let mut other = request(8, "tun1", &keys("work"));
    other.insert("uuid".into(), ov("5f0e2c1a-0000-4000-8000-000000000002"));
    isolate(&p, other).await.unwrap();
    let entry = |netns: &str, uuid: &str, persistent, connected, link: Option<&str>| NetnsEntry {
        netns: netns.into(),
        uuid: uuid.into(),
        id: "work vpn".into(),
        user: None,
        persistent,
        created: true,
        connected,
        link: link.map(Into::into),
    };
    let want = vec![
        entry("kept", REQUEST_UUID, true, true, Some("tun0")),
        entry(
            "work",
            "5f0e2c1a-0000-4000-8000-000000000002",
            false,
            true,
            Some("tun1"),
        ),
    ];
    assert_eq!(agent1.list().await.unwrap(), want);
    let refused = |e: AgentError, name: &str, text: &str| {
        let got = format!("{e:?}");
        assert!(
            got.starts_with(&format!("{name}(")) && got.contains(text),
            "expected {name} with {text:?}, got {got}"
        );
    };
    let e = agent1.delete("kept", true).await.unwrap_err();
    refused(e, "InUse", "holds a connected VPN");

    release(&p, "kept").await.unwrap();
    release(&p, "work").await.unwrap();
    let want = vec![entry("kept", REQUEST_UUID, true, false, None)];
    assert_eq!(agent1.list().await.unwrap(), want);
    let e = agent1.delete("kept", false).await.unwrap_err();
    refused(
        e,
        "InUse",
        "processes still run in namespace kept: 4242 (sleep)",
    );
    assert_eq!(
        agent1.list().await.unwrap(),
        want,
        "a refusal changed the records"
    );
    let report = agent1.delete("kept", true).await.unwrap();
    let want = DeleteReport {
        ended: Some(vec![(4242, "sleep".into())]),
        stranded: Some(Vec::new()),
    };
    assert_eq!(report, want);
    assert_eq!(agent1.list().await.unwrap(), []);
    let e = agent1.delete("kept", false).await.unwrap_err();
    refused(e, "UnknownNetns", "keeps no namespace named kept");
    let e = agent1.delete("../etc", false).await.unwrap_err();
    refused(e, "InvalidArgs", "../etc");
}

/// NetworkManager does not wait for a plugin to stop: after `down` then `up`, the new plugin's
/// `Isolate` can arrive while the old plugin still holds the connection's lease.
#[tokio::test(flavor = "current_thread")]
async fn a_reconnect_waits_for_its_own_previous_lease() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("reconnect");
    let mut sys = sys_with_links();
    sys.add_link(10, "tun2", Some("tun"), None);
    let _agent = start(&bus, agent(sys), None).await;
    let (old, other) = (bus.connect().await, bus.connect().await);
    let old_p = proxy(&old).await;
    isolate(&old_p, request(7, "tun0", &keys("work")))
        .await
        .unwrap();

    // Another connection that maps to the namespace is refused at once.
    let mut req = request(8, "tun1", &keys("work"));
    req.insert("uuid".into(), ov("5f0e2c1a-0000-4000-8000-000000000002"));
    let asked = Instant::now();
    let (err, msg) = isolate(&proxy(&other).await, req).await.unwrap_err();
    assert_eq!(err, format!("{ERR}InUse"), "{msg}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // The same connection, through a new plugin, waits for the old lease to go.
    let new = bus.connect().await;
    let reconnect = tokio::spawn(async move {
        let p = proxy(&new).await;
        (isolate(&p, request(8, "tun1", &keys("work"))).await, new)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!reconnect.is_finished(), "the reconnect did not wait");
    release(&old_p, "work").await.unwrap();
    let (isolated, new) = tokio::time::timeout(WAIT, reconnect)
        .await
        .unwrap()
        .unwrap();
    let reply = isolated.expect("the reconnect was refused");
    assert_eq!(reply["netns"], ov("work"), "{reply:?}");
    let (err, msg) = release(&old_p, "work").await.unwrap_err();
    assert_eq!(err, format!("{ERR}AccessDenied"), "{msg}");

    // The wait ends at the request's netns-timeout when the old lease stays.
    let late = bus.connect().await;
    let keys = [
        ("netns-isolate", "yes"),
        ("netns-name", "work"),
        ("netns-timeout", "500"),
    ];
    let mut req = request(10, "tun2", &keys);
    req.insert("uuid".into(), ov(REQUEST_UUID));
    let asked = Instant::now();
    let (err, msg) = isolate(&proxy(&late).await, req).await.unwrap_err();
    assert_eq!(err, format!("{ERR}Timeout"), "{msg}");
    assert!(
        (Duration::from_millis(500)..WAIT).contains(&asked.elapsed()),
        "{:?}",
        asked.elapsed()
    );
    release(&proxy(&new).await, "work").await.unwrap();
}

/// A reconnect whose caller leaves the bus while it waits for the old lease gets nothing: the old
/// lease's release found no lease of the leaver's to release, so a lease granted to it then would
/// stay with a caller that is gone, and refuse every other caller of the namespace.
#[tokio::test(flavor = "current_thread")]
async fn a_caller_that_leaves_while_it_waits_gets_no_lease() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("leaves-waiting");
    let leavers_tun = Arc::new(AtomicUsize::new(0));
    let mut sys = sys_with_links();
    sys.add_link(10, "tun2", Some("tun"), None);
    let counted = leavers_tun.clone();
    sys.fail_when(move |call| {
        if matches!(
            call,
            Call::LinkGet(8) | Call::LinkSetNetns { ifindex: 8, .. }
        ) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        false
    });
    let _agent = start(&bus, agent(sys), None).await;
    let (old, watcher) = (bus.connect().await, bus.connect().await);
    let old_p = proxy(&old).await;
    isolate(&old_p, request(7, "tun0", &keys("work")))
        .await
        .unwrap();

    let leaver = bus.connect().await;
    let name = leaver.unique_name().unwrap().to_owned();
    let waiting = tokio::spawn({
        let leaver = leaver.clone();
        // Its reply never comes: the connection it would come on is closed below.
        async move {
            let req = request(8, "tun1", &keys("work"));
            drop(proxy(&leaver).await.call_method("Isolate", &(req,)).await)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the reconnect did not wait");
    leaver.close().await.unwrap();
    let dbus = fdo::DBusProxy::new(&watcher).await.unwrap();
    let gone = || async { !dbus.name_has_owner(name.clone().into()).await.unwrap() };
    assert!(eventually(gone).await, "{name} is still on the bus");

    // The old lease goes; the leaver's wait ends, and the agent has time to act on it.
    release(&old_p, "work").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        leavers_tun.load(Ordering::SeqCst),
        0,
        "expected no work on the tun of the caller that left; got calls on it"
    );

    // The namespace is free for another connection.
    let mut req = request(10, "tun2", &keys("work"));
    req.insert("uuid".into(), ov("5f0e2c1a-0000-4000-8000-000000000002"));
    let next = proxy(&watcher).await;
    isolate(&next, req)
        .await
        .expect("the namespace stayed leased to the caller that left");
    release(&next, "work").await.unwrap();
    drop(waiting);
}

/// A caller that prepared a namespace and left the bus, as a plugin killed while openvpn still
/// connected, leaves nothing: the agent releases its prepared lease as any other, and the
/// namespace is free.
#[tokio::test(flavor = "current_thread")]
async fn a_prepared_namespace_goes_with_its_caller() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("prepared-caller-leaves");
    let _agent = start(&bus, agent(sys_with_links()), None).await;
    let (leaver, watcher) = (bus.connect().await, bus.connect().await);
    let mut req = request(7, "tun0", &keys("work"));
    for key in ["ifindex", "config", "ip4-config"] {
        req.remove(key);
    }
    let reply: VarDict = proxy(&leaver).await.call("Prepare", &(req,)).await.unwrap();
    assert_eq!(reply["netns"], ov("work"));
    let agent1 = Agent1Proxy::new(&watcher).await.unwrap();
    assert_eq!(agent1.list().await.unwrap().len(), 1);
    leaver.close().await.unwrap();
    let none_left = || async { agent1.list().await.unwrap().is_empty() };
    assert!(
        eventually(none_left).await,
        "the prepared namespace outlived its caller"
    );
    let next = proxy(&watcher).await;
    isolate(&next, request(7, "tun0", &keys("work")))
        .await
        .expect("the namespace stayed leased to the caller that left");
    release(&next, "work").await.unwrap();
}

/// `LinkLost` as the contract declares it: in the agent's introspection, sent to the lease holder
/// alone, and taken by the contract proxy's stream only from the agent. A tun that left its
/// namespace and a namespace that lost its name are both reported, each with its reason.
#[tokio::test(flavor = "current_thread")]
async fn a_lost_link_reaches_its_holder_alone_through_the_contracts_proxy() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("link-lost");
    let run_netns = run_netns_dir("bus");
    let mut sys = sys_with_links();
    sys.add_link(10, "tun2", Some("tun"), None);
    sys.add_link(11, "tun3", Some("tun"), None);
    let _agent = start(&bus, watching_agent(sys, run_netns.clone()), None).await;
    let (holder, bystander, forger) = (
        bus.connect().await,
        bus.connect().await,
        bus.connect().await,
    );

    let xml = fdo::IntrospectableProxy::builder(&holder)
        .destination(BUS_NAME)
        .path(OBJECT_PATH)
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    let declared = [
        r#"<signal name="LinkLost">"#,
        r#"<arg name="netns" type="s"/>"#,
        r#"<arg name="link" type="s"/>"#,
        r#"<arg name="reason" type="s"/>"#,
    ];
    for line in declared {
        assert!(
            xml.contains(line),
            "expected {line} in the introspection, got:\n{xml}"
        );
    }

    let mut lost = Agent1Proxy::new(&holder)
        .await
        .unwrap()
        .receive_link_lost()
        .await
        .unwrap();
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(INTERFACE)
        .build()
        .unwrap();
    let mut overheard = MessageStream::for_match_rule(rule, &bystander, None)
        .await
        .unwrap();
    let p = proxy(&holder).await;

    // A signal from anyone but the agent is not the agent's.
    let to_holder = holder.unique_name().unwrap().to_string();
    let forged = ("forged", "tun0", "link-removed");
    forger
        .emit_signal(
            Some(to_holder.as_str()),
            OBJECT_PATH,
            INTERFACE,
            "LinkLost",
            &forged,
        )
        .await
        .unwrap();
    isolate(&p, request(7, "tun0", &keys("work")))
        .await
        .unwrap();
    watch_peer().send(&dellink(7)).unwrap();
    let expected = ("work", "tun0", "link-removed");
    let got = next_lost(&mut lost).await;
    assert_eq!(
        got,
        owned(expected),
        "expected the agent's signal, not the forged one"
    );
    release(&p, "work").await.unwrap();

    // The namespace's name deleted while the VPN is up; other names, one of them longer, are not
    // its name.
    let touch = |name: &str| std::fs::write(run_netns.join(name), "").unwrap();
    let rm = |name: &str| std::fs::remove_file(run_netns.join(name)).unwrap();
    for name in ["gone", "gone2", "other"] {
        touch(name);
    }
    isolate(&p, request(8, "tun1", &keys("gone")))
        .await
        .unwrap();
    rm("gone2");
    rm("other");
    rm("gone");
    let expected = ("gone", "tun1", "netns-deleted");
    assert_eq!(next_lost(&mut lost).await, owned(expected));
    release(&p, "gone").await.unwrap();

    // The agent's own deletion is not reported: the release ends the watch before it. The next
    // signal is the next VPN's.
    touch("kept");
    isolate(&p, request(10, "tun2", &keys("kept")))
        .await
        .unwrap();
    release(&p, "kept").await.unwrap();
    rm("kept");
    isolate(&p, request(11, "tun3", &keys("last")))
        .await
        .unwrap();
    watch_peer().send(&dellink(7)).unwrap();
    let expected = ("last", "tun3", "link-removed");
    assert_eq!(next_lost(&mut lost).await, owned(expected));
    release(&p, "last").await.unwrap();

    // To the holder alone: a signal broadcast after both losses reaches the bystander, which got
    // neither of them before it (the bus keeps each receiver's messages in order).
    forger
        .emit_signal(None::<&str>, OBJECT_PATH, INTERFACE, "Marker", &())
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, overheard.next())
        .await
        .expect("expected the bystander to receive the marker")
        .unwrap()
        .unwrap();
    let member = first.header().member().map(|m| m.to_string());
    assert_eq!(
        member.as_deref(),
        Some("Marker"),
        "the bystander overheard a LinkLost"
    );
    let _ = std::fs::remove_dir_all(&run_netns);
}

/// The next `LinkLost` the stream yields, as (netns, link, reason).
async fn next_lost(lost: &mut LinkLostStream) -> (String, String, String) {
    let signal = tokio::time::timeout(WAIT, lost.next())
        .await
        .expect("expected LinkLost within the wait")
        .unwrap();
    let args = signal.args().unwrap();
    (
        args.netns.to_owned(),
        args.link.to_owned(),
        args.reason.to_owned(),
    )
}

fn owned((netns, link, reason): (&str, &str, &str)) -> (String, String, String) {
    (netns.to_owned(), link.to_owned(), reason.to_owned())
}

/// A caller that leaves the bus without releasing, as a plugin killed with SIGKILL does, leaves
/// behind what it started: its stock service, which leads a process group of its own, and
/// openvpn in that group. The agent ends that group's processes, with SIGKILL once SIGTERM did not
/// do it, before it releases the namespace; a child of the caller in the caller's own group is not
/// the VPN's, and is left alone. Once they have all exited, the release follows at once, though
/// the tun never went: a persistent one, as NetworkManager-openconnect makes, never goes by itself,
/// and the release deletes it.
#[tokio::test(flavor = "current_thread")]
async fn a_departed_callers_process_groups_are_ended_before_the_release() {
    if !is_root() {
        return;
    }
    let bus = Bus::start("departed");
    let run_netns = run_netns_dir("departed");
    // Its watch on the tun never sees it go.
    let _agent = start(
        &bus,
        watching_agent(sys_with_links(), run_netns.clone()),
        None,
    )
    .await;
    // Deaf to SIGTERM, as a hung stock service is; its `sleep` inherits that, as openvpn would
    // be in the group.
    let mut stock = Command::new("sh")
        .args(["-c", "trap '' TERM; sleep 600 & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let mut bystander = Command::new("sleep").arg("600").spawn().unwrap();
    let caller = bus.connect().await;
    isolate(&proxy(&caller).await, request(7, "tun0", &keys("work")))
        .await
        .unwrap();
    caller.close().await.unwrap();

    let deadline = Instant::now() + 3 * WAIT;
    let status = loop {
        if let Some(status) = stock.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Ours to end, so that a failure leaves nothing (and no holder of the test's output).
            let group = nix::unistd::Pid::from_raw(stock.id() as i32);
            nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).ok();
            bystander.kill().ok();
            panic!(
                "expected the group led by the caller's child {group} to be ended; it still runs"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "expected the group's leader, deaf to SIGTERM, to end by SIGKILL; it ended with {status}"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the caller's child in the caller's own group was ended too"
    );
    let ended = Instant::now();
    bystander.kill().unwrap();
    bystander.wait().unwrap();

    // The namespace was released: another connection gets it; and without waiting out the
    // 5 s the agent gives a tun to go.
    let mut req = request(8, "tun1", &keys("work"));
    req.insert("uuid".into(), ov("5f0e2c1a-0000-4000-8000-000000000002"));
    let next = proxy(&bus.connect().await).await;
    let isolated = eventually(|| async { isolate(&next, req.clone()).await.is_ok() }).await;
    assert!(
        isolated,
        "expected namespace work to be released after its caller left"
    );
    let waited = ended.elapsed();
    assert!(
        waited < Duration::from_millis(2500),
        "expected the release once the group had ended; it came {waited:?} after"
    );
    release(&next, "work").await.unwrap();
    let _ = fs::remove_dir_all(&run_netns);
}
