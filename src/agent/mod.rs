//! The privileged agent, `nm-vpn-netns-agent`: root, activated by the bus, outside
//! NetworkManager's sandbox, which can neither create a namespace nor enter one.
//!
//! - [`service`]: the D-Bus facade of [`crate::contract`]: checks the caller, decodes and plans
//!   (with [`request`], off the event loop), keeps the leases, and maps errors to the contract's
//!   names.
//! - [`lifecycle`]: the agent on the bus: the leases it takes back when it starts, the callers
//!   that leave, and its exit after the last release once its binary was replaced.
//! - [`executor`]: carries a plan out all or nothing, and tears it down again.
//! - [`linkwatch`]: tells a lease holder when its tun left the namespace, or the namespace its name.
//! - [`procs`]: processes found in `/proc`: those a release would strand in a namespace, and those
//!   a caller started, which the agent ends when the caller dies without releasing.
//! - [`record`]: what the agent owns, on disk, one record per namespace; [`policy`]: the
//!   administrator's confinement of names, from `/etc/nm-vpn-netns/agent.conf`.
//! - [`sys`]: the one trait through which the executor touches the system; [`linux`] implements
//!   it on the kernel, with [`netlink`] for links, addresses and routes and [`rtmsg`] for the
//!   pure decisions of which messages to send.

pub mod executor;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
mod leases;
pub mod lifecycle;
pub mod linkwatch;
pub mod linux;
pub(crate) mod netlink;
pub mod policy;
mod procs;
pub mod record;
mod request;
pub(crate) mod rtmsg;
mod safe_fs;
pub mod service;
pub mod sys;

pub use service::Agent;

use clap::Parser;

const LONG_ABOUT: &str = "\
nm-vpn-netns-agent creates the network namespaces of isolated VPNs and configures the VPN's
tunnel, addresses, routes and DNS files inside them. It is the privileged half of nm-vpn-netns:
the plugin nm-vpn-netns-service(8) runs inside NetworkManager's sandbox, which can neither create
a namespace nor enter one, so it asks the agent over the system bus.

Users do not start it. D-Bus starts it as root on the first request to io.github.NmVpnNetns.Agent1,
through its systemd unit or the bus's activation helper, and only root may call it. It holds a
lease for each connection it isolated until the connection goes down or the plugin that asked
leaves the bus; then it removes what it made, unless netns-persistent=yes keeps the namespace.
nm-vpn-netns list shows the namespaces it keeps, and nm-vpn-netns delete removes one through it.
It logs to syslog, or to standard error when syslog is unreachable.";

/// The agent's command line.
#[derive(Debug, Parser)]
#[command(
    name = "nm-vpn-netns-agent",
    version,
    about = "Privileged helper of nm-vpn-netns that sets up network namespaces for VPNs",
    long_about = LONG_ABOUT
)]
pub struct Args {
    /// Serve on this D-Bus address instead of the system bus.
    #[arg(long, value_name = "ADDRESS")]
    pub address: Option<String>,
}
