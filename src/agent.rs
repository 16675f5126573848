//! The privileged agent's D-Bus facade.
//!
//! NetworkManager's plugins run without `CAP_SYS_ADMIN` and in a private mount namespace, so they
//! cannot create a namespace that a user's shell would see. The agent runs outside that sandbox,
//! activated by the bus, and does the namespace work for them. This module only decodes requests,
//! checks the caller, keeps leases and maps errors to D-Bus names; `config` and `plan` validate,
//! and `executor` touches the kernel on a thread of its own.
//!
//! ```text
//! // Bus name io.github.NmVpnNetns.Agent1, object /io/github/NmVpnNetns/Agent1
//! interface io.github.NmVpnNetns.Agent1 {
//!   // Moves the tun into its namespace and configures it there. Answers once it is done, or
//!   // fails having undone everything. The caller's unique name holds the lease: if it leaves
//!   // the bus, the agent releases the namespace as Release would.
//!   //
//!   // request: "id" s, "uuid" s (connection.id/uuid), "permissions" as (connection.permissions),
//!   //   "netns-settings" a{ss} (the connection's netns-* keys, as in vpn.data),
//!   //   "never-default-v4" b, "never-default-v6" b (ipv4/ipv6.never-default),
//!   //   "ifindex" u (the tun in the caller's namespace),
//!   //   "config" a{sv}, "ip4-config" a{sv}, "ip6-config" a{sv} (as the VPN plugin reported them;
//!   //   the last two optional)
//!   // result: "netns" s, "link" s (the tun's name inside), "created" b, "elapsed-us" t
//!   Isolate(in a{sv} request, out a{sv} result);
//!
//!   // Re-applies addresses, routes and DNS after openvpn re-sent its config (a soft restart
//!   // where it kept root). The tun is already inside; only the lease holder may call it.
//!   // ip4/ip6 may be empty dicts.
//!   Reapply(in s netns, in a{sv} config, in a{sv} ip4, in a{sv} ip6);
//!
//!   // Ends the caller's lease on the namespace: see DESIGN.md, "What Release does".
//!   Release(in s netns);
//!
//!   property u Version;  // 1
//! }
//! errors: io.github.NmVpnNetns.Agent1.Error.{InvalidArgs, AccessDenied, InUse, Timeout, Failed}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use log::{error, info, warn};
use tokio::sync::{oneshot, Mutex};
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::{fdo, interface, Connection, OwnedVariant, Variant};

use crate::config::{self, ConnectionInfo, IpSettings, NetnsName};
use crate::executor::{ExecError, Executor, IsolateRequest, Isolation, TeardownError};
use crate::plan::{self, owned, IsolationPlan, PlanInput, VarDict};
use crate::sys::Sys;

pub const BUS_NAME: &str = "io.github.NmVpnNetns.Agent1";
pub const OBJECT_PATH: &str = "/io/github/NmVpnNetns/Agent1";
pub const INTERFACE_VERSION: u32 = 1;
/// Where the agent reads the host's nsswitch.conf, the base of the namespace's own.
const HOST_NSSWITCH: &str = "/etc/nsswitch.conf";

/// Errors as D-Bus callers see them; the name tells a program what happened, the message a person.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.github.NmVpnNetns.Agent1.Error")]
pub enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The request is malformed or names something invalid.
    InvalidArgs(String),
    /// The caller may not do this.
    AccessDenied(String),
    /// The namespace is leased by another VPN, or belongs to another connection.
    InUse(String),
    /// netns-timeout passed before the namespace was ready; everything was undone.
    Timeout(String),
    /// The kernel or the file system refused; everything was undone.
    Failed(String),
}

impl From<ExecError> for AgentError {
    fn from(e: ExecError) -> Self {
        let msg = error_chain(&e);
        match e {
            ExecError::Timeout { .. } => AgentError::Timeout(msg),
            ExecError::InUse { .. } | ExecError::OwnedByOther { .. } => AgentError::InUse(msg),
            ExecError::ForeignNetns { .. } => AgentError::AccessDenied(msg),
            ExecError::Dco { .. }
            | ExecError::NotTun { .. }
            | ExecError::LinkMissing { .. }
            | ExecError::LinkRenamed { .. }
            | ExecError::NotIsolated { .. }
            | ExecError::PlanMismatch { .. } => AgentError::InvalidArgs(msg),
            ExecError::Sys(_) | ExecError::NetnsGone { .. } | ExecError::Incomplete { .. } => {
                AgentError::Failed(msg)
            }
        }
    }
}

/// The full chain of causes in one line, because a D-Bus error carries only a string and NM logs
/// exactly that string. A cause that a message already quotes is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !msg.contains(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
        source = s.source();
    }
    msg
}

/// Work for the executor thread. The executor calls `setns` on threads it spawns itself, so it
/// must never run on a tokio worker; one thread owns it and serialises every change.
enum Job {
    Isolate(
        Box<IsolateRequest>,
        oneshot::Sender<Result<Isolation, ExecError>>,
    ),
    Reapply(Box<IsolationPlan>, oneshot::Sender<Result<(), ExecError>>),
    Release(NetnsName, oneshot::Sender<Result<(), TeardownError>>),
}

#[derive(Clone)]
struct ExecutorHandle(std::sync::mpsc::Sender<Job>);

impl ExecutorHandle {
    fn spawn<S: Sys + Send + 'static>(mut executor: Executor<S>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("executor".into())
            .spawn(move || {
                for job in rx {
                    // A caller that gave up is no reason to stop; its lease is released apart.
                    match job {
                        Job::Isolate(req, reply) => drop(reply.send(executor.isolate(&req))),
                        Job::Reapply(plan, reply) => {
                            drop(reply.send(executor.reapply(&plan.netns, &plan)))
                        }
                        Job::Release(ns, reply) => drop(reply.send(executor.release(&ns))),
                    }
                }
            })?;
        Ok(ExecutorHandle(tx))
    }

    async fn isolate(&self, req: IsolateRequest) -> Result<Isolation, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Isolate(Box::new(req), tx))?;
        Ok(rx.await.map_err(|_| executor_gone())??)
    }

    async fn reapply(&self, plan: IsolationPlan) -> Result<(), AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Reapply(Box::new(plan), tx))?;
        Ok(rx.await.map_err(|_| executor_gone())??)
    }

    async fn release(&self, netns: NetnsName) -> Result<(), AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Release(netns, tx))?;
        rx.await
            .map_err(|_| executor_gone())?
            .map_err(|e| AgentError::Failed(error_chain(&e)))
    }

    fn send(&self, job: Job) -> Result<(), AgentError> {
        self.0.send(job).map_err(|_| executor_gone())
    }
}

fn executor_gone() -> AgentError {
    AgentError::Failed("the agent's executor thread has stopped".into())
}

/// One isolation's holder: the caller's unique bus name (`""` on a peer-to-peer connection), and
/// what a re-sent config needs to be planned again.
struct Lease {
    owner: String,
    never_default_v4: bool,
    never_default_v6: bool,
}

type Leases = Arc<Mutex<HashMap<NetnsName, Lease>>>;

pub struct Agent {
    executor: ExecutorHandle,
    leases: Leases,
}

impl Agent {
    pub fn new<S: Sys + Send + 'static>(executor: Executor<S>) -> std::io::Result<Self> {
        Ok(Agent {
            executor: ExecutorHandle::spawn(executor)?,
            leases: Leases::default(),
        })
    }

    /// Releases every lease held by `owner`, as if it had called Release for each. Used when a
    /// caller leaves the bus, e.g. because the plugin crashed.
    pub async fn release_owner(&self, owner: &str) {
        let names: Vec<NetnsName> = {
            let leases = self.leases.lock().await;
            leases
                .iter()
                .filter(|(_, lease)| lease.owner == owner)
                .map(|(n, _)| n.clone())
                .collect()
        };
        for ns in names {
            info!("caller {owner} left the bus; releasing its lease on namespace {ns}");
            self.leases.lock().await.remove(&ns);
            if let Err(e) = self.executor.release(ns).await {
                error!("releasing after {owner} left: {e}");
            }
        }
    }
}

/// The uid of the caller: asked of the bus when there is one, or of the socket's peer on a
/// peer-to-peer connection (where the peer is the caller itself).
async fn caller_uid(conn: &Connection, sender: Option<&UniqueName<'_>>) -> Result<u32, AgentError> {
    let uid = match sender {
        Some(sender) if conn.unique_name().is_some() => fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| {
                AgentError::AccessDenied(format!("cannot identify the caller {sender}: {e}"))
            })?,
        _ => conn
            .peer_creds()
            .await
            .map_err(|e| AgentError::AccessDenied(format!("cannot identify the caller: {e}")))?
            .unix_user_id()
            .ok_or_else(|| AgentError::AccessDenied("the caller's uid is unknown".into()))?,
    };
    Ok(uid)
}

/// Only root may call: the D-Bus policy says so too, but a policy can be loosened by mistake.
async fn authorize(
    conn: &Connection,
    hdr: &Header<'_>,
    method: &str,
) -> Result<String, AgentError> {
    let uid = caller_uid(conn, hdr.sender()).await?;
    let owner = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
    if uid != 0 {
        warn!("refused {method} from {owner} (uid {uid}): only root may call the agent");
        return Err(AgentError::AccessDenied(format!(
            "only root may call {method}; the caller has uid {uid}"
        )));
    }
    Ok(owner)
}

fn read_host_nsswitch() -> String {
    // A host without the file gets glibc's defaults, which the plan's own `hosts:` line overrides.
    std::fs::read_to_string(HOST_NSSWITCH).unwrap_or_default()
}

fn plan_error(e: plan::PlanError) -> AgentError {
    AgentError::InvalidArgs(error_chain(&e))
}

/// The `Isolate` request with every field decoded and validated: nothing in it is trusted until
/// `config::parse` and `plan::build` accepted it.
fn decode_request(
    req: &HashMap<String, OwnedVariant>,
    owner: String,
) -> Result<(IsolateRequest, Lease), AgentError> {
    let invalid = |msg: String| AgentError::InvalidArgs(msg);
    let get = |key: &str| req.get(key).map(|v| &**v);
    let string = |key: &str| -> Result<String, AgentError> {
        match get(key) {
            Some(Variant::Str(s)) => Ok(s.to_string()),
            Some(v) => Err(invalid(format!(
                "request field {key:?} must be a string, not {}",
                v.value_signature()
            ))),
            None => Err(invalid(format!("request field {key:?} is missing"))),
        }
    };
    let flag = |key: &str| -> Result<bool, AgentError> {
        match get(key) {
            Some(Variant::Bool(b)) => Ok(*b),
            Some(v) => Err(invalid(format!(
                "request field {key:?} must be a boolean, not {}",
                v.value_signature()
            ))),
            None => Ok(false),
        }
    };
    let dict = |key: &str| -> Result<Option<VarDict>, AgentError> {
        match get(key) {
            None => Ok(None),
            Some(v) => VarDict::try_from(v.try_clone().map_err(|e| invalid(e.to_string()))?)
                .map(Some)
                .map_err(|_| {
                    invalid(format!(
                        "request field {key:?} must be a{{sv}}, not {}",
                        v.value_signature()
                    ))
                }),
        }
    };
    let ifindex = match get("ifindex") {
        Some(Variant::U32(i)) if *i > 0 => *i,
        _ => {
            return Err(invalid(
                "request field \"ifindex\" must be a positive u32".into(),
            ))
        }
    };
    let permissions: Vec<String> = match get("permissions") {
        None => Vec::new(),
        Some(v) => Vec::<String>::try_from(v.try_clone().map_err(|e| invalid(e.to_string()))?)
            .map_err(|_| invalid("request field \"permissions\" must be as".into()))?,
    };
    let netns_settings: BTreeMap<String, String> = match get("netns-settings") {
        None => BTreeMap::new(),
        Some(v) => {
            HashMap::<String, String>::try_from(v.try_clone().map_err(|e| invalid(e.to_string()))?)
                .map_err(|_| invalid("request field \"netns-settings\" must be a{ss}".into()))?
                .into_iter()
                .collect()
        }
    };
    let conn = ConnectionInfo {
        id: string("id")?,
        uuid: string("uuid")?,
        permissions,
        ipv4: IpSettings {
            never_default: flag("never-default-v4")?,
            ..Default::default()
        },
        ipv6: IpSettings {
            never_default: flag("never-default-v6")?,
            ..Default::default()
        },
    };
    // The deadline starts when the request arrives, before any validation work.
    let start = Instant::now();
    let settings = config::parse(&netns_settings, &conn).map_err(|e| invalid(error_chain(&e)))?;
    if !settings.isolate {
        return Err(invalid(format!(
            "connection {:?} does not ask for isolation (netns-isolate is not yes)",
            conn.id
        )));
    }
    let config =
        dict("config")?.ok_or_else(|| invalid("request field \"config\" is missing".into()))?;
    let (ip4, ip6) = (dict("ip4-config")?, dict("ip6-config")?);
    let host_nsswitch = read_host_nsswitch();
    let plan = plan::build(&PlanInput {
        netns: settings.name.clone(),
        never_default_v4: settings.never_default_v4,
        never_default_v6: settings.never_default_v6,
        config: &config,
        ip4_config: ip4.as_ref(),
        ip6_config: ip6.as_ref(),
        host_nsswitch: &host_nsswitch,
    })
    .map_err(plan_error)?;
    let lease = Lease {
        owner: owner.clone(),
        never_default_v4: settings.never_default_v4,
        never_default_v6: settings.never_default_v6,
    };
    let req = IsolateRequest {
        plan,
        connection_uuid: settings.connection_uuid,
        connection_id: settings.connection_id,
        persistent: settings.persistent,
        system_connection: settings.system_connection,
        tun_ifindex: ifindex,
        owner,
        deadline: start + settings.timeout,
    };
    Ok((req, lease))
}

#[interface(name = "io.github.NmVpnNetns.Agent1")]
impl Agent {
    async fn isolate(
        &self,
        request: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<HashMap<String, OwnedVariant>, AgentError> {
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
        let owner = authorize(conn, &hdr, "Release").await?;
        let ns = parse_netns(netns)?;
        {
            let mut leases = self.leases.lock().await;
            check_holder(&leases, &ns, &owner)?;
            leases.remove(&ns);
        }
        let result = self.executor.release(ns.clone()).await;
        match &result {
            Ok(()) => info!("released namespace {ns} for {owner}"),
            Err(e) => error!("Release of {ns} failed: {e}"),
        }
        result
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
        let owner = authorize(conn, &hdr, "Reapply").await?;
        let ns = parse_netns(netns)?;
        let (never_default_v4, never_default_v6) = {
            let leases = self.leases.lock().await;
            let lease = check_holder(&leases, &ns, &owner)?;
            (lease.never_default_v4, lease.never_default_v6)
        };
        let host_nsswitch = read_host_nsswitch();
        let plan = plan::build(&PlanInput {
            netns: ns.clone(),
            never_default_v4,
            never_default_v6,
            config: &config,
            ip4_config: (!ip4.is_empty()).then_some(&ip4),
            ip6_config: (!ip6.is_empty()).then_some(&ip6),
            host_nsswitch: &host_nsswitch,
        })
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
        INTERFACE_VERSION
    }
}

impl Agent {
    async fn isolate_checked(
        &self,
        request: HashMap<String, OwnedVariant>,
        hdr: &Header<'_>,
        conn: &Connection,
    ) -> Result<HashMap<String, OwnedVariant>, AgentError> {
        let owner = authorize(conn, hdr, "Isolate").await?;
        let (req, lease) = decode_request(&request, owner)?;
        let ns = req.plan.netns.clone();
        {
            let mut leases = self.leases.lock().await;
            if leases.contains_key(&ns) {
                return Err(AgentError::InUse(format!(
                    "namespace {ns} already holds an active VPN; only one VPN may use a namespace at a time"
                )));
            }
            leases.insert(ns.clone(), lease);
        }
        let (id, tun) = (req.connection_id.clone(), req.plan.link.name.to_string());
        match self.executor.isolate(req).await {
            Ok(iso) => {
                info!(
                    "isolated connection {id:?}: tun {tun} is {} in namespace {} ({}) in {} ms",
                    iso.link,
                    iso.netns,
                    if iso.created { "new" } else { "reused" },
                    iso.elapsed.as_millis()
                );
                let mut out = HashMap::new();
                out.insert(
                    "netns".to_owned(),
                    owned(Variant::from(iso.netns.to_string())),
                );
                out.insert("link".to_owned(), owned(Variant::from(iso.link)));
                out.insert("created".to_owned(), owned(Variant::from(iso.created)));
                out.insert(
                    "elapsed-us".to_owned(),
                    owned(Variant::from(iso.elapsed.as_micros() as u64)),
                );
                Ok(out)
            }
            Err(e) => {
                self.leases.lock().await.remove(&ns);
                Err(e)
            }
        }
    }
}

fn parse_netns(netns: String) -> Result<NetnsName, AgentError> {
    netns
        .parse()
        .map_err(|e: config::ConfigError| AgentError::InvalidArgs(e.to_string()))
}

/// The caller's lease on `ns`, or why it has none.
fn check_holder<'a>(
    leases: &'a HashMap<NetnsName, Lease>,
    ns: &NetnsName,
    owner: &str,
) -> Result<&'a Lease, AgentError> {
    match leases.get(ns) {
        Some(lease) if lease.owner == owner => Ok(lease),
        Some(_) => Err(AgentError::AccessDenied(format!(
            "namespace {ns} is leased by another caller"
        ))),
        None => Err(AgentError::InvalidArgs(format!(
            "namespace {ns} is not leased"
        ))),
    }
}

/// Releases the leases of callers that leave the bus, so a crashed plugin never strands a namespace.
pub async fn watch_callers(conn: Connection) -> zbus::Result<()> {
    use futures_util::StreamExt;
    let dbus = fdo::DBusProxy::new(&conn).await?;
    let mut changes = dbus.receive_name_owner_changed().await?;
    let server = conn.object_server();
    let agent = server.interface::<_, Agent>(OBJECT_PATH).await?;
    while let Some(signal) = changes.next().await {
        let Ok(args) = signal.args() else { continue };
        if args.new_owner().is_none() && args.name().starts_with(':') {
            agent.get().await.release_owner(args.name()).await;
        }
    }
    Ok(())
}

/// Exposes `agent` on `conn` under the agent's object path.
pub async fn serve(conn: &Connection, agent: Agent) -> zbus::Result<()> {
    conn.object_server().at(OBJECT_PATH, agent).await?;
    Ok(())
}
