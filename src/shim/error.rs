//! What can go wrong in the shim, and how NetworkManager hears of it.
//!
//! Every [`ShimError`] has a short message of its own and keeps its cause in `source()`; the
//! chain is rendered once, with [`crate::report::chain`], where it leaves the process: in the
//! D-Bus error [`Reply`] to NM (which logs only the message) and in log lines.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use zbus::message::Header;
use zbus::names::{ErrorName, OwnedErrorName};
use zbus::{DBusError, Message};

use crate::contract::AgentError;
use crate::plan::settings::SettingsError;
use crate::plan::PlanError;
use crate::report::chain;

use super::keyfile::KeyFileError;
use super::session::failure;

// NM_VPN_PLUGIN_ERROR names (NetworkManager's nm-errors.h), which NM logs with the message.
pub(super) const BAD_ARGUMENTS: &str = "org.freedesktop.NetworkManager.VPN.Error.BadArguments";
pub(super) const WRONG_STATE: &str = "org.freedesktop.NetworkManager.VPN.Error.WrongState";
pub(super) const LAUNCH_FAILED: &str = "org.freedesktop.NetworkManager.VPN.Error.LaunchFailed";
pub(super) const FAILED: &str = "org.freedesktop.NetworkManager.VPN.Error.Failed";
const INTERACTIVE_NOT_SUPPORTED: &str =
    "org.freedesktop.NetworkManager.VPN.Error.InteractiveNotSupported";
pub(super) const NO_REPLY: &str = "org.freedesktop.DBus.Error.NoReply";

/// Whom the shim calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Stock,
    Agent,
    NetworkManager,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Stock => "the stock service",
            Peer::Agent => "the agent",
            Peer::NetworkManager => "NetworkManager",
        })
    }
}

/// An error whose message already says its causes, as zbus's do: the chain ends at it, so that
/// nothing is said twice.
#[derive(Debug)]
pub struct Leaf<E>(pub E);

impl<E: fmt::Display> fmt::Display for Leaf<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Leaf<E> {}

/// Everything that can go wrong in the shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("nm-vpn-netns refused the connection")]
    Config(#[source] SettingsError),
    #[error("the VPN's Config cannot be reported to NetworkManager")]
    Plan(#[source] PlanError),
    #[error("the stock service's Config names no tundev to move into the namespace")]
    NoTunDev,
    #[error("no link {name:?} in the plugin's network namespace")]
    NoTun {
        name: String,
        #[source]
        error: io::Error,
    },
    #[error("cannot read {path}")]
    NameFile {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("{path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        error: KeyFileError,
    },
    #[error("{path}: [VPN Connection] has no program")]
    NoProgram { path: PathBuf },
    #[error("{0} is the shim itself, not the stock service")]
    StockIsShim(PathBuf),
    #[error("bus name {0:?} is not a D-Bus well-known name")]
    BusName(String),
    #[error("{service} was not taken over by nm-vpn-netns: no {} has its service=", looked_in.display())]
    NotTakenOver { service: String, looked_in: PathBuf },
    #[error("cannot start the stock service {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("the stock service did not own {name} within {timeout:?}")]
    StockStartTimeout { name: String, timeout: Duration },
    #[error("the stock service exited ({status}) before owning {name}")]
    StockExited { name: String, status: String },
    #[error("the stock service is not running")]
    StockGone,
    #[error("{peer} did not answer {method} within {timeout:?}")]
    NoReply {
        peer: Peer,
        method: &'static str,
        timeout: Duration,
    },
    #[error("{method} of {peer} failed")]
    Call {
        peer: Peer,
        method: &'static str,
        #[source]
        error: Leaf<zbus::Error>,
    },
    #[error("{method} of the agent failed")]
    Agent {
        method: &'static str,
        #[source]
        error: AgentError,
    },
    #[error("the profile's netns-* keys")]
    Profile(#[source] SettingsError),
    #[error("connection {uuid} was not activated within {timeout:?}")]
    NotActivated { uuid: String, timeout: Duration },
    #[error("the plugin connects once and is {0} already")]
    WrongState(&'static str),
    #[error("NetworkManager's Connect differs from the ConnectInteractive it falls back from")]
    ConnectChanged,
    #[error("D-Bus")]
    Bus(#[source] Leaf<zbus::Error>),
}

impl From<zbus::Error> for ShimError {
    fn from(e: zbus::Error) -> Self {
        ShimError::Bus(Leaf(e))
    }
}

impl ShimError {
    /// The `NMVpnPluginFailure` NM gets when this ends a connection.
    pub fn failure(&self) -> u32 {
        match self {
            ShimError::Plan(_) | ShimError::NoTunDev | ShimError::NoTun { .. } => {
                failure::BAD_IP_CONFIG
            }
            ShimError::Agent {
                error: AgentError::InvalidArgs(_),
                ..
            } => failure::BAD_IP_CONFIG,
            _ => failure::CONNECT_FAILED,
        }
    }

    /// Whether it is the stock service's `InteractiveNotSupported` answer to ConnectInteractive,
    /// after which NM calls Connect ([`super::session::Session::on_connect_declined`]).
    pub fn declines_interactive(&self) -> bool {
        match self {
            ShimError::Call {
                peer: Peer::Stock,
                error: Leaf(error),
                ..
            } => remote(error).is_some_and(|(name, _)| name.as_str() == INTERACTIVE_NOT_SUPPORTED),
            _ => false,
        }
    }

    /// The name NM gets for it in a D-Bus error reply of ours.
    fn nm_name(&self) -> &'static str {
        match self {
            ShimError::Config(_) => BAD_ARGUMENTS,
            ShimError::WrongState(_) => WRONG_STATE,
            ShimError::StockGone
            | ShimError::StockExited { .. }
            | ShimError::StockStartTimeout { .. } => LAUNCH_FAILED,
            ShimError::NoReply { .. } => NO_REPLY,
            _ => FAILED,
        }
    }
}

/// Bounds `call` as NM bounds its own calls to a plugin, naming the peer and method if it takes
/// too long.
pub(super) async fn within<T>(
    peer: Peer,
    method: &'static str,
    timeout: Duration,
    call: impl Future<Output = T>,
) -> Result<T, ShimError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ShimError::NoReply {
            peer,
            method,
            timeout,
        })
}

/// [`within`] for a D-Bus call, whose error names the peer and the method.
pub(super) async fn bus_call_within<T>(
    peer: Peer,
    method: &'static str,
    timeout: Duration,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<T, ShimError> {
    within(peer, method, timeout, call)
        .await?
        .map_err(|error| ShimError::Call {
            peer,
            method,
            error: Leaf(error),
        })
}

/// The name and message of a D-Bus error reply, if `error` is one.
fn remote(error: &zbus::Error) -> Option<(ErrorName<'_>, Option<&str>)> {
    match error {
        zbus::Error::MethodError(name, message, _) => Some((name.as_ref(), message.as_deref())),
        zbus::Error::FDO(e) => Some((e.name(), e.description())),
        zbus::Error::DBus(e) => Some((e.name(), e.description())),
        _ => None,
    }
}

/// A D-Bus error as NM receives it from one of our methods: the stock service's own errors
/// verbatim, ours under NM's VPN plugin error names with the whole chain as the message.
#[derive(Debug)]
pub struct Reply {
    name: OwnedErrorName,
    message: Option<String>,
}

impl From<ShimError> for Reply {
    fn from(e: ShimError) -> Self {
        if let ShimError::Call {
            peer: Peer::Stock,
            error: Leaf(error),
            ..
        } = &e
        {
            if let Some((name, message)) = remote(error) {
                return Reply {
                    name: name.into(),
                    message: message.map(str::to_owned),
                };
            }
        }
        Reply {
            name: ErrorName::from_static_str_unchecked(e.nm_name()).into(),
            message: Some(chain(&e)),
        }
    }
}

impl DBusError for Reply {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        let builder = Message::error(call, &self.name);
        match &self.message {
            Some(message) => builder.build(&(message,)),
            None => builder.build(&()),
        }
    }

    fn name(&self) -> ErrorName<'_> {
        self.name.as_ref()
    }

    fn description(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::plan::settings::{NmConnection, OPENVPN_SERVICE};
    use crate::shim::codec;

    /// A D-Bus error reply as zbus hands it to a caller.
    pub(in crate::shim) fn bus_error(name: &str, message: &str) -> zbus::Error {
        let call = Message::method_call("/", "M").build(&()).unwrap();
        let reply = Message::error(&call.header(), name)
            .build(&(message,))
            .unwrap();
        zbus::Error::from(reply)
    }

    #[test]
    fn stock_errors_reach_nm_verbatim() {
        let e = ShimError::Call {
            peer: Peer::Stock,
            method: "Connect",
            error: Leaf(bus_error(
                BAD_ARGUMENTS,
                "property “x” invalid or not supported",
            )),
        };
        let reply = Reply::from(e);
        assert_eq!(reply.name(), BAD_ARGUMENTS);
        assert_eq!(
            reply.description(),
            Some("property “x” invalid or not supported")
        );
    }

    /// libnm's answer for a plugin without ConnectInteractive reaches NM as it is, for NM to
    /// fall back to Connect; only the stock service's answer counts as that.
    #[test]
    fn interactive_not_supported_is_recognised() {
        let call = |peer, name| ShimError::Call {
            peer,
            method: "ConnectInteractive",
            error: Leaf(bus_error(
                name,
                "Plugin does not implement ConnectInteractive()",
            )),
        };
        let declined = call(Peer::Stock, INTERACTIVE_NOT_SUPPORTED);
        assert!(declined.declines_interactive());
        assert_eq!(Reply::from(declined).name(), INTERACTIVE_NOT_SUPPORTED);
        assert!(!call(Peer::Agent, INTERACTIVE_NOT_SUPPORTED).declines_interactive());
        assert!(!call(Peer::Stock, BAD_ARGUMENTS).declines_interactive());
        assert!(!ShimError::StockGone.declines_interactive());
    }

    #[test]
    fn our_errors_use_nm_names() {
        let e = codec::check(NmConnection::new(), OPENVPN_SERVICE).unwrap_err();
        let reply = Reply::from(e);
        assert_eq!(reply.name(), BAD_ARGUMENTS);
        assert_eq!(
            reply.description(),
            Some(
                "nm-vpn-netns refused the connection: connection.id is missing from the connection"
            )
        );
        assert_eq!(Reply::from(ShimError::StockGone).name(), LAUNCH_FAILED);
        assert_eq!(
            Reply::from(ShimError::WrongState("stopped")).name(),
            WRONG_STATE
        );
    }

    #[test]
    fn chains_say_each_cause_once() {
        let e = ShimError::Agent {
            method: "Isolate",
            error: AgentError::from(bus_error(
                "io.github.NmVpnNetns.Agent1.Error.InUse",
                "namespace shared already holds an active VPN",
            )),
        };
        assert_eq!(
            chain(&e),
            "Isolate of the agent failed: io.github.NmVpnNetns.Agent1.Error.InUse: \
             namespace shared already holds an active VPN"
        );
        // zbus's message already includes its cause.
        let io = io::Error::from_raw_os_error(32);
        let e = ShimError::from(zbus::Error::InputOutput(io.into()));
        assert_eq!(chain(&e), "D-Bus: I/O error: Broken pipe (os error 32)");
    }

    #[test]
    fn failure_reasons() {
        let agent = |name| ShimError::Agent {
            method: "Isolate",
            error: AgentError::from(bus_error(name, "x")),
        };
        assert_eq!(
            agent("io.github.NmVpnNetns.Agent1.Error.InvalidArgs").failure(),
            failure::BAD_IP_CONFIG
        );
        assert_eq!(
            agent("io.github.NmVpnNetns.Agent1.Error.Timeout").failure(),
            failure::CONNECT_FAILED
        );
        assert_eq!(ShimError::NoTunDev.failure(), failure::BAD_IP_CONFIG);
        assert_eq!(ShimError::StockGone.failure(), failure::CONNECT_FAILED);
    }
}
