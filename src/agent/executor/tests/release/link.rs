//! The tun on record at release: deleted by the index it had inside the namespace, in every
//! namespace, and only while that index is still the tun the agent moved there.

use super::teardown::{link_fate, LinkFate};
use super::*;

fn link(name: &str, kind: Option<&str>) -> Link {
    Link {
        ifindex: 7,
        name: name.to_owned(),
        kind: kind.map(str::to_owned),
        mtu: 1500,
        up: true,
    }
}

#[test]
fn only_the_tun_on_record_is_deleted() {
    assert_eq!(link_fate("vpn0", None), LinkFate::Gone);
    assert_eq!(
        link_fate("vpn0", Some(&link("vpn0", Some("tun")))),
        LinkFate::Delete
    );
    for other in [
        link("vpn1", Some("tun")),
        link("vpn0", Some("veth")),
        link("vpn0", None),
    ] {
        assert_eq!(
            link_fate("vpn0", Some(&other)),
            LinkFate::Leave,
            "{other:?}"
        );
    }
}

#[test]
fn the_isolation_records_the_index_the_link_has_inside() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    let r = record(&ex).unwrap();
    assert_eq!((r.link.as_deref(), r.link_ifindex), (Some("tun0"), Some(7)));
    // A reboot takes the link with the namespace.
    assert_eq!(r.after_reboot().link_ifindex, None);
}

/// A namespace the agent did not create outlives the release, and nothing else would remove a
/// persistent tun in it: the release deletes it, and keeps the namespace.
#[test]
fn a_persistent_tun_in_a_kept_namespace_is_deleted_at_release() {
    let mut ex = executor();
    foreign(&mut ex);
    ex.isolate(&foreign_allowed()).unwrap();
    calls(&mut ex);
    ex.release(&work()).unwrap();
    let made = calls(&mut ex);
    assert_eq!(made[..4], deleted());
    assert!(!made.contains(&Call::NetnsDel(p(NS))));
    assert!(!ex.sys.world.links.contains_key(&7));
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    assert!(record(&ex).is_none());
}

/// The tun went, and another link got its index: that link is not the agent's, and stays.
#[test]
fn a_link_that_took_the_index_under_another_name_is_left_alone() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    ex.sys.world.links.get_mut(&7).unwrap().link.name = "other0".to_owned();
    calls(&mut ex);
    ex.release(&work()).unwrap();
    let made = calls(&mut ex);
    assert_eq!(made[..3], deleted()[..3]);
    assert!(
        !made.iter().any(|c| matches!(c, Call::LinkDelete { .. })),
        "{made:?}"
    );
    assert_eq!(ex.sys.world.links[&7].link.name, "other0");
    let r = record(&ex).unwrap();
    assert!(!r.leased && r.link.is_none(), "{r:?}");
}

/// A delete that fails is reported, and the tun stays on record: the next isolation in the kept
/// namespace deletes it first, before it moves its own tun in.
#[test]
fn a_failed_delete_is_reported_and_tried_again_before_the_next_isolation() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    ex.sys.fail_when(|c| matches!(c, Call::LinkDelete { .. }));
    let err = ex.release(&work()).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert!(err.to_string().contains("LinkDelete"), "{err}");
    let r = record(&ex).unwrap();
    assert!(!r.leased, "{r:?}");
    assert_eq!((r.link.as_deref(), r.link_ifindex), (Some("tun0"), Some(7)));
    assert!(ex.sys.world.links.contains_key(&7));

    // Still failing, it refuses the next isolation rather than leave the stale tun under it.
    ex.sys.add_link(8, "tun0", Some("tun"), None);
    let next = IsolateArgs {
        tun_ifindex: 8,
        ..persistent_request()
    };
    let err = ex.isolate(&next).unwrap_err();
    assert!(matches!(err, ExecError::Leftover(_)), "{err}");
    assert_eq!(ex.sys.world.links[&8].netns, None, "the new tun was moved");

    ex.sys.heal();
    calls(&mut ex);
    ex.isolate(&next).unwrap();
    assert_eq!(calls(&mut ex)[..4], deleted());
    assert!(!ex.sys.world.links.contains_key(&7));
    let r = record(&ex).unwrap();
    assert_eq!((r.link.as_deref(), r.link_ifindex), (Some("tun0"), Some(8)));
    assert_eq!(ex.sys.world.links[&8].link.name, "tun0", "no rename needed");
}

/// `Delete` of a kept namespace whose tun a release could not delete deletes it too.
#[test]
fn delete_removes_the_tun_a_release_left() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    ex.sys.fail_when(|c| matches!(c, Call::LinkDelete { .. }));
    ex.release(&work()).unwrap_err();
    ex.sys.heal();
    calls(&mut ex);
    ex.delete(&work(), false).unwrap();
    assert!(calls(&mut ex).contains(&deleted()[3]));
    assert!(!ex.sys.world.links.contains_key(&7));
    assert!(record(&ex).is_none());
}

/// A record of an older agent has the link's name but not its index: the link is left to go by
/// itself, as it did then.
#[test]
fn a_record_without_the_index_deletes_no_link() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    let mut r = record(&ex).unwrap().clone();
    r.link_ifindex = None;
    ex.records.insert(work(), r);
    calls(&mut ex);
    ex.release(&work()).unwrap();
    assert_eq!(calls(&mut ex), saved()[1..]);
    assert!(ex.sys.world.links.contains_key(&7));
}
