//! The executor against the recording fake: order, rollback and refusals here; release,
//! records and re-apply in `release`.

use std::net::Ipv4Addr;

use super::*;
use crate::agent::fake::{Call, FakeNetns, FakeNetnsEntry, RecordingSys, World};
use crate::plan::{DefaultRoute, FamilyPlan, LinkPlan, Route};
use requests::*;

const UUID: &str = "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b";
const OTHER_UUID: &str = "1b2c3d4e-0000-4000-8000-000000000001";
const NS: &str = "/run/netns/work";
const DIR: &str = "/etc/netns/work";
const RESOLV: &str = "/etc/netns/work/resolv.conf";
const NSSWITCH: &str = "/etc/netns/work/nsswitch.conf";
const RECORD: &str = "/run/nm-vpn-netns/work";
const DURABLE: &str = "/var/lib/nm-vpn-netns/work";

/// What saving the record writes: its durable copy, then the record itself; the record alone
/// (`saved()[1..]`) when what a reboot leaves of it is unchanged.
fn saved() -> [Call; 2] {
    [Call::FileReplace(p(DURABLE)), Call::FileReplace(p(RECORD))]
}

/// What forgetting the record removes.
fn forgotten() -> [Call; 2] {
    [Call::FileRemove(p(RECORD)), Call::FileRemove(p(DURABLE))]
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

fn work() -> NetnsName {
    "work".parse().unwrap()
}

/// tun0, renamed `link` inside the namespace, moved back out under its own name.
fn moved_back(link: &str) -> Call {
    Call::LinkSetNetnsBack {
        netns: p(NS),
        link: link.to_owned(),
        name: "tun0".to_owned(),
    }
}

/// What isolating and re-applying do once the link is inside: its set-up, then the DNS files'.
fn setup_and_read_dns(reapply: bool) -> Vec<Call> {
    vec![
        Call::NetnsSetup {
            netns: p(NS),
            link: "tun0".to_owned(),
            reapply,
        },
        Call::DirCreate(p("/etc/netns")),
        Call::DirExists(p(DIR)),
        Call::FileRead(p(RESOLV)),
        Call::FileRead(p(NSSWITCH)),
    ]
}

pub(crate) fn plan() -> IsolationPlan {
    IsolationPlan {
        netns: work(),
        link: LinkPlan {
            name: "tun0".parse().unwrap(),
            mtu: Some(1500),
        },
        ipv4: Some(FamilyPlan {
            address: Ipv4Addr::new(198, 19, 0, 2),
            prefix: 24,
            peer: None,
            routes: vec![Route {
                dest: Ipv4Addr::new(198, 18, 64, 0),
                prefix: 18,
                via: Some(Ipv4Addr::new(198, 19, 0, 1)),
                metric: 0,
            }],
            default_route: Some(DefaultRoute {
                via: Some(Ipv4Addr::new(198, 19, 0, 1)),
            }),
            preserve_routes: false,
        }),
        ipv6: None,
        resolv_conf: "nameserver 198.19.0.1\nsearch vpn.test\n".to_owned(),
        nsswitch_conf: "hosts: files dns\n".to_owned(),
    }
}

fn sys_with(kind: &str) -> RecordingSys {
    let mut sys = RecordingSys::default();
    sys.add_link(7, "tun0", Some(kind), None);
    sys.add_link(8, "tun1", Some("tun"), None);
    sys
}

fn executor_with(sys: RecordingSys) -> Executor<RecordingSys> {
    let mut executor = Executor::new(sys, Paths::default()).unwrap();
    executor.sys.calls.clear();
    executor
}

fn executor() -> Executor<RecordingSys> {
    executor_with(sys_with("tun"))
}

fn world(executor: &Executor<RecordingSys>) -> World {
    executor.sys.world.clone()
}

fn calls(executor: &mut Executor<RecordingSys>) -> Vec<Call> {
    std::mem::take(&mut executor.sys.calls)
}

fn content(executor: &Executor<RecordingSys>, path: &str) -> Option<String> {
    executor
        .sys
        .world
        .files
        .get(&p(path))
        .map(|f| String::from_utf8(f.content.clone()).unwrap())
}

fn inode(executor: &Executor<RecordingSys>, path: &str) -> u64 {
    executor.sys.world.files[&p(path)].inode
}

/// A namespace that `ip netns add` made, with a resolv.conf of its own.
fn foreign(executor: &mut Executor<RecordingSys>) {
    executor.sys.add_netns(NS);
    executor.sys.world.dirs.insert(p("/etc/netns"));
    executor.sys.world.dirs.insert(p(DIR));
    executor.sys.add_file(RESOLV, "nameserver 192.0.2.53\n");
}

/// A process that runs in a namespace, as `ip netns pids` finds it.
fn sleeper() -> Vec<crate::agent::sys::Process> {
    vec![crate::agent::sys::Process {
        pid: 4242,
        comm: "sleep".to_owned(),
    }]
}

fn record(executor: &Executor<RecordingSys>) -> Option<&Record> {
    executor.records.get(&work())
}

#[test]
fn happy_path_calls_in_order() {
    let mut ex = executor();
    let isolation = ex.isolate(&request()).unwrap();
    assert_eq!(
        (isolation.netns, isolation.created, isolation.link.as_str()),
        (work(), true, "tun0")
    );
    let checks = [
        Call::LinkGet(7),
        Call::NetnsOpen(p(NS)),
        Call::SysctlRead(PING_GROUP_RANGE.to_owned()),
    ];
    // On record with its identity, and that of the file to mount it on, after both exist and
    // before they have the name.
    let create = [
        Call::NetnsCreate(p(NS)),
        Call::NetnsMountPoint(p("/run/netns")),
    ];
    let bind = [Call::NetnsBind(p(NS)), Call::NetnsBindMount(p(NS))];
    let move_link = [Call::LinkSetNetns {
        ifindex: 7,
        netns: p(NS),
        name: None,
    }];
    let write = [Call::FileCreate(p(RESOLV)), Call::FileCreate(p(NSSWITCH))];
    assert_eq!(
        calls(&mut ex),
        [
            &checks[..],
            // Nothing under `/etc/netns` yet: no durable copy.
            &create,
            &saved()[1..],
            &bind,
            &saved()[1..],
            &move_link,
            &setup_and_read_dns(false),
            // On disk before the directory and files it names exist; a reboot drops the last.
            &saved(),
            &[Call::DirCreate(p(DIR))],
            &write,
            &saved()[1..],
        ]
        .concat()
    );
    let tun = &ex.sys.world.links[&7];
    assert_eq!(tun.netns, Some(p(NS)));
    let configured = tun.setup.as_deref().unwrap();
    assert!(
        configured.contains("mtu Some(1500)")
            && configured.contains("198.19.0.2")
            && configured.contains("ping_group_range Some(\"0 2147483647\")"),
        "{configured}"
    );
    assert_eq!(
        content(&ex, RESOLV).unwrap(),
        "nameserver 198.19.0.1\nsearch vpn.test\n"
    );
    assert_eq!(content(&ex, NSSWITCH).unwrap(), "hosts: files dns\n");
    let r = record(&ex).unwrap().clone();
    assert!(r.created && r.leased && r.etc_dir_created && !r.persistent);
    assert_eq!(r.link.as_deref(), Some("tun0"));
    assert_eq!(
        r.files,
        [
            FileRecord {
                file: DnsFile::ResolvConf,
                backup: None,
                written: Some(plan().resolv_conf.into_bytes()),
                rewriting: None,
            },
            FileRecord {
                file: DnsFile::NsswitchConf,
                backup: None,
                written: Some(plan().nsswitch_conf.into_bytes()),
                rewriting: None,
            }
        ]
    );
    assert_eq!(content(&ex, RECORD).unwrap().as_bytes(), r.encode());
    // The durable copy is from before the files were written: the same after a reboot.
    let durable = content(&ex, DURABLE).unwrap();
    let (durable, _) = Record::decode(&work(), durable.as_bytes()).unwrap();
    assert_eq!(durable.after_reboot(), r.after_reboot());
    assert_eq!(
        r.netns_id,
        Some(ex.sys.netns_id(&FakeNetns(p(NS))).unwrap())
    );
}

/// Nothing of the attempt may remain: the world is as before, apart from the directories
/// that hold every namespace's files, and there is no record.
fn assert_nothing_left(ex: &Executor<RecordingSys>, before: &World, context: &str) {
    let mut after = world(ex);
    for shared in ["/run/netns", "/etc/netns"] {
        if !before.dirs.contains(&p(shared)) {
            after.dirs.remove(&p(shared));
        }
    }
    assert_eq!(&after, before, "{context}");
    assert!(record(ex).is_none(), "{context}");
}

#[test]
fn rollback_after_a_failure_at_each_step() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    let steps = calls(&mut ex).len();
    for step in 0..steps {
        let mut ex = executor();
        let before = world(&ex);
        ex.sys.fail_at(step);
        let err = ex.isolate(&request()).unwrap_err();
        let context = format!("failure at call {step}: {err}");
        assert!(matches!(err, ExecError::Sys(_)), "{context}");
        // After the failure only undo steps run.
        let undo_only = ex.sys.calls[step + 1..].iter().all(|c| {
            matches!(
                c,
                Call::NetnsDel(_)
                    | Call::FileReplace(_)
                    | Call::NetnsOpen(_)
                    | Call::NetnsId(_)
                    | Call::LinkSetNetnsBack { .. }
                    | Call::DirRemove(_)
                    | Call::FileRemove(_)
            )
        });
        assert!(undo_only, "{context}: {:?}", &ex.sys.calls[step + 1..]);
        assert_nothing_left(&ex, &before, &context);
        assert!(ex.sys.world.links[&7].netns.is_none(), "{context}");
    }
}

#[test]
fn rollback_undoes_in_reverse_order() {
    let mut ex = executor();
    ex.sys
        .fail_when(|c| matches!(c, Call::FileCreate(f) if f.ends_with("nsswitch.conf")));
    ex.isolate(&request()).unwrap_err();
    let calls = calls(&mut ex);
    let failed = calls
        .iter()
        .position(|c| *c == Call::FileCreate(p(NSSWITCH)))
        .unwrap();
    assert_eq!(
        calls[failed + 1..],
        [
            Call::FileRemove(p(RESOLV)),
            Call::DirRemove(p(DIR)),
            moved_back("tun0"),
            Call::NetnsOpen(p(NS)),
            Call::NetnsId(p(NS)),
            Call::FileReplace(p(RECORD)),
            Call::NetnsDel(p(NS)),
            Call::FileRemove(p(RECORD)),
            Call::FileRemove(p(DURABLE)),
        ]
    );
}

#[test]
fn link_comes_back_with_its_name_mtu_and_state() {
    let mut ex = executor();
    foreign(&mut ex);
    ex.sys.add_link(3, "tun0", Some("tun"), Some(NS));
    {
        let tun = &mut ex.sys.world.links.get_mut(&7).unwrap().link;
        tun.up = true;
        tun.mtu = 1400;
    }
    let before = world(&ex);
    ex.sys.fail_when(|c| matches!(c, Call::NetnsSetup { .. }));
    ex.isolate(&foreign_allowed()).unwrap_err();
    assert!(calls(&mut ex).contains(&moved_back("vpn0")));
    assert_nothing_left(&ex, &before, "configure failed");
}

#[test]
fn deadline_expiry_rolls_back() {
    let mut ex = executor();
    let before = world(&ex);
    let mut req = request();
    req.claim.deadline = ex.sys.now() + Duration::from_millis(2000);
    ex.sys.slow_when(
        |c| matches!(c, Call::LinkSetNetns { .. }),
        Duration::from_millis(2500),
    );
    let err = ex.isolate(&req).unwrap_err();
    let ExecError::Timeout { elapsed, step, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        (*elapsed, *step),
        (Duration::from_millis(2500), "configuring the namespace")
    );
    assert!(
        err.to_string().contains("ran past netns-timeout: 2500 ms"),
        "{err}"
    );
    let calls = calls(&mut ex);
    assert!(!calls.iter().any(|c| matches!(c, Call::NetnsSetup { .. })));
    assert!(calls.contains(&moved_back("tun0")));
    assert_nothing_left(&ex, &before, "deadline");
}

#[test]
fn deadline_already_past_touches_nothing() {
    let mut ex = executor();
    let mut req = request();
    req.claim.deadline = ex.sys.now();
    let err = ex.isolate(&req).unwrap_err();
    assert!(
        matches!(
            err,
            ExecError::Timeout {
                step: "creating the namespace",
                ..
            }
        ),
        "{err}"
    );
    assert!(!calls(&mut ex)
        .iter()
        .any(|c| matches!(c, Call::NetnsCreate(_))));
}

/// A hostile server's 1024 routes on a slow kernel: the deadline is checked between the
/// configuration step's messages, not only after the step.
#[test]
fn deadline_inside_the_configuration_step_rolls_back() {
    let mut ex = executor();
    let before = world(&ex);
    let mut req = request();
    let route = req.plan.ipv4.as_ref().unwrap().routes[0].clone();
    req.plan.ipv4.as_mut().unwrap().routes = (0..1024u32)
        .map(|i| Route {
            dest: Ipv4Addr::from(0x0a00_0000 + (i << 8)),
            ..route.clone()
        })
        .collect();
    req.claim.deadline = ex.sys.now() + Duration::from_millis(2000);
    ex.sys.slow_messages(Duration::from_millis(10));
    let err = ex.isolate(&req).unwrap_err();
    let ExecError::Timeout { elapsed, step, .. } = &err else {
        panic!("{err}");
    };
    // 200 messages fit in 2 s; the whole plan would have taken 10.29 s.
    assert_eq!(
        (*elapsed, *step),
        (Duration::from_millis(2000), "configuring the namespace")
    );
    assert!(calls(&mut ex).contains(&moved_back("tun0")));
    assert_nothing_left(&ex, &before, "deadline inside the setup");
}

fn refused_before_side_effects(ex: &mut Executor<RecordingSys>, req: &IsolateArgs) -> ExecError {
    calls(ex);
    let before = world(ex);
    let err = ex.isolate(req).unwrap_err();
    assert_eq!(world(ex), before, "{err}");
    assert!(
        calls(ex).iter().all(|c| matches!(
            c,
            Call::LinkGet(_)
                | Call::NetnsOpen(_)
                | Call::NetnsId(_)
                | Call::SysctlRead(_)
                | Call::DirExists(_)
                | Call::FileRead(_)
        )),
        "{err}"
    );
    err
}

#[test]
fn dco_is_refused_before_any_side_effect() {
    for kind in ["ovpn-dco", "ovpn"] {
        let mut ex = executor_with(sys_with(kind));
        let err = refused_before_side_effects(&mut ex, &request());
        assert!(
            matches!(&err, ExecError::Dco { kind: k, .. } if k == kind),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "link tun0 is an OpenVPN data channel offload device (kind {kind})"
            )) && msg.contains("--disable-dco"),
            "{msg}"
        );
    }
}

#[test]
fn other_link_kinds_are_refused() {
    let mut ex = executor_with(sys_with("veth"));
    let err = refused_before_side_effects(&mut ex, &request());
    assert_eq!(
        err.to_string(),
        "link tun0 is a veth device, not a tun; only a VPN's tun can be isolated"
    );
    let mut sys = RecordingSys::default();
    sys.add_link(7, "tun0", None, None);
    let mut ex = executor_with(sys);
    let err = refused_before_side_effects(&mut ex, &request());
    assert!(matches!(err, ExecError::NotTun { .. }), "{err}");
}

#[test]
fn missing_or_renamed_link_is_refused() {
    let mut ex = executor();
    let mut req = request();
    req.tun_ifindex = 99;
    let err = refused_before_side_effects(&mut ex, &req);
    assert!(
        matches!(err, ExecError::LinkMissing { ifindex: 99, .. }),
        "{err}"
    );
    req.tun_ifindex = 8;
    let err = refused_before_side_effects(&mut ex, &req);
    assert_eq!(
        err.to_string(),
        "ifindex 8 is named tun1, not tun0 as NetworkManager reported; refusing to move \
         another link"
    );
}

#[test]
fn foreign_namespace_is_refused_to_a_user_connection() {
    let mut ex = executor();
    foreign(&mut ex);
    let err = refused_before_side_effects(&mut ex, &alice(foreign_allowed()));
    assert!(matches!(err, ExecError::ForeignNetns { .. }), "{err}");
    assert!(
        err.to_string().contains("only a system connection"),
        "{err}"
    );
}

#[test]
fn something_else_at_the_namespace_path_is_refused() {
    let mut ex = executor();
    ex.sys.world.dirs.insert(p("/run/netns"));
    ex.sys
        .world
        .netns
        .insert(p(NS), FakeNetnsEntry::RegularFile);
    let err = refused_before_side_effects(&mut ex, &request());
    assert_eq!(
        crate::report::chain(&err),
        "a system operation failed: /run/netns/work: is a regular file, not a network \
         namespace; refusing to use it (if it is a leftover, remove it)"
    );
}

#[test]
fn a_namespace_created_for_one_uuid_is_refused_to_another() {
    let mut ex = executor();
    ex.isolate(&persistent_request()).unwrap();
    ex.release(&work()).unwrap();
    let err = refused_before_side_effects(&mut ex, &other_request());
    assert!(matches!(err, ExecError::OwnedByOther { .. }), "{err}");
    let msg = err.to_string();
    // The caller may be a user, who must not learn another's connection.
    assert!(
        !msg.contains(UUID) && msg.contains("Two connection ids"),
        "{msg}"
    );
}

#[test]
fn one_vpn_per_namespace() {
    let mut ex = executor();
    ex.isolate(&request()).unwrap();
    for req in [other_request(), request()] {
        let err = refused_before_side_effects(&mut ex, &req);
        assert_eq!(
            err.to_string(),
            "namespace work already has an active VPN of another connection; one VPN per \
             namespace"
        );
    }
}

mod crashes;
mod delete;
mod ownership;
mod prepare;
mod release;
mod requests;
mod stranded;
