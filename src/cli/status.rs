//! `nm-vpn-netns status`: every isolated VPN, active (from NetworkManager) or kept (from the
//! agent's `List`), with what root alone can see of it: the agent's record, the tun, its
//! addresses and routes inside the namespace, its DNS, and a live leak check ([`leak`]).
//!
//! The effects (NetworkManager, the agent, netlink, files) fill a [`View`] per VPN; what to
//! print and the exit status are decided from the views alone ([`render`], [`exit_status`]).

mod kernel;
mod leak;
mod nm;
mod render;

use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use zbus::Connection;

use self::kernel::{Addr, NetState, Route};
use self::leak::Leak;
use self::nm::Active;
use super::list::{self, ListError};
use crate::agent::linux::{self, RealSys};
use crate::agent::sys::{Sys, SysError};
use crate::contract::NetnsEntry;
use crate::plan::mirror::Origin;
use crate::plan::{NETNS_ETC_DIR, NETNS_RUN_DIR};

const ABOUT: &str = "Show every isolated VPN, and check it for leaks";

const LONG_ABOUT: &str = "\
Show every VPN that nm-vpn-netns isolates: those NetworkManager has active whose profile has
netns-isolate=yes, and the namespaces kept by netns-persistent=yes (or left over) after their
VPN went down. For each: the connection's id and uuid, its namespace and state, whether the
namespace is persistent and whether nm-vpn-netns created it, the tun inside with its addresses
and routes, the DNS servers of /etc/netns/NAME/resolv.conf, and a live leak check. For an
active VPN it also says where the keys that isolate it are: vpn.data, or the mirror in user.data
that nm-vpn-netns enable keeps; while the mirror exists, removing the keys from vpn.data alone
does not turn isolation off (use nm-vpn-netns disable).

The leak check passes when nothing of the VPN is in the namespace the command runs in (the
host's): none of the tun's addresses, no route into one of the VPN's networks (the tun's
subnets and the networks routed through it), none of its DNS servers in /etc/resolv.conf; and
when every route inside the namespace stays there or leaves through the tun.

Run as root, it shows everything. Run as another user, it shows what NetworkManager tells that
user; the agent's records, the kernel's view inside the namespace and the leak check need root,
and are marked so (in JSON: {\"unavailable\": \"needs root\"}). A field that cannot be read for
another reason, such as a namespace deleted behind nm-vpn-netns's back, says why the same way.

EXIT STATUS
  0  shown, and every leak check that ran passed (none runs without root)
  1  not shown: NetworkManager, the agent or a namespace was unreadable (see stderr)
  2  shown, and a leak check failed; the output says what leaked where";

/// `status [--json]`.
#[derive(Debug, clap::Args)]
#[command(about = ABOUT, long_about = LONG_ABOUT)]
pub struct Args {
    /// Print one JSON object (`vpns`, an array, and `leak_free`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The exit status when a leak check failed.
pub const EXIT_LEAK: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to the system bus")]
    Bus(#[source] zbus::Error),
    #[error("cannot ask NetworkManager for its active connections")]
    NetworkManager(#[source] zbus::Error),
    #[error("cannot ask the agent for the namespaces it keeps")]
    Agent(#[source] ListError),
    #[error("cannot read the routes and addresses of this namespace")]
    Host(#[source] SysError),
}

/// Something root alone may see, or why it is not shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<T> {
    Shown(T),
    NeedsRoot,
    /// Not there: no record, or no namespace under the name; the reason.
    Missing(String),
}

/// What root sees of a VPN's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The tun's name inside; `None` when the VPN is down.
    pub tun: Option<String>,
    /// The tun's addresses.
    pub addresses: Vec<Addr>,
    /// The main table's routes, as `ip route` shows them inside.
    pub routes: Vec<Route>,
    pub dns: Vec<IpAddr>,
    pub search: Vec<String>,
    /// Empty: the leak check passed.
    pub leaks: Vec<Leak>,
}

/// One isolated VPN as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub id: String,
    pub uuid: String,
    pub netns: Option<String>,
    /// NetworkManager's state of an active VPN, or `list`'s for a namespace alone.
    pub state: String,
    pub persistent: bool,
    /// Of an active VPN: where its deciding keys are, and whether the profile has the mirror.
    pub keys: Option<(Origin, bool)>,
    pub record: Seen<NetnsEntry>,
    pub kernel: Seen<Kernel>,
}

/// The views of the `active` VPNs and of the agent's `records` (`None` without root), each
/// record with its active VPN, and the others after them.
pub fn merge(active: Vec<Active>, records: Option<&[NetnsEntry]>) -> Vec<View> {
    let mut unmatched: Vec<&NetnsEntry> = records.unwrap_or_default().iter().collect();
    let missing_or_root = || match records {
        None => Seen::NeedsRoot,
        Some(_) => Seen::Missing("no record".to_owned()),
    };
    let mut views = Vec::new();
    for a in active {
        // The record of the connection's lease names its namespace for sure.
        let found = unmatched
            .iter()
            .position(|r| r.uuid == a.uuid && (r.connected || Some(&r.netns) == a.netns.as_ref()));
        let record = found.map(|i| unmatched.remove(i).clone());
        views.push(View {
            netns: record.as_ref().map(|r| r.netns.clone()).or(a.netns),
            state: nm::state_word(a.state).to_owned(),
            persistent: record.as_ref().map_or(a.persistent, |r| r.persistent),
            keys: Some((a.keys_from, a.mirror)),
            record: record.map_or_else(missing_or_root, Seen::Shown),
            kernel: if records.is_some() {
                Seen::Missing("not read".to_owned())
            } else {
                Seen::NeedsRoot
            },
            id: a.id,
            uuid: a.uuid,
        });
    }
    views.extend(unmatched.into_iter().map(|r| View {
        id: r.id.clone(),
        uuid: r.uuid.clone(),
        netns: Some(r.netns.clone()),
        state: list::state(r).to_owned(),
        persistent: r.persistent,
        keys: None,
        record: Seen::Shown(r.clone()),
        kernel: Seen::Missing("not read".to_owned()),
    }));
    views
}

/// `Some(true)` when every leak check passed, `Some(false)` when one failed, `None` when none ran.
pub fn leak_free(views: &[View]) -> Option<bool> {
    let checked: Vec<bool> = views
        .iter()
        .filter_map(|v| match &v.kernel {
            Seen::Shown(k) => Some(k.leaks.is_empty()),
            _ => None,
        })
        .collect();
    (!checked.is_empty()).then(|| checked.iter().all(|ok| *ok))
}

/// See the page's EXIT STATUS.
pub fn exit_status(views: &[View]) -> u8 {
    match leak_free(views) {
        Some(false) => EXIT_LEAK,
        _ => 0,
    }
}

/// The host's side of the leak check: this namespace, and its resolver's servers.
struct Host {
    state: NetState,
    dns: Vec<IpAddr>,
}

/// Reads what root sees of `view`'s namespace, and checks it against the `host`. A namespace
/// that is gone, or goes while it is read (a VPN going down), is shown as missing, with why.
fn observe(view: &View, host: &Host, sys: &mut RealSys) -> Seen<Kernel> {
    let Some(netns) = &view.netns else {
        return Seen::Missing("no namespace name".to_owned());
    };
    let path = Path::new(NETNS_RUN_DIR).join(netns);
    let inside = sys.netns_open(&path).and_then(|fd| {
        fd.map(|fd| linux::in_netns(&fd, kernel::read_own))
            .transpose()
    });
    let inside = match inside {
        Ok(Some(inside)) => inside,
        Ok(None) => return Seen::Missing(format!("{} does not exist", path.display())),
        Err(e) => return Seen::Missing(crate::report::chain(&e)),
    };
    let resolv = std::fs::read_to_string(Path::new(NETNS_ETC_DIR).join(netns).join("resolv.conf"))
        .unwrap_or_default();
    let dns = leak::nameservers(&resolv);
    let tun = match &view.record {
        Seen::Shown(r) => r.link.clone(),
        _ => None,
    };
    let vpn = leak::Vpn {
        tun: tun.as_deref(),
        inside: &inside,
        dns: &dns,
    };
    let root = leak::Root {
        state: &host.state,
        dns: &host.dns,
    };
    let leaks = leak::check(&vpn, &root);
    Seen::Shown(Kernel {
        addresses: inside
            .addresses
            .iter()
            .filter(|a| Some(&a.link) == tun.as_ref())
            .cloned()
            .collect(),
        routes: inside.main_routes().cloned().collect(),
        tun,
        dns,
        search: leak::search_domains(&resolv),
        leaks,
    })
}

async fn gather(root: bool) -> Result<(Vec<Active>, Option<Vec<NetnsEntry>>), StatusError> {
    let conn = Connection::system().await.map_err(StatusError::Bus)?;
    let active = nm::isolated_vpns(&conn)
        .await
        .map_err(StatusError::NetworkManager)?;
    let records = if root {
        Some(list::entries(&conn).await.map_err(StatusError::Agent)?)
    } else {
        None
    };
    Ok((active, records))
}

pub fn run(args: Args) -> Result<ExitCode, StatusError> {
    let root = nix::unistd::geteuid().is_root();
    let (active, records) = super::block_on(gather(root)).map_err(StatusError::Runtime)??;
    let mut views = merge(active, records.as_deref());
    if root {
        let host = Host {
            state: kernel::read_own().map_err(StatusError::Host)?,
            dns: leak::nameservers(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            ),
        };
        let mut sys = RealSys::new().map_err(StatusError::Host)?;
        for view in &mut views {
            view.kernel = observe(view, &host, &mut sys);
        }
    }
    if args.json {
        println!("{:#}", render::json(&views));
    } else {
        print!("{}", render::text(&views));
        if !root && !views.is_empty() {
            eprintln!(
                "nm-vpn-netns: the records, the namespaces' insides and the leak check need root"
            );
        }
    }
    Ok(ExitCode::from(exit_status(&views)))
}

#[cfg(test)]
mod tests;
