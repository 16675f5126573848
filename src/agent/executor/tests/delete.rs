//! `Delete`: a kept namespace torn down on request, through the release's own teardown, and the
//! refusals that leave everything as it was.

use super::*;

/// An executor that kept `work` after a persistent isolation went down, and the world before the
/// isolation (less the tun, which the release deleted).
fn kept() -> (Executor<RecordingSys>, World) {
    let mut ex = executor();
    let mut before = world(&ex);
    before.links.remove(&7);
    ex.isolate(&persistent_request()).unwrap();
    ex.release(&work()).unwrap();
    calls(&mut ex);
    (ex, before)
}

#[test]
fn a_kept_namespace_is_deleted_on_request_as_a_release_would() {
    let (mut ex, before) = kept();
    let deleted = ex.delete(&work(), false).unwrap();
    assert_eq!(deleted, Deleted::default());
    assert_eq!(
        calls(&mut ex)[..3],
        [
            Call::NetnsOpen(p(NS)),
            Call::NetnsId(p(NS)),
            Call::NetnsProcesses(p(NS))
        ],
        "the processes are looked for in the namespace on record, before anything changes"
    );
    assert_nothing_left(&ex, &before, "delete");
    let err = ex.delete(&work(), false).unwrap_err();
    assert!(matches!(err, ExecError::NoRecord { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "nm-vpn-netns keeps no namespace named work"
    );
}

#[test]
fn a_connected_namespace_is_refused_and_kept() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    let before = world(&ex);
    calls(&mut ex);
    for force in [false, true] {
        let err = ex.delete(&work(), force).unwrap_err();
        assert!(matches!(err, ExecError::Connected { .. }), "{err}");
        assert!(err.to_string().contains("\"work\""), "{err}");
    }
    assert_eq!(calls(&mut ex), [], "a refusal touched the system");
    assert_eq!(world(&ex), before);
    assert!(record(&ex).unwrap().leased);
}

#[test]
fn processes_inside_are_named_and_ended_only_with_force() {
    let (mut ex, before) = kept();
    ex.sys.world.processes.insert(p(NS), sleeper());
    let kept_world = world(&ex);
    let err = ex.delete(&work(), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "processes still run in namespace work: 4242 (sleep); end them first, or delete it \
         with force"
    );
    assert_eq!(world(&ex), kept_world, "a refusal changed the world");
    assert!(record(&ex).is_some());
    calls(&mut ex);

    let deleted = ex.delete(&work(), true).unwrap();
    assert_eq!((deleted.ended, deleted.stranded), (sleeper(), Vec::new()));
    let calls = calls(&mut ex);
    let ended = calls
        .iter()
        .position(|c| *c == Call::NetnsProcessesEnd(p(NS)));
    let del = calls.iter().position(|c| *c == Call::NetnsDel(p(NS)));
    assert!(
        matches!((ended, del), (Some(e), Some(d)) if e < d),
        "expected the processes ended before the namespace is deleted: {calls:?}"
    );
    assert_nothing_left(&ex, &before, "forced delete");
}

#[test]
fn processes_in_a_namespace_that_stays_are_not_the_deletions_concern() {
    // A foreign namespace keeps its processes: only the files the agent gave it go.
    let mut ex = executor();
    foreign(&mut ex);
    ex.isolate(&claim(foreign_allowed(), |c| c.persistent = true))
        .unwrap();
    ex.release(&work()).unwrap();
    ex.sys.world.processes.insert(p(NS), sleeper());
    ex.delete(&work(), false).unwrap();
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    assert_eq!(
        content(&ex, RESOLV).as_deref(),
        Some("nameserver 192.0.2.53\n")
    );
    assert!(record(&ex).is_none());

    // Nor does a namespace someone made anew under the name since.
    let (mut ex, _) = kept();
    ex.sys.netns_del(&p(NS)).unwrap();
    ex.sys.add_netns(NS);
    ex.sys.world.processes.insert(p(NS), sleeper());
    assert_eq!(ex.delete(&work(), false).unwrap(), Deleted::default());
    assert!(
        ex.sys.world.netns.contains_key(&p(NS)),
        "someone's namespace went"
    );
    assert!(record(&ex).is_none());
}
