//! The VPN plugin shim, `nm-vpn-netns-service`, in front of the stock nm-openvpn service.
//!
//! NetworkManager spawns it as `program --bus-name org.freedesktop.NetworkManager.openvpn.Connection_N`
//! and talks `org.freedesktop.NetworkManager.VPN.Plugin` to that name. The shim starts the stock
//! service under `…openvpn.netns.Connection_N`, forwards NM's calls to it with the `netns-*` keys
//! of `vpn.data` removed, and re-emits its signals: NM only takes them from the owner of the name
//! it spawned. For an isolated connection it holds the stock service's config back, has the agent
//! move the tun into its namespace, and only then tells NM what reaches ACTIVATED without
//! installing anything (DESIGN.md, "What the shim tells NM").
//!
//! [`session`] makes the decisions without I/O; this module is the bus-facing side.

pub mod codec;
pub mod keyfile;
pub mod session;

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use log::{debug, error, info, warn};
use nix::sys::signal::{kill, Signal as UnixSignal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::message::Header;
use zbus::names::{ErrorName, OwnedErrorName};
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::proxy::CacheProperties;
use zbus::{interface, Connection, DBusError, MatchRule, Message, MessageStream};

use crate::contract::{Agent1Proxy, AgentError};
use crate::plan::settings::{NmConnection, SettingsError};
use crate::plan::{PlanError, VarDict};

use codec::NetnsIntent;
use keyfile::KeyFileError;
use session::{failure, state, Action, IsolateCall, ReapplyCall, Session, Signal};

/// NetworkManager-openvpn's service, and the name a plugin owns when NM passes no `--bus-name`.
pub const SERVICE: &str = "org.freedesktop.NetworkManager.openvpn";
/// The stock `.name` file, where install diverts it before writing ours.
pub const STOCK_NAME_FILE: &str = "/usr/lib/NetworkManager/VPN/nm-openvpn-service.name.distrib";
/// The stock service when nothing was diverted (Debian's path).
pub const STOCK_PROGRAM: &str = "/usr/lib/NetworkManager/nm-openvpn-service";

const PLUGIN_PATH: &str = "/org/freedesktop/NetworkManager/VPN/Plugin";
const PLUGIN_INTERFACE: &str = "org.freedesktop.NetworkManager.VPN.Plugin";

// NM_VPN_PLUGIN_ERROR names (NetworkManager's nm-errors.h), which NM logs with the message.
const BAD_ARGUMENTS: &str = "org.freedesktop.NetworkManager.VPN.Error.BadArguments";
const WRONG_STATE: &str = "org.freedesktop.NetworkManager.VPN.Error.WrongState";
const LAUNCH_FAILED: &str = "org.freedesktop.NetworkManager.VPN.Error.LaunchFailed";
const FAILED: &str = "org.freedesktop.NetworkManager.VPN.Error.Failed";
const NO_REPLY: &str = "org.freedesktop.DBus.Error.NoReply";

/// NM allows a plugin as long to own its name; the stock service gets the same.
const INNER_START_TIMEOUT: Duration = Duration::from_secs(5);
/// NM's own bound on each call to a plugin (`DBUS_DEFAULT_TIMEOUT_MSEC`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The stock service sends openvpn SIGTERM, SIGKILL 10 s later, and waits 15 s in all.
const INNER_EXIT_TIMEOUT: Duration = Duration::from_secs(16);
/// On top of `netns-timeout`, which the agent enforces: its D-Bus activation and its rollback.
const AGENT_MARGIN: Duration = Duration::from_secs(5);
/// How long after the stock service's exit the bus gets to report its name lost.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long calls still in progress get to answer before the process exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Whom the shim calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Stock,
    Agent,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Peer::Stock => "the stock service",
            Peer::Agent => "the agent",
        })
    }
}

/// Everything that can go wrong in the shim. Each message is complete in itself, because NM logs
/// only the message of a D-Bus error.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("nm-vpn-netns refused the connection: {0}")]
    Config(SettingsError),
    #[error("the VPN's Config cannot be reported to NetworkManager: {0}")]
    Plan(PlanError),
    #[error("the stock service's Config names no tundev to move into the namespace")]
    NoTunDev,
    #[error("no link {name:?} in the plugin's network namespace: {error}")]
    NoTun { name: String, error: io::Error },
    #[error("cannot read {path}: {error}")]
    NameFile { path: PathBuf, error: io::Error },
    #[error("{path}: {error}")]
    KeyFile { path: PathBuf, error: KeyFileError },
    #[error("{path}: [VPN Connection] has no program")]
    NoProgram { path: PathBuf },
    #[error("{0} is the shim itself, not the stock service")]
    InnerIsShim(PathBuf),
    #[error("bus name {0:?} is neither {SERVICE} nor below it")]
    BusName(String),
    #[error("cannot start the stock service {program}: {error}")]
    Spawn { program: PathBuf, error: io::Error },
    #[error("the stock service did not own {name} within {timeout:?}")]
    InnerStartTimeout { name: String, timeout: Duration },
    #[error("the stock service exited ({status}) before owning {name}")]
    InnerExited { name: String, status: String },
    #[error("the stock service is not running")]
    InnerGone,
    #[error("{peer} did not answer {method} within {timeout:?}")]
    NoReply {
        peer: Peer,
        method: &'static str,
        timeout: Duration,
    },
    #[error("{method} of {peer} failed: {error}")]
    Call {
        peer: Peer,
        method: &'static str,
        error: zbus::Error,
    },
    #[error("{method} of the agent failed: {error}")]
    Agent {
        method: &'static str,
        error: AgentError,
    },
    #[error("the plugin connects once and is {0} already")]
    WrongState(&'static str),
    #[error("D-Bus: {0}")]
    Bus(zbus::Error),
}

// Hand-written rather than `#[from]`, which would also make them sources: the messages above
// already carry them, and a logged chain would repeat them.
impl From<SettingsError> for ShimError {
    fn from(e: SettingsError) -> Self {
        ShimError::Config(e)
    }
}

impl From<PlanError> for ShimError {
    fn from(e: PlanError) -> Self {
        ShimError::Plan(e)
    }
}

impl From<zbus::Error> for ShimError {
    fn from(e: zbus::Error) -> Self {
        ShimError::Bus(e)
    }
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
}

/// A D-Bus error as NM receives it from one of our methods: the stock service's own errors
/// verbatim, ours under NM's VPN plugin error names.
#[derive(Debug)]
pub struct Reply {
    name: OwnedErrorName,
    message: Option<String>,
}

impl From<ShimError> for Reply {
    fn from(e: ShimError) -> Self {
        if let ShimError::Call {
            peer: Peer::Stock,
            error,
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
        let name = match &e {
            ShimError::Config(_) => BAD_ARGUMENTS,
            ShimError::WrongState(_) => WRONG_STATE,
            ShimError::InnerGone
            | ShimError::InnerExited { .. }
            | ShimError::InnerStartTimeout { .. } => LAUNCH_FAILED,
            ShimError::NoReply { .. } => NO_REPLY,
            _ => FAILED,
        };
        Reply {
            name: ErrorName::from_static_str_unchecked(name).into(),
            message: Some(e.to_string()),
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

/// The stock service's program: `program=` of the stock `.name` file that install diverted, or
/// Debian's path when nothing was diverted.
pub fn stock_program(name_file: &Path) -> Result<PathBuf, ShimError> {
    let text = match std::fs::read_to_string(name_file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PathBuf::from(STOCK_PROGRAM)),
        Err(error) => {
            return Err(ShimError::NameFile {
                path: name_file.to_owned(),
                error,
            })
        }
    };
    keyfile::get_string(&text, "VPN Connection", "program")
        .map_err(|error| ShimError::KeyFile {
            path: name_file.to_owned(),
            error,
        })?
        .filter(|program| !program.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| ShimError::NoProgram {
            path: name_file.to_owned(),
        })
}

/// The stock service's name for ours: `<service>.Connection_N` -> `<service>.netns.Connection_N`.
/// The stock D-Bus policy lets root own anything below the service name.
pub fn inner_bus_name(outer: &str) -> Result<String, ShimError> {
    match outer.strip_prefix(SERVICE) {
        Some("") => Ok(format!("{SERVICE}.netns")),
        Some(rest) if rest.starts_with('.') => Ok(format!("{SERVICE}.netns{rest}")),
        _ => Err(ShimError::BusName(outer.to_owned())),
    }
}

/// Bounds a call as NM bounds its own, and names the peer and method in its errors.
async fn bounded(
    peer: Peer,
    method: &'static str,
    timeout: Duration,
    call: impl Future<Output = zbus::Result<Message>>,
) -> Result<Message, ShimError> {
    within(peer, method, timeout, call)
        .await?
        .map_err(|error| ShimError::Call {
            peer,
            method,
            error,
        })
}

/// Bounds a call to the agent like [`bounded`].
async fn agent_call<T>(
    method: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<T, AgentError>>,
) -> Result<T, ShimError> {
    within(Peer::Agent, method, timeout, call)
        .await?
        .map_err(|error| ShimError::Agent { method, error })
}

async fn within<T>(
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

/// The agent's proxy. Its properties are not cached: that would call the agent at once.
async fn agent(conn: &Connection) -> Result<Agent1Proxy<'static>, ShimError> {
    Ok(Agent1Proxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?)
}

/// Calls `$method` of the stock service with the body `$body`, once it is on the bus.
macro_rules! forward {
    ($plugin:expr, $conn:expr, $method:literal, $body:expr) => {{
        let inner = $plugin.inner().await?;
        let body = $body;
        let call = $conn.call_method(
            Some(inner.as_str()),
            PLUGIN_PATH,
            Some(PLUGIN_INTERFACE),
            $method,
            &body,
        );
        bounded(Peer::Stock, $method, CALL_TIMEOUT, call).await
    }};
}

/// Where the stock service is; method calls wait for it to be on the bus.
#[derive(Debug, Clone)]
enum Inner {
    Starting,
    /// Its unique name.
    Ready(String),
    Gone,
}

/// What the facade asks of the driver.
enum Command {
    Connect {
        /// NM's unique name: the plugin follows it, as libnm's `watch_peer` does.
        peer: Option<String>,
        intent: Option<NetnsIntent>,
        accepted: oneshot::Sender<Result<(), ShimError>>,
    },
    Disconnect {
        stopped: oneshot::Sender<()>,
    },
}

/// The VPN plugin interface that NM calls. It only checks and forwards; the driver decides.
struct Plugin {
    commands: mpsc::UnboundedSender<Command>,
    inner: watch::Receiver<Inner>,
    state: Arc<AtomicU32>,
}

impl Plugin {
    async fn inner(&self) -> Result<String, ShimError> {
        let mut inner = self.inner.clone();
        loop {
            let status = inner.borrow_and_update().clone();
            match status {
                Inner::Ready(name) => return Ok(name),
                Inner::Gone => return Err(ShimError::InnerGone),
                Inner::Starting => inner.changed().await.map_err(|_| ShimError::InnerGone)?,
            }
        }
    }

    /// Checks a Connect or ConnectInteractive and tells the driver how to treat the connection,
    /// before the stock service can emit anything about it.
    async fn begin_connect(
        &self,
        connection: NmConnection,
        hdr: &Header<'_>,
    ) -> Result<NmConnection, ShimError> {
        let checked = codec::check(connection).inspect_err(|e| warn!("{e}"))?;
        let (accepted, answer) = oneshot::channel();
        let command = Command::Connect {
            peer: hdr.sender().map(|s| s.to_string()),
            intent: checked.intent,
            accepted,
        };
        self.commands
            .send(command)
            .map_err(|_| ShimError::WrongState("stopped"))?;
        answer
            .await
            .map_err(|_| ShimError::WrongState("stopped"))??;
        Ok(checked.connection)
    }
}

#[interface(name = "org.freedesktop.NetworkManager.VPN.Plugin")]
impl Plugin {
    async fn connect(
        &self,
        connection: NmConnection,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        let connection = self.begin_connect(connection, &hdr).await?;
        forward!(self, conn, "Connect", (connection,))?;
        Ok(())
    }

    async fn connect_interactive(
        &self,
        connection: NmConnection,
        details: VarDict,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        let connection = self.begin_connect(connection, &hdr).await?;
        forward!(self, conn, "ConnectInteractive", (connection, details))?;
        Ok(())
    }

    #[zbus(out_args("setting_name"))]
    async fn need_secrets(
        &self,
        settings: NmConnection,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Reply> {
        let checked = codec::check(settings).inspect_err(|e| warn!("{e}"))?;
        let reply = forward!(self, conn, "NeedSecrets", (checked.connection,))?;
        let setting: String = reply
            .body()
            .deserialize()
            .map_err(|error| ShimError::Call {
                peer: Peer::Stock,
                method: "NeedSecrets",
                error,
            })?;
        Ok(setting)
    }

    /// Answers once the plugin has stopped, as a libnm plugin answers once it is STOPPED.
    async fn disconnect(&self) {
        let (stopped, done) = oneshot::channel();
        // If the driver is gone, the plugin has stopped already.
        if self.commands.send(Command::Disconnect { stopped }).is_ok() {
            done.await.ok();
        }
    }

    async fn new_secrets(
        &self,
        connection: NmConnection,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        let connection = codec::strip(connection)?;
        forward!(self, conn, "NewSecrets", (connection,))?;
        Ok(())
    }

    // The stock service's helper calls these on the stock service itself; forwarding keeps the
    // interface whole.
    async fn set_config(
        &self,
        config: VarDict,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        forward!(self, conn, "SetConfig", (config,))?;
        Ok(())
    }

    #[zbus(name = "SetIp4Config")]
    async fn set_ip4_config(
        &self,
        config: VarDict,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        forward!(self, conn, "SetIp4Config", (config,))?;
        Ok(())
    }

    #[zbus(name = "SetIp6Config")]
    async fn set_ip6_config(
        &self,
        config: VarDict,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        forward!(self, conn, "SetIp6Config", (config,))?;
        Ok(())
    }

    async fn set_failure(
        &self,
        reason: String,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        forward!(self, conn, "SetFailure", (reason,))?;
        Ok(())
    }

    #[zbus(property)]
    fn state(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }

    // Not `state_changed`: the State property's change notifier has that name.
    #[zbus(signal, name = "StateChanged")]
    async fn state_changed_signal(emitter: &SignalEmitter<'_>, state: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn config(emitter: &SignalEmitter<'_>, config: &VarDict) -> zbus::Result<()>;

    #[zbus(signal, name = "Ip4Config")]
    async fn ip4_config(emitter: &SignalEmitter<'_>, ip4config: &VarDict) -> zbus::Result<()>;

    #[zbus(signal, name = "Ip6Config")]
    async fn ip6_config(emitter: &SignalEmitter<'_>, ip6config: &VarDict) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn login_banner(emitter: &SignalEmitter<'_>, banner: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn failure(emitter: &SignalEmitter<'_>, reason: u32) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn secrets_required(
        emitter: &SignalEmitter<'_>,
        message: &str,
        secrets: &[String],
    ) -> zbus::Result<()>;
}

/// The stock service's signal in `msg`, if it is one of the interface's.
fn decode(msg: &Message) -> Option<Signal> {
    let header = msg.header();
    let member = header.member()?.as_str();
    let body = msg.body();
    let signal = match member {
        "StateChanged" => body.deserialize().map(Signal::StateChanged),
        "Config" => body.deserialize().map(Signal::Config),
        "Ip4Config" => body.deserialize().map(Signal::Ip4Config),
        "Ip6Config" => body.deserialize().map(Signal::Ip6Config),
        "LoginBanner" => body.deserialize().map(Signal::LoginBanner),
        "Failure" => body.deserialize().map(Signal::Failure),
        "SecretsRequired" => body
            .deserialize()
            .map(|(message, secrets)| Signal::SecretsRequired(message, secrets)),
        _ => return None,
    };
    signal
        .inspect_err(|e| warn!("ignoring a malformed {member} signal of the stock service: {e}"))
        .ok()
}

/// The stock service's process. It is never reaped before the shim is done with its PID.
struct InnerProcess {
    child: Child,
    exit: oneshot::Receiver<()>,
    exited: bool,
}

impl InnerProcess {
    fn spawn(program: &Path, bus_name: &str) -> Result<Self, ShimError> {
        let spawn_error = |error| ShimError::Spawn {
            program: program.to_owned(),
            error,
        };
        // It inherits NM_VPN_LOG_LEVEL/NM_VPN_LOG_SYSLOG and stderr, which NM puts in its log.
        let child = std::process::Command::new(program)
            .arg("--bus-name")
            .arg(bus_name)
            .stdin(Stdio::null())
            .spawn()
            .map_err(spawn_error)?;
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("PIDs fit in pid_t"));
        let (exited, exit) = oneshot::channel();
        std::thread::Builder::new()
            .name("stock-service".into())
            .spawn(move || {
                // WNOWAIT leaves it a zombie, so a SIGKILL can never hit a recycled PID.
                while waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
                    == Err(nix::errno::Errno::EINTR)
                {}
                exited.send(()).ok();
            })
            .map_err(spawn_error)?;
        Ok(InnerProcess {
            child,
            exit,
            exited: false,
        })
    }

    /// Waits until it has exited, reaps it, and tells how it ended.
    async fn exited(&mut self) -> String {
        if !self.exited {
            // A sender dropped unsent means waitid failed, which it only does for a reaped child.
            (&mut self.exit).await.ok();
            self.exited = true;
        }
        match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        }
    }

    /// Waits `bound` for it to exit, then kills it.
    async fn wait_or_kill(&mut self, bound: Duration) -> String {
        if let Ok(status) = tokio::time::timeout(bound, self.exited()).await {
            return status;
        }
        warn!("the stock service did not exit within {bound:?}; killing it");
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("PIDs fit in pid_t"));
        if let Err(e) = kill(pid, UnixSignal::SIGKILL) {
            error!("cannot kill the stock service (PID {pid}): {e}");
        }
        self.exited().await
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

/// The agent's answer, for the session.
enum AgentAnswer {
    Isolated(Result<String, ShimError>),
    Reapplied(Result<(), ShimError>),
}

type AgentCall = Pin<Box<dyn Future<Output = AgentAnswer> + Send>>;

async fn isolate(conn: Connection, call: IsolateCall) -> AgentAnswer {
    let started = Instant::now();
    let result = async {
        let tun = codec::tundev(&call.config)?;
        let request = codec::isolate_request(
            &call.intent,
            ifindex(tun)?,
            &call.config,
            call.ip4.as_ref(),
            call.ip6.as_ref(),
        );
        let timeout = call.intent.timeout + AGENT_MARGIN;
        let agent = agent(&conn).await?;
        let reply = agent_call("Isolate", timeout, agent.isolate(&request)).await?;
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
                codec::addresses(call.ip4.as_ref(), call.ip6.as_ref()).join(" "),
                started.elapsed().as_millis()
            );
            AgentAnswer::Isolated(Ok(reply.netns))
        }
        Err(e) => {
            error!("isolating connection {id:?} failed: {e}");
            AgentAnswer::Isolated(Err(e))
        }
    }
}

async fn reapply(conn: Connection, call: ReapplyCall) -> AgentAnswer {
    let none = VarDict::new();
    let result = async {
        let agent = agent(&conn).await?;
        let reply = agent.reapply(
            call.netns.as_str(),
            &call.config,
            call.ip4.as_ref().unwrap_or(&none),
            call.ip6.as_ref().unwrap_or(&none),
        );
        agent_call("Reapply", CALL_TIMEOUT, reply).await
    }
    .await;
    match &result {
        Ok(_) => info!(
            "re-applied the VPN's new config in namespace {}",
            call.netns
        ),
        Err(e) => error!("{e}"),
    }
    AgentAnswer::Reapplied(result.map(drop))
}

async fn agent_answer(call: &mut Option<AgentCall>) -> AgentAnswer {
    match call {
        Some(call) => call.await,
        None => std::future::pending().await,
    }
}

/// Resolves once the name that `changes` follows has no owner left.
async fn vanished(changes: &mut Option<NameOwnerChangedStream>) {
    if let Some(changes) = changes {
        while let Some(change) = changes.next().await {
            if change.args().is_ok_and(|a| a.new_owner().is_none()) {
                return;
            }
        }
    }
    std::future::pending().await
}

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The name NM passed with `--bus-name`.
    pub bus_name: String,
    /// The stock service's program.
    pub program: PathBuf,
}

/// Runs the plugin until it has stopped: owns NM's name, starts the stock service, serves, and
/// tears down in DESIGN.md's order.
pub async fn run(options: Options) -> Result<(), ShimError> {
    let inner_name = inner_bus_name(&options.bus_name)?;
    // Spawning ourselves would recurse until the machine gives out.
    let own = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    if own.is_some() && options.program.canonicalize().ok() == own {
        return Err(ShimError::InnerIsShim(options.program));
    }
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (inner_status, inner) = watch::channel(Inner::Starting);
    let state = Arc::new(AtomicU32::new(state::INIT));
    let plugin = Plugin {
        commands,
        inner,
        state: state.clone(),
    };
    // NM fails a plugin that has not owned its name 5 s after the spawn, so own it first.
    let conn = zbus::connection::Builder::system()
        .serve_at(PLUGIN_PATH, plugin)
        .name(options.bus_name.as_str())
        .build()
        .await?;
    let iface = conn
        .object_server()
        .interface::<_, Plugin>(PLUGIN_PATH)
        .await?;
    info!(
        "owning {}; starting {} as {inner_name}",
        options.bus_name,
        options.program.display()
    );
    let mut driver = Driver {
        conn,
        iface,
        state,
        inner_status,
        commands: command_rx,
        session: Session::default(),
        agent: None,
        disconnects: Vec::new(),
    };
    let result = match InnerProcess::spawn(&options.program, &inner_name) {
        Err(e) => {
            driver.teardown(None, None, None).await;
            Err(e)
        }
        Ok(mut process) => match driver.start(&mut process, &inner_name).await {
            Ok((owner, owner_changes)) => {
                let served = driver.serve(&mut process, &owner, owner_changes).await;
                let failure = served.as_ref().ok().copied().flatten();
                driver
                    .teardown(Some(&mut process), Some(&owner), failure)
                    .await;
                served.map(drop)
            }
            Err(e) => {
                driver.teardown(Some(&mut process), None, None).await;
                Err(e)
            }
        },
    };
    driver.close().await;
    result
}

struct Driver {
    conn: Connection,
    iface: InterfaceRef<Plugin>,
    state: Arc<AtomicU32>,
    inner_status: watch::Sender<Inner>,
    commands: mpsc::UnboundedReceiver<Command>,
    session: Session,
    /// The agent call in flight; the session allows one at a time.
    agent: Option<AgentCall>,
    /// Disconnect calls, answered once the plugin has stopped.
    disconnects: Vec<oneshot::Sender<()>>,
}

impl Driver {
    /// Waits for the stock service to own its name, and returns its unique name together with a
    /// stream that tells when it goes.
    async fn start(
        &mut self,
        process: &mut InnerProcess,
        name: &str,
    ) -> Result<(String, NameOwnerChangedStream), ShimError> {
        let dbus = DBusProxy::new(&self.conn).await?;
        // Subscribed before asking, so that no change falls in between.
        let mut changes = dbus
            .receive_name_owner_changed_with_args(&[(0, name)])
            .await?;
        let owned = async {
            if let Ok(owner) = dbus.get_name_owner(name.try_into()?).await {
                return Ok(owner.to_string());
            }
            while let Some(change) = changes.next().await {
                if let Some(owner) = change.args()?.new_owner().as_ref() {
                    return Ok(owner.to_string());
                }
            }
            Err(ShimError::InnerGone)
        };
        let owner = tokio::select! {
            owner = tokio::time::timeout(INNER_START_TIMEOUT, owned) => {
                owner.map_err(|_| ShimError::InnerStartTimeout {
                    name: name.to_owned(),
                    timeout: INNER_START_TIMEOUT,
                })?
            }
            status = process.exited() => Err(ShimError::InnerExited {
                name: name.to_owned(),
                status,
            }),
        }?;
        debug!("the stock service owns {name} as {owner}");
        Ok((owner, changes))
    }

    /// Serves until the session stops, and returns the failure to report.
    async fn serve(
        &mut self,
        process: &mut InnerProcess,
        owner: &str,
        mut owner_changes: NameOwnerChangedStream,
    ) -> Result<Option<u32>, ShimError> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(owner)
            .path(PLUGIN_PATH)
            .interface(PLUGIN_INTERFACE)
            .build()?;
        let mut signals = MessageStream::for_match_rule(rule, &self.conn, None).await?;
        // Only now may calls reach it: nothing it emits about them can be missed.
        self.inner_status
            .send_replace(Inner::Ready(owner.to_owned()));
        let mut nm = None;
        // When the process exits, what it emitted may still be on its way: the bus reports the
        // name lost only after it has passed on everything the process sent.
        let mut exit_grace = None;
        loop {
            // Biased: the stock service's signals go first, so that none is lost to a stop.
            let actions = tokio::select! {
                biased;
                Some(msg) = signals.next() => match msg.ok().as_ref().and_then(decode) {
                    Some(signal) => self.session.on_signal(signal),
                    None => vec![],
                },
                Some(command) = self.commands.recv() => self.command(command, &mut nm).await,
                answer = agent_answer(&mut self.agent) => {
                    self.agent = None;
                    self.answer(answer)
                }
                () = vanished(&mut nm) => {
                    info!("NetworkManager left the bus");
                    self.session.stop()
                }
                Some(change) = owner_changes.next() => {
                    if change.args().is_ok_and(|a| a.new_owner().is_none()) {
                        warn!("the stock service left the bus");
                        self.session.stop()
                    } else {
                        vec![]
                    }
                }
                status = process.exited(), if exit_grace.is_none() => {
                    warn!("the stock service exited ({status})");
                    exit_grace = Some(Box::pin(tokio::time::sleep(EXIT_GRACE)));
                    vec![]
                }
                () = async { exit_grace.as_mut().expect("guarded").await }, if exit_grace.is_some() => {
                    self.session.stop()
                }
            };
            for action in actions {
                match action {
                    Action::Emit(signal) => self.emit(signal).await,
                    Action::Isolate(call) => {
                        self.agent = Some(Box::pin(isolate(self.conn.clone(), *call)))
                    }
                    Action::Reapply(call) => {
                        self.agent = Some(Box::pin(reapply(self.conn.clone(), *call)))
                    }
                    Action::Stop(failure) => return Ok(failure),
                }
            }
        }
    }

    async fn command(
        &mut self,
        command: Command,
        nm: &mut Option<NameOwnerChangedStream>,
    ) -> Vec<Action> {
        match command {
            Command::Connect {
                peer,
                intent,
                accepted,
            } => {
                let result = self.session.connect(intent);
                let follow = match (&result, peer) {
                    (Ok(()), Some(peer)) => self.follow(&peer).await,
                    _ => Ok(None),
                };
                accepted.send(result).ok();
                match follow {
                    Ok(changes) => {
                        *nm = changes;
                        vec![]
                    }
                    // It left before we could follow it.
                    Err(()) => self.session.stop(),
                }
            }
            Command::Disconnect { stopped } => {
                self.disconnects.push(stopped);
                self.session.stop()
            }
        }
    }

    /// Follows NM's unique name: `Ok(None)` if the bus cannot say, `Err` if NM is gone already.
    async fn follow(&self, peer: &str) -> Result<Option<NameOwnerChangedStream>, ()> {
        let follow = async {
            let dbus = DBusProxy::new(&self.conn).await?;
            let changes = dbus
                .receive_name_owner_changed_with_args(&[(0, peer)])
                .await?;
            let present = dbus.name_has_owner(peer.try_into()?).await?;
            Ok::<_, zbus::Error>((changes, present))
        };
        match follow.await {
            Ok((changes, true)) => Ok(Some(changes)),
            Ok((_, false)) => Err(()),
            Err(e) => {
                warn!("cannot follow NetworkManager ({peer}) on the bus: {e}");
                Ok(None)
            }
        }
    }

    fn answer(&mut self, answer: AgentAnswer) -> Vec<Action> {
        match answer {
            AgentAnswer::Isolated(result) => self.session.on_isolated(result),
            AgentAnswer::Reapplied(result) => self.session.on_reapplied(result),
        }
    }

    async fn emit(&self, signal: Signal) {
        let emitter = self.iface.signal_emitter();
        let result = match &signal {
            Signal::StateChanged(state) => {
                self.state.store(*state, Ordering::Relaxed);
                let result = Plugin::state_changed_signal(emitter, *state).await;
                let plugin = self.iface.get().await;
                result.and(plugin.state_changed(emitter).await)
            }
            Signal::Config(d) => Plugin::config(emitter, d).await,
            Signal::Ip4Config(d) => Plugin::ip4_config(emitter, d).await,
            Signal::Ip6Config(d) => Plugin::ip6_config(emitter, d).await,
            Signal::LoginBanner(b) => Plugin::login_banner(emitter, b).await,
            Signal::Failure(reason) => Plugin::failure(emitter, *reason).await,
            Signal::SecretsRequired(message, secrets) => {
                Plugin::secrets_required(emitter, message, secrets).await
            }
        };
        if let Err(e) = result {
            error!("cannot emit {signal:?} to NetworkManager: {e}");
        }
    }

    /// DESIGN.md's order: stop the stock service (openvpn exits with it and the kernel destroys
    /// the tun), release the lease, tell NM, exit; so NM hears STOPPED only once the namespace is
    /// free.
    async fn teardown(
        &mut self,
        process: Option<&mut InnerProcess>,
        owner: Option<&str>,
        failure: Option<u32>,
    ) {
        info!(
            "stopping{}",
            failure.map_or(String::new(), |f| format!(" (failure reason {f})"))
        );
        self.inner_status.send_replace(Inner::Gone);
        // The stock service may have said so already: it reports STOPPING before STOPPED.
        if self.state.load(Ordering::Relaxed) != state::STOPPING {
            self.emit(Signal::StateChanged(state::STOPPING)).await;
        }
        if let Some(process) = process {
            let bound = match owner {
                Some(owner) => {
                    let call = self.conn.call_method(
                        Some(owner),
                        PLUGIN_PATH,
                        Some(PLUGIN_INTERFACE),
                        "Disconnect",
                        &(),
                    );
                    if let Err(e) = bounded(Peer::Stock, "Disconnect", CALL_TIMEOUT, call).await {
                        // It quits by itself once it has stopped, so it may be gone already.
                        debug!("{e}");
                    }
                    INNER_EXIT_TIMEOUT
                }
                None => Duration::ZERO,
            };
            let status = process.wait_or_kill(bound).await;
            info!("the stock service has exited ({status})");
        }
        // An Isolate still in flight may yet have leased a namespace.
        if let Some(call) = self.agent.take() {
            let answer = call.await;
            self.answer(answer);
        }
        if let Some(netns) = self.session.lease() {
            let released = async {
                let agent = agent(&self.conn).await?;
                agent_call("Release", CALL_TIMEOUT, agent.release(netns)).await
            };
            match released.await {
                Ok(_) => info!("released namespace {netns}"),
                Err(e) => error!("{e}"),
            }
        }
        if let Some(reason) = failure {
            self.emit(Signal::Failure(reason)).await;
        }
        self.emit(Signal::StateChanged(state::STOPPED)).await;

        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Connect { accepted, .. } => {
                    accepted.send(Err(ShimError::WrongState("stopped"))).ok();
                }
                Command::Disconnect { stopped } => self.disconnects.push(stopped),
            }
        }
        for stopped in self.disconnects.drain(..) {
            stopped.send(()).ok();
        }
    }

    /// Lets the calls still in progress answer, a forwarded error of the stock service among
    /// them, and then lets go of the bus.
    async fn close(self) {
        // Every other handle on the connection must go first, or the shutdown would wait for it.
        let Driver { conn, iface, .. } = self;
        drop(iface);
        if tokio::time::timeout(FLUSH_TIMEOUT, conn.graceful_shutdown())
            .await
            .is_err()
        {
            warn!("exiting with calls unanswered after {FLUSH_TIMEOUT:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn inner_names() {
        assert_eq!(
            inner_bus_name("org.freedesktop.NetworkManager.openvpn.Connection_3").unwrap(),
            "org.freedesktop.NetworkManager.openvpn.netns.Connection_3"
        );
        assert_eq!(
            inner_bus_name(SERVICE).unwrap(),
            "org.freedesktop.NetworkManager.openvpn.netns"
        );
        for bad in [
            "org.freedesktop.NetworkManager.openvpnx.Connection_3",
            "org.example.vpn",
            "",
        ] {
            assert!(
                matches!(inner_bus_name(bad), Err(ShimError::BusName(_))),
                "{bad}"
            );
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nm-vpn-netns-shim-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stock_program_from_the_diverted_file() {
        let dir = temp_dir("name-file");
        let file = dir.join("nm-openvpn-service.name.distrib");
        assert_eq!(stock_program(&file).unwrap(), PathBuf::from(STOCK_PROGRAM));
        std::fs::write(
            &file,
            "[VPN Connection]\nservice=org.freedesktop.NetworkManager.openvpn\n\
             program=/opt/nm openvpn/service;v2\n",
        )
        .unwrap();
        assert_eq!(
            stock_program(&file).unwrap(),
            PathBuf::from("/opt/nm openvpn/service;v2")
        );
        std::fs::write(&file, "[VPN Connection]\nname=openvpn\n").unwrap();
        assert!(matches!(
            stock_program(&file),
            Err(ShimError::NoProgram { .. })
        ));
        std::fs::write(&file, "program=/x\n").unwrap();
        let e = stock_program(&file).unwrap_err().to_string();
        assert!(
            e.ends_with("line 1: a key comes before the first group"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn bus_error(name: &str, message: &str) -> zbus::Error {
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
            error: bus_error(BAD_ARGUMENTS, "property “x” invalid or not supported"),
        };
        let reply = Reply::from(e);
        assert_eq!(reply.name(), BAD_ARGUMENTS);
        assert_eq!(
            reply.description(),
            Some("property “x” invalid or not supported")
        );
    }

    #[test]
    fn our_errors_use_nm_names() {
        let e = codec::check(NmConnection::new()).unwrap_err();
        let reply = Reply::from(e);
        assert_eq!(reply.name(), BAD_ARGUMENTS);
        assert_eq!(
            reply.description(),
            Some(
                "nm-vpn-netns refused the connection: connection.id is missing from the connection"
            )
        );
        assert_eq!(Reply::from(ShimError::InnerGone).name(), LAUNCH_FAILED);
        assert_eq!(
            Reply::from(ShimError::WrongState("stopped")).name(),
            WRONG_STATE
        );
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
        assert_eq!(ShimError::InnerGone.failure(), failure::CONNECT_FAILED);
    }

    #[test]
    fn ifindex_of_loopback() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        let e = ifindex("nm-vpn-netns-x").unwrap_err().to_string();
        assert!(e.starts_with("no link \"nm-vpn-netns-x\""), "{e}");
    }

    fn script(name: &str, body: &str) -> PathBuf {
        let path = temp_dir(name).join("inner.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn stock_service_that_exits_is_reaped() {
        let program = script("exits", "test \"$1\" = --bus-name && exit 3");
        let mut process = InnerProcess::spawn(&program, "x.y").unwrap();
        let status = process.wait_or_kill(Duration::from_secs(10)).await;
        assert_eq!(status, "exit status: 3");
        // Asking again is harmless.
        assert_eq!(process.exited().await, "exit status: 3");
        std::fs::remove_dir_all(program.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn stuck_stock_service_is_killed() {
        let program = script("stuck", "exec sleep 60");
        let mut process = InnerProcess::spawn(&program, "x.y").unwrap();
        let started = Instant::now();
        let status = process.wait_or_kill(Duration::from_millis(200)).await;
        assert_eq!(status, "signal: 9 (SIGKILL)");
        assert!(started.elapsed() < Duration::from_secs(10));
        std::fs::remove_dir_all(program.parent().unwrap()).unwrap();
    }
}
