//! The shim's calls to the privileged agent, through [`crate::contract::Agent1Proxy`]: Prepare,
//! Isolate and Reapply run beside the driver's loop and come back as an [`AgentAnswer`]; Release is awaited
//! in teardown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use zbus::proxy::CacheProperties;
use zbus::Connection;

use crate::contract::{
    stranded_message, Agent1Proxy, AgentError, LinkLoss, LinkLost, LinkLostStream, ReleaseReport,
    LINK_LOST,
};
use crate::plan::VarDict;
use crate::report::chain;

use super::codec::{self, NetnsIntent};
use super::error::{within, Leaf, Peer, ShimError};
use super::session::{IsolateCall, ReapplyCall};
use super::CALL_TIMEOUT;

/// On top of `netns-timeout`, which the agent enforces: its D-Bus activation and its rollback.
const AGENT_MARGIN: Duration = Duration::from_secs(5);
/// How long the shim waits for a new agent after the one it called vanished.
const RESTART_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's answer, for the session.
pub(super) enum AgentAnswer {
    Prepared(Result<String, ShimError>),
    Isolated(Result<String, ShimError>),
    Reapplied(Result<(), ShimError>),
}

/// An agent call in flight.
pub(super) type AgentCall = Pin<Box<dyn Future<Output = AgentAnswer> + Send>>;

/// The agent's `LinkLost` signals, subscribed before any Isolate so that none is missed. The
/// agent sends them to us alone; the proxy's stream drops any that the agent's name's owner did
/// not send, since the bus lets anyone send us a signal and only the agent's may stop the VPN.
pub(super) async fn link_lost_signals(conn: &Connection) -> Result<LinkLostStream, ShimError> {
    Ok(agent(conn).await?.receive_link_lost().await?)
}

/// The namespace, link and reason of a `LinkLost` signal; `None` if it does not decode.
pub(super) fn link_lost(signal: &LinkLost) -> Option<(String, String, LinkLoss)> {
    signal
        .args()
        .inspect_err(|e| warn!("ignoring a malformed {LINK_LOST} signal of the agent: {e}"))
        .ok()
        .map(|a| {
            (
                a.netns.to_owned(),
                a.link.to_owned(),
                LinkLoss::from(a.reason),
            )
        })
}

/// The agent's proxy. Its properties are not cached: that would call the agent at once.
async fn agent(conn: &Connection) -> Result<Agent1Proxy<'static>, ShimError> {
    Ok(Agent1Proxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?)
}

/// Bounds a call to the agent as NM bounds its own, and names the method in its errors.
async fn bounded<T>(
    method: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, AgentError>>,
) -> Result<T, ShimError> {
    within(Peer::Agent, method, timeout, call)
        .await?
        .map_err(|error| match error {
            // Not one of the agent's own errors (the bus could not start it, or refused the
            // call, or the connection broke): zbus's error keeps its name and cause.
            AgentError::ZBus(error) => ShimError::Call {
                peer: Peer::Agent,
                method,
                error: Leaf(error),
            },
            error => ShimError::Agent { method, error },
        })
}

/// Has the agent prepare the connection's namespace while the VPN client connects.
pub(super) fn prepare(conn: Connection, intent: NetnsIntent) -> AgentCall {
    Box::pin(prepared(conn, intent))
}

/// Has the agent move the tun named in the stock service's Config into its namespace.
pub(super) fn isolate(conn: Connection, call: IsolateCall) -> AgentCall {
    Box::pin(isolated(conn, call))
}

/// Has the agent re-apply a config that the stock service re-sent.
pub(super) fn reapply(conn: Connection, call: ReapplyCall) -> AgentCall {
    Box::pin(reapplied(conn, call))
}

/// Resolves with the answer to the call in flight, or never if there is none.
pub(super) async fn answer(call: &mut Option<AgentCall>) -> AgentAnswer {
    match call {
        Some(call) => call.await,
        None => std::future::pending().await,
    }
}

async fn prepared(conn: Connection, intent: NetnsIntent) -> AgentAnswer {
    let result = async {
        let request = codec::prepare_request(&intent);
        let agent = agent(&conn).await?;
        bounded(
            "Prepare",
            intent.timeout + AGENT_MARGIN,
            agent.prepare(&request),
        )
        .await
    }
    .await;
    let id = &intent.id;
    match result {
        Ok(reply) => {
            info!(
                "prepared namespace {} ({}) for connection {id:?} in {} µs",
                reply.netns,
                if reply.created { "created" } else { "reused" },
                reply.elapsed_us
            );
            AgentAnswer::Prepared(Ok(reply.netns))
        }
        // Isolate does the whole work then, and reports what still fails.
        Err(e) if is_unknown_method(&e) => {
            info!("the agent predates Prepare; the namespace is made at Isolate");
            AgentAnswer::Prepared(Err(e))
        }
        Err(e) => {
            warn!(
                "preparing connection {id:?} failed; Isolate will do the whole work: {}",
                chain(&e)
            );
            restart_if_lost(&conn, &e).await;
            AgentAnswer::Prepared(Err(e))
        }
    }
}

async fn isolated(conn: Connection, call: IsolateCall) -> AgentAnswer {
    let started = Instant::now();
    let result = async {
        let tun = codec::tundev(&call.set.config)?;
        let request = codec::isolate_request(&call.intent, ifindex(tun)?, &call.set);
        let timeout = call.intent.timeout + AGENT_MARGIN;
        let agent = agent(&conn).await?;
        let reply = bounded("Isolate", timeout, agent.isolate(&request)).await?;
        Ok::<_, ShimError>((tun.to_owned(), reply))
    }
    .await;
    let id = &call.intent.id;
    match result {
        Ok((tun, reply)) => {
            info!(
                "isolated connection {id:?} in namespace {} ({}): tun {tun} (inside: {}), {}, in {} ms",
                reply.netns,
                if reply.created { "created" } else { "reused" },
                reply.link,
                codec::addresses(&call.set).join(" "),
                started.elapsed().as_millis()
            );
            AgentAnswer::Isolated(Ok(reply.netns))
        }
        Err(e) => {
            error!("isolating connection {id:?} failed: {}", chain(&e));
            restart_if_lost(&conn, &e).await;
            AgentAnswer::Isolated(Err(e))
        }
    }
}

async fn reapplied(conn: Connection, call: ReapplyCall) -> AgentAnswer {
    let none = VarDict::new();
    let result = async {
        let agent = agent(&conn).await?;
        let reply = agent.reapply(
            call.netns.as_str(),
            &call.set.config,
            call.set.ip4.as_ref().unwrap_or(&none),
            call.set.ip6.as_ref().unwrap_or(&none),
        );
        bounded("Reapply", CALL_TIMEOUT, reply).await
    }
    .await;
    match &result {
        Ok(()) => info!(
            "re-applied the VPN's new config in namespace {}",
            call.netns
        ),
        Err(e) => error!("{}", chain(e)),
    }
    AgentAnswer::Reapplied(result)
}

/// Ends the shim's lease on `netns`, and says in NetworkManager's log which processes the
/// release left in a deleted namespace.
pub(super) async fn release(conn: &Connection, netns: &str) {
    let released = async {
        let agent = agent(conn).await?;
        let reported = bounded(
            "ReleaseWithReport",
            CALL_TIMEOUT,
            agent.release_with_report(netns),
        )
        .await;
        match reported {
            // An agent older than 0.2 (kept running through an upgrade) has only Release.
            Err(e) if is_unknown_method(&e) => {
                bounded("Release", CALL_TIMEOUT, agent.release(netns)).await?;
                Ok(ReleaseReport::default())
            }
            other => other,
        }
    };
    match released.await {
        Ok(report) => {
            info!("released namespace {netns}");
            let stranded = report.stranded.unwrap_or_default();
            if !stranded.is_empty() {
                // At error level: NM passes only errors at its default log level, and these
                // processes lost their network for good.
                error!("{}", stranded_message(netns, &stranded));
            }
        }
        Err(e) => {
            error!("{}", chain(&e));
            restart_if_lost(conn, &e).await;
        }
    }
}

/// Whether `e` says that no agent answered the call (it vanished mid-call, hung, or could not be
/// started), rather than that the agent refused it.
fn agent_lost(e: &ShimError) -> bool {
    matches!(
        e,
        ShimError::Call {
            peer: Peer::Agent,
            ..
        } | ShimError::NoReply {
            peer: Peer::Agent,
            ..
        }
    )
}

/// After an agent vanished mid-call (killed, crashed), has the bus start a new one while this
/// shim is still on the bus. The vanished agent may have recorded a lease for this shim (it
/// records before it acts) under a name the shim never learnt, so the shim cannot release it. A
/// starting agent adopts the leases of holders still on the bus before it owns its name, and
/// releases them when their holder leaves; without a new agent, nobody would.
async fn restart_if_lost(conn: &Connection, e: &ShimError) {
    if !agent_lost(e) {
        return;
    }
    info!(
        "no agent answered; starting a new one, which takes back any lease recorded for this \
         plugin while the plugin is on the bus, and releases it when the plugin exits"
    );
    let version = async {
        agent(conn)
            .await?
            .version()
            .await
            .map_err(|error| ShimError::Call {
                peer: Peer::Agent,
                method: "Version",
                error: Leaf(error),
            })
    };
    match within(Peer::Agent, "Version", RESTART_TIMEOUT, version)
        .await
        .and_then(|read| read)
    {
        Ok(version) => info!("a new agent (contract version {version}) runs"),
        Err(e) => error!("{}", chain(&e)),
    }
}

fn is_unknown_method(e: &ShimError) -> bool {
    let ShimError::Call {
        error: Leaf(error), ..
    } = e
    else {
        return false;
    };
    match error {
        zbus::Error::FDO(e) => matches!(**e, zbus::fdo::Error::UnknownMethod(_)),
        zbus::Error::MethodError(name, ..) => {
            name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod"
        }
        _ => false,
    }
}

/// The ifindex of `name` in the plugin's own namespace, which the agent checks before moving it.
fn ifindex(name: &str) -> Result<u32, ShimError> {
    let not_found = |error| ShimError::NoTun {
        name: name.to_owned(),
        error,
    };
    let c_name = std::ffi::CString::new(name)
        .map_err(|e| not_found(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call, which only reads it.
    match unsafe { nix::libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(not_found(io::Error::last_os_error())),
        index => Ok(index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::error::tests::bus_error;

    #[test]
    fn ifindex_of_loopback() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        let e = chain(&ifindex("nm-vpn-netns-x").unwrap_err());
        assert!(
            e.starts_with("no link \"nm-vpn-netns-x\" in the plugin's network namespace: "),
            "{e}"
        );
    }

    /// The agent's own errors and the bus's keep their names in what NM logs.
    #[tokio::test]
    async fn agent_and_bus_errors_keep_their_names() {
        let fail = |name| {
            let error = AgentError::from(bus_error(name, "why"));
            bounded::<()>("Isolate", CALL_TIMEOUT, async { Err(error) })
        };
        let e = fail("io.github.NmVpnNetns.Agent1.Error.InUse")
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ShimError::Agent {
                    error: AgentError::InUse(_),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            chain(&e),
            "Isolate of the agent failed: io.github.NmVpnNetns.Agent1.Error.InUse: why"
        );
        let e = fail("org.freedesktop.DBus.Error.ServiceUnknown")
            .await
            .unwrap_err();
        assert_eq!(
            chain(&e),
            "Isolate of the agent failed: org.freedesktop.DBus.Error.ServiceUnknown: why"
        );
        assert_eq!(e.failure(), crate::shim::session::failure::CONNECT_FAILED);
    }
}
