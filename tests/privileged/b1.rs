//! B1, the isolation step (BENCHMARKS.md): ours against the way people do it today and against
//! the kernel's own cost, in one run, interleaved.
//!
//! Not a check but a measurement: it prints one line per sample, `LABEL MILLISECONDS`, for
//! tests/e2e/bench-stats.py; `tests/bench-isolate.sh` runs it and makes the table. Each round
//! times, in this order:
//! - `ours`: the executor's `isolate` on the real kernel, as `timings` times it: a new
//!   namespace, IPv4 and IPv6, the DNS files, the record;
//! - `baseline`: the `ip` and file sequence that namespaced-openvpn runs for the same result;
//! - `floor`: a namespace made in-process and mounted at its name, then one `RTM_NEWLINK` with
//!   `IFLA_NET_NS_FD`: the link move, which is the kernel's work and the least any tool pays.
//!
//! The move alone varies by tens of milliseconds from call to call, far more than the rest, so
//! `ours − floor` needs many rounds. Two more labels take each path's own move out, and their
//! difference is the same overhead with that noise gone: `ours_less_move` and `floor_less_move`.
//!
//! Each path gets a tun made just before it and loses its namespace just after it, both outside
//! the timed window, and then [`SETTLE`] passes. Round 0 is a warm-up and prints nothing: it makes
//! /run/netns a mount point and /etc/netns, which only the first isolation on a machine pays, and
//! brings `ip` into the page cache. `B1_ROUNDS` sets the number of rounds (30; `make check` runs
//! one, as a smoke test).

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use nix::mount::{self, MntFlags, MsFlags};
use nix::sched::{self, CloneFlags};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::{ifindex, ip, millis, name, plan_for, request, sandbox, timed_executor, tun, Tun};

const ROUNDS_ENV: &str = "B1_ROUNDS";
const ROUNDS: usize = 30;
/// The kernel frees a deleted namespace later, on a work queue and under the lock that a link
/// move takes (`cleanup_net` in net/core/net_namespace.c); the pause lets that end before the
/// next path, so that no path meets more of another's teardown than the others do.
const SETTLE: Duration = Duration::from_millis(100);

/// The addresses of `plan_for(…, ipv6: true, …)`, as openvpn hands them to a route-up script:
/// `ifconfig_local`, `route_vpn_gateway`, `ifconfig_ipv6_local`, `ifconfig_ipv6_remote`,
/// `ifconfig_ipv6_netbits`, and the `dhcp-option`s DNS, DNS6 and DOMAIN.
const LOCAL4: &str = "198.19.0.2";
const GATEWAY4: &str = "198.19.0.1";
const LOCAL6: &str = "fd00:198:19::1000";
const REMOTE6: &str = "fd00:198:19::1";
const NETBITS6: &str = "64";
/// What namespaced-openvpn's `write_resolvconf` writes for those options.
const RESOLV_CONF: &str = "domain vpn.test\nnameserver 198.19.0.1\nnameserver fd00:198:19::1\n";

/// namespaced-openvpn 0.6.0 (github.com/slingamn/namespaced-openvpn, the script
/// `namespaced-openvpn` at commit a3fa42b2): `setup_namespace` (lines 63–72), run before openvpn
/// starts, then its route-up hook `route_up` (lines 199–230) and `setup_dns` (lines 136–154).
/// Each `ip` is a process of its own, as `subprocess.check_call` makes it, and the commands run
/// in the namespace through `ip netns exec` (`_enter_namespace_cmd`, lines 41–50); the file work
/// is in-process, as Python's is. Two differences, both in its favour: the Python interpreter
/// that openvpn starts for the hook is not counted, and `ip netns add` runs without its prefix
/// `nsenter -m -n -t 1 --` (line 48), which would enter PID 1's namespaces, the machine's own.
fn namespaced_openvpn(ns: &str, dev: &str) {
    let run_netns = Path::new("/run/netns").join(ns);
    assert!(!run_netns.exists(), "{} is left over", run_netns.display());
    ip(&["netns", "add", ns]);
    let inside = |args: &[&str]| ip(&[&["netns", "exec", ns, "ip"][..], args].concat());
    inside(&["link", "set", "lo", "up"]);
    ip(&["link", "set", dev, "netns", ns]);
    inside(&["link", "set", dev, "up"]);
    let peer4 = format!("{GATEWAY4}/32");
    inside(&["addr", "add", LOCAL4, "peer", &peer4, "dev", dev]);
    inside(&["route", "add", "default", "dev", dev]);
    let peer6 = format!("{REMOTE6}/{NETBITS6}");
    inside(&["-6", "addr", "add", LOCAL6, "peer", &peer6, "dev", dev]);
    inside(&["-6", "route", "add", "default", "dev", dev]);
    let etc = Path::new("/etc/netns").join(ns);
    if !etc.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&etc)
            .unwrap();
    }
    fs::write(etc.join("resolv.conf"), RESOLV_CONF).unwrap();
}

/// The kernel's part alone: a namespace made by `unshare` on a thread of its own and bind-mounted
/// on an empty file at its name, as the agent makes one (`RealSys::netns_create`, `netns_bind`),
/// then the move, as one `RTM_NEWLINK` with `IFLA_NET_NS_FD` for the link's index, which is what
/// `ip link set DEV netns NAME` sends. Nothing is configured inside. Returns the time of the move.
fn kernel_move(ns: &str, ifindex: u32) -> Duration {
    let netns: OwnedFd = std::thread::spawn(|| {
        sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
        File::open("/proc/thread-self/ns/net").unwrap().into()
    })
    .join()
    .unwrap();
    let path = Path::new("/run/netns").join(ns);
    // Mode 0, as iproute2 makes it.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .unwrap();
    let source = format!("/proc/self/fd/{}", netns.as_raw_fd());
    mount::mount(
        Some(source.as_str()),
        &path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();

    let start = Instant::now();
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes
        .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
    let mut packet = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
    packet.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
    socket.bind_auto().unwrap();
    socket.connect(&SocketAddr::new(0, 0)).unwrap();
    socket.send(&buf, 0).unwrap();
    let (reply, _) = socket.recv_from_full().unwrap();
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply).unwrap();
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_none() => {}
        other => panic!("RTM_NEWLINK: expected an ACK, got {other:?}"),
    }
    start.elapsed()
}

/// Deletes the namespace `kernel_move` made, as `ip netns del` does.
fn release_kernel_move(ns: &str) {
    let path = Path::new("/run/netns").join(ns);
    mount::umount2(&path, MntFlags::MNT_DETACH).unwrap();
    fs::remove_file(&path).unwrap();
}

/// Deletes what `namespaced_openvpn` made.
fn release_namespaced_openvpn(ns: &str) {
    ip(&["netns", "del", ns]);
    fs::remove_dir_all(Path::new("/etc/netns").join(ns)).unwrap();
}

/// The time `isolate` takes, by its own measure, to move a fresh tun into `ns`. The tun is checked
/// to be there, then closed, as openvpn closes it before a namespace is released; `release`
/// deletes the namespace.
fn moved(ns: &str, isolate: impl FnOnce(&Tun) -> Duration, release: impl FnOnce(&str)) -> Duration {
    let tun = tun(&format!("{ns}-t"));
    let took = isolate(&tun);
    assert!(
        ifindex(&tun.name, Some(ns)).is_some(),
        "expected {} in namespace {ns}, got none",
        tun.name
    );
    drop(tun);
    release(ns);
    std::thread::sleep(SETTLE);
    took
}

fn timed(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn isolation_step() {
    sandbox();
    let rounds = std::env::var(ROUNDS_ENV).map_or(ROUNDS, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("{ROUNDS_ENV}: expected a count, got {n:?}"))
    });
    let (ours_ns, baseline_ns, floor_ns) = ("b1-ours", "b1-base", "b1-floor");
    let (ex, times) = timed_executor();
    let ex = RefCell::new(ex);
    for round in 0..=rounds {
        let ours = moved(
            ours_ns,
            |tun| {
                let req = request(plan_for(ours_ns, &tun.name, true, None), tun.ifindex());
                times.borrow_mut().clear();
                timed(|| {
                    ex.borrow_mut().isolate(&req).unwrap();
                })
            },
            |ns| ex.borrow_mut().release(&name(ns)).unwrap(),
        );
        let ours_move = times.borrow()["link_set_netns"][0];
        let baseline = moved(
            baseline_ns,
            |tun| timed(|| namespaced_openvpn(baseline_ns, &tun.name)),
            release_namespaced_openvpn,
        );
        let mut floor_move = Duration::ZERO;
        let floor = moved(
            floor_ns,
            |tun| {
                let index = tun.ifindex();
                timed(|| floor_move = kernel_move(floor_ns, index))
            },
            release_kernel_move,
        );
        if round > 0 {
            for (label, took) in [
                ("ours", ours),
                ("baseline", baseline),
                ("floor", floor),
                ("ours_less_move", ours - ours_move),
                ("floor_less_move", floor - floor_move),
            ] {
                println!("{label} {:.3}", millis(took));
            }
        }
    }
}
