//! Why an isolation, a release or a rollback failed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent::policy::POLICY_PATH;
use crate::agent::sys::{pid_comm, Process, SysError};
use crate::contract::process_list;
use crate::plan::settings::NetnsName;
use crate::report::Chain;

/// Every way an isolation can fail. Each message names the namespace, link or path involved.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("a system operation failed")]
    Sys(#[from] SysError),
    #[error(
        "link {name} (ifindex {ifindex}) does not exist in the agent's namespace; the VPN client \
         (openvpn, openconnect) may have exited"
    )]
    LinkMissing { ifindex: u32, name: String },
    #[error(
        "ifindex {ifindex} is named {found}, not {expected} as NetworkManager reported; refusing \
         to move another link"
    )]
    LinkRenamed {
        ifindex: u32,
        expected: String,
        found: String,
    },
    #[error(
        "link {link} is an OpenVPN data channel offload device (kind {kind}), not a tun: openvpn \
         drives it through the kernel from its own namespace, so moving it would break the VPN. \
         Make openvpn use a tun for this connection: run it with --disable-dco, or keep the DCO \
         kernel module from loading (blacklist ovpn-dco-v2 and ovpn in /etc/modprobe.d, then \
         unload them)"
    )]
    Dco { link: String, kind: String },
    #[error("link {link} is {kind}, not a tun; only a VPN's tun can be isolated")]
    NotTun { link: String, kind: String },
    #[error(
        "namespace {netns} exists but nm-vpn-netns did not create it; only a system connection \
         (one without connection.permissions) may use such a namespace, and {connection_id} has \
         permissions"
    )]
    ForeignNetns {
        netns: NetnsName,
        connection_id: String,
    },
    #[error(
        "namespace {netns} exists but nm-vpn-netns did not create it; a system connection may \
         use such a namespace only if system-foreign-namespaces in {POLICY_PATH} lists it"
    )]
    ForeignNotListed { netns: NetnsName },
    #[error(
        "{} exists and nm-vpn-netns did not create it, or it was changed since; a user's \
         connection may not use it",
        path.display()
    )]
    NotOurs { path: PathBuf },
    #[error(
        "user {user:?} already holds {held} namespaces, the most max-namespaces-per-user in \
         {POLICY_PATH} allows ({max}); take one down or remove a netns-persistent one"
    )]
    UserLimit { user: String, held: usize, max: u32 },
    #[error(
        "namespace {netns} is kept for another connection (netns-persistent). Two connection ids \
         can map to one namespace name: give this one netns-name=uuid or a netns-name of its own"
    )]
    OwnedByOther { netns: NetnsName },
    #[error(
        "namespace {netns} already has an active VPN of another connection; one VPN per namespace"
    )]
    InUse { netns: NetnsName },
    #[error("removing what an earlier teardown left failed again")]
    Leftover(#[source] TeardownError),
    #[error(
        "isolating in namespace {netns} ran past netns-timeout: {} ms had passed before {step}; \
         it was rolled back",
        elapsed.as_millis()
    )]
    Timeout {
        netns: NetnsName,
        elapsed: Duration,
        step: &'static str,
    },
    #[error("no VPN is isolated in namespace {netns}")]
    NotIsolated { netns: NetnsName },
    #[error("namespace {netns} has disappeared from {}", path.display())]
    NetnsGone { netns: NetnsName, path: PathBuf },
    #[error("a plan for namespace {plan} cannot be applied to namespace {netns}")]
    PlanMismatch { netns: NetnsName, plan: NetnsName },
    #[error("nm-vpn-netns keeps no namespace named {netns}")]
    NoRecord { netns: NetnsName },
    #[error(
        "namespace {netns} holds the connected VPN {connection_id:?}; take the VPN down first"
    )]
    Connected {
        netns: NetnsName,
        connection_id: String,
    },
    #[error(
        "processes still run in namespace {netns}: {}; end them first, or delete it with force",
        process_list(&pid_comm(processes))
    )]
    Busy {
        netns: NetnsName,
        processes: Vec<Process>,
    },
    #[error(transparent)]
    Teardown(#[from] TeardownError),
    #[error("{}; rolling back also failed, so something is left: {rollback}", Chain(&**error))]
    Incomplete {
        error: Box<ExecError>,
        rollback: TeardownError,
    },
}

/// What a teardown or rollback could not undo: every error, not only the first.
#[derive(Debug, thiserror::Error)]
pub struct TeardownError {
    pub netns: NetnsName,
    pub errors: Vec<SysError>,
}

impl fmt::Display for TeardownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tearing down namespace {}: ", self.netns)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", Chain(e))?;
        }
        Ok(())
    }
}
