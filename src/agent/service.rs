//! The agent's D-Bus facade: serves [`crate::contract`] at its object path.
//!
//! It only checks the caller, decodes and plans requests, keeps leases and maps errors to the
//! contract's names; `plan` validates, and the [`Executor`] touches the kernel on a thread of
//! its own.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use tokio::sync::Notify;
use zbus::fdo::ConnectionCredentials;
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::object_server::SignalEmitter;
use zbus::{fdo, interface, Connection};

use crate::agent::executor::{ExecError, Executor};
use crate::agent::leases::{Lease, Leases};
use crate::agent::lifecycle::{self, Exe, Fate};
use crate::agent::linkwatch::{Lost, Opener, Watches};
use crate::agent::policy::{self, Policy, UidOf};
use crate::agent::procs::Started;
use crate::agent::record::Record;
use crate::agent::request::{self, decode_request, plan_error, read_host_nsswitch, Asker};
use crate::agent::sys::{pid_comm, Process, Sys};
use crate::contract::{
    self, AgentError, DeleteReport, IsolateReply, NetnsEntry, PrepareReply, ReleaseReport,
};
use crate::plan::settings::{self, NetnsName};
use crate::plan::VarDict;
use crate::report::chain;

mod admin;
mod jobs;
mod prepare;

use jobs::{executor_gone, Answer, ExecutorHandle, Job};

/// When a lease's holder leaves the bus without releasing, as a killed plugin does: how long the
/// processes it started get after SIGTERM ([`Started::end`]), and then after SIGKILL; and, if
/// they are not known to have ended, how long the release waits for the tun to go
/// ([`Watches::stop_once_lost`]). Its stock service gets SIGTERM from the kernel too, and
/// normally ends openvpn itself; but on booted Debian 13 it once exited and left openvpn running,
/// which then spun on a tun destroyed with its namespace. openvpn sends the server its exit
/// notice first, which took 1.3 s on the e2e rig.
const DEPARTED_GRACE: Duration = Duration::from_secs(5);

impl From<ExecError> for AgentError {
    fn from(e: ExecError) -> Self {
        // A D-Bus error carries only a string, and NetworkManager logs exactly that string.
        let msg = chain(&e);
        match e {
            ExecError::Timeout { .. } => AgentError::Timeout(msg),
            ExecError::InUse { .. }
            | ExecError::OwnedByOther { .. }
            | ExecError::Connected { .. }
            | ExecError::Busy { .. } => AgentError::InUse(msg),
            ExecError::NoRecord { .. } => AgentError::UnknownNetns(msg),
            ExecError::ForeignNetns { .. }
            | ExecError::ForeignNotListed { .. }
            | ExecError::NotOurs { .. }
            | ExecError::UserLimit { .. } => AgentError::AccessDenied(msg),
            ExecError::Dco { .. }
            | ExecError::NotTun { .. }
            | ExecError::LinkMissing { .. }
            | ExecError::LinkRenamed { .. }
            | ExecError::NotIsolated { .. }
            | ExecError::PlanMismatch { .. } => AgentError::InvalidArgs(msg),
            ExecError::Sys(_)
            | ExecError::NetnsGone { .. }
            | ExecError::Incomplete { .. }
            | ExecError::Teardown(_)
            | ExecError::Leftover(_) => AgentError::Failed(msg),
        }
    }
}

/// When to exit: after the last release, if the executable was replaced since the start.
struct Retirement {
    exe: Exe,
    exit: Arc<Notify>,
}

pub struct Agent {
    executor: ExecutorHandle,
    /// The administrator's policy file, read at each `Isolate`.
    policy: PathBuf,
    /// How a user connection's uid is found: by NSS, but in tests.
    uid_of: UidOf,
    leases: Arc<Leases>,
    /// The leased records found at start, until [`Agent::adopt`] decides on them.
    held_at_start: Vec<Record>,
    retirement: Option<Retirement>,
    /// The watch on each isolated tun.
    pub(super) watches: Watches,
}

impl Agent {
    pub fn new<S: Sys + Send + 'static>(executor: Executor<S>) -> std::io::Result<Self> {
        let held_at_start = executor.records().filter(|r| r.leased).cloned().collect();
        Ok(Agent {
            policy: executor.paths().policy.clone(),
            uid_of: policy::system_uid,
            watches: Watches::new(executor.paths().run_netns.clone()),
            executor: ExecutorHandle::spawn(executor)?,
            leases: Arc::default(),
            held_at_start,
            retirement: None,
        })
    }

    /// Finds a user connection's uid with `uid_of` instead of NSS.
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_uid_of(self, uid_of: UidOf) -> Self {
        Agent { uid_of, ..self }
    }

    /// The holders of the leases found at start, whose presence on the bus decides [`Agent::adopt`].
    pub fn holders_at_start(&self) -> BTreeSet<String> {
        self.held_at_start
            .iter()
            .map(|r| r.owner.clone())
            .filter(|owner| !owner.is_empty())
            .collect()
    }

    /// Takes back each lease found at start whose holder is `live` on the bus, and releases the
    /// others as if their holder had left the bus while no agent watched. Runs before the agent
    /// serves anything (see [`lifecycle::run`]), so no call meets a lease still undecided.
    pub async fn adopt(&mut self, live: &HashSet<String>) {
        for record in std::mem::take(&mut self.held_at_start) {
            let (ns, id, owner) = (&record.netns, &record.connection_id, &record.owner);
            let why = match lifecycle::fate(owner, live) {
                Fate::Adopt => {
                    info!(
                        "took back the lease on namespace {ns} (connection {id:?}): its holder \
                         {owner} is still on the bus"
                    );
                    let lease = Lease::from(&record);
                    self.leases.lock().await.held.insert(ns.clone(), lease);
                    self.watches.adopted(&record);
                    continue;
                }
                Fate::HolderGone => format!("its holder {owner} left the bus while no agent ran"),
                Fate::PeerToPeer => "it was leased over a peer-to-peer connection, which ended \
                                     with the agent that served it"
                    .to_owned(),
            };
            info!("releasing namespace {ns} (connection {id:?}): {why}");
            if let Err(e) = self.executor.release(ns.clone(), false).await {
                error!("releasing {ns} at start: {e}");
            }
        }
    }

    /// Makes the agent exit once its last lease is released, if by then `exe` was replaced on
    /// disk (an upgrade that kept it running): the bus then starts the new binary on the next
    /// call. Resolves the returned `Notify` when the agent is to exit.
    pub fn exit_when_replaced(&mut self, exe: Exe) -> Arc<Notify> {
        let exit = Arc::new(Notify::new());
        self.retirement = Some(Retirement {
            exe,
            exit: exit.clone(),
        });
        exit
    }

    /// Watches each tun isolated from now on with `open`, and tells the lease holder when it
    /// leaves its namespace (see [`crate::agent::linkwatch`]).
    pub fn watch_links(&mut self, open: Opener) {
        self.watches.open = Some(open);
    }

    /// After a release: with no lease left and the executable replaced, the agent is to exit.
    async fn after_release(&self) {
        let Some(Retirement { exe, exit }) = &self.retirement else {
            return;
        };
        let mut leases = self.leases.lock().await;
        if leases.held.is_empty() && !leases.retiring && exe.replaced() {
            leases.retiring = true;
            info!(
                "the last lease is released and {} was replaced on disk; exiting, so that the \
                 bus starts the new binary on the next call",
                exe.path.display()
            );
            exit.notify_one();
        }
    }

    /// Releases every lease held by `owner`, as if it had called Release for each. Used when a
    /// caller leaves the bus, e.g. because the plugin crashed.
    pub async fn release_owner(&self, owner: &str) {
        let names: Vec<NetnsName> = {
            let leases = self.leases.lock().await;
            leases
                .held
                .iter()
                .filter(|(_, lease)| lease.owner == owner)
                .map(|(n, _)| n.clone())
                .collect()
        };
        if names.is_empty() {
            return;
        }
        for ns in names {
            let Ok(lease) = self.leases.lock().await.start_release(&ns, owner) else {
                // Released meanwhile, and perhaps leased again by another caller.
                continue;
            };
            info!(
                "caller {owner} left the bus; ending {}, and releasing its lease on namespace \
                 {ns} once its tun is gone",
                lease.started
            );
            // Once every process of the VPN has exited, its tun is closed: openvpn's is gone
            // with it, and a persistent one, as NetworkManager-openconnect makes, never goes by
            // itself, so waiting for it would only wait out the grace; the release deletes it.
            if lease.started.end(DEPARTED_GRACE).await {
                self.watches.stop(&ns);
            } else {
                self.watches.stop_once_lost(&ns, DEPARTED_GRACE).await;
            }
            if let Err(e) = self
                .executor
                .release(ns.clone(), lease.prepared.is_some())
                .await
            {
                error!("releasing after {owner} left: {e}");
            }
            self.leases.released(&ns).await;
        }
        self.after_release().await;
    }
}

/// Who asks: its unique bus name (`""` on a peer-to-peer connection), and its process.
struct Caller {
    owner: String,
    pid: Option<u32>,
}

/// The caller's credentials: asked of the bus when there is one, or of the socket's peer on a
/// peer-to-peer connection (where the peer is the caller itself).
async fn caller_creds(
    conn: &Connection,
    sender: Option<&UniqueName<'_>>,
) -> Result<Arc<ConnectionCredentials>, AgentError> {
    Ok(match sender {
        Some(sender) if conn.unique_name().is_some() => Arc::new(
            fdo::DBusProxy::new(conn)
                .await?
                .get_connection_credentials(sender.clone().into())
                .await
                .map_err(|e| {
                    AgentError::AccessDenied(format!("cannot identify the caller {sender}: {e}"))
                })?,
        ),
        _ => conn
            .peer_creds()
            .await
            .map_err(|e| AgentError::AccessDenied(format!("cannot identify the caller: {e}")))?
            .clone(),
    })
}

/// Only root may call: the D-Bus policy says so too, but a policy can be loosened by mistake.
async fn authorize(
    conn: &Connection,
    hdr: &Header<'_>,
    method: &str,
) -> Result<Caller, AgentError> {
    let creds = caller_creds(conn, hdr.sender()).await?;
    let uid = creds
        .unix_user_id()
        .ok_or_else(|| AgentError::AccessDenied("the caller's uid is unknown".into()))?;
    let owner = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
    if uid != 0 {
        warn!("refused {method} from {owner} (uid {uid}): only root may call the agent");
        return Err(AgentError::AccessDenied(format!(
            "only root may call {method}; the caller has uid {uid}"
        )));
    }
    Ok(Caller {
        owner,
        pid: creds.process_id(),
    })
}

/// Everything `Isolate` checks before it touches the system, under the default policy, alone: for
/// the fuzzers (`fuzz/`) and the test that replays what they found.
#[doc(hidden)]
pub fn validate_request(req: &VarDict) -> Result<(), AgentError> {
    decode_request(req, Asker::anonymous()).map(drop)
}

#[interface(name = "io.github.NmVpnNetns.Agent1")]
impl Agent {
    async fn prepare(
        &self,
        request: VarDict,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<PrepareReply, AgentError> {
        let result = self.prepare_checked(request, &hdr, conn).await;
        if let Err(e) = &result {
            error!("Prepare failed: {e}");
        }
        result
    }

    async fn isolate(
        &self,
        request: VarDict,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<IsolateReply, AgentError> {
        let result = self.isolate_checked(request, &hdr, conn).await;
        if let Err(e) = &result {
            error!("Isolate failed: {e}");
        }
        result
    }

    async fn release(
        &self,
        netns: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), AgentError> {
        self.release_checked(netns, &hdr, conn, "Release")
            .await
            .map(drop)
    }

    async fn release_with_report(
        &self,
        netns: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<ReleaseReport, AgentError> {
        let stranded = self
            .release_checked(netns, &hdr, conn, "ReleaseWithReport")
            .await?;
        Ok(ReleaseReport {
            stranded: Some(pid_comm(&stranded)),
        })
    }

    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<Vec<NetnsEntry>, AgentError> {
        authorize(conn, &hdr, "List").await?;
        self.executor.list().await
    }

    async fn delete(
        &self,
        netns: String,
        force: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<DeleteReport, AgentError> {
        let (owner, ns) = authorize_on(conn, &hdr, "Delete", netns).await?;
        self.delete_checked(ns, force, &owner).await
    }

    async fn reapply(
        &self,
        netns: String,
        config: VarDict,
        ip4: VarDict,
        ip6: VarDict,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), AgentError> {
        let (owner, ns) = authorize_on(conn, &hdr, "Reapply", netns).await?;
        let host_nsswitch = read_host_nsswitch();
        let plan = {
            let leases = self.leases.lock().await;
            let lease = leases.lease_of(&ns, &owner)?;
            lease.replan(ns.clone(), &config, (&ip4, &ip6), &host_nsswitch)
        }
        .map_err(plan_error)?;
        let result = self.executor.reapply(plan).await;
        match &result {
            Ok(()) => info!("re-applied the VPN's new config in namespace {ns}"),
            Err(e) => error!("Reapply failed: {e}"),
        }
        result
    }

    #[zbus(property)]
    fn version(&self) -> u32 {
        contract::VERSION
    }

    /// `LinkLost`, as [`crate::contract::Agent1Proxy`] declares it; sent by
    /// [`crate::agent::linkwatch`] to the lease holder alone.
    #[zbus(signal)]
    pub(crate) async fn link_lost(
        emitter: &SignalEmitter<'_>,
        netns: &str,
        link: &str,
        reason: &str,
    ) -> zbus::Result<()>;
}

impl Agent {
    /// `Release` and `ReleaseWithReport`: the processes the release stranded, if it deleted the
    /// namespace under them.
    async fn release_checked(
        &self,
        netns: String,
        hdr: &Header<'_>,
        conn: &Connection,
        method: &str,
    ) -> Result<Vec<Process>, AgentError> {
        let (owner, ns) = authorize_on(conn, hdr, method, netns).await?;
        let lease = self.leases.lock().await.start_release(&ns, &owner)?;
        self.watches.stop(&ns);
        let result = self
            .executor
            .release(ns.clone(), lease.prepared.is_some())
            .await;
        self.leases.released(&ns).await;
        match &result {
            Ok(_) => info!("released namespace {ns} for {owner}"),
            Err(e) => error!("{method} of {ns} failed: {e}"),
        }
        self.after_release().await;
        result
    }

    async fn isolate_checked(
        &self,
        request: VarDict,
        hdr: &Header<'_>,
        conn: &Connection,
    ) -> Result<IsolateReply, AgentError> {
        let (asker, pid) = self.asker(conn, hdr, "Isolate").await?;
        let req = request::off_the_loop(move || decode_request(&request, asker)).await?;
        let (ns, owner) = (req.plan.netns.clone(), req.claim.owner.clone());
        let preparation = self
            .leases
            .take(&ns, Lease::from(&req), req.claim.deadline)
            .await?;
        let (id, tun) = (
            req.claim.connection_id.clone(),
            req.plan.link.name.to_string(),
        );
        let isolated = self
            .queue(conn, &ns, &owner, |executor| executor.isolate(req))
            .await;
        match isolated {
            Ok(iso) => {
                info!(
                    "isolated connection {id:?}: tun {tun} is {} in namespace {} ({}) in {} ms",
                    iso.link,
                    iso.netns,
                    if iso.created { "new" } else { "reused" },
                    iso.elapsed.as_millis()
                );
                let (netns, link) = (iso.netns.clone(), iso.link.clone());
                // openvpn made the tun, so it runs by now, in the stock service's group.
                let started = match pid {
                    Some(pid) => Started::by(pid).await,
                    None => Started::default(),
                };
                // Under the lease lock: a release that began meanwhile (the caller left the bus)
                // has the lease, and no watch may start to report its deletion of the namespace.
                let mut leases = self.leases.lock().await;
                if let Some(lease) = leases.held.get_mut(&netns).filter(|l| l.owner == owner) {
                    lease.started = started;
                    self.watches.start(conn, Lost { netns, link, owner });
                }
                drop(leases);
                Ok(IsolateReply {
                    netns: iso.netns.to_string(),
                    link: iso.link,
                    created: iso.created || preparation.is_some_and(|p| p.created),
                    elapsed_us: iso.elapsed.as_micros() as u64,
                })
            }
            Err(e) => {
                match preparation {
                    Some(p) => self.leases.give_back(&ns, &owner, p).await,
                    None => self.leases.drop_lease(&ns, &owner).await,
                }
                Err(e)
            }
        }
    }

    /// Who asks for `method`, once authorized, with the policy as it is now; and the caller's
    /// PID, when the bus tells it.
    async fn asker(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        method: &str,
    ) -> Result<(Asker, Option<u32>), AgentError> {
        // `netns-timeout` counts from here, before any check.
        let arrived = Instant::now();
        let caller = authorize(conn, hdr, method).await?;
        // Read at each request, so that a change applies from the next connect on.
        let policy = Policy::load(&self.policy, 0).map_err(|e| AgentError::Failed(chain(&e)))?;
        let asker = Asker {
            owner: caller.owner,
            policy,
            uid_of: self.uid_of,
            arrived,
        };
        Ok((asker, caller.pid))
    }

    /// Runs the work `send` hands the executor for `owner`, who was granted the lease on the
    /// namespace `ns`, if `owner` is still on the bus; and returns the executor's answer.
    async fn queue<T>(
        &self,
        conn: &Connection,
        ns: &NetnsName,
        owner: &str,
        send: impl FnOnce(&ExecutorHandle) -> Result<Answer<T>, AgentError>,
    ) -> Result<T, AgentError> {
        // A caller that left the bus before it got the lease, as while it waited for its
        // connection's previous one, had no lease to release as it left: it gets none now.
        let present = lifecycle::on_the_bus(conn, owner).await.map_err(|e| {
            AgentError::Failed(format!(
                "cannot tell whether caller {owner} is on the bus: {e}"
            ))
        })?;
        if !present {
            return Err(AgentError::Failed(format!(
                "caller {owner} left the bus before namespace {ns} was ready"
            )));
        }
        // Queued under the lock: if the caller leaves from now on, the release of its lease
        // runs after this isolation on the executor, never before it.
        let answer = {
            let leases = self.leases.lock().await;
            leases.lease_of(ns, owner)?;
            send(&self.executor)?
        };
        Ok(answer.await.map_err(|_| executor_gone())??)
    }
}

/// [`authorize`] for a method on the namespace `netns`, which must be a valid name.
async fn authorize_on(
    conn: &Connection,
    hdr: &Header<'_>,
    method: &str,
    netns: String,
) -> Result<(String, NetnsName), AgentError> {
    let owner = authorize(conn, hdr, method).await?.owner;
    let ns = netns
        .parse()
        .map_err(|e: settings::SettingsError| AgentError::InvalidArgs(e.to_string()))?;
    Ok((owner, ns))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use zbus::object_server::Interface;
    use zbus::OwnedVariant;

    use super::{decode_request, Agent, Asker, Lease};
    use crate::contract::INTERFACE;
    use crate::plan::VarDict;

    /// The `#[interface]` attribute takes no constant, so its literal is checked here.
    #[test]
    fn serves_the_contract_interface() {
        assert_eq!(Agent::name().as_str(), INTERFACE);
    }

    /// The request's `tunnel-mtu` is what the tun gets, not Config's `mtu` (1500 from
    /// nm-openvpn's helper), and the lease keeps it for a `Reapply`.
    #[test]
    fn the_requests_tunnel_mtu_is_planned_and_leased() {
        let ov = |v: zbus::Variant<'_>| OwnedVariant::try_from(v).unwrap();
        let dict = |e: Vec<(&str, OwnedVariant)>| -> VarDict {
            e.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        };
        let config = dict(vec![
            ("tundev", ov("tun0".into())),
            ("gateway", ov(0x0100_12c6u32.into())),
            ("mtu", ov(1500u32.into())),
            ("has-ip4", ov(true.into())),
        ]);
        let ip4 = dict(vec![
            ("address", ov(0x0200_13c6u32.into())),
            ("prefix", ov(24u32.into())),
        ]);
        let settings = HashMap::from([("netns-isolate".to_owned(), "yes".to_owned())]);
        let request = |tunnel_mtu: Option<u32>| {
            let mut r = dict(vec![
                ("id", ov("work".into())),
                ("uuid", ov("8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b".into())),
                ("permissions", ov(Vec::<String>::new().into())),
                ("netns-settings", ov(settings.clone().into())),
                ("ifindex", ov(7u32.into())),
                ("config", ov(config.clone().into())),
                ("ip4-config", ov(ip4.clone().into())),
            ]);
            if let Some(mtu) = tunnel_mtu {
                r.insert("tunnel-mtu".into(), ov(mtu.into()));
            }
            decode_request(&r, Asker::anonymous()).unwrap()
        };
        let args = request(Some(1400));
        let lease = Lease::from(&args);
        assert_eq!(args.plan.link.mtu, Some(1400), "expected tunnel-mtu");
        assert_eq!(
            (args.claim.tunnel_mtu, lease.tunnel_mtu),
            (Some(1400), Some(1400))
        );
        let args = request(None);
        let lease = Lease::from(&args);
        assert_eq!(args.plan.link.mtu, Some(1500), "expected Config's mtu");
        assert_eq!(lease.tunnel_mtu, None);
    }
}
