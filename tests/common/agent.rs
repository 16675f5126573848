//! The agent's facade over the recording fake, and the calls a test makes to it as the shim would:
//! raw `a{sv}` dicts, so that a test controls every key on the wire.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use nm_vpn_netns::agent::executor::{Executor, Paths, Record};
use nm_vpn_netns::agent::fake::RecordingSys;
use nm_vpn_netns::agent::sys::{Process, SysError};
use nm_vpn_netns::agent::Agent;
use nm_vpn_netns::contract::{BUS_NAME, INTERFACE, OBJECT_PATH};
use rtnetlink::packet_core::NetlinkMessage;
use zbus::connection::Builder;
use zbus::{Connection, OwnedVariant, Proxy};

use super::ov;

/// An agent on `sys`, with the default paths.
pub fn agent(sys: RecordingSys) -> Agent {
    Agent::new(Executor::new(sys, Paths::default()).unwrap()).unwrap()
}

/// An agent on `sys` whose namespaces are named in `run_netns`, a directory of the test's own,
/// and which watches each tun with [`fake_watch`].
pub fn watching_agent(sys: RecordingSys, run_netns: PathBuf) -> Agent {
    let paths = Paths {
        run_netns,
        ..Paths::default()
    };
    let mut agent = Agent::new(Executor::new(sys, paths).unwrap()).unwrap();
    agent.watch_links(fake_watch);
    agent
}

/// A directory of the test's own for [`watching_agent`]'s namespace names, empty.
pub fn run_netns_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nm-vpn-netns-run-netns-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The other end of the last watch that [`fake_watch`] opened, for the test to write to.
static WATCH_PEER: Mutex<Option<UnixDatagram>> = Mutex::new(None);

/// A watch on link 7 that the test feeds through [`WATCH_PEER`], as the kernel would.
fn fake_watch(_netns: &Path, _link: &str) -> Result<Option<(OwnedFd, u32)>, SysError> {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    *WATCH_PEER.lock().unwrap() = Some(peer);
    Ok(Some((OwnedFd::from(ours), 7)))
}

/// The other end of the last watch [`fake_watch`] opened.
pub fn watch_peer() -> UnixDatagram {
    WATCH_PEER
        .lock()
        .unwrap()
        .take()
        .expect("expected the agent to open a watch on the tun")
}

/// An `RTM_DELLINK` of link `index`, as a socket in the link group receives it.
pub fn dellink(index: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.header.index = index;
    let mut packet = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// Serves `agent` on one end of a peer-to-peer connection; returns (server, client).
pub async fn serve_p2p(agent: Agent) -> (Connection, Connection) {
    let (server_end, client_end) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = Builder::unix_stream(server_end)
        .server(zbus::Guid::generate())
        .p2p()
        .serve_at(OBJECT_PATH, agent)
        .build();
    let client = Builder::unix_stream(client_end).p2p().build();
    let (server, client) = tokio::join!(server, client);
    (server.unwrap(), client.unwrap())
}

/// A world with tuns 7 (`tun0`) and 8 (`tun1`), veth 9 and the host's nsswitch.conf.
pub fn sys_with_links() -> RecordingSys {
    let mut sys = RecordingSys::default();
    sys.add_link(7, "tun0", Some("tun"), None);
    sys.add_link(8, "tun1", Some("tun"), None);
    sys.add_link(9, "veth0", Some("veth"), None);
    sys.add_file("/etc/nsswitch.conf", "hosts: files dns\n");
    sys
}

/// `sleep` as process 4242 in the namespace mounted at `/run/netns/NS` of `sys`.
pub fn sleep_in(sys: &mut RecordingSys, ns: &str) {
    let sleeper = Process {
        pid: 4242,
        comm: "sleep".to_owned(),
    };
    sys.world
        .processes
        .insert(format!("/run/netns/{ns}").into(), vec![sleeper]);
}

/// The uuid of [`request`]'s connection.
pub const REQUEST_UUID: &str = "0b5d5a0e-8f4c-4a55-9b8e-3c6b1f0e2d11";

/// The record a previous agent left of namespace `ns`, which it created for [`request`]'s
/// connection and which `owner` leased, with the VPN's tun inside as `tun0`.
pub fn leased_record(ns: &str, owner: &str) -> Record {
    Record {
        netns: ns.parse().unwrap(),
        connection_uuid: REQUEST_UUID.to_owned(),
        connection_id: "work vpn".to_owned(),
        owner: owner.to_owned(),
        never_default_v4: true,
        never_default_v6: false,
        tunnel_mtu: None,
        created: true,
        netns_id: None,
        identity_first: false,
        netns_pending: false,
        netns_file: None,
        user: None,
        persistent: false,
        leased: true,
        link: Some("tun0".to_owned()),
        link_ifindex: None,
        etc_dir_created: false,
        files: Vec::new(),
    }
}

/// [`sys_with_links`] with what a previous agent left: the namespaces of `records`, each with its
/// tun, and the records themselves. Each tun inside has ifindex 100 and up.
pub fn sys_with_leases(records: &[Record]) -> RecordingSys {
    let mut sys = sys_with_links();
    sys.world.dirs.insert("/run/nm-vpn-netns".into());
    for (r, ifindex) in records.iter().zip(100..) {
        let netns = format!("/run/netns/{}", r.netns);
        sys.add_netns(&netns);
        sys.add_link(ifindex, "tun0", Some("tun"), Some(&netns));
        let text = String::from_utf8(r.encode()).unwrap();
        sys.add_file(&format!("/run/nm-vpn-netns/{}", r.netns), &text);
    }
    sys
}

/// An `Isolate` request as the shim sends it, for tun `ifindex`/`tundev` and these netns keys.
pub fn request(ifindex: u32, tundev: &str, keys: &[(&str, &str)]) -> HashMap<String, OwnedVariant> {
    let ip4 = |a: [u8; 4]| u32::from_ne_bytes(a);
    let config: HashMap<String, OwnedVariant> = HashMap::from([
        ("tundev".into(), ov(tundev.to_owned())),
        ("gateway".into(), ov(ip4([198, 18, 0, 1]))),
        ("has-ip4".into(), ov(true)),
    ]);
    let ip4_config: HashMap<String, OwnedVariant> = HashMap::from([
        ("address".into(), ov(ip4([198, 19, 0, 2]))),
        ("prefix".into(), ov(24u32)),
        ("dns".into(), ov(vec![ip4([198, 19, 0, 1])])),
    ]);
    let settings: HashMap<String, String> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HashMap::from([
        ("id".into(), ov("work vpn")),
        ("uuid".into(), ov(REQUEST_UUID)),
        // A system connection: the shim always sends the field, empty for one.
        ("permissions".into(), ov(Vec::<String>::new())),
        ("netns-settings".into(), ov(settings)),
        ("ifindex".into(), ov(ifindex)),
        ("config".into(), ov(config)),
        ("ip4-config".into(), ov(ip4_config)),
    ])
}

/// The agent's object, through the well-known name (ignored on a peer-to-peer connection).
pub async fn proxy(conn: &Connection) -> Proxy<'static> {
    Proxy::new(conn, BUS_NAME, OBJECT_PATH, INTERFACE)
        .await
        .unwrap()
}

pub async fn isolate(
    p: &Proxy<'_>,
    req: HashMap<String, OwnedVariant>,
) -> Result<HashMap<String, OwnedVariant>, (String, String)> {
    p.call("Isolate", &(req,)).await.map_err(method_error)
}

pub async fn release(p: &Proxy<'_>, ns: &str) -> Result<(), (String, String)> {
    p.call::<_, _, ()>("Release", &(ns,))
        .await
        .map_err(method_error)
}

/// A method error's name and message.
pub fn method_error(e: zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => (name.to_string(), msg.unwrap_or_default()),
        e => panic!("not a method error: {e:?}"),
    }
}

/// The peer is this process, and only root may call: as anyone else these tests have nothing to
/// check here (the e2e rig's t_agent_refusals calls as uid 65534 over the real bus).
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: the agent only answers root");
    }
    root
}
