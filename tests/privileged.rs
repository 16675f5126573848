//! The executor against the real kernel: a real namespace, a real tun, real files.
//!
//! These tests need root and change the system, so they run only inside the sandbox that
//! `tests/privileged.sh` makes: an empty network namespace and a private mount namespace with a
//! tmpfs on /run and a throwaway overlay on /etc. Run outside it (`cargo test -- --ignored`),
//! each of them fails at once rather than touching the machine's own namespaces.

// Not tests/b1.rs, which cargo would take for a test binary of its own.
#[path = "privileged/b1.rs"]
mod b1;
mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{ay, dict, ov, v4, UUID};
use nm_vpn_netns::agent::executor::{
    ExecError, Executor, IsolateArgs, Paths, PrepareArgs, END_GRACE,
};
use nm_vpn_netns::agent::linux::{link_watch, MountPointFd, NetnsFd, RealSys};
use nm_vpn_netns::agent::policy::Policy;
use nm_vpn_netns::agent::sys::{
    Durability, FileId, Link, NetnsId, NetnsSetup, Process, Sys, SysError,
};
use nm_vpn_netns::plan::settings::NetnsName;
use nm_vpn_netns::plan::{self, IsolationPlan, PlanInput, VarDict};
use nm_vpn_netns::report::chain;

const SANDBOX_ENV: &str = "NM_VPN_NETNS_PRIVILEGED_SANDBOX";
const OTHER_UUID: &str = "1b2c3d4e-0000-4000-8000-000000000001";
const SANDBOX_PING_GROUP_RANGE: &str = "0\t2147483647";

/// Panics unless this process is in the sandbox: told so by the script, and in a network and
/// mount namespace of its own with a tmpfs on /run and /var/lib and an overlay on /etc.
fn sandbox() {
    assert_eq!(
        std::env::var(SANDBOX_ENV).as_deref(),
        Ok("1"),
        "refusing to run: these tests change the system; run them with `bash \
         tests/privileged.sh`, which sets {SANDBOX_ENV}=1 inside a sandbox"
    );
    // PID 1's namespaces are the machine's own; where PID 1 cannot be inspected (some VMs deny
    // it even to root), the launcher of the sandbox and the kernel's fixed inode numbers of the
    // initial namespaces (NET_NS_INIT_INO, MNT_NS_INIT_INO) stand in for them.
    let launcher = format!("/proc/{}", std::os::unix::process::parent_id());
    for (ns, init_ino) in [("net", 0xEFFF_FFF9u64), ("mnt", 0xEFFF_FFF8)] {
        let own = fs::metadata(format!("/proc/self/ns/{ns}")).unwrap().ino();
        assert_ne!(
            own, init_ino,
            "refusing to run: this process is in the initial {ns} namespace"
        );
        let mut compared = 0;
        for other in ["/proc/1", launcher.as_str()] {
            if let Ok(meta) = fs::metadata(format!("{other}/ns/{ns}")) {
                assert_ne!(
                    own,
                    meta.ino(),
                    "refusing to run: this process shares {other}'s {ns} namespace, so it is not \
                     in a sandbox"
                );
                compared += 1;
            }
        }
        assert!(
            compared > 0,
            "cannot tell whether the {ns} namespace is a sandbox's"
        );
    }
    for (path, magic, what) in [
        ("/run", nix::sys::statfs::TMPFS_MAGIC, "a tmpfs"),
        ("/var/lib", nix::sys::statfs::TMPFS_MAGIC, "a tmpfs"),
        (
            "/etc",
            nix::sys::statfs::OVERLAYFS_SUPER_MAGIC,
            "an overlay",
        ),
    ] {
        let fs = nix::sys::statfs::statfs(path).unwrap();
        assert_eq!(
            fs.filesystem_type(),
            magic,
            "refusing to run: {path} is not {what}"
        );
    }
    let _ = env_logger::builder().is_test(true).try_init();
    let range = fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    if range.trim_end() != SANDBOX_PING_GROUP_RANGE {
        // Unlike the new namespace's default ("1 0"), so copying it shows.
        fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `ip` output as a set of lines with runs of blanks collapsed.
fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn netns_list() -> BTreeSet<String> {
    ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn ifindex(name: &str, netns: Option<&str>) -> Option<u32> {
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-o", "link", "show", "dev", name]);
    let out = Command::new("ip").args(&args).output().unwrap();
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
}

/// A tun as openvpn holds it: the device lives as long as this file descriptor.
struct Tun {
    file: File,
    name: String,
}

fn tun(name: &str) -> Tun {
    use nix::libc;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .unwrap();
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    Tun {
        file,
        name: name.to_owned(),
    }
}

impl Tun {
    fn ifindex(&self) -> u32 {
        ifindex(&self.name, None).unwrap()
    }

    fn write(&self, packet: &[u8]) {
        (&self.file).write_all(packet).unwrap();
    }
}

/// nm-openvpn's Ip4Config for a `topology subnet` server: `address`/24 on 198.19.0.0/24, its
/// gateway 198.19.0.1 also the DNS server, domain vpn.test, and pushed routes (dest, prefix, via).
fn subnet4(address: &str, routes: &[(&str, u32, &str)]) -> VarDict {
    let routes: Vec<Vec<u32>> = routes
        .iter()
        .map(|(dest, prefix, via)| vec![v4(dest), *prefix, v4(via), 0])
        .collect();
    dict(vec![
        ("internal-gateway", ov(v4("198.19.0.1"))),
        ("address", ov(v4(address))),
        ("prefix", ov(24u32)),
        ("routes", ov(routes)),
        ("dns", ov(vec![v4("198.19.0.1")])),
        ("domains", ov(vec!["vpn.test"])),
    ])
}

/// nm-openvpn's Ip4Config for `topology net30`: 198.19.0.6 with peer 198.19.0.5, and the
/// server's pushed route to its own tunnel address.
fn net30() -> VarDict {
    dict(vec![
        ("internal-gateway", ov(v4("198.19.0.5"))),
        ("address", ov(v4("198.19.0.6"))),
        ("ptp", ov(v4("198.19.0.5"))),
        ("prefix", ov(32u32)),
        (
            "routes",
            ov(vec![vec![v4("198.19.0.1"), 32, v4("198.19.0.5"), 0]]),
        ),
        ("dns", ov(vec![v4("198.19.0.1")])),
        ("domains", ov(vec!["vpn.test"])),
    ])
}

/// nm-openvpn's Ip6Config for `server-ipv6 fd00:198:19::/64` with a pushed
/// `route-ipv6 fd00:198:19:1::/64` and DNS fd00:198:19::1.
fn ip6() -> VarDict {
    dict(vec![
        ("address", ov(ay("fd00:198:19::1000"))),
        ("prefix", ov(64u32)),
        (
            "routes",
            ov(vec![(
                ay("fd00:198:19:1::"),
                64u32,
                ay("fd00:198:19::1"),
                0u32,
            )]),
        ),
        ("dns", ov(vec![ay("fd00:198:19::1")])),
        ("domains", ov(vec!["vpn.test"])),
    ])
}

/// The plan the agent builds from nm-openvpn's dicts for a tun named `tun`.
fn plan_with(netns: &str, tun: &str, ip4: &VarDict, ip6: Option<&VarDict>) -> IsolationPlan {
    let mut config = dict(vec![
        ("gateway", ov(v4("198.18.0.1"))),
        ("can-persist", ov(true)),
        ("tundev", ov(tun)),
        ("mtu", ov(1500u32)),
        ("has-ip4", ov(true)),
    ]);
    if ip6.is_some() {
        config.insert("has-ip6".to_owned(), ov(true));
    }
    let host_nsswitch = fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    plan::build(&PlanInput {
        netns: netns.parse().unwrap(),
        never_default_v4: false,
        never_default_v6: false,
        tunnel_mtu: None,
        config: &config,
        ip4_config: Some(ip4),
        ip6_config: ip6,
        host_nsswitch: &host_nsswitch,
    })
    .unwrap()
}

/// The usual plan: 198.19.0.2/24 with a route to 198.18.64.0/18 (and `extra`), and with `ipv6`
/// fd00:198:19::1000/64.
fn plan_for(netns: &str, tun: &str, ipv6: bool, extra: Option<(&str, u32, &str)>) -> IsolationPlan {
    let mut routes = vec![("198.18.64.0", 18, "198.19.0.1")];
    routes.extend(extra);
    plan_with(
        netns,
        tun,
        &subnet4("198.19.0.2", &routes),
        ipv6.then(ip6).as_ref(),
    )
}

fn request(plan: IsolationPlan, tun_ifindex: u32) -> IsolateArgs {
    IsolateArgs {
        claim: PrepareArgs {
            netns: plan.netns.clone(),
            connection_uuid: UUID.to_owned(),
            connection_id: "work".to_owned(),
            persistent: false,
            user: None,
            policy: Policy::default(),
            owner: ":1.42".to_owned(),
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: None,
            deadline: Instant::now() + Duration::from_secs(2),
        },
        plan,
        tun_ifindex,
    }
}

fn executor() -> Executor<RealSys> {
    Executor::new(RealSys::new().unwrap(), Paths::default()).unwrap()
}

fn name(netns: &str) -> NetnsName {
    netns.parse().unwrap()
}

/// A UDP socket bound inside `netns`: made on a thread that joined the namespace, so that the
/// socket belongs to it, then used from anywhere.
fn udp_in(netns: &str, bind: SocketAddr) -> UdpSocket {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = File::open(path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind(bind).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        socket
    })
    .join()
    .unwrap()
}

/// Waits up to `wait` for a datagram carrying `payload`.
fn receives(socket: &UdpSocket, payload: &[u8], wait: Duration) -> bool {
    let until = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend(sport.to_be_bytes());
    udp.extend(dport.to_be_bytes());
    udp.extend(len.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    udp
}

/// An IPv4 UDP datagram as the tunnel would deliver it, with both checksums.
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = udp_header(40000, dport, payload);
    let len = udp.len() as u16;
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, 17],
        &len.to_be_bytes()[..],
    ]
    .concat();
    let sum = checksum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let total = (20 + udp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend(total.to_be_bytes());
    ip.extend([0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend(udp);
    ip
}

/// An IPv6 UDP datagram as the tunnel would deliver it.
fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = udp_header(40000, dport, payload);
    let len = udp.len() as u32;
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &len.to_be_bytes()[..],
        &[0, 0, 0, 17],
    ]
    .concat();
    let sum = checksum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((udp.len() as u16).to_be_bytes());
    ip.extend([17, 64]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    ip.extend(udp);
    ip
}

fn assert_gone(netns: &str) {
    assert!(!netns_list().contains(netns), "{netns} is still listed");
    for path in [
        format!("/run/netns/{netns}"),
        format!("/etc/netns/{netns}"),
        format!("/run/nm-vpn-netns/{netns}"),
    ] {
        assert!(!Path::new(&path).exists(), "{path} is still there");
    }
}

/// `ip -o addr` lines without their lifetimes.
fn addresses(netns: &str, family: &str, link: &str) -> BTreeSet<String> {
    lines(&ip(&[
        "-n", netns, family, "-o", "addr", "show", "dev", link,
    ]))
    .into_iter()
    .map(|l| l.split('\\').next().unwrap().trim_end().to_owned())
    .collect()
}

fn assert_ipv4_config(netns: &str, link: &str) {
    let index = ifindex(link, Some(netns)).unwrap();
    assert_eq!(
        addresses(netns, "-4", link),
        set(&[&format!(
            "{index}: {link} inet 198.19.0.2/24 scope global {link}"
        )])
    );
    assert_eq!(
        lines(&ip(&["-n", netns, "-4", "route", "show", "table", "main"])),
        set(&[
            &format!("default via 198.19.0.1 dev {link} proto static onlink"),
            &format!("198.18.64.0/18 via 198.19.0.1 dev {link} proto static onlink"),
            &format!("198.19.0.0/24 dev {link} proto kernel scope link src 198.19.0.2"),
        ])
    );
}

fn assert_ipv6_config(ns: &str, link: &str) {
    assert_eq!(
        addresses(ns, "-6", link),
        set(&[&format!(
            "{}: {link} inet6 fd00:198:19::1000/64 scope global nodad",
            ifindex(link, Some(ns)).unwrap()
        )])
    );
    assert_eq!(
        lines(&ip(&["-n", ns, "-6", "route", "show", "table", "main"])),
        set(&[
            &format!("fd00:198:19::/64 dev {link} proto kernel metric 256 pref medium"),
            &format!(
                "fd00:198:19:1::/64 via fd00:198:19::1 dev {link} proto static metric 1024 \
                 onlink pref medium"
            ),
            &format!("default dev {link} proto static metric 1024 pref medium"),
        ])
    );
}

fn assert_dns_files(netns: &str, plan: &IsolationPlan) {
    let dir = format!("/etc/netns/{netns}");
    assert_eq!(
        fs::read_to_string(format!("{dir}/resolv.conf")).unwrap(),
        plan.resolv_conf
    );
    assert_eq!(
        fs::read_to_string(format!("{dir}/nsswitch.conf")).unwrap(),
        plan.nsswitch_conf
    );
    // What a program started with `ip netns exec` sees.
    let out = ip(&["netns", "exec", netns, "cat", "/etc/resolv.conf"]);
    assert_eq!(out, plan.resolv_conf);
}

/// What a namespace deletion cut short between its unmount and its unlink leaves (an empty file
/// of root's) is removed; a file with content, or one with something mounted on it, stays.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn only_the_leftover_of_a_cut_short_deletion_is_removed() {
    sandbox();
    let dir = Path::new("/run/netns");
    fs::create_dir_all(dir).unwrap();
    let mut sys = RealSys::new().unwrap();
    let leftover = dir.join("nvn-leftover");
    File::create(&leftover).unwrap();
    assert!(sys.netns_leftover_remove(&leftover, None).unwrap());
    assert!(
        !leftover.exists(),
        "expected {} removed",
        leftover.display()
    );
    assert!(
        sys.netns_leftover_remove(&leftover, None).unwrap(),
        "nothing there"
    );

    let full = dir.join("nvn-full");
    fs::write(&full, "x").unwrap();
    assert!(!sys.netns_leftover_remove(&full, None).unwrap());
    assert!(full.exists(), "expected {} kept", full.display());

    // An empty file of root's mounted there, which only a plain unlink leaves alone.
    let mounted = dir.join("nvn-mounted");
    let source = Path::new("/run/nvn-empty");
    File::create(&mounted).unwrap();
    File::create(source).unwrap();
    let status = Command::new("mount")
        .arg("--bind")
        .args([source, &mounted])
        .status()
        .unwrap();
    assert!(status.success(), "mount --bind: {status}");
    let got = sys.netns_leftover_remove(&mounted, None);
    assert!(got.is_err(), "expected EBUSY, got {got:?}");
    assert!(mounted.exists(), "expected {} kept", mounted.display());
    Command::new("umount").arg(&mounted).status().unwrap();
    for f in [&mounted, &full, source] {
        fs::remove_file(f).unwrap();
    }
}

/// The file left at `/run/netns/NAME` once its namespace is unmounted has mode 0000, as iproute2
/// makes it. Without CAP_DAC_OVERRIDE (the agent's unit, and this sandbox, keep none) it cannot be
/// opened for reading, yet it must be found to be no namespace, so that a release removes it.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn an_unmounted_namespaces_file_is_no_namespace_without_dac_override() {
    sandbox();
    let dir = Path::new("/run/netns");
    fs::create_dir_all(dir).unwrap();
    let mut sys = RealSys::new().unwrap();
    let path = dir.join("nvn-unmounted");
    File::create(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o0)).unwrap();
    let got = sys.netns_open(&path).map(|found| found.is_some());
    assert!(
        matches!(got, Err(SysError::NotNetns { .. })),
        "expected NotNetns for a mode-0000 empty file; got {got:?}"
    );
    assert!(sys.netns_leftover_remove(&path, None).unwrap());
    assert!(!path.exists(), "expected {} removed", path.display());
}

/// `ip netns add` as the executor does it, in its three steps; the namespace's identity and that
/// of the file it is mounted on.
fn netns_add(sys: &mut RealSys, path: &Path) -> (NetnsId, FileId) {
    let (netns, id) = sys.netns_create(path).unwrap();
    let (mount_point, file) = sys.netns_mount_point(path.parent().unwrap()).unwrap();
    sys.netns_bind(&netns, mount_point, path).unwrap();
    (id, file)
}

/// With the identity of the file `netns_mount_point` made, only that file is removed as the
/// leftover: the empty file of someone's `ip netns add` after the agent's own unlink is a new
/// file, and stays. Without it (older records), any empty file of root's is taken, as before.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn only_the_agents_own_mount_point_is_removed_as_its_leftover() {
    sandbox();
    let mut sys = RealSys::new().unwrap();
    let path = Path::new("/run/netns/nvn-mount-point");
    let (id, file) = netns_add(&mut sys, path);
    let mounted = fs::symlink_metadata(path).unwrap();
    assert_eq!(
        (mounted.dev(), mounted.ino()),
        (id.dev, id.ino),
        "expected the nsfs file at the path once mounted"
    );
    assert_ne!(
        (file.dev, file.ino),
        (id.dev, id.ino),
        "expected the file under the mount"
    );
    // A deletion cut short between its unmount and its unlink: that very file is removed.
    let status = Command::new("umount").arg(path).status().unwrap();
    assert!(status.success(), "umount: {status}");
    let under = fs::symlink_metadata(path).unwrap();
    assert_eq!((under.dev(), under.ino()), (file.dev, file.ino));
    assert!(sys.netns_leftover_remove(path, Some(file)).unwrap());
    assert!(!path.exists(), "expected {} removed", path.display());

    // A deletion cut short after its unlink, while someone's `ip netns add` has made its file and
    // not yet mounted on it.
    let (_, file) = netns_add(&mut sys, path);
    sys.netns_del(path).unwrap();
    File::create(path).unwrap();
    assert!(
        !sys.netns_leftover_remove(path, Some(file)).unwrap(),
        "expected someone's file kept"
    );
    assert!(path.exists(), "expected {} kept", path.display());
    assert!(sys.netns_leftover_remove(path, None).unwrap());
    assert!(!path.exists(), "expected {} removed", path.display());
}

/// The inodes in use on the file system of `dir`: an unnamed file counts while it is open.
fn inodes_in_use(dir: &Path) -> u64 {
    let fs = nix::sys::statvfs::statvfs(dir).unwrap();
    fs.files() - fs.files_free()
}

/// The namespace and the file it is mounted on exist, with the identities the executor records,
/// before anything is under the name; the bind then puts that same namespace on that same file,
/// and refuses a name that is taken. A mount point that never gets its name (a failed link, or a
/// crash before it) leaves nothing.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_namespace_has_its_identity_before_its_name() {
    sandbox();
    let mut sys = RealSys::new().unwrap();
    let dir = Path::new("/run/netns");
    let path = dir.join("nvn-two-phase");
    let names = || fs::read_dir(dir).map_or(0, Iterator::count);
    let before = names();
    let (netns, id) = sys.netns_create(&path).unwrap();
    let (mount_point, file) = sys.netns_mount_point(dir).unwrap();
    assert!(!path.exists(), "expected nothing at {} yet", path.display());
    assert_eq!(names(), before, "expected no new name in {}", dir.display());
    assert!(!netns_list().contains("nvn-two-phase"));
    let agent = fs::metadata("/proc/self/ns/net").unwrap();
    assert_ne!(
        (id.dev, id.ino),
        (agent.dev(), agent.ino()),
        "expected a namespace of its own"
    );
    sys.netns_bind(&netns, mount_point, &path).unwrap();
    let bound = sys.netns_open(&path).unwrap().unwrap();
    assert_eq!(
        sys.netns_id(&bound).unwrap(),
        id,
        "expected the same namespace"
    );
    assert!(netns_list().contains("nvn-two-phase"));

    // The name is taken: EEXIST, the namespace there untouched, and the other mount point gone.
    let (other, _) = sys.netns_create(&path).unwrap();
    let in_use = inodes_in_use(dir);
    let (mount_point, _) = sys.netns_mount_point(dir).unwrap();
    assert_eq!(inodes_in_use(dir), in_use + 1, "expected the unnamed file");
    let taken = sys.netns_bind(&other, mount_point, &path).unwrap_err();
    assert_eq!(
        taken.raw_os_error(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{taken}"
    );
    assert_eq!(inodes_in_use(dir), in_use, "expected the unnamed file gone");
    let still = sys.netns_open(&path).unwrap().unwrap();
    assert_eq!(sys.netns_id(&still).unwrap(), id, "expected it untouched");
    // A crash before the link: the descriptor closes, and the file goes with it.
    drop(sys.netns_mount_point(dir).unwrap());
    assert_eq!(inodes_in_use(dir), in_use, "expected the unnamed file gone");
    assert_eq!(names(), before + 1, "expected the one name");

    // Under the mount is the very file on record. A descriptor opened through the mount keeps
    // it busy.
    drop((bound, still));
    let status = Command::new("umount").arg(&path).status().unwrap();
    assert!(status.success(), "umount: {status}");
    let under = fs::symlink_metadata(&path).unwrap();
    assert_eq!(
        (under.dev(), under.ino()),
        (file.dev, file.ino),
        "expected the recorded file linked at the name"
    );
    assert_eq!(
        (under.len(), under.uid()),
        (0, 0),
        "expected it empty, root's"
    );
    sys.netns_del(&path).unwrap();
    assert_gone("nvn-two-phase");
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn isolates_ipv4_in_a_new_namespace_and_deletes_it_on_release() {
    sandbox();
    let (ns, tun) = ("pv-new4", tun("pv-tun-a"));
    let plan = plan_for(ns, &tun.name, false, None);
    assert_eq!(
        plan.resolv_conf,
        format!(
            "# Written by nm-vpn-netns for the VPN in network namespace {ns}.\n\
             nameserver 198.19.0.1\nsearch vpn.test\n"
        )
    );
    let mut ex = executor();
    let isolation = ex.isolate(&request(plan.clone(), tun.ifindex())).unwrap();
    assert!(isolation.created);
    assert_eq!(isolation.link, tun.name);
    assert!(
        netns_list().contains(ns),
        "ip netns list does not show {ns}"
    );
    assert!(
        ifindex(&tun.name, None).is_none(),
        "the tun is still outside"
    );

    let links = lines(&ip(&["-n", ns, "-o", "link", "show"]));
    let has = |want: &str| links.iter().any(|l| l.contains(want));
    assert!(has("lo: <LOOPBACK,UP,LOWER_UP>"), "{links:?}");
    assert!(
        has(&format!(
            "{}: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1500",
            tun.name
        )),
        "{links:?}"
    );
    assert_ipv4_config(ns, &tun.name);
    // No IPv6 route at all, and not even a link-local address on the tun.
    assert_eq!(
        lines(&ip(&["-n", ns, "-6", "route", "show", "table", "main"])),
        set(&[])
    );
    assert_eq!(
        lines(&ip(&["-n", ns, "-6", "addr", "show", "dev", &tun.name])),
        set(&[])
    );
    assert_dns_files(ns, &plan);
    let inside = ip(&["netns", "exec", ns, "ip", "-o", "-4", "addr"]);
    assert!(inside.contains("inet 198.19.0.2/24"), "{inside}");
    assert_eq!(
        ip(&[
            "netns",
            "exec",
            ns,
            "cat",
            "/proc/sys/net/ipv4/ping_group_range"
        ])
        .trim_end(),
        SANDBOX_PING_GROUP_RANGE
    );

    // Traffic from the tunnel arrives in the namespace.
    let socket = udp_in(ns, "0.0.0.0:5301".parse().unwrap());
    let payload = b"from the tunnel, v4";
    tun.write(&ipv4_udp(
        Ipv4Addr::new(198, 19, 0, 1),
        Ipv4Addr::new(198, 19, 0, 2),
        5301,
        payload,
    ));
    assert!(receives(&socket, payload, Duration::from_secs(2)));
    drop(socket);

    let record = ex.records().find(|r| r.netns == name(ns)).unwrap();
    assert!(record.created && record.leased);
    let text = fs::read_to_string(format!("/run/nm-vpn-netns/{ns}")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (&json["version"], &json["connection_uuid"]),
        (&2.into(), &UUID.into()),
        "{text}"
    );
    let mode = fs::metadata("/run/nm-vpn-netns").unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700);

    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
}

/// `Prepare` makes the namespace before the tun exists; the `Isolate` that follows only moves and
/// configures it; and an undone preparation deletes the namespace it made.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_prepared_namespace_is_isolated_in_and_an_undone_one_deleted() {
    sandbox();
    let (ns, tun) = ("pv-prep", tun("pv-tun-p"));
    let plan = plan_for(ns, &tun.name, false, None);
    let req = request(plan.clone(), tun.ifindex());
    let mut ex = executor();
    let prepared = ex.prepare(&req.claim).unwrap();
    assert!(prepared.created);
    assert!(
        netns_list().contains(ns),
        "ip netns list does not show {ns}"
    );
    assert!(
        ifindex(&tun.name, None).is_some(),
        "the tun is still outside"
    );
    let isolation = ex.isolate(&req).unwrap();
    assert!(!isolation.created, "Prepare created it");
    assert_ipv4_config(ns, &tun.name);
    assert_dns_files(ns, &plan);
    ex.release(&name(ns)).unwrap();
    assert_gone(ns);

    ex.prepare(&req.claim).unwrap();
    assert!(netns_list().contains(ns));
    ex.unprepare(&name(ns)).unwrap();
    assert_gone(ns);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn isolates_ipv6_too() {
    sandbox();
    let (ns, tun) = ("pv-new6", tun("pv-tun-b"));
    let plan = plan_for(ns, &tun.name, true, None);
    let mut ex = executor();
    ex.isolate(&request(plan.clone(), tun.ifindex())).unwrap();
    let link = &tun.name;
    assert_ipv4_config(ns, link);
    assert_ipv6_config(ns, link);
    assert_dns_files(ns, &plan);
    assert!(plan.resolv_conf.contains("nameserver fd00:198:19::1\n"));

    let socket = udp_in(ns, "[::]:5302".parse().unwrap());
    let payload = b"from the tunnel, v6";
    tun.write(&ipv6_udp(
        "fd00:198:19::1".parse().unwrap(),
        "fd00:198:19::1000".parse().unwrap(),
        5302,
        payload,
    ));
    assert!(receives(&socket, payload, Duration::from_secs(2)));
    drop(socket);

    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn persistent_namespace_outlives_release_and_is_reused() {
    sandbox();
    let ns = "pv-keep";
    let first = tun("pv-tun-c");
    let mut req = request(plan_for(ns, &first.name, false, None), first.ifindex());
    req.claim.persistent = true;
    let mut ex = executor();
    ex.isolate(&req).unwrap();
    let resolv = format!("/etc/netns/{ns}/resolv.conf");
    let inode = fs::metadata(&resolv).unwrap().ino();
    // openvpn exits before the release, and the kernel destroys its tun.
    drop(first);
    ex.release(&name(ns)).unwrap();
    assert!(netns_list().contains(ns));
    assert!(Path::new(&resolv).exists());
    let record = ex.records().find(|r| r.netns == name(ns)).unwrap();
    assert!(record.created && !record.leased);

    // Another connection that maps to the same name may not have it.
    let second = tun("pv-tun-c");
    let mut other = request(plan_for(ns, &second.name, false, None), second.ifindex());
    other.claim.connection_uuid = OTHER_UUID.to_owned();
    let err = ex.isolate(&other).unwrap_err();
    assert!(matches!(err, ExecError::OwnedByOther { .. }), "{err}");

    // A restarted agent knows the namespace as its own and reuses it for the same connection.
    drop(ex);
    let mut ex = executor();
    let mut again = request(plan_for(ns, &second.name, false, None), second.ifindex());
    again.claim.persistent = true;
    let isolation = ex.isolate(&again).unwrap();
    assert!(!isolation.created);
    assert_ipv4_config(ns, &second.name);
    assert_eq!(fs::metadata(&resolv).unwrap().ino(), inode);
    drop(second);
    ex.release(&name(ns)).unwrap();

    // Without netns-persistent the next release deletes it.
    let third = tun("pv-tun-c");
    ex.isolate(&request(
        plan_for(ns, &third.name, false, None),
        third.ifindex(),
    ))
    .unwrap();
    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
}

/// The tuns inside `netns`, as `ip -o link show type tun` lists them.
fn tuns_in(netns: &str) -> BTreeSet<String> {
    lines(&ip(&["-n", netns, "-o", "link", "show", "type", "tun"]))
}

/// NetworkManager-openconnect's tun is persistent: its service makes it (TUNSETPERSIST, as `ip
/// tuntap add` does) before openconnect attaches to it, and it outlives openconnect. Once it is in
/// the namespace, only the agent can remove it: each release deletes it, though the namespace is
/// kept, so that each cycle has exactly one tun inside while it is up, and none after.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_persistent_tun_is_deleted_at_release_and_each_cycle_has_one() {
    sandbox();
    let (ns, link) = ("pv-oc", "pv-vpn0");
    let mut ex = executor();
    for cycle in 0..2 {
        ip(&["tuntap", "add", "dev", link, "mode", "tun"]);
        let openconnect = tun(link);
        let mut req = request(plan_for(ns, link, false, None), openconnect.ifindex());
        req.claim.persistent = true;
        let isolation = ex.isolate(&req).unwrap();
        assert_eq!(
            isolation.link, link,
            "cycle {cycle}: a stale tun took its name"
        );
        assert_eq!(tuns_in(ns).len(), 1, "cycle {cycle}: {:?}", tuns_in(ns));
        assert_ipv4_config(ns, link);
        let record = ex.records().find(|r| r.netns == name(ns)).unwrap();
        assert_eq!(record.link_ifindex, ifindex(link, Some(ns)));

        // openconnect exits, and the persistent tun stays, with its addresses and routes.
        drop(openconnect);
        assert!(ifindex(link, Some(ns)).is_some(), "cycle {cycle}");
        ex.release(&name(ns)).unwrap();
        assert!(netns_list().contains(ns), "cycle {cycle}");
        assert_eq!(tuns_in(ns), set(&[]), "cycle {cycle}");
        assert_eq!(
            lines(&ip(&["-n", ns, "-4", "route", "show", "table", "all"]))
                .into_iter()
                .filter(|r| !r.contains(" dev lo "))
                .collect::<Vec<_>>(),
            Vec::<String>::new(),
            "cycle {cycle}"
        );
    }
    ex.delete(&name(ns), false).unwrap();
    assert_gone(ns);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn foreign_namespace_is_used_and_given_back_as_it_was() {
    sandbox();
    let ns = "pv-foreign";
    let tun = tun("pv-tun-f");
    ip(&["netns", "add", ns]);
    // A link there already has the tun's name, so the tun is renamed as it moves in.
    ip(&["-n", ns, "tuntap", "add", "dev", &tun.name, "mode", "tun"]);
    let dir = format!("/etc/netns/{ns}");
    fs::create_dir_all(&dir).unwrap();
    let resolv = format!("{dir}/resolv.conf");
    let original = "nameserver 192.0.2.53\n";
    fs::write(&resolv, original).unwrap();
    let inode = fs::metadata(&resolv).unwrap().ino();

    // Negative control: before the isolation, the tunnel's traffic does not reach the
    // namespace.
    ip(&["link", "set", &tun.name, "up"]);
    let socket = udp_in(ns, "0.0.0.0:5303".parse().unwrap());
    let payload = b"from the tunnel, foreign";
    let packet = ipv4_udp(
        Ipv4Addr::new(198, 19, 0, 1),
        Ipv4Addr::new(198, 19, 0, 2),
        5303,
        payload,
    );
    tun.write(&packet);
    assert!(!receives(&socket, payload, Duration::from_millis(300)));

    let plan = plan_for(ns, &tun.name, false, None);
    let mut ex = executor();
    let mut user = request(plan.clone(), tun.ifindex());
    user.claim.user = Some("alice".to_owned());
    let err = ex.isolate(&user).unwrap_err();
    assert!(matches!(err, ExecError::ForeignNetns { .. }), "{err}");
    let mut system = request(plan.clone(), tun.ifindex());
    let err = ex.isolate(&system).unwrap_err();
    assert!(matches!(err, ExecError::ForeignNotListed { .. }), "{err}");

    system.claim.policy.system_foreign.insert(name(ns));
    let isolation = ex.isolate(&system).unwrap();
    assert!(!isolation.created);
    assert_eq!(isolation.link, "vpn0");
    assert_ipv4_config(ns, "vpn0");
    assert_dns_files(ns, &plan);
    assert_eq!(fs::metadata(&resolv).unwrap().ino(), inode);
    tun.write(&packet);
    assert!(receives(&socket, payload, Duration::from_secs(2)));
    drop(socket);

    ex.release(&name(ns)).unwrap();
    assert!(netns_list().contains(ns));
    // The tun the agent moved in is deleted; the namespace's own link of that name stays.
    assert_eq!(ifindex("vpn0", Some(ns)), None);
    assert!(ifindex(&tun.name, Some(ns)).is_some());
    assert_eq!(fs::read_to_string(&resolv).unwrap(), original);
    assert_eq!(fs::metadata(&resolv).unwrap().ino(), inode);
    assert!(!Path::new(&format!("{dir}/nsswitch.conf")).exists());
    assert!(Path::new(&dir).is_dir());
    assert!(!Path::new(&format!("/run/nm-vpn-netns/{ns}")).exists());

    ip(&["netns", "del", ns]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn isolates_a_net30_point_to_point_tunnel() {
    sandbox();
    let (ns, tun) = ("pv-net30", tun("pv-tun-k"));
    let plan = plan_with(ns, &tun.name, &net30(), None);
    let mut ex = executor();
    ex.isolate(&request(plan, tun.ifindex())).unwrap();
    let (link, index) = (&tun.name, ifindex(&tun.name, Some(ns)).unwrap());
    assert_eq!(
        addresses(ns, "-4", link),
        set(&[&format!(
            "{index}: {link} inet 198.19.0.6 peer 198.19.0.5/32 scope global {link}"
        )])
    );
    assert_eq!(
        lines(&ip(&["-n", ns, "-4", "route", "show", "table", "main"])),
        set(&[
            &format!("default via 198.19.0.5 dev {link} proto static onlink"),
            &format!("198.19.0.1 via 198.19.0.5 dev {link} proto static onlink"),
            &format!("198.19.0.5 dev {link} proto kernel scope link src 198.19.0.6"),
        ])
    );
    let socket = udp_in(ns, "0.0.0.0:5304".parse().unwrap());
    let payload = b"from the tunnel, net30";
    tun.write(&ipv4_udp(
        Ipv4Addr::new(198, 19, 0, 1),
        Ipv4Addr::new(198, 19, 0, 6),
        5304,
        payload,
    ));
    assert!(receives(&socket, payload, Duration::from_secs(2)));
    drop(socket);
    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn reapply_replaces_the_configuration_in_place() {
    sandbox();
    let (ns, tun) = ("pv-reapply", tun("pv-tun-l"));
    let first = plan_for(ns, &tun.name, true, None);
    let mut ex = executor();
    ex.isolate(&request(first.clone(), tun.ifindex())).unwrap();
    let resolv = format!("/etc/netns/{ns}/resolv.conf");
    let inode = fs::metadata(&resolv).unwrap().ino();

    // openvpn restarted and was given another address, another route and no IPv6.
    let link = &tun.name;
    let ip4 = subnet4("198.19.0.3", &[("198.18.192.0", 18, "198.19.0.1")]);
    let second = plan_with(ns, link, &ip4, None);
    ex.reapply(&name(ns), &second).unwrap();
    let index = ifindex(link, Some(ns)).unwrap();
    assert_eq!(
        addresses(ns, "-4", link),
        set(&[&format!(
            "{index}: {link} inet 198.19.0.3/24 scope global {link}"
        )])
    );
    assert_eq!(
        lines(&ip(&["-n", ns, "-4", "route", "show", "table", "main"])),
        set(&[
            &format!("default via 198.19.0.1 dev {link} proto static onlink"),
            &format!("198.18.192.0/18 via 198.19.0.1 dev {link} proto static onlink"),
            &format!("198.19.0.0/24 dev {link} proto kernel scope link src 198.19.0.3"),
        ])
    );
    assert_eq!(addresses(ns, "-6", link), set(&[]));
    assert_eq!(
        lines(&ip(&["-n", ns, "-6", "route", "show", "table", "main"])),
        set(&[])
    );
    assert_dns_files(ns, &second);
    assert_eq!(fs::metadata(&resolv).unwrap().ino(), inode);

    // And back again.
    ex.reapply(&name(ns), &first).unwrap();
    assert_ipv4_config(ns, link);
    assert_ipv6_config(ns, link);
    assert_dns_files(ns, &first);
    assert_eq!(fs::metadata(&resolv).unwrap().ino(), inode);

    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn symbolic_links_under_etc_netns_are_refused() {
    sandbox();
    let (ns, tun) = ("pv-symlink", tun("pv-tun-m"));
    let elsewhere = Path::new("/run/.privileged-elsewhere");
    fs::create_dir_all(elsewhere).unwrap();
    fs::create_dir_all("/etc/netns").unwrap();
    let dir = format!("/etc/netns/{ns}");
    let mut ex = executor();
    let gone_but_the_link = |ex: &Executor<RealSys>| {
        assert!(!netns_list().contains(ns));
        assert!(!Path::new(&format!("/run/netns/{ns}")).exists());
        assert!(ex.records().next().is_none());
        assert!(
            ifindex(&tun.name, None).is_some(),
            "the tun did not come back"
        );
        assert_eq!(fs::read_dir(elsewhere).unwrap().count(), 0);
    };

    std::os::unix::fs::symlink(elsewhere, &dir).unwrap();
    let err = ex
        .isolate(&request(
            plan_for(ns, &tun.name, false, None),
            tun.ifindex(),
        ))
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Sys(SysError::Symlink { path }) if *path == Path::new(&dir)),
        "{err}"
    );
    gone_but_the_link(&ex);
    fs::remove_file(&dir).unwrap();

    fs::create_dir(&dir).unwrap();
    let resolv = format!("{dir}/resolv.conf");
    std::os::unix::fs::symlink(elsewhere.join("resolv.conf"), &resolv).unwrap();
    let err = ex
        .isolate(&request(
            plan_for(ns, &tun.name, false, None),
            tun.ifindex(),
        ))
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Sys(SysError::Symlink { path }) if *path == Path::new(&resolv)),
        "{err}"
    );
    gone_but_the_link(&ex);
    assert!(fs::symlink_metadata(&resolv).unwrap().is_symlink());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    fs::remove_dir_all(&dir).unwrap();
}

/// After a failed isolation the tun is back as it was and nothing else remains.
fn assert_rolled_back(ns: &str, tun: &Tun, before: &str) {
    assert_gone(ns);
    let after = ip(&["-o", "link", "show", "dev", &tun.name]);
    assert_eq!(
        after.split(" link/").next(),
        before.split(" link/").next(),
        "the tun did not come back as it was"
    );
    let global = ["-o", "addr", "show", "dev", &tun.name, "scope", "global"];
    assert_eq!(ip(&global), "");
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_route_the_kernel_refuses_rolls_everything_back() {
    sandbox();
    let (ns, tun) = ("pv-badroute", tun("pv-tun-g"));
    ip(&["link", "set", &tun.name, "mtu", "1400", "up"]);
    let before = ip(&["-o", "link", "show", "dev", &tun.name]);
    // A next hop that is the tun's own address: "Nexthop has invalid gateway".
    let plan = plan_for(
        ns,
        &tun.name,
        false,
        Some(("198.18.128.0", 18, "198.19.0.2")),
    );
    let mut ex = executor();
    let err = ex.isolate(&request(plan, tun.ifindex())).unwrap_err();
    let msg = chain(&err);
    assert!(
        matches!(
            &err,
            ExecError::Sys(SysError::Os {
                op: "route_add",
                ..
            })
        ) && msg.contains("198.18.128.0/18 via 198.19.0.2")
            && msg.contains(&format!("in namespace {ns}")),
        "{msg}"
    );
    assert_rolled_back(ns, &tun, &before);
    assert!(ex.records().next().is_none());
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_deadline_that_passes_rolls_everything_back() {
    sandbox();
    let (ns, tun) = ("pv-late", tun("pv-tun-h"));
    let before = ip(&["-o", "link", "show", "dev", &tun.name]);
    let mut ex = executor();
    for deadline in [Duration::ZERO, Duration::from_millis(1)] {
        let mut req = request(plan_for(ns, &tun.name, false, None), tun.ifindex());
        req.claim.deadline = Instant::now() + deadline;
        let err = ex.isolate(&req).unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        eprintln!("deadline {deadline:?}: {err}");
        assert_rolled_back(ns, &tun, &before);
    }
}

/// A kept namespace with a process inside that ignores SIGTERM: `Delete` refuses it, naming the
/// process; forced, it ends it (SIGKILL after the grace) and deletes the namespace.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_forced_delete_ends_the_processes_inside() {
    sandbox();
    let (ns, tun) = ("pv-del", tun("pv-tun-d"));
    let mut ex = executor();
    let mut req = request(plan_for(ns, &tun.name, false, None), tun.ifindex());
    req.claim.persistent = true;
    ex.isolate(&req).unwrap();
    ex.release(&name(ns)).unwrap();
    // An ignored signal stays ignored across exec (signal(7)).
    let mut stubborn = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            "trap '' TERM; exec sleep 30",
        ])
        .spawn()
        .unwrap();
    let want = Process {
        pid: stubborn.id(),
        comm: "sleep".into(),
    };
    // `ip` enters the namespace, then execs sh, which execs sleep.
    let comm = format!("/proc/{}/comm", want.pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(&comm).unwrap_or_default() != "sleep\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let refusal = ex.delete(&name(ns), false).unwrap_err();
    assert!(
        matches!(&refusal, ExecError::Busy { processes, .. } if *processes == [want.clone()]),
        "expected a refusal naming {want:?}, got: {refusal}"
    );
    assert!(netns_list().contains(ns), "the refusal deleted {ns}");

    let started = Instant::now();
    let deleted = ex.delete(&name(ns), true).unwrap();
    assert_eq!((deleted.ended, deleted.stranded), (vec![want], Vec::new()));
    assert!(
        started.elapsed() >= END_GRACE,
        "SIGTERM alone ended it after {:?}",
        started.elapsed()
    );
    let status = stubborn.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    assert_gone(ns);
    assert!(ex.records().next().is_none());
}

/// `/proc` is scanned for the processes a release would strand: one started with
/// `ip netns exec` is found by its pid and comm.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn the_processes_a_release_would_strand_are_found() {
    sandbox();
    let (ns, tun) = ("pv-left", tun("pv-tun-l"));
    let mut ex = executor();
    ex.isolate(&request(
        plan_for(ns, &tun.name, false, None),
        tun.ifindex(),
    ))
    .unwrap();
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sleep", "30"])
        .spawn()
        .unwrap();
    let pid = sleeper.id();
    let want = Process {
        pid,
        comm: "sleep".into(),
    };
    // `ip` enters the namespace, then execs sleep.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut found = ex.stranded(&name(ns));
    while found != [want.clone()] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        found = ex.stranded(&name(ns));
    }
    assert_eq!(found, [want]);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(ex.stranded(&name(ns)), []);
    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_regular_file_at_the_namespace_path_is_refused() {
    sandbox();
    let (ns, tun) = ("pv-file", tun("pv-tun-i"));
    fs::create_dir_all("/run/netns").unwrap();
    let path = format!("/run/netns/{ns}");
    fs::write(&path, "").unwrap();
    let err = executor()
        .isolate(&request(
            plan_for(ns, &tun.name, false, None),
            tun.ifindex(),
        ))
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ExecError::Sys(SysError::NotNetns {
                found: "a regular file",
                ..
            })
        ),
        "{err}"
    );
    assert!(ifindex(&tun.name, None).is_some());
    assert!(Path::new(&path).is_file());
    fs::remove_file(&path).unwrap();
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_veth_is_refused() {
    sandbox();
    let ns = "pv-veth";
    ip(&[
        "link", "add", "pv-veth0", "type", "veth", "peer", "name", "pv-veth1",
    ]);
    let plan = plan_for(ns, "pv-veth0", false, None);
    let req = request(plan, ifindex("pv-veth0", None).unwrap());
    let err = executor().isolate(&req).unwrap_err();
    assert_eq!(
        err.to_string(),
        "link pv-veth0 is a veth device, not a tun; only a VPN's tun can be isolated"
    );
    assert_gone(ns);
    assert!(ifindex("pv-veth0", None).is_some());
    ip(&["link", "del", "pv-veth0"]);
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_hard_link_or_a_foreign_owner_under_etc_netns_is_refused() {
    sandbox();
    let (ns, tun) = ("pv-trust", tun("pv-tun-t"));
    let dir = format!("/etc/netns/{ns}");
    fs::create_dir_all(&dir).unwrap();
    let resolv = format!("{dir}/resolv.conf");
    // A second name for a file elsewhere would make the agent write there.
    let target = "/etc/.privileged-target";
    fs::write(target, "precious\n").unwrap();
    fs::hard_link(target, &resolv).unwrap();
    let rolled_back = |ex: &Executor<RealSys>| {
        assert!(!netns_list().contains(ns));
        assert!(ex.records().next().is_none());
        assert!(
            ifindex(&tun.name, None).is_some(),
            "the tun did not come back"
        );
    };
    let plan = plan_for(ns, &tun.name, false, None);
    let mut ex = executor();
    let err = ex
        .isolate(&request(plan.clone(), tun.ifindex()))
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Sys(SysError::Untrusted { path, .. }) if *path == Path::new(&resolv)),
        "{err}"
    );
    assert!(chain(&err).contains("2 hard links"), "{}", chain(&err));
    assert_eq!(fs::read_to_string(target).unwrap(), "precious\n");
    rolled_back(&ex);
    fs::remove_file(&resolv).unwrap();

    // In a directory others may write, its files could be swapped under the agent. (A directory
    // of another owner is refused the same way; the sandbox has no CAP_CHOWN to make one.)
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let err = ex
        .isolate(&request(plan.clone(), tun.ifindex()))
        .unwrap_err();
    assert!(
        chain(&err).contains("writable by group or others (mode 777)"),
        "{err}"
    );
    rolled_back(&ex);
    fs::remove_dir_all(&dir).unwrap();
    fs::remove_file(target).unwrap();
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_namespace_made_anew_under_the_same_name_is_never_deleted() {
    sandbox();
    let ns = "pv-anew";
    let first = tun("pv-tun-n");
    let mut req = request(plan_for(ns, &first.name, false, None), first.ifindex());
    req.claim.persistent = true;
    let mut ex = executor();
    ex.isolate(&req).unwrap();
    drop(first);
    ex.release(&name(ns)).unwrap();
    // Someone else deletes it and makes another under the same name.
    ip(&["netns", "del", ns]);
    ip(&["netns", "add", ns]);

    let second = tun("pv-tun-n");
    let mut again = request(plan_for(ns, &second.name, false, None), second.ifindex());
    let err = ex.isolate(&again).unwrap_err();
    assert!(matches!(err, ExecError::ForeignNotListed { .. }), "{err}");
    // Listed as usable, it is used as foreign, and the release leaves it.
    again.claim.policy.system_foreign.insert(name(ns));
    let isolation = ex.isolate(&again).unwrap();
    assert!(!isolation.created);
    drop(second);
    ex.release(&name(ns)).unwrap();
    assert!(netns_list().contains(ns));
    ip(&["netns", "del", ns]);
    let _ = fs::remove_dir_all(format!("/etc/netns/{ns}"));
}

/// A reboot as the agent sees it: the namespace and /run/nm-vpn-netns are gone, /var/lib and
/// /etc kept.
fn reboot(ex: Executor<RealSys>, ns: &str) {
    drop(ex);
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    fs::remove_file(format!("/run/nm-vpn-netns/{ns}")).unwrap();
}

#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_reboot_keeps_a_users_entry_and_puts_back_the_admins_file() {
    sandbox();
    // An administrator's namespace and resolv.conf, replaced while the VPN is up.
    let ns = "pv-boot";
    ip(&["netns", "add", ns]);
    let dir = format!("/etc/netns/{ns}");
    fs::create_dir_all(&dir).unwrap();
    let resolv = format!("{dir}/resolv.conf");
    fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    let tun1 = tun("pv-tun-b");
    let mut req = request(plan_for(ns, &tun1.name, false, None), tun1.ifindex());
    req.claim.policy.system_foreign.insert(name(ns));
    let mut ex = executor();
    ex.isolate(&req).unwrap();
    assert_ne!(
        fs::read_to_string(&resolv).unwrap(),
        "nameserver 192.0.2.53\n"
    );
    // The machine goes down with the VPN up.
    drop(tun1);
    reboot(ex, ns);
    let ex = executor();
    assert_eq!(
        fs::read_to_string(&resolv).unwrap(),
        "nameserver 192.0.2.53\n"
    );
    assert!(!Path::new(&format!("{dir}/nsswitch.conf")).exists());
    assert!(ex.records().next().is_none());
    assert!(!Path::new(&format!("/var/lib/nm-vpn-netns/{ns}")).exists());
    fs::remove_dir_all(&dir).unwrap();

    // A user's persistent VPN comes back after the reboot, in its own /etc/netns entry.
    let ns = "pv-user";
    let tun2 = tun("pv-tun-u");
    let mut user = request(plan_for(ns, &tun2.name, false, None), tun2.ifindex());
    user.claim.user = Some("alice".to_owned());
    user.claim.persistent = true;
    let mut ex = executor();
    ex.isolate(&user).unwrap();
    drop(tun2);
    ex.release(&name(ns)).unwrap();
    reboot(ex, ns);
    let tun3 = tun("pv-tun-u");
    user.tun_ifindex = tun3.ifindex();
    let mut ex = executor();
    let isolation = ex.isolate(&user).unwrap();
    assert!(isolation.created);
    drop(tun3);
    ex.release(&name(ns)).unwrap();
    // Turned non-persistent, the next release removes it all.
    let tun4 = tun("pv-tun-u");
    user.tun_ifindex = tun4.ifindex();
    user.claim.persistent = false;
    ex.isolate(&user).unwrap();
    drop(tun4);
    ex.release(&name(ns)).unwrap();
    assert_gone(ns);
    assert!(!Path::new(&format!("/var/lib/nm-vpn-netns/{ns}")).exists());
}

/// Each call of [`Timed`] by name, with the time it took.
type Times = Rc<RefCell<BTreeMap<&'static str, Vec<Duration>>>>;

/// [`RealSys`] that times each call, for a breakdown of `isolate`.
struct Timed {
    sys: RealSys,
    times: Times,
}

/// An executor on [`Timed`], and the times of its calls.
fn timed_executor() -> (Executor<Timed>, Times) {
    let times = Times::default();
    let sys = Timed {
        sys: RealSys::new().unwrap(),
        times: Rc::clone(&times),
    };
    (Executor::new(sys, Paths::default()).unwrap(), times)
}

impl Timed {
    fn time<T>(&mut self, op: &'static str, call: impl FnOnce(&mut RealSys) -> T) -> T {
        let start = Instant::now();
        let result = call(&mut self.sys);
        let took = start.elapsed();
        self.times.borrow_mut().entry(op).or_default().push(took);
        result
    }
}

impl Sys for Timed {
    type Netns = NetnsFd;
    type MountPoint = MountPointFd;

    fn now(&self) -> Instant {
        self.sys.now()
    }
    fn netns_create(&mut self, path: &Path) -> Result<(NetnsFd, NetnsId), SysError> {
        self.time("netns_create", |s| s.netns_create(path))
    }
    fn netns_mount_point(&mut self, dir: &Path) -> Result<(MountPointFd, FileId), SysError> {
        self.time("netns_mount_point", |s| s.netns_mount_point(dir))
    }
    fn netns_bind(
        &mut self,
        netns: &NetnsFd,
        mount_point: MountPointFd,
        path: &Path,
    ) -> Result<(), SysError> {
        self.time("netns_bind", |s| s.netns_bind(netns, mount_point, path))
    }
    fn netns_open(&mut self, path: &Path) -> Result<Option<NetnsFd>, SysError> {
        self.time("netns_open", |s| s.netns_open(path))
    }
    fn netns_del(&mut self, path: &Path) -> Result<(), SysError> {
        self.time("netns_del", |s| s.netns_del(path))
    }
    fn netns_leftover_remove(
        &mut self,
        path: &Path,
        file: Option<FileId>,
    ) -> Result<bool, SysError> {
        self.time("netns_leftover_remove", |s| {
            s.netns_leftover_remove(path, file)
        })
    }
    fn netns_id(&mut self, netns: &NetnsFd) -> Result<NetnsId, SysError> {
        self.time("netns_id", |s| s.netns_id(netns))
    }
    fn netns_processes(&mut self, path: &Path) -> Result<Vec<Process>, SysError> {
        self.time("netns_processes", |s| s.netns_processes(path))
    }
    fn netns_processes_end(
        &mut self,
        path: &Path,
        grace: Duration,
    ) -> Result<Vec<Process>, SysError> {
        self.time("netns_processes_end", |s| {
            s.netns_processes_end(path, grace)
        })
    }
    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError> {
        self.time("link_get", |s| s.link_get(ifindex))
    }
    fn link_list(&mut self, netns: &NetnsFd) -> Result<Vec<Link>, SysError> {
        self.time("link_list", |s| s.link_list(netns))
    }
    fn link_set_netns(
        &mut self,
        ifindex: u32,
        netns: &NetnsFd,
        name: Option<&str>,
    ) -> Result<(), SysError> {
        self.time("link_set_netns", |s| s.link_set_netns(ifindex, netns, name))
    }
    fn link_set_netns_back(
        &mut self,
        netns: &NetnsFd,
        link: &str,
        original: &Link,
    ) -> Result<(), SysError> {
        self.time("link_set_netns_back", |s| {
            s.link_set_netns_back(netns, link, original)
        })
    }
    fn link_delete(&mut self, netns: &NetnsFd, ifindex: u32) -> Result<(), SysError> {
        self.time("link_delete", |s| s.link_delete(netns, ifindex))
    }
    fn netns_setup(&mut self, netns: &NetnsFd, setup: &NetnsSetup<'_>) -> Result<u32, SysError> {
        self.time("netns_setup", |s| s.netns_setup(netns, setup))
    }
    fn sysctl_read(&mut self, key: &str) -> Result<String, SysError> {
        self.time("sysctl_read", |s| s.sysctl_read(key))
    }
    fn dir_create(&mut self, path: &Path, mode: u32) -> Result<bool, SysError> {
        self.time("dir_create", |s| s.dir_create(path, mode))
    }
    fn dir_remove(&mut self, path: &Path) -> Result<(), SysError> {
        self.time("dir_remove", |s| s.dir_remove(path))
    }
    fn dir_exists(&mut self, path: &Path) -> Result<bool, SysError> {
        self.time("dir_exists", |s| s.dir_exists(path))
    }
    fn dir_list(&mut self, path: &Path) -> Result<Vec<String>, SysError> {
        self.time("dir_list", |s| s.dir_list(path))
    }
    fn file_read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError> {
        self.time("file_read", |s| s.file_read(path))
    }
    fn file_create(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), SysError> {
        self.time("file_create", |s| {
            s.file_create(path, content, mode, durability)
        })
    }
    fn file_replace(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), SysError> {
        self.time("file_replace", |s| {
            s.file_replace(path, content, mode, durability)
        })
    }
    fn file_rewrite(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError> {
        self.time("file_rewrite", |s| s.file_rewrite(path, content))
    }
    fn file_remove(&mut self, path: &Path, durability: Durability) -> Result<(), SysError> {
        self.time("file_remove", |s| s.file_remove(path, durability))
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Not a check but a measurement: prints the median time of `isolate`, of each of its steps, and
/// of `release`.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn timings() {
    sandbox();
    const RUNS: usize = 20;
    let ns = "pv-timing";
    let (mut ex, times) = timed_executor();
    let mut runs: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for run in 0..RUNS {
        let tun = tun(&format!("pv-tun-t{run}"));
        let req = request(plan_for(ns, &tun.name, true, None), tun.ifindex());
        times.borrow_mut().clear();
        let start = Instant::now();
        ex.isolate(&req).unwrap();
        let isolate = start.elapsed();
        let moved = times.borrow()["link_set_netns"][0];
        let step = |op| times.borrow()[op].iter().sum::<Duration>();
        let created = ["netns_create", "netns_mount_point", "netns_bind"].map(step);
        for (op, t) in times.borrow().iter() {
            runs.entry(op).or_default().push(t.iter().sum());
        }
        runs.entry("= creating the namespace")
            .or_default()
            .push(created.iter().sum());
        runs.entry("= isolate").or_default().push(isolate);
        runs.entry("= isolate less link_set_netns")
            .or_default()
            .push(isolate - moved);
        let start = Instant::now();
        ex.release(&name(ns)).unwrap();
        runs.entry("= release").or_default().push(start.elapsed());
    }
    eprintln!("medians over {RUNS} runs (new namespace, IPv4 + IPv6; a step's calls summed):");
    for (op, mut t) in runs {
        t.sort();
        eprintln!(
            "  {op:32} median {:7.3} ms   min {:7.3} ms   max {:7.3} ms",
            millis(t[t.len() / 2]),
            millis(t[0]),
            millis(t[t.len() - 1])
        );
    }
    assert_gone(ns);
}

/// The watch on a link: it finds the link by name in the namespace, none for a missing name, and
/// receives the link's `RTM_DELLINK` when it goes.
#[test]
#[ignore = "needs root in the sandbox of tests/privileged.sh"]
fn a_link_watch_receives_the_links_removal() {
    sandbox();
    let ns = "nvn-watch";
    ip(&["netns", "add", ns]);
    ip(&[
        "-n", ns, "link", "add", "w0", "type", "veth", "peer", "name", "w1",
    ]);
    let path = Path::new("/run/netns").join(ns);
    assert!(link_watch(&path, "nope").unwrap().is_none(), "no such link");
    let (fd, index) = link_watch(&path, "w0").unwrap().expect("a watch on w0");
    assert_eq!(Some(index), ifindex("w0", Some(ns)));
    ip(&["-n", ns, "link", "del", "w0"]);
    let mut socket = File::from(fd);
    let mut buf = vec![0; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    // nlmsghdr: type at 4; ifinfomsg after its 16 bytes: index at 4.
    // Its peer w1 goes too, so only w0's counts.
    loop {
        match socket.read(&mut buf) {
            Ok(n)
                if n >= 24
                    && buf[4..6] == 17u16.to_ne_bytes()
                    && buf[20..24] == index.to_ne_bytes() =>
            {
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "expected RTM_DELLINK of w0 within 5 s"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("reading the watch: {e}"),
        }
    }
    drop(socket);
    ip(&["netns", "del", ns]);
}
