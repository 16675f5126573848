//! Who may use what: the namespace's identity, a user's names, entries and limit, what a reboot
//! leaves, and files changed behind the agent's back. What a crash leaves is in `crashes`.

use super::crashes::reboot;
use super::*;

/// Isolated and released with `netns-persistent`: the namespace and its files stay the agent's.
fn kept(req: &IsolateArgs) -> Executor<RecordingSys> {
    let mut ex = executor();
    ex.isolate(req).unwrap();
    ex.release(&work()).unwrap();
    ex.sys.world.links.remove(&7);
    ex.sys.add_link(7, "tun0", Some("tun"), None);
    calls(&mut ex);
    ex
}

#[test]
fn a_namespace_made_anew_under_the_same_name_is_foreign() {
    // Someone deletes the namespace and makes another under the same name.
    let made_anew = |req: &IsolateArgs| {
        let mut ex = kept(req);
        ex.sys.world.netns.remove(&p(NS));
        ex.sys.add_netns(NS);
        ex
    };
    let mut ex = made_anew(&alice(persistent_request()));
    let err = refused_before_side_effects(&mut ex, &alice(persistent_request()));
    assert!(matches!(err, ExecError::ForeignNetns { .. }), "{err}");
    let mut ex = made_anew(&persistent_request());
    let err = refused_before_side_effects(&mut ex, &persistent_request());
    assert!(matches!(err, ExecError::ForeignNotListed { .. }), "{err}");

    // Listed, a system connection uses it as foreign, and its release never deletes it.
    let req = claim(foreign_allowed(), |c| c.persistent = false);
    let isolation = ex.isolate(&req).unwrap();
    assert!(!isolation.created);
    assert!(!record(&ex).unwrap().created);
    ex.release(&work()).unwrap();
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    assert!(!calls(&mut ex)
        .iter()
        .any(|c| matches!(c, Call::NetnsDel(_))));
}

#[test]
fn a_release_deletes_only_the_namespace_it_created() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    ex.sys.world.netns.remove(&p(NS));
    ex.sys.add_netns(NS);
    ex.release(&work()).unwrap();
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    assert!(record(&ex).is_none());
}

#[test]
fn a_record_of_0_1_0_takes_the_namespace_under_its_name() {
    let mut ex = kept(&persistent_request());
    let mut r = record(&ex).unwrap().clone();
    r.netns_id = None;
    r.identity_first = false;
    ex.records.insert(work(), r);
    let isolation = ex.isolate(&persistent_request()).unwrap();
    assert!(!isolation.created);
    let id = ex.sys.netns_id(&FakeNetns(p(NS))).unwrap();
    assert_eq!(record(&ex).unwrap().netns_id, Some(id));
    assert!(record(&ex).unwrap().identity_first);
}

#[test]
fn a_user_may_not_take_the_admins_etc_netns_entry() {
    // /etc/netns/work/resolv.conf is the administrator's; no namespace exists.
    let mut ex = executor();
    ex.sys.world.dirs.insert(p("/etc/netns"));
    ex.sys.world.dirs.insert(p(DIR));
    ex.sys.add_file(RESOLV, "nameserver 192.0.2.53\n");
    let err = refused_before_side_effects(&mut ex, &alice(request()));
    assert!(matches!(err, ExecError::NotOurs { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "/etc/netns/work exists and nm-vpn-netns did not create it, or it was changed since; \
         a user's connection may not use it"
    );
    // An empty directory of the administrator's is refused too.
    ex.sys.world.files.remove(&p(RESOLV));
    let err = refused_before_side_effects(&mut ex, &alice(request()));
    assert!(matches!(err, ExecError::NotOurs { .. }), "{err}");
    // A system connection may use it, and puts the directory back as it was.
    ex.isolate(&request()).unwrap();
    ex.release(&work()).unwrap();
    assert!(ex.sys.world.dirs.contains(&p(DIR)));
}

#[test]
fn a_user_may_not_use_a_file_changed_in_its_own_entry() {
    let mut ex = kept(&alice(persistent_request()));
    ex.sys.world.files.get_mut(&p(RESOLV)).unwrap().content = b"nameserver 192.0.2.53\n".to_vec();
    let err = refused_before_side_effects(&mut ex, &alice(persistent_request()));
    assert_eq!(
        err.to_string(),
        "/etc/netns/work/resolv.conf exists and nm-vpn-netns did not create it, or it was \
         changed since; a user's connection may not use it"
    );
}

#[test]
fn a_user_holds_at_most_max_per_user_namespaces() {
    let mut ex = executor();
    let limited = |name: &str, ifindex: u32| {
        let mut req = alice(persistent_request());
        req.plan.netns = name.parse().unwrap();
        req.claim.netns = req.plan.netns.clone();
        req.claim.connection_uuid = format!("{UUID}-{name}");
        req.tun_ifindex = ifindex;
        req.plan.link.name = format!("tun{ifindex}").parse().unwrap();
        req.claim.policy.max_per_user = 2;
        req
    };
    for ifindex in [20, 21, 22] {
        ex.sys
            .add_link(ifindex, &format!("tun{ifindex}"), Some("tun"), None);
    }
    ex.isolate(&limited("a", 20)).unwrap();
    ex.isolate(&limited("b", 21)).unwrap();
    // Released, a persistent namespace still counts.
    ex.release(&"a".parse().unwrap()).unwrap();
    let err = refused_before_side_effects(&mut ex, &limited("c", 22));
    assert_eq!(
        err.to_string(),
        "user \"alice\" already holds 2 namespaces, the most max-namespaces-per-user in \
         /etc/nm-vpn-netns/agent.conf allows (2); take one down or remove a netns-persistent one"
    );
    // Its own namespace does not count against a connection, nor another user's.
    ex.sys.world.links.remove(&20);
    ex.sys.add_link(20, "tun20", Some("tun"), None);
    ex.isolate(&limited("a", 20)).unwrap();
    let mut bob = limited("c", 22);
    bob.claim.user = Some("bob".to_owned());
    ex.isolate(&bob).unwrap();
}

#[test]
fn what_a_failed_rollback_left_does_not_block_the_name() {
    let mut ex = executor();
    ex.sys
        .fail_when(|c| matches!(c, Call::NetnsSetup { .. } | Call::NetnsDel(_)));
    ex.isolate(&request()).unwrap_err();
    assert!(record(&ex).is_some_and(|r| r.created && !r.leased));
    ex.sys.heal();
    // Another connection gets the name: what was left is removed first.
    ex.isolate(&other_request()).unwrap();
    assert_eq!(record(&ex).unwrap().connection_uuid, OTHER_UUID);
}

#[test]
fn a_tun_gone_during_rollback_is_nothing_to_move_back() {
    let mut ex = executor();
    let before = world(&ex);
    let mut req = request();
    req.claim.persistent = true;
    ex.sys.add_netns(NS);
    ex.save(&new_record(&req.claim, None, true)).unwrap();
    // openvpn exited after the move: the kernel destroyed the tun, so it is not in there.
    let original = ex.sys.world.links.remove(&7).unwrap().link;
    let attempt = Attempt {
        name: work(),
        path: p(NS),
        netns: FakeNetns(p(NS)),
        netns_id: ex.sys.netns_id(&FakeNetns(p(NS))).unwrap(),
        netns_file: None,
        created: true,
        ours: true,
        previous: None,
        undo: vec![
            Undo::NetnsDel,
            Undo::LinkBack {
                link: "tun0".to_owned(),
                original,
            },
        ],
    };
    let err = ex.roll_back(attempt, ExecError::NotIsolated { netns: work() });
    assert!(matches!(err, ExecError::NotIsolated { .. }), "{err}");
    let mut expected = before;
    expected.links.remove(&7);
    expected.dirs.insert(p("/run/netns"));
    assert_nothing_left(&ex, &expected, "tun gone");
}

#[test]
fn a_file_changed_since_the_agent_wrote_it_is_kept() {
    let mut ex = executor();
    foreign(&mut ex);
    ex.isolate(&foreign_allowed()).unwrap();
    // The administrator writes a fresh resolv.conf while the VPN is up.
    let fresh = "nameserver 192.0.2.99\n";
    ex.sys.world.files.get_mut(&p(RESOLV)).unwrap().content = fresh.as_bytes().to_vec();
    ex.release(&work()).unwrap();
    assert_eq!(content(&ex, RESOLV).unwrap(), fresh);

    // Kept across connects, a file changed in between becomes the one to put back.
    let mut ex = kept(&claim(foreign_allowed(), |c| c.persistent = true));
    ex.sys.world.files.get_mut(&p(RESOLV)).unwrap().content = fresh.as_bytes().to_vec();
    ex.isolate(&claim(foreign_allowed(), |c| c.persistent = false))
        .unwrap();
    assert_eq!(content(&ex, RESOLV).unwrap(), plan().resolv_conf);
    ex.release(&work()).unwrap();
    assert_eq!(content(&ex, RESOLV).unwrap(), fresh);
}

#[test]
fn a_file_removed_since_the_agent_wrote_it_is_left_gone() {
    let mut ex = executor();
    foreign(&mut ex);
    ex.isolate(&foreign_allowed()).unwrap();
    ex.sys.world.files.remove(&p(RESOLV));
    ex.release(&work()).unwrap();
    assert_eq!(content(&ex, RESOLV), None, "expected it left gone");
    assert!(record(&ex).is_none());
}

#[test]
fn a_release_says_why_it_leaves_a_file() {
    use teardown::PutBack::{Gone, Leave, Remove, Restore};
    let f = FileRecord {
        file: DnsFile::ResolvConf,
        backup: Some(b"old".to_vec()),
        written: Some(b"ours".to_vec()),
        rewriting: Some(b"ours, rewritten".to_vec()),
    };
    let created = FileRecord {
        backup: None,
        ..f.clone()
    };
    let changed = Leave("it changed since nm-vpn-netns wrote it");
    let removed = Leave("it was removed since nm-vpn-netns wrote it");
    // (the record, what the file holds now: `Some(None)` for no file, what the release does)
    type Case<'a> = (
        &'a FileRecord,
        Option<Option<&'a [u8]>>,
        teardown::PutBack<'a>,
    );
    let cases: [Case; 8] = [
        (&f, Some(Some(b"ours")), Restore(b"old")),
        (&f, Some(Some(b"ours, re")), Restore(b"old")),
        (&f, Some(Some(b"theirs")), changed.clone()),
        (&f, Some(None), removed),
        (&f, None, Restore(b"old")),
        (&created, Some(Some(b"ours")), Remove),
        (&created, Some(Some(b"theirs")), changed),
        (&created, Some(None), Gone),
    ];
    for (f, now, expected) in cases {
        let got = teardown::put_back_of(f, now);
        assert_eq!(
            got, expected,
            "backup {:?}, file now {now:?}: expected {expected:?}, got {got:?}",
            f.backup
        );
    }
}

#[test]
fn a_users_persistent_entry_outlives_a_reboot() {
    let ex = kept(&alice(persistent_request()));
    let mut sys = RecordingSys::new(reboot(world(&ex)));
    sys.add_link(7, "tun0", Some("tun"), None);
    let mut ex = executor_with(sys);
    assert!(ex.sys.world.dirs.contains(&p(DIR)));
    let isolation = ex.isolate(&alice(persistent_request())).unwrap();
    assert!(isolation.created);
    ex.release(&work()).unwrap();
    // Kept for the same connection only.
    let err = refused_before_side_effects(&mut ex, &alice(other_request()));
    assert!(matches!(err, ExecError::OwnedByOther { .. }), "{err}");
}

/// A user chooses a profile's uuid, so the uuid alone does not tell whose a kept namespace is.
#[test]
fn a_kept_namespace_goes_only_to_its_own_user() {
    let mut ex = kept(&alice(persistent_request()));
    let bob = claim(persistent_request(), |c| c.user = Some("bob".to_owned()));
    for (who, req) in [
        ("bob", &bob),
        ("a system connection", &persistent_request()),
    ] {
        let err = refused_before_side_effects(&mut ex, req);
        assert!(
            matches!(err, ExecError::OwnedByOther { .. }),
            "{who}: {err}"
        );
    }
    // Nor does a system connection's kept namespace go to a user's of the same uuid.
    let mut ex = kept(&persistent_request());
    let err = refused_before_side_effects(&mut ex, &alice(persistent_request()));
    assert!(matches!(err, ExecError::OwnedByOther { .. }), "{err}");
    ex.isolate(&persistent_request()).unwrap();
}

#[test]
fn a_reboot_puts_back_what_a_crash_left() {
    let mut ex = executor();
    foreign(&mut ex);
    ex.isolate(&foreign_allowed()).unwrap();
    // The machine goes down with the VPN up: no release.
    let world = reboot(world(&ex));
    assert_eq!(
        world.files[&p(RESOLV)].content,
        plan().resolv_conf.as_bytes()
    );
    let ex = executor_with(RecordingSys::new(world));
    assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 192.0.2.53\n");
    assert!(content(&ex, NSSWITCH).is_none());
    assert!(ex.records().next().is_none());
    assert!(content(&ex, DURABLE).is_none());
}

#[test]
fn one_bad_entry_in_the_state_directory_does_not_stop_the_agent() {
    let mut sys = sys_with("tun");
    sys.world.dirs.insert(p("/run/nm-vpn-netns"));
    sys.add_file("/run/nm-vpn-netns/bad", "x");
    sys.fail_when(|c| *c == Call::FileRead(p("/run/nm-vpn-netns/bad")));
    let ex = Executor::new(sys, Paths::default()).unwrap();
    assert!(ex.records().next().is_none());
}
