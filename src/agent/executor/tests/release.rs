//! Release, the records that survive a restart, and re-apply.

use super::*;

/// What deleting the tun, ifindex 7, in `work` calls, once it was found there.
fn deleted() -> [Call; 4] {
    [
        Call::NetnsOpen(p(NS)),
        Call::NetnsId(p(NS)),
        Call::LinkList(p(NS)),
        Call::LinkDelete {
            netns: p(NS),
            ifindex: 7,
        },
    ]
}

#[test]
fn release_deletes_what_it_created() {
    let mut ex = executor();
    let before = world(&ex);
    ex.isolate(&request()).unwrap();
    // openvpn exited before the release, and the kernel destroyed its tun.
    ex.sys.world.links.remove(&7);
    calls(&mut ex);
    ex.release(&work()).unwrap();
    assert_eq!(
        calls(&mut ex),
        [
            &[
                // The tun on record is looked for, and found gone.
                Call::NetnsOpen(p(NS)),
                Call::NetnsId(p(NS)),
                Call::LinkList(p(NS)),
                // Only the namespace the agent created is deleted, and only a file that still
                // holds what it wrote is removed.
                Call::NetnsOpen(p(NS)),
                Call::NetnsId(p(NS)),
            ][..],
            // On record as under way before the unmount; a reboot would end it anyway.
            &saved()[1..],
            &[
                Call::NetnsDel(p(NS)),
                Call::FileRead(p(RESOLV)),
                Call::FileRemove(p(RESOLV)),
                Call::FileRead(p(NSSWITCH)),
                Call::FileRemove(p(NSSWITCH)),
                Call::DirRemove(p(DIR)),
            ],
            &forgotten(),
        ]
        .concat()
    );
    let mut expected = before;
    expected.links.remove(&7);
    assert_nothing_left(&ex, &expected, "release");
    // Releasing again has nothing to do.
    ex.release(&work()).unwrap();
    assert!(calls(&mut ex).is_empty());
}

#[test]
fn release_keeps_a_persistent_namespace_for_the_next_connect() {
    let mut ex = executor();
    let mut req = persistent_request();
    ex.isolate(&req).unwrap();
    let resolv_inode = inode(&ex, RESOLV);
    calls(&mut ex);
    ex.release(&work()).unwrap();
    // The tun is still there, as NetworkManager-openconnect's persistent one is: it goes, and
    // the namespace stays.
    assert_eq!(calls(&mut ex), [&deleted()[..], &saved()[1..]].concat());
    assert!(!ex.sys.world.links.contains_key(&7));
    assert!(ex.sys.world.netns.contains_key(&p(NS)));
    assert!(content(&ex, RESOLV).is_some() && content(&ex, NSSWITCH).is_some());
    let r = record(&ex).unwrap();
    assert!(r.created && r.persistent && !r.leased);
    assert_eq!((r.link.as_deref(), r.link_ifindex), (None, None));

    // The next connect reuses it: no new namespace, the files rewritten in place, and the
    // files still recorded as the agent's own rather than as backups.
    ex.sys.add_link(7, "tun0", Some("tun"), None);
    req.plan.resolv_conf = "nameserver 198.19.0.53\n".to_owned();
    let isolation = ex.isolate(&req).unwrap();
    assert!(!isolation.created);
    let calls = calls(&mut ex);
    assert!(!calls.iter().any(|c| matches!(c, Call::NetnsCreate(_))));
    assert!(calls.contains(&Call::FileRewrite(p(RESOLV))));
    assert!(calls.contains(&Call::SysctlRead(PING_GROUP_RANGE.to_owned())));
    assert_eq!(inode(&ex, RESOLV), resolv_inode);
    assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 198.19.0.53\n");
    assert!(record(&ex)
        .unwrap()
        .files
        .iter()
        .all(|f| f.backup.is_none()));

    // Turning persistence off lets the next release delete it all.
    ex.release(&work()).unwrap();
    ex.sys.world.links.remove(&7);
    ex.sys.add_link(7, "tun0", Some("tun"), None);
    ex.isolate(&request()).unwrap();
    ex.release(&work()).unwrap();
    assert!(!ex.sys.world.netns.contains_key(&p(NS)));
    assert!(!ex.sys.world.dirs.contains(&p(DIR)));
    assert!(record(&ex).is_none());
}

#[test]
fn foreign_namespace_keeps_everything_but_the_files_it_was_given() {
    let mut ex = executor();
    foreign(&mut ex);
    ex.sys.add_link(3, "tun0", Some("tun"), Some(NS));
    let before = world(&ex);
    let resolv_inode = inode(&ex, RESOLV);
    // Not listed in the policy, a foreign namespace is refused even to a system connection.
    let err = ex.isolate(&request()).unwrap_err();
    assert!(matches!(err, ExecError::ForeignNotListed { .. }), "{err}");
    assert!(
        err.to_string().contains("system-foreign-namespaces"),
        "{err}"
    );
    let isolation = ex.isolate(&foreign_allowed()).unwrap();
    assert_eq!(
        (isolation.created, isolation.link.as_str()),
        (false, "vpn0")
    );
    let calls_made = calls(&mut ex);
    assert!(calls_made.contains(&Call::LinkSetNetns {
        ifindex: 7,
        netns: p(NS),
        name: Some("vpn0".to_owned())
    }));
    assert!(!calls_made.contains(&Call::SysctlRead(PING_GROUP_RANGE.to_owned())));
    assert!(calls_made.contains(&Call::FileRewrite(p(RESOLV))));
    assert!(calls_made.contains(&Call::FileCreate(p(NSSWITCH))));
    assert_eq!(inode(&ex, RESOLV), resolv_inode);
    assert_eq!(
        record(&ex)
            .unwrap()
            .file(DnsFile::ResolvConf)
            .unwrap()
            .backup,
        Some(b"nameserver 192.0.2.53\n".to_vec())
    );

    ex.release(&work()).unwrap();
    let calls_made = calls(&mut ex);
    assert!(!calls_made
        .iter()
        .any(|c| matches!(c, Call::NetnsDel(_) | Call::DirRemove(_))));
    assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 192.0.2.53\n");
    assert_eq!(inode(&ex, RESOLV), resolv_inode);
    // The tun the agent moved in is deleted, and the link that was there before stays;
    // everything else is as it was.
    assert!(calls_made.contains(&Call::LinkDelete {
        netns: p(NS),
        ifindex: 7,
    }));
    let mut expected = before;
    expected.links.remove(&7);
    assert_eq!(world(&ex), expected);
    assert!(record(&ex).is_none());
}

#[test]
fn teardown_collects_every_error() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    ex.sys.fail_when(|c| {
        matches!(c, Call::NetnsDel(_)) || matches!(c, Call::FileRemove(f) if f.starts_with("/etc"))
    });
    let err = ex.release(&work()).unwrap_err();
    assert_eq!(err.netns, work());
    assert_eq!(err.errors.len(), 3, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("tearing down namespace work: injected failure of NetnsDel"),
        "{msg}"
    );
    assert!(
        msg.contains("resolv.conf") && msg.contains("nsswitch.conf"),
        "{msg}"
    );
    // What is left stays the agent's, unleased, so that a later release can finish.
    let r = record(&ex).unwrap();
    assert!(r.created && !r.leased);
    ex.sys.heal();
    ex.release(&work()).unwrap();
    assert!(record(&ex).is_none() && !ex.sys.world.netns.contains_key(&p(NS)));
}

#[test]
fn a_failed_rollback_says_what_is_left() {
    let mut ex = executor();
    ex.sys
        .fail_when(|c| matches!(c, Call::NetnsSetup { .. } | Call::LinkSetNetnsBack { .. }));
    let err = ex.isolate(&request()).unwrap_err();
    let ExecError::Incomplete { error, rollback } = &err else {
        panic!("{err}");
    };
    assert!(matches!(**error, ExecError::Sys(_)));
    assert_eq!(rollback.errors.len(), 1);
    assert!(
        err.to_string().contains("rolling back also failed"),
        "{err}"
    );
    let r = record(&ex).unwrap();
    assert!(r.created && !r.leased);
}

#[test]
fn records_survive_a_restart() {
    let mut ex = executor();
    let mut req = request();
    req.claim.connection_id = "Work VPN\n\\ \u{e9}".to_owned();
    req.claim.never_default_v6 = true;
    ex.isolate(&req).unwrap();
    let world = world(&ex);
    let r = record(&ex).unwrap().clone();

    let mut ex = Executor::new(RecordingSys::new(world), Paths::default()).unwrap();
    assert_eq!(ex.records().collect::<Vec<_>>(), [&r]);
    ex.sys.add_link(9, "tun9", Some("tun"), None);
    let mut again = other_request();
    again.tun_ifindex = 9;
    again.plan.link.name = "tun9".parse().unwrap();
    assert!(matches!(ex.isolate(&again), Err(ExecError::InUse { .. })));
    ex.release(&work()).unwrap();
    assert!(!ex.sys.world.netns.contains_key(&p(NS)));
    assert!(ex.records().next().is_none());
}

#[test]
fn unreadable_records_are_skipped() {
    let mut sys = sys_with("tun");
    sys.world.dirs.insert(p("/run/nm-vpn-netns"));
    sys.add_file("/run/nm-vpn-netns/work", "garbage\n");
    sys.add_file("/run/nm-vpn-netns/.work.nm-vpn-netns.tmp", "half");
    sys.add_file("/run/nm-vpn-netns/not a name", "x");
    let ex = Executor::new(sys, Paths::default()).unwrap();
    assert!(ex.records().next().is_none());
}

#[test]
fn reapply_rewrites_in_place() {
    let mut ex = executor();
    let mut req = request();
    req.plan.link.name = "tun0".parse().unwrap();
    ex.isolate(&req).unwrap();
    let resolv_inode = inode(&ex, RESOLV);
    calls(&mut ex);
    let mut new_plan = plan();
    new_plan.resolv_conf = "nameserver 198.19.0.99\n".to_owned();
    ex.reapply(&work(), &new_plan).unwrap();
    let rewrites = [Call::FileRewrite(p(RESOLV)), Call::FileRewrite(p(NSSWITCH))];
    assert_eq!(
        calls(&mut ex),
        [
            &[Call::NetnsOpen(p(NS))][..],
            &setup_and_read_dns(true),
            // The record says what the rewrites write before they start, and that they are done.
            &saved(),
            &rewrites,
            &saved(),
        ]
        .concat()
    );
    assert_eq!(content(&ex, RESOLV).unwrap(), "nameserver 198.19.0.99\n");
    assert_eq!(inode(&ex, RESOLV), resolv_inode);

    ex.release(&work()).unwrap();
    assert!(matches!(
        ex.reapply(&work(), &plan()),
        Err(ExecError::NotIsolated { .. })
    ));
    let other: NetnsName = "other".parse().unwrap();
    assert!(matches!(
        ex.reapply(&other, &plan()),
        Err(ExecError::PlanMismatch { .. })
    ));
}

#[test]
fn symlinked_netns_dir_is_refused_and_rolled_back() {
    let mut ex = executor();
    ex.sys.world.dirs.insert(p("/etc/netns"));
    ex.sys.world.symlinks.insert(p(DIR));
    let before = world(&ex);
    let err = ex.isolate(&request()).unwrap_err();
    assert_eq!(
        crate::report::chain(&err),
        "a system operation failed: /etc/netns/work: is a symbolic link, and nm-vpn-netns never \
         follows one here"
    );
    assert_nothing_left(&ex, &before, "symlink");
}

#[test]
fn a_version_1_record_is_loaded_and_rewritten() {
    let mut sys = sys_with("tun");
    sys.world.dirs.insert(p("/run/nm-vpn-netns"));
    let v1 = include_str!("../../testdata/record-v1-work");
    sys.add_file(RECORD, v1);
    let ex = Executor::new(sys, Paths::default()).unwrap();
    let r = record(&ex).unwrap().clone();
    assert_eq!(r.connection_uuid, UUID);
    assert!(r.leased && r.persistent && !r.created);
    assert!(ex.sys.calls.contains(&Call::FileReplace(p(RECORD))));
    let rewritten = content(&ex, RECORD).unwrap();
    assert!(rewritten.starts_with("{\n  \"version\": 2,"), "{rewritten}");
    assert_eq!(rewritten.as_bytes(), r.encode());

    // A failed rewrite keeps the old record, and the agent starts all the same.
    let mut sys = sys_with("tun");
    sys.world.dirs.insert(p("/run/nm-vpn-netns"));
    sys.add_file(RECORD, v1);
    sys.fail_when(|c| matches!(c, Call::FileReplace(_)));
    let ex = Executor::new(sys, Paths::default()).unwrap();
    assert_eq!(record(&ex), Some(&r));
    assert_eq!(content(&ex, RECORD).unwrap(), v1);
}

#[test]
fn free_names() {
    let taken = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(free_name("tun0", &taken(&["lo"])), None);
    assert_eq!(
        free_name("tun0", &taken(&["lo", "tun0"])),
        Some("vpn0".to_owned())
    );
    assert_eq!(
        free_name("tun0", &taken(&["lo", "tun0", "vpn0", "vpn1"])),
        Some("vpn2".to_owned())
    );
}

mod link;
