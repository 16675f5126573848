//! `Prepare` then `Isolate`, and a preparation undone: the namespace exists before the tun, the
//! isolation only moves and configures it, and an undone preparation leaves nothing.

use super::*;

fn prepared(req: &IsolateArgs) -> Executor<RecordingSys> {
    let mut ex = executor();
    let prep = ex.prepare(&req.claim).unwrap();
    assert_eq!((prep.netns, prep.created), (work(), true));
    ex
}

#[test]
fn a_prepared_namespace_is_created_and_on_record_without_a_link() {
    let mut ex = prepared(&request());
    let create = [
        Call::NetnsOpen(p(NS)),
        Call::NetnsCreate(p(NS)),
        Call::NetnsMountPoint(p("/run/netns")),
    ];
    let bind = [Call::NetnsBind(p(NS)), Call::NetnsBindMount(p(NS))];
    assert_eq!(
        calls(&mut ex),
        // Nothing under `/etc/netns` yet, which alone outlives a reboot: no durable copy.
        [&create[..], &saved()[1..], &bind, &saved()[1..]].concat()
    );
    let r = record(&ex).unwrap();
    assert!(
        r.leased && r.created && r.link.is_none() && !r.netns_pending && r.owner == ":1.42",
        "{r:?}"
    );
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    assert!(!ex.sys.world.dirs.contains(&p(DIR)), "no DNS files yet");
}

#[test]
fn isolate_after_prepare_only_moves_and_configures() {
    let mut ex = prepared(&request());
    calls(&mut ex);
    let isolation = ex.isolate(&request()).unwrap();
    assert_eq!(
        (isolation.created, isolation.link.as_str()),
        (false, "tun0")
    );
    let done = calls(&mut ex);
    assert!(
        !done.iter().any(|c| matches!(c, Call::NetnsCreate(_))),
        "{done:?}"
    );
    let r = record(&ex).unwrap();
    assert!(
        r.leased && r.created && r.link.as_deref() == Some("tun0"),
        "{r:?}"
    );
    assert_eq!(ex.sys.world.links[&7].netns, Some(p(NS)));
    assert!(content(&ex, RESOLV).is_some_and(|c| c.contains("198.19.0.1")));
    ex.release(&work()).unwrap();
    assert!(!ex.sys.world.netns.contains_key(&p(NS)));
    assert!(record(&ex).is_none());
}

#[test]
fn an_undone_preparation_leaves_nothing() {
    for req in [request(), persistent_request()] {
        let before = world(&executor());
        let mut ex = prepared(&req);
        ex.unprepare(&work()).unwrap();
        assert_nothing_left(
            &ex,
            &before,
            &format!("persistent: {}", req.claim.persistent),
        );
    }
}

#[test]
fn a_failed_isolation_leaves_the_preparation_to_undo() {
    let mut ex = prepared(&request());
    let prepared_record = record(&ex).cloned();
    let before = world(&executor());
    ex.sys.world.links.remove(&7);
    ex.isolate(&request()).unwrap_err();
    assert_eq!(
        record(&ex).cloned(),
        prepared_record,
        "expected it prepared"
    );
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    ex.unprepare(&work()).unwrap();
    ex.sys.add_link(7, "tun0", Some("tun"), None);
    assert_nothing_left(&ex, &before, "link missing");
    let steps = {
        let mut probe = prepared(&request());
        calls(&mut probe);
        probe.isolate(&request()).unwrap();
        calls(&mut probe).len()
    };
    for step in 0..steps {
        let mut ex2 = prepared(&request());
        calls(&mut ex2);
        let prepared_record = record(&ex2).cloned();
        ex2.sys.fail_at(step);
        let err = ex2.isolate(&request()).unwrap_err();
        let context = format!("failure at call {step}: {err}");
        assert_eq!(record(&ex2).cloned(), prepared_record, "{context}");
        assert!(ex2.sys.world.links[&7].netns.is_none(), "{context}");
        ex2.unprepare(&work()).unwrap();
        assert_nothing_left(&ex2, &before, &context);
    }
}

/// A kept namespace (`netns-persistent`) is opened, not created; undone, it is kept as before.
#[test]
fn a_kept_namespace_is_opened_and_kept() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    ex.release(&work()).unwrap();
    let kept = record(&ex).cloned().unwrap();
    let prep = ex.prepare(&persistent_request().claim).unwrap();
    assert!(!prep.created);
    assert!(record(&ex).is_some_and(|r| r.leased && r.link.is_none()));
    ex.unprepare(&work()).unwrap();
    assert_eq!(record(&ex), Some(&kept));
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    // Prepared again, it is isolated in and kept at release. openvpn made a new tun.
    ex.sys.world.links.remove(&7);
    ex.sys.add_link(7, "tun0", Some("tun"), None);
    ex.prepare(&persistent_request().claim).unwrap();
    ex.isolate(&persistent_request()).unwrap();
    ex.release(&work()).unwrap();
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
}

/// Another caller's `Isolate` or `Prepare` finds the namespace in use; so does a second
/// `Prepare` of the same caller.
#[test]
fn a_prepared_namespace_is_held() {
    let mut ex = prepared(&request());
    let err = ex.isolate(&other_request()).unwrap_err();
    assert!(matches!(err, ExecError::InUse { .. }), "{err:?}");
    let err = ex.prepare(&other_request().claim).unwrap_err();
    assert!(matches!(err, ExecError::InUse { .. }), "{err:?}");
    ex.isolate(&request()).unwrap();
    let err = ex.prepare(&request().claim).unwrap_err();
    assert!(matches!(err, ExecError::InUse { .. }), "{err:?}");
}

/// A preparation that fails at any step leaves nothing.
#[test]
fn a_failed_preparation_leaves_nothing() {
    let steps = {
        let mut probe = executor();
        probe.prepare(&request().claim).unwrap();
        calls(&mut probe).len()
    };
    for step in 0..steps {
        let mut ex = executor();
        let before = world(&ex);
        ex.sys.fail_at(step);
        let err = ex.prepare(&request().claim).unwrap_err();
        assert_nothing_left(&ex, &before, &format!("failure at call {step}: {err}"));
    }
}
