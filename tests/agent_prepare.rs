//! `Prepare` on a peer-to-peer connection, over the recording fake: the lease and the namespace
//! it takes at Connect, the `Isolate` that takes them over, and every way they are undone (the
//! holder's `Release`, a failed `Isolate` then `Release`, the connect timeout).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::agent::{agent, is_root, isolate, proxy, release, request, serve_p2p, sys_with_links};
use common::ov;
use zbus::{OwnedVariant, Proxy, Variant};

type Dict = HashMap<String, OwnedVariant>;

const KEYS: [(&str, &str); 2] = [("netns-isolate", "yes"), ("netns-name", "work")];

/// `Prepare`'s request for the connection of `request`, with `vpn.timeout` in seconds.
fn prepare_request(connect_timeout: Option<u32>) -> Dict {
    let mut r = request(7, "tun0", &KEYS);
    for key in ["ifindex", "config", "ip4-config"] {
        r.remove(key);
    }
    if let Some(s) = connect_timeout {
        r.insert("connect-timeout".into(), ov(s));
    }
    r
}

async fn prepare(p: &Proxy<'_>, req: Dict) -> Dict {
    p.call("Prepare", &(req,)).await.unwrap()
}

/// The namespaces the agent keeps a record of.
async fn listed(p: &Proxy<'_>) -> Vec<Dict> {
    p.call("List", &()).await.unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn prepare_then_isolate_then_release() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    let out = prepare(&p, prepare_request(None)).await;
    assert_eq!(*out["netns"], Variant::from("work"));
    assert_eq!(*out["created"], Variant::from(true));
    let entries = listed(&p).await;
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].contains_key("link"), "{entries:?}");

    let out = isolate(&p, request(7, "tun0", &KEYS)).await.unwrap();
    assert_eq!(*out["link"], Variant::from("tun0"));
    assert_eq!(
        *out["created"],
        Variant::from(true),
        "the namespace is new for the connection"
    );
    release(&p, "work").await.unwrap();
    assert_eq!(listed(&p).await, Vec::<Dict>::new());
}

/// Released before any `Isolate`, or after a failed one, a preparation leaves nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_released_preparation_leaves_nothing() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    prepare(&p, prepare_request(None)).await;
    release(&p, "work").await.unwrap();
    assert_eq!(listed(&p).await, Vec::<Dict>::new());

    prepare(&p, prepare_request(None)).await;
    // No link with ifindex 42: refused, and the preparation stays for the holder to release.
    isolate(&p, request(42, "tun9", &KEYS)).await.unwrap_err();
    assert_eq!(listed(&p).await.len(), 1);
    release(&p, "work").await.unwrap();
    assert_eq!(listed(&p).await, Vec::<Dict>::new());

    // Free again: an `Isolate` without `Prepare` does the whole work.
    let out = isolate(&p, request(7, "tun0", &KEYS)).await.unwrap();
    assert_eq!(*out["created"], Variant::from(true));
    release(&p, "work").await.unwrap();
}

/// A preparation that no `Isolate` took at the connect timeout is undone; the `Isolate` that
/// comes later does the whole work.
#[tokio::test(flavor = "current_thread")]
async fn a_preparation_is_undone_at_the_connect_timeout() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    prepare(&p, prepare_request(Some(1))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(listed(&p).await, Vec::<Dict>::new());
    let out = isolate(&p, request(7, "tun0", &KEYS)).await.unwrap();
    assert_eq!(*out["created"], Variant::from(true));
    // Taken over by its `Isolate`, a preparation outlives the connect timeout.
    release(&p, "work").await.unwrap();
    prepare(&p, prepare_request(Some(1))).await;
    isolate(&p, request(8, "tun1", &KEYS)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entries = listed(&p).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["link"], ov("tun1"));
    release(&p, "work").await.unwrap();
}

/// A second `Prepare` of the namespace is refused while the first holds it.
#[tokio::test(flavor = "current_thread")]
async fn a_prepared_namespace_is_in_use() {
    if !is_root() {
        return;
    }
    let (_server, client) = serve_p2p(agent(sys_with_links())).await;
    let p = proxy(&client).await;
    prepare(&p, prepare_request(None)).await;
    let e = p
        .call::<_, _, Dict>("Prepare", &(prepare_request(None),))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("InUse"), "{e}");
    release(&p, "work").await.unwrap();
}
