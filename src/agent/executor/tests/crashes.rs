//! What a crash at each step leaves, and what the next release or reboot does with it: the
//! namespace's identity before its name, a deletion or a rewrite cut short, and which writes and
//! removals are synced so that they survive one.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::agent::fake::FakeFile;

use super::*;

/// The world a crash leaves just before the first call that `when` matches, in `run`.
fn crash_at(
    when: impl Fn(&Call) -> bool + Send + 'static,
    run: impl FnOnce(&mut Executor<RecordingSys>),
) -> World {
    let mut ex = executor();
    ex.sys.crash_when(when);
    run(&mut ex);
    ex.sys.crashed.take().expect("expected the call to be made")
}

#[test]
fn a_crash_before_the_namespace_has_its_name_owns_nothing_under_it() {
    // Between the creation and the bind, the record holds the identity of a namespace that has
    // no name yet; root then makes one under the name, with another identity.
    let req = request();
    let crashed = crash_at(
        |c| matches!(c, Call::NetnsBind(_)),
        |ex| drop(ex.isolate(&req)),
    );
    assert!(!crashed.netns.contains_key(&p(NS)));
    let mut sys = RecordingSys::new(crashed);
    sys.add_netns(NS);
    let mut ex = executor_with(sys);
    let r = record(&ex).unwrap();
    assert!(
        r.created && r.netns_id.is_some() && r.netns_pending,
        "{r:?}"
    );
    let err = ex.isolate(&req).unwrap_err();
    assert!(
        matches!(err, ExecError::InUse { .. }),
        "expected the lease to hold, got {err:?}"
    );
    ex.release(&work()).unwrap();
    assert!(
        ex.sys.world.netns.contains_key(&p(NS)),
        "expected root's namespace kept"
    );

    // A record of today's agent that says "created" without an identity (as the agent wrote
    // just before `netns_add` until the identity came first) owns nothing either: only 0.1.0's
    // records take what they find.
    let mut ex = executor();
    ex.isolate(&req).unwrap();
    let mut world = world(&ex);
    let mut intent = new_record(&req.claim, None, true);
    intent.leased = false;
    for path in [RECORD, DURABLE] {
        world.files.get_mut(&p(path)).unwrap().content = intent.encode();
    }
    let mut sys = RecordingSys::new(world);
    sys.add_link(7, "tun0", Some("tun"), None);
    let mut ex = executor_with(sys);
    let err = ex.isolate(&req).unwrap_err();
    assert!(
        matches!(err, ExecError::ForeignNotListed { .. }),
        "expected the namespace to be foreign, got {err:?}"
    );
    ex.release(&work()).unwrap();
    assert!(ex.sys.world.netns.contains_key(&p(NS)), "expected it kept");
}

/// A crash inside the agent's own deletion, between the unmount and the unlink, leaves an empty
/// file at the namespace's path; the next release (here by an agent started anew) removes it and
/// finishes. Any other file there is not the agent's, and stays.
#[test]
fn a_release_finishes_a_deletion_cut_short() {
    let mut world = crash_at(
        |c| matches!(c, Call::NetnsDel(_)),
        |ex| {
            ex.isolate(&request()).unwrap();
            ex.release(&work()).unwrap();
        },
    );
    // Unmounted, not yet unlinked.
    world.netns.insert(p(NS), FakeNetnsEntry::Leftover);
    let mut ex = Executor::new(RecordingSys::new(world.clone()), Paths::default()).unwrap();
    ex.release(&work()).unwrap();
    assert!(
        calls(&mut ex).contains(&Call::NetnsLeftoverRemove(p(NS))),
        "expected a removal of the leftover"
    );
    assert_eq!(ex.sys.world.netns.get(&p(NS)), None);
    assert!(
        record(&ex).is_none(),
        "expected no record, got {:?}",
        record(&ex)
    );

    world.netns.insert(p(NS), FakeNetnsEntry::RegularFile);
    let mut ex = Executor::new(RecordingSys::new(world), Paths::default()).unwrap();
    let err = ex.release(&work()).unwrap_err();
    assert!(err.to_string().contains("namespace work"), "{err}");
    assert_eq!(
        ex.sys.world.netns.get(&p(NS)),
        Some(&FakeNetnsEntry::RegularFile)
    );
    assert!(record(&ex).is_some_and(|r| !r.leased));
}

/// A crash after the agent's own deletion unlinked the file, before the record is forgotten,
/// leaves `netns_pending` on record. The empty file of someone's `ip netns add` of the name,
/// between making its file and mounting on it, is another file: the next release keeps it.
#[test]
fn a_deletion_cut_short_after_its_unlink_keeps_someones_new_file() {
    let crashed = crash_at(
        |c| *c == Call::FileRemove(p(RECORD)),
        |ex| {
            ex.isolate(&request()).unwrap();
            ex.release(&work()).unwrap();
        },
    );
    assert!(!crashed.netns.contains_key(&p(NS)), "expected it unlinked");
    let someones = |world: &World| {
        let mut sys = RecordingSys::new(world.clone());
        sys.add_netns_file(&p(NS), FakeNetnsEntry::Leftover);
        Executor::new(sys, Paths::default()).unwrap()
    };
    let mut ex = someones(&crashed);
    let r = record(&ex).unwrap();
    assert!(r.netns_pending && r.netns_file.is_some(), "{r:?}");
    ex.release(&work()).unwrap_err();
    assert_eq!(
        ex.sys.world.netns.get(&p(NS)),
        Some(&FakeNetnsEntry::Leftover),
        "expected someone's file kept"
    );
    assert!(record(&ex).is_some_and(|r| r.netns_pending && !r.leased));

    // A record without the file's identity, as older agents wrote it, takes any empty file of
    // root's there, as they did.
    let mut older = crashed;
    let mut r = Record::decode(&work(), &older.files[&p(RECORD)].content)
        .unwrap()
        .0;
    r.netns_file = None;
    for path in [RECORD, DURABLE] {
        older.files.get_mut(&p(path)).unwrap().content = r.encode();
    }
    let mut ex = someones(&older);
    ex.release(&work()).unwrap();
    assert_eq!(ex.sys.world.netns.get(&p(NS)), None);
}

/// The world a crash just before the call `when` of a creation leaves, and an agent started anew
/// on it.
fn crashed_creating(
    when: impl Fn(&Call) -> bool + Send + 'static,
) -> (World, Executor<RecordingSys>) {
    let crashed = crash_at(when, |ex| drop(ex.isolate(&request())));
    let ex = executor_with(RecordingSys::new(crashed.clone()));
    (crashed, ex)
}

/// Someone's `ip netns add` of the name has made its file in `world` and not yet mounted on it:
/// a release keeps that file.
fn assert_someones_file_kept(world: World) {
    let mut sys = RecordingSys::new(world);
    sys.add_netns_file(&p(NS), FakeNetnsEntry::Leftover);
    let mut ex = executor_with(sys);
    ex.release(&work()).unwrap_err();
    assert_eq!(
        ex.sys.world.netns.get(&p(NS)),
        Some(&FakeNetnsEntry::Leftover),
        "expected someone's file kept"
    );
}

/// A crash before the mount point is linked under the name leaves nothing there, and the record
/// already holds the identity of that unnamed file: the empty file of someone's `ip netns add` of
/// the name is another file.
#[test]
fn a_crash_before_the_mount_points_link_leaves_nothing_of_the_agents() {
    let (crashed, mut ex) = crashed_creating(|c| matches!(c, Call::NetnsBind(_)));
    assert_eq!(crashed.netns.get(&p(NS)), None, "expected nothing named");
    let r = record(&ex).unwrap();
    assert!(r.netns_pending && r.netns_file.is_some(), "{r:?}");
    ex.release(&work()).unwrap();
    assert!(record(&ex).is_none(), "expected it forgotten");
    assert_someones_file_kept(crashed);
}

/// A crash between the link and the mount leaves the agent's empty file under the name, the very
/// one on record: the next release removes it, and no other file put there since.
#[test]
fn a_crash_before_the_mount_leaves_the_file_on_record() {
    let (crashed, mut ex) = crashed_creating(|c| matches!(c, Call::NetnsBindMount(_)));
    let file = record(&ex).unwrap().netns_file.map(|f| f.ino);
    assert_eq!(file, crashed.netns_files.get(&p(NS)).copied());
    assert_eq!(crashed.netns.get(&p(NS)), Some(&FakeNetnsEntry::Leftover));
    ex.release(&work()).unwrap();
    assert_eq!(ex.sys.world.netns.get(&p(NS)), None, "expected it removed");
    assert!(record(&ex).is_none(), "expected it forgotten");
    // Someone removed it, then began an `ip netns add` of the name.
    assert_someones_file_kept(crashed);
}

/// An empty file at the namespace's path that is not the one the agent made may be the file of
/// someone's `ip netns add` that has not mounted yet: it is never removed.
#[test]
fn an_empty_file_is_removed_only_after_the_agents_own_deletion() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    assert!(!record(&ex).unwrap().netns_pending);
    assert_someones_file_kept(world(&ex));
}

/// `umount` alone of the agent's namespace leaves the file the agent made under the name; its
/// identity is on record, so the release removes it, and nothing is left.
#[test]
fn the_agents_own_mount_point_unmounted_from_outside_is_removed() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    let mut world = world(&ex);
    world.netns.insert(p(NS), FakeNetnsEntry::Leftover);
    let mut ex = executor_with(RecordingSys::new(world));
    ex.release(&work()).unwrap();
    assert_eq!(ex.sys.world.netns.get(&p(NS)), None, "expected it removed");
    assert!(record(&ex).is_none(), "expected it forgotten");
}

/// A crash in the middle of a rewrite in place (truncate, then write) leaves a prefix of what
/// was being written, the empty file among them. The record says what that was, so the file is
/// still the agent's: the release puts the administrator's content back, and the release's own
/// rewrite, cut short the same way, is finished by the next one.
#[test]
fn a_rewrite_cut_short_is_still_the_agents() {
    let admin = "nameserver 192.0.2.53\n";
    let isolate = |ex: &mut Executor<RecordingSys>| {
        foreign(ex);
        ex.isolate(&foreign_allowed()).unwrap();
    };
    let rewrite = |c: &Call| *c == Call::FileRewrite(p(RESOLV));
    let new = plan().resolv_conf;
    for cut in [0, 5, new.len()] {
        let mut world = crash_at(rewrite, |ex| isolate(ex));
        assert_eq!(world.files[&p(RESOLV)].content, admin.as_bytes());
        world.files.get_mut(&p(RESOLV)).unwrap().content = new.as_bytes()[..cut].to_vec();
        let mut ex = executor_with(RecordingSys::new(world));
        ex.release(&work()).unwrap();
        assert_eq!(content(&ex, RESOLV).unwrap(), admin, "cut at {cut}");
    }
    // The release's restore, cut short after 3 bytes.
    let mut ex = executor();
    isolate(&mut ex);
    ex.sys.crash_when(rewrite);
    ex.release(&work()).unwrap();
    let mut world = ex.sys.crashed.take().unwrap();
    world.files.get_mut(&p(RESOLV)).unwrap().content = admin.as_bytes()[..3].to_vec();
    let mut ex = executor_with(RecordingSys::new(world));
    ex.release(&work()).unwrap();
    assert_eq!(content(&ex, RESOLV).unwrap(), admin);
    // Without a rewrite on record, an emptied file is someone's change, and stays.
    let mut ex = executor();
    isolate(&mut ex);
    ex.sys
        .world
        .files
        .get_mut(&p(RESOLV))
        .unwrap()
        .content
        .clear();
    ex.release(&work()).unwrap();
    assert_eq!(content(&ex, RESOLV).unwrap(), "");
}

/// A reboot: /run is empty again, the namespace gone, /var/lib and /etc kept.
pub(super) fn reboot(mut world: World) -> World {
    world.netns.clear();
    world.netns_inodes.clear();
    world.netns_files.clear();
    world.links.clear();
    world.files.retain(|path, _| !path.starts_with("/run"));
    world
        .dirs
        .retain(|dir| !dir.starts_with("/run") || dir == Path::new("/run"));
    world
}

/// What a power loss leaves of the files that were not synced and outlive a reboot.
#[derive(Debug, Clone, Copy)]
enum PowerLoss {
    /// Nothing lost: a clean reboot syncs every file.
    None,
    /// Each one's name, without its content.
    Emptied,
    /// Not even the name.
    Dropped,
}

fn lose_power(mut world: World, loss: PowerLoss) -> World {
    let unsynced = |path: &Path, file: &FakeFile| !file.durable && !path.starts_with("/run");
    match loss {
        PowerLoss::None => {}
        PowerLoss::Emptied => world
            .files
            .iter_mut()
            .filter(|(path, file)| unsynced(path, file))
            .for_each(|(_, file)| file.content.clear()),
        PowerLoss::Dropped => world.files.retain(|path, file| !unsynced(path, file)),
    }
    world
}

/// A power loss at each step of an isolation, then a reboot: the durable record, written only
/// when what a reboot leaves of it changes (`Executor::save`) and before any of it is made, still
/// says all that the rebooted agent must put back, and it does, whatever the power loss took of
/// the DNS files it did not sync.
#[test]
fn a_reboot_after_a_crash_at_each_step_puts_everything_back() {
    let mut ex = executor();
    calls(&mut ex);
    let before = reboot(world(&ex));
    ex.isolate(&request()).unwrap();
    let steps = calls(&mut ex).len();
    for loss in [PowerLoss::None, PowerLoss::Emptied, PowerLoss::Dropped] {
        // The last step is none: the power goes once the isolation is done.
        for step in 0..=steps {
            let mut ex = executor();
            let seen = AtomicUsize::new(0);
            ex.sys
                .crash_when(move |_| seen.fetch_add(1, Ordering::Relaxed) == step);
            drop(ex.isolate(&request()));
            let crashed = ex.sys.crashed.take().unwrap_or_else(|| world(&ex));
            let ex = executor_with(RecordingSys::new(reboot(lose_power(crashed, loss))));
            let mut after = reboot(world(&ex));
            if !before.dirs.contains(&p("/etc/netns")) {
                after.dirs.remove(&p("/etc/netns"));
            }
            assert_eq!(
                after, before,
                "a crash at step {step} of {steps}, {loss:?} lost"
            );
        }
    }
}

/// What outlives a reboot and is not covered by the durable record is synced: the record
/// itself, but not the DNS files it names, nor the record under `/run`.
#[test]
fn only_what_outlives_a_reboot_is_synced() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    let durable = |path: &str| ex.sys.world.files[&p(path)].durable;
    assert!(durable(DURABLE));
    assert!(!durable(RESOLV) && !durable(NSSWITCH) && !durable(RECORD));
    // And so is every removal of a file or directory that outlives a reboot: a power loss must
    // not bring back a record of what the agent no longer holds, nor its `/etc/netns/NAME`.
    ex.release(&work()).unwrap();
    assert!(record(&ex).is_none());
    assert_all_removals_synced(&ex);
    // A rollback too: it removes what the attempt made, directory and all.
    let mut ex = executor();
    ex.sys
        .fail_when(|c| matches!(c, Call::FileCreate(f) if f.ends_with("nsswitch.conf")));
    ex.isolate(&request()).unwrap_err();
    assert!(!ex.sys.world.dirs.contains(&p(DIR)));
    assert_all_removals_synced(&ex);
}

fn assert_all_removals_synced(ex: &Executor<RecordingSys>) {
    let unsynced = &ex.sys.world.unsynced_removals;
    assert!(
        unsynced.is_empty(),
        "expected no removal unsynced, got {unsynced:?}"
    );
}
