//! The shim's binary on a private bus daemon, between this test (standing in for NetworkManager),
//! a fake stock service (`fake_stock.py`, which the shim starts as it would start the real one)
//! and a fake agent served here. Every test has a bus of its own. Two tests run the real
//! nm-openvpn-service and nm-openconnect-service where they are installed.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bus::Bus;
use common::nm::{NmState, SharedNm};
use common::{dict, openvpn_config, openvpn_ip4, ov, VarDict, UUID};
use futures_util::{FutureExt, StreamExt};
use nm_vpn_netns::contract::{
    AgentError, IsolateReply, PrepareReply, ReleaseReport, BUS_NAME, INTERFACE, OBJECT_PATH,
};
use zbus::{interface, Connection, MatchRule, Message, MessageStream, OwnedVariant, Variant};

type NmConnection = HashMap<String, VarDict>;

const PATH: &str = "/org/freedesktop/NetworkManager/VPN/Plugin";
const IFACE: &str = "org.freedesktop.NetworkManager.VPN.Plugin";
const SHIM: &str = "org.freedesktop.NetworkManager.openvpn.Connection_7";
const STOCK: &str = "org.freedesktop.NetworkManager.openvpn.netns.Connection_7";
/// The test-only interface of `fake_stock.py`.
const FAKE_STOCK_CONTROL: &str = "io.github.NmVpnNetns.Test.FakeStock";
const BAD_ARGUMENTS: &str = "org.freedesktop.NetworkManager.VPN.Error.BadArguments";
const STOCK_SERVICE: &str = "/usr/lib/NetworkManager/nm-openvpn-service";
const OPENCONNECT_SERVICE: &str = "/usr/lib/NetworkManager/nm-openconnect-service";
/// Generous: a loaded CI machine starts python and two processes per test.
const TIMEOUT: Duration = Duration::from_secs(20);

// NMVpnServiceState and NMVpnPluginFailure values.
const STARTING: u32 = 3;
const STARTED: u32 = 4;
const STOPPING: u32 = 5;
const STOPPED: u32 = 6;
const LOGIN_FAILED: u32 = 0;
const CONNECT_FAILED: u32 = 1;
const BAD_IP_CONFIG: u32 = 2;

/// A connection as NM hands it to the plugin, with a secret that must never be logged.
fn connection(data: &[(&str, &str)], ipv4: Vec<(&str, OwnedVariant)>) -> NmConnection {
    let data: HashMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let secrets: HashMap<String, String> = [("password".to_owned(), "hunter2".to_owned())].into();
    NmConnection::from([
        (
            "connection".to_owned(),
            dict(vec![
                ("id", ov("Work VPN")),
                ("uuid", ov(UUID)),
                ("type", ov("vpn")),
                ("permissions", ov(vec!["user:alice:"])),
            ]),
        ),
        (
            "vpn".to_owned(),
            dict(vec![
                ("service-type", ov("org.freedesktop.NetworkManager.openvpn")),
                ("data", OwnedVariant::from(data)),
                ("secrets", OwnedVariant::from(secrets)),
            ]),
        ),
        ("ipv4".to_owned(), dict(ipv4)),
    ])
}

/// nm-openvpn's Config as captured on the rig, with a banner, on a device that exists here.
fn config(tundev: &str) -> VarDict {
    let mut config = openvpn_config(tundev, false);
    config.insert("banner".to_owned(), ov("welcome"));
    config.insert("has-ip6".to_owned(), ov(false));
    config
}

#[derive(Debug, Clone, PartialEq)]
enum AgentCall {
    Prepare(VarDict),
    Isolate(VarDict),
    Reapply(String, VarDict, VarDict, VarDict),
    /// With whether the stock service had exited by then, and the shim's State then.
    Release(String, bool, u32),
    /// A read of the Version property, which starts an agent.
    Version,
}

/// How the fake agent refuses Isolate.
type Refusal = fn(String) -> AgentError;

/// What the fake agent's ReleaseWithReport reports as stranded, as (pid, comm); `None`: an agent
/// older than 0.2, which has no ReleaseWithReport.
type Stranded = Arc<Mutex<Option<Vec<(u32, String)>>>>;

/// The agent's interface, recording calls; `fail` makes Isolate fail. It answers Prepare once
/// `prepares` is set, and as an agent older than 0.4 until then.
struct FakeAgent {
    calls: Arc<Mutex<Vec<AgentCall>>>,
    fail: Option<Refusal>,
    prepares: Arc<AtomicBool>,
    stock_log: PathBuf,
    stranded: Stranded,
}

// The attribute takes no constant; `fake_agent_serves_the_contract` checks it is INTERFACE.
#[interface(name = "io.github.NmVpnNetns.Agent1")]
impl FakeAgent {
    async fn prepare(&self, request: VarDict) -> zbus::fdo::Result<PrepareReply> {
        if !self.prepares.load(Ordering::Relaxed) {
            // As zbus answers for a method an interface lacks.
            return Err(zbus::fdo::Error::UnknownMethod(
                "Unknown method 'Prepare'".into(),
            ));
        }
        self.calls.lock().unwrap().push(AgentCall::Prepare(request));
        Ok(PrepareReply {
            netns: "work".into(),
            created: true,
            elapsed_us: 9_000,
        })
    }

    async fn isolate(&self, request: VarDict) -> Result<IsolateReply, AgentError> {
        self.calls.lock().unwrap().push(AgentCall::Isolate(request));
        if let Some(fail) = self.fail {
            // A peer's text, with a line of its own in it for the log.
            return Err(fail("the fake agent refuses\n<3>forged".into()));
        }
        Ok(IsolateReply {
            netns: "work".into(),
            link: "lo".into(),
            created: true,
            elapsed_us: 21_000,
        })
    }

    #[zbus(property)]
    async fn version(&self) -> u32 {
        self.calls.lock().unwrap().push(AgentCall::Version);
        nm_vpn_netns::contract::VERSION
    }

    async fn reapply(&self, netns: String, config: VarDict, ip4: VarDict, ip6: VarDict) {
        let call = AgentCall::Reapply(netns, config, ip4, ip6);
        self.calls.lock().unwrap().push(call);
    }

    async fn release(&self, netns: String, #[zbus(connection)] conn: &Connection) {
        let stock = fs::read_to_string(&self.stock_log).unwrap_or_default();
        let exited = stock.lines().any(|l| l == "exit");
        let state = state(conn).await;
        self.calls
            .lock()
            .unwrap()
            .push(AgentCall::Release(netns, exited, state));
    }

    async fn release_with_report(
        &self,
        netns: String,
        #[zbus(connection)] conn: &Connection,
    ) -> zbus::fdo::Result<ReleaseReport> {
        let Some(stranded) = self.stranded.lock().unwrap().clone() else {
            // As zbus answers for a method an interface lacks.
            return Err(zbus::fdo::Error::UnknownMethod(
                "Unknown method 'ReleaseWithReport'".into(),
            ));
        };
        self.release(netns, conn).await;
        Ok(ReleaseReport {
            stranded: Some(stranded),
        })
    }
}

/// The shim's State property.
async fn state(conn: &Connection) -> u32 {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(SHIM)
        .path(PATH)
        .build()
        .await
        .unwrap();
    let value = props.get(IFACE.try_into().unwrap(), "State").await.unwrap();
    u32::try_from(value).unwrap()
}

/// A signal of the shim's, as NM receives it.
#[derive(Debug, PartialEq)]
enum Sig {
    State(u32),
    Config(VarDict),
    Ip4(VarDict),
    Ip6(VarDict),
    Banner(String),
    Failure(u32),
}

fn decode(msg: &Message) -> Sig {
    let header = msg.header();
    let body = msg.body();
    match header.member().unwrap().as_str() {
        "StateChanged" => Sig::State(body.deserialize().unwrap()),
        "Config" => Sig::Config(body.deserialize().unwrap()),
        "Ip4Config" => Sig::Ip4(body.deserialize().unwrap()),
        "Ip6Config" => Sig::Ip6(body.deserialize().unwrap()),
        "LoginBanner" => Sig::Banner(body.deserialize().unwrap()),
        "Failure" => Sig::Failure(body.deserialize().unwrap()),
        other => panic!("unexpected signal {other}"),
    }
}

struct Rig {
    nm: Connection,
    signals: MessageStream,
    agent_calls: Arc<Mutex<Vec<AgentCall>>>,
    agent_stranded: Stranded,
    agent_prepares: Arc<AtomicBool>,
    _agent: Connection,
    shim: Child,
    stock_log: PathBuf,
    shim_log: PathBuf,
    // Last, so that it goes last.
    bus: Bus,
}

impl Rig {
    /// `env` is for the stock service, which inherits the shim's environment.
    async fn start(test: &str, program: &Path, fail: Option<Refusal>, env: &[(&str, &str)]) -> Rig {
        let bus = Bus::start(test);
        let stock_log = bus.dir.join("stock.log");
        let shim_log = bus.dir.join("shim.log");
        let agent_calls = Arc::new(Mutex::new(Vec::new()));
        let agent_stranded = Arc::new(Mutex::new(None));
        let agent_prepares = Arc::new(AtomicBool::new(false));
        let agent = zbus::connection::Builder::address(bus.address.as_str())
            .serve_at(
                OBJECT_PATH,
                FakeAgent {
                    calls: agent_calls.clone(),
                    fail,
                    prepares: agent_prepares.clone(),
                    stock_log: stock_log.clone(),
                    stranded: agent_stranded.clone(),
                },
            )
            .name(BUS_NAME)
            .build()
            .await
            .unwrap();
        let nm = bus.connect().await;
        // NM follows the name it spawned the plugin under.
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(SHIM)
            .path(PATH)
            .interface(IFACE)
            .build()
            .unwrap();
        let signals = MessageStream::for_match_rule(rule, &nm, None)
            .await
            .unwrap();
        let shim = Command::new(env!("CARGO_BIN_EXE_nm-vpn-netns-service"))
            .args(["--bus-name", SHIM, "--stock-program"])
            .arg(program)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("FAKE_STOCK_LOG", &stock_log)
            .env("NM_VPN_LOG_LEVEL", "7")
            .env("NM_VPN_LOG_SYSLOG", "0")
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stderr(fs::File::create(&shim_log).unwrap())
            .spawn()
            .unwrap();
        let rig = Rig {
            nm,
            signals,
            agent_calls,
            agent_stranded,
            agent_prepares,
            _agent: agent,
            shim,
            stock_log,
            shim_log,
            bus,
        };
        let dbus = zbus::fdo::DBusProxy::new(&rig.nm).await.unwrap();
        let owned = async {
            while !dbus.name_has_owner(SHIM.try_into().unwrap()).await.unwrap() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, owned)
            .await
            .expect("the shim owns NM's name");
        rig
    }

    async fn fake(test: &str) -> Rig {
        Rig::start(test, &fake_stock(), None, &[]).await
    }

    async fn call(&self, method: &str, conn: NmConnection) -> zbus::Result<Message> {
        self.nm
            .call_method(Some(SHIM), PATH, Some(IFACE), method, &(conn,))
            .await
    }

    async fn connect_interactive(&self, conn: NmConnection) -> zbus::Result<Message> {
        let details = VarDict::new();
        self.nm
            .call_method(
                Some(SHIM),
                PATH,
                Some(IFACE),
                "ConnectInteractive",
                &(conn, details),
            )
            .await
    }

    async fn disconnect(&self) {
        self.nm
            .call_method(Some(SHIM), PATH, Some(IFACE), "Disconnect", &())
            .await
            .unwrap();
    }

    /// Has the fake stock service emit a signal, as it would from openvpn's helper.
    async fn emit(&self, member: &str, args: Variant<'_>) {
        let body = (member, args);
        self.nm
            .call_method(Some(STOCK), PATH, Some(FAKE_STOCK_CONTROL), "Emit", &body)
            .await
            .unwrap();
    }

    /// NM's `Connect` of an isolated profile with nothing else set; the shim accepts it.
    async fn connect_isolated(&self) {
        let data = [("remote", "x"), ("netns-isolate", "yes")];
        self.call("Connect", connection(&data, vec![]))
            .await
            .unwrap();
    }

    /// Has the fake stock service report the VPN's Config and Ip4Config for tun `tundev`.
    async fn emit_configs(&self, tundev: &str) {
        self.emit("Config", Variant::from((config(tundev),))).await;
        self.emit("Ip4Config", Variant::from((openvpn_ip4(tundev),)))
            .await;
    }

    /// The signals of a connection that failed with `reason` before it was up, up to STOPPED.
    async fn assert_failed(&mut self, reason: u32) {
        assert_eq!(
            self.signals_until_stopped().await,
            [
                Sig::State(STARTING),
                Sig::State(STOPPING),
                Sig::Failure(reason),
                Sig::State(STOPPED)
            ]
        );
    }

    async fn next_signal(&mut self) -> Sig {
        let msg = tokio::time::timeout(TIMEOUT, self.signals.next())
            .await
            .expect("a signal from the shim")
            .unwrap()
            .unwrap();
        decode(&msg)
    }

    /// Every signal up to STOPPED.
    async fn signals_until_stopped(&mut self) -> Vec<Sig> {
        let mut signals = Vec::new();
        while signals.last() != Some(&Sig::State(STOPPED)) {
            signals.push(self.next_signal().await);
        }
        signals
    }

    fn stock_calls(&self) -> Vec<String> {
        fs::read_to_string(&self.stock_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn agent_calls(&self) -> Vec<AgentCall> {
        self.agent_calls.lock().unwrap().clone()
    }

    async fn await_agent_calls(&self, n: usize) {
        let called = async {
            while self.agent_calls.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, called)
            .await
            .expect("the agent is called");
    }

    async fn exit_status(&mut self) -> ExitStatus {
        let exited = async {
            loop {
                if let Some(status) = self.shim.try_wait().unwrap() {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, exited)
            .await
            .expect("the shim exits")
    }

    fn shim_log(&self) -> String {
        fs::read_to_string(&self.shim_log).unwrap()
    }

    /// The unique name that owns `name`.
    async fn owner(&self, name: &str) -> String {
        let dbus = zbus::fdo::DBusProxy::new(&self.nm).await.unwrap();
        let owner = dbus.get_name_owner(name.try_into().unwrap()).await;
        owner.unwrap().to_string()
    }

    /// The fake stock service's PID.
    async fn stock_pid(&self) -> u32 {
        let dbus = zbus::fdo::DBusProxy::new(&self.nm).await.unwrap();
        let pid = dbus.get_connection_unix_process_id(STOCK.try_into().unwrap());
        pid.await.unwrap()
    }

    /// Has the fake stock service start a child, as the real one starts openvpn; its PID.
    async fn stock_child(&self) -> u32 {
        let reply = self
            .nm
            .call_method(Some(STOCK), PATH, Some(FAKE_STOCK_CONTROL), "Spawn", &())
            .await
            .unwrap();
        reply.body().deserialize().unwrap()
    }
}

/// The process group of `pid` while it runs; `None` once it has ended (a zombie has).
fn running_group(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let group = fields.nth(1)?.parse().ok()?;
    (state != "Z").then_some(group)
}

/// Waits until none of `pids` runs; which still run after [`TIMEOUT`].
async fn ended(pids: &[u32]) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let running: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| running_group(p).is_some())
            .collect();
        if running.is_empty() || tokio::time::Instant::now() > deadline {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shim.kill().ok();
        self.shim.wait().ok();
        if std::thread::panicking() {
            eprintln!("--- shim log ---\n{}", self.shim_log());
            eprintln!("--- stock service calls ---\n{:#?}", self.stock_calls());
        }
    }
}

fn fake_stock() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_stock.py")
}

#[test]
fn fake_agent_serves_the_contract() {
    use zbus::object_server::Interface;
    assert_eq!(FakeAgent::name().as_str(), INTERFACE);
}

/// How the shim ends before it is on the bus, with `args`: its exit status and its stderr, which
/// NM puts in its log.
fn shim_refusal(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nm-vpn-netns-service"))
        .args(args)
        .env("NM_VPN_LOG_SYSLOG", "0")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--inner-program` is the old name of `--stock-program`; an error ends the shim with its whole
/// chain on one line.
#[test]
fn old_program_flag_is_accepted() {
    let args = [
        "--bus-name",
        "org.example..vpn",
        "--inner-program",
        "/bin/false",
    ];
    let (status, stderr) = shim_refusal(&args);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("Error: bus name \"org.example..vpn\" is not a D-Bus well-known name"),
        "{stderr}"
    );
}

/// The shim stands in only for a service whose registration install moved aside; for another it
/// says which service and what it looked for.
#[test]
fn a_service_not_taken_over_is_refused() {
    let (status, stderr) = shim_refusal(&["--bus-name", "org.example.vpn.Connection_1"]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Error: org.example.vpn was not taken over by nm-vpn-netns: no \
             /usr/lib/NetworkManager/VPN/*.name.distrib has its service="
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn pass_through_forwards_calls_and_signals_unchanged() {
    let mut rig = Rig::fake("pass-through").await;
    let data = [
        ("remote", "vpn.example.com"),
        ("netns-isolate", "no"),
        ("netns-name", "work"),
    ];
    let reply = rig
        .call("NeedSecrets", connection(&data, vec![]))
        .await
        .unwrap();
    assert_eq!(reply.body().deserialize::<String>().unwrap(), "vpn");
    rig.connect_interactive(connection(&data, vec![("dns", ov(vec![1u32]))]))
        .await
        .unwrap();
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));

    // Only the stock service's current owner speaks for it.
    let spoof = rig
        .nm
        .emit_signal(None::<&str>, PATH, IFACE, "StateChanged", &(STOPPED,));
    spoof.await.unwrap();

    let ip6 = dict(vec![("prefix", ov(64u32))]);
    let mut with_ip6 = config("tun0");
    with_ip6.insert("has-ip6".into(), ov(true));
    rig.emit("Config", Variant::from((with_ip6.clone(),))).await;
    rig.emit("Ip4Config", Variant::from((openvpn_ip4("tun0"),)))
        .await;
    rig.emit("Ip6Config", Variant::from((ip6.clone(),))).await;
    rig.emit("LoginBanner", Variant::from(("welcome",))).await;
    rig.emit("StateChanged", Variant::from((STARTED,))).await;
    for want in [
        Sig::Config(with_ip6),
        Sig::Ip4(openvpn_ip4("tun0")),
        Sig::Ip6(ip6),
        Sig::Banner("welcome".into()),
        Sig::State(STARTED),
    ] {
        assert_eq!(rig.next_signal().await, want);
    }
    assert_eq!(state(&rig.nm).await, STARTED);

    rig.disconnect().await;
    assert_eq!(
        rig.signals_until_stopped().await,
        [Sig::State(STOPPING), Sig::State(STOPPED)]
    );
    assert_eq!(
        rig.stock_calls(),
        [
            "NeedSecrets\tremote=vpn.example.com",
            "ConnectInteractive\tremote=vpn.example.com",
            "Disconnect",
            "exit"
        ]
    );
    assert_eq!(rig.agent_calls(), []);
    assert!(rig.exit_status().await.success());
}

#[tokio::test]
async fn isolation_reports_only_the_reduced_config() {
    let mut rig = Rig::fake("isolation").await;
    let data = [
        ("remote", "vpn.example.com"),
        ("netns-isolate", "yes"),
        ("netns-name", "work"),
        ("netns-timeout", "3000"),
    ];
    let never_default = vec![("method", ov("auto")), ("never-default", ov(true))];
    rig.call("Connect", connection(&data, never_default))
        .await
        .unwrap();
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));
    rig.emit_configs("lo").await;
    rig.emit("StateChanged", Variant::from((STARTED,))).await;

    // The server's banner stays, above the line that names the namespace.
    let banner = "welcome\nThis VPN is isolated in network namespace \"work\": run apps there \
                  with: nm-vpn-netns exec work -- COMMAND";
    let reduced = dict(vec![
        ("gateway", ov(16782022u32)),
        ("can-persist", ov(true)),
        ("banner", ov(banner)),
        ("has-ip4", ov(false)),
        ("has-ip6", ov(false)),
    ]);
    assert_eq!(rig.next_signal().await, Sig::Config(reduced));
    assert_eq!(rig.next_signal().await, Sig::State(STARTED));
    assert_eq!(state(&rig.nm).await, STARTED);

    let calls = rig.agent_calls();
    let [AgentCall::Isolate(request)] = &calls[..] else {
        panic!("{calls:?}")
    };
    let netns_settings: HashMap<String, String> =
        request["netns-settings"].clone().try_into().unwrap();
    assert_eq!(
        netns_settings,
        data[1..]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>()
    );
    assert_eq!(request["id"], ov("Work VPN"));
    assert_eq!(request["uuid"], ov(UUID));
    assert_eq!(request["permissions"], ov(vec!["user:alice:"]));
    assert_eq!(request["never-default-v4"], ov(true));
    assert_eq!(request["never-default-v6"], ov(false));
    assert_eq!(request["ifindex"], ov(1u32), "lo's ifindex");
    assert_eq!(
        VarDict::try_from(request["config"].clone()).unwrap(),
        config("lo")
    );
    assert_eq!(
        VarDict::try_from(request["ip4-config"].clone()).unwrap(),
        openvpn_ip4("lo")
    );
    assert!(!request.contains_key("ip6-config"));

    // openvpn kept root and re-ran its up script after a restart.
    let mut again = config("lo");
    again.insert("mtu".into(), ov(1400u32));
    rig.emit("Config", Variant::from((again.clone(),))).await;
    rig.emit("Ip4Config", Variant::from((openvpn_ip4("lo"),)))
        .await;
    rig.await_agent_calls(2).await;

    rig.disconnect().await;
    // The reply comes after the stop: both signals were on their way before it.
    for want in [STOPPING, STOPPED] {
        let msg = rig
            .signals
            .next()
            .now_or_never()
            .flatten()
            .unwrap()
            .unwrap();
        assert_eq!(decode(&msg), Sig::State(want));
    }
    assert_eq!(
        rig.agent_calls()[1..],
        [
            AgentCall::Reapply("work".into(), again, openvpn_ip4("lo"), VarDict::new()),
            // Before it, the stock service exited; after it, the shim reported STOPPED.
            AgentCall::Release("work".into(), true, STOPPING),
        ]
    );
    assert_eq!(
        rig.stock_calls(),
        ["Connect\tremote=vpn.example.com", "Disconnect", "exit"]
    );
    assert!(rig.exit_status().await.success());
    let log = rig.shim_log();
    assert!(
        log.contains(
            "isolated connection \"Work VPN\" in namespace work (created): tun lo (inside: lo), \
             198.19.0.2/24, in "
        ),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}

#[tokio::test]
async fn agent_failure_fails_the_connection() {
    let cases: [(Refusal, u32); 2] = [
        (AgentError::InvalidArgs, BAD_IP_CONFIG),
        (AgentError::Failed, CONNECT_FAILED),
    ];
    for (n, (fail, reason)) in cases.into_iter().enumerate() {
        let mut rig = Rig::start(&format!("agent-fails-{n}"), &fake_stock(), Some(fail), &[]).await;
        rig.connect_isolated().await;
        rig.emit_configs("lo").await;
        rig.assert_failed(reason).await;
        assert_eq!(
            rig.stock_calls(),
            ["Connect\tremote=x", "Disconnect", "exit"]
        );
        // The agent undid its work; there is no lease to release.
        assert!(matches!(&rig.agent_calls()[..], [AgentCall::Isolate(_)]));
        assert!(rig.exit_status().await.success());
        // The agent's text is in the log, on the line of the message that quotes it.
        let log = rig.shim_log();
        assert!(log.contains("the fake agent refuses\\n<3>forged"), "{log}");
        assert!(!log.lines().any(|l| l.starts_with("<3>")), "{log}");
    }
}

/// An agent killed during Isolate may have recorded a lease for the shim under a name the shim
/// never learns. The bus answers the call with NoReply; the shim then reads Version, which has
/// the bus start a new agent, which adopts that lease while the shim is on the bus and releases
/// it when the shim leaves.
#[tokio::test]
async fn vanished_agent_is_started_again() {
    let vanished: Refusal = |_| {
        let e = zbus::fdo::Error::NoReply("Message recipient disconnected".into());
        AgentError::ZBus(zbus::Error::FDO(Box::new(e)))
    };
    let mut rig = Rig::start("agent-vanishes", &fake_stock(), Some(vanished), &[]).await;
    rig.connect_isolated().await;
    rig.emit_configs("lo").await;
    rig.assert_failed(CONNECT_FAILED).await;
    assert!(
        matches!(
            &rig.agent_calls()[..],
            [AgentCall::Isolate(_), AgentCall::Version]
        ),
        "expected Isolate then Version, got {:?}",
        rig.agent_calls()
    );
    assert!(rig.exit_status().await.success());
    let log = rig.shim_log();
    assert!(
        log.contains("no agent answered; starting a new one"),
        "{log}"
    );
}

/// With an agent that prepares, the shim asks it at Connect, before any Config, and then isolates
/// as before.
#[tokio::test]
async fn the_namespace_is_prepared_at_connect() {
    let mut rig = Rig::fake("prepare").await;
    rig.agent_prepares.store(true, Ordering::Relaxed);
    rig.connect_isolated().await;
    rig.await_agent_calls(1).await;
    let calls = rig.agent_calls();
    let [AgentCall::Prepare(request)] = &calls[..] else {
        panic!("{calls:?}")
    };
    assert_eq!(request["uuid"], ov(UUID));
    assert!(request.contains_key("netns-settings"), "{request:?}");
    assert!(!request.contains_key("ifindex"), "{request:?}");
    rig.emit_configs("lo").await;
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));
    assert!(matches!(rig.next_signal().await, Sig::Config(_)));
    assert!(matches!(
        &rig.agent_calls()[..],
        [AgentCall::Prepare(_), AgentCall::Isolate(_)]
    ));
    rig.disconnect().await;
    assert!(rig.exit_status().await.success());
    assert!(
        rig.shim_log()
            .contains("prepared namespace work (created) for connection"),
        "{}",
        rig.shim_log()
    );
}

/// A connect that fails before any Config, as when openvpn cannot reach its server, releases
/// what Prepare made, once the stock service has exited.
#[tokio::test]
async fn a_failed_connect_releases_the_prepared_namespace() {
    let mut rig = Rig::fake("prepare-failed").await;
    rig.agent_prepares.store(true, Ordering::Relaxed);
    rig.connect_isolated().await;
    rig.await_agent_calls(1).await;
    rig.emit("Failure", Variant::from((CONNECT_FAILED,))).await;
    rig.assert_failed(CONNECT_FAILED).await;
    let calls = rig.agent_calls();
    assert!(
        matches!(
            &calls[..],
            [AgentCall::Prepare(_), AgentCall::Release(ns, true, STOPPING)] if ns == "work"
        ),
        "{calls:?}"
    );
    assert!(rig.exit_status().await.success());
}

#[tokio::test]
async fn missing_tun_fails_without_asking_the_agent() {
    let mut rig = Rig::fake("no-tun").await;
    rig.connect_isolated().await;
    rig.emit_configs("nm-netns-none").await;
    rig.assert_failed(BAD_IP_CONFIG).await;
    assert_eq!(rig.agent_calls(), []);
    assert!(rig.shim_log().contains("no link \"nm-netns-none\""));
}

#[tokio::test]
async fn bad_settings_are_refused_before_the_stock_service() {
    let mut rig = Rig::fake("refused").await;
    let cases = [
        (
            "Connect",
            connection(&[("remote", "x"), ("netns-isolate", "maybe")], vec![]),
            "netns-isolate: invalid value \"maybe\"",
        ),
        (
            "NeedSecrets",
            connection(&[("remote", "x"), ("netns-nmae", "work")], vec![]),
            "unknown key \"netns-nmae\"",
        ),
        (
            "Connect",
            connection(
                &[("netns-isolate", "yes")],
                vec![("dns", ov(vec![0x0102_000au32]))],
            ),
            "ipv4.dns is set",
        ),
    ];
    for (method, conn, why) in cases {
        let e = rig.call(method, conn).await.unwrap_err();
        let zbus::Error::MethodError(name, Some(message), _) = e else {
            panic!("{e:?}")
        };
        assert_eq!(name.as_str(), BAD_ARGUMENTS);
        assert!(
            message.starts_with("nm-vpn-netns refused the connection: "),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
    rig.disconnect().await;
    assert_eq!(rig.stock_calls(), ["Disconnect", "exit"]);
    assert!(rig.exit_status().await.success());
}

#[tokio::test]
async fn stock_errors_reach_nm_verbatim() {
    let mut rig = Rig::fake("verbatim").await;
    let why = "property “zzz” invalid or not supported";
    let conn = connection(&[("fake-reject", why), ("netns-isolate", "no")], vec![]);
    let e = rig.call("Connect", conn).await.unwrap_err();
    let zbus::Error::MethodError(name, message, _) = e else {
        panic!("{e:?}")
    };
    assert_eq!(name.as_str(), "org.example.Fake.Error.Rejected");
    assert_eq!(message.as_deref(), Some(why));
    rig.disconnect().await;
    assert_eq!(rig.stock_calls()[1..], ["Disconnect", "exit"]);
    assert!(rig.exit_status().await.success());
}

/// libnm's answer to `ConnectInteractive` for a plugin without it (nm-openconnect), relayed as is:
/// `nm-vpn-service-plugin.c`, `_connect_generic`.
async fn expect_interactive_not_supported(rig: &Rig, data: &[(&str, &str)]) {
    let e = rig
        .connect_interactive(connection(data, vec![]))
        .await
        .unwrap_err();
    let zbus::Error::MethodError(name, message, _) = e else {
        panic!("expected InteractiveNotSupported, got {e:?}")
    };
    assert_eq!(
        name.as_str(),
        "org.freedesktop.NetworkManager.VPN.Error.InteractiveNotSupported"
    );
    assert_eq!(
        message.as_deref(),
        Some("Plugin does not implement ConnectInteractive()")
    );
}

/// nm-openconnect-service has no ConnectInteractive: libnm answers InteractiveNotSupported, and NM
/// falls back to Connect with the same connection (nm-vpn-connection.c, `connect_interactive_cb`).
/// NM gets that answer as it is, and its Connect works as a first one would: passed through, or
/// isolated in the namespace that Prepare made at ConnectInteractive. The stock service never
/// inherits NM_DBUS_SERVICE_OPENCONNECT, whose value its helper would send the VPN's config to.
#[tokio::test]
async fn connect_after_interactive_not_supported() {
    for isolate in ["no", "yes"] {
        let test = format!("not-interactive-{isolate}");
        let env = [("NM_DBUS_SERVICE_OPENCONNECT", SHIM)];
        let mut rig = Rig::start(&test, &fake_stock(), None, &env).await;
        rig.agent_prepares.store(true, Ordering::Relaxed);
        let data = [
            ("gateway", "vpn.example.com"),
            ("fake-not-interactive", "yes"),
            ("netns-isolate", isolate),
        ];
        expect_interactive_not_supported(&rig, &data).await;
        rig.call("Connect", connection(&data, vec![]))
            .await
            .unwrap();
        assert_eq!(rig.next_signal().await, Sig::State(STARTING));
        rig.emit_configs("lo").await;
        match rig.next_signal().await {
            Sig::Config(c) if isolate == "yes" => assert!(!c.contains_key("tundev"), "{c:?}"),
            other => assert_eq!(other, Sig::Config(config("lo"))),
        }
        if isolate == "no" {
            assert_eq!(rig.next_signal().await, Sig::Ip4(openvpn_ip4("lo")));
        }
        rig.disconnect().await;
        assert_eq!(
            rig.signals_until_stopped().await,
            [Sig::State(STOPPING), Sig::State(STOPPED)]
        );
        let sent = "fake-not-interactive=yes\tgateway=vpn.example.com";
        assert_eq!(
            rig.stock_calls(),
            [
                format!("ConnectInteractive\t{sent}"),
                format!("Connect\t{sent}"),
                "Disconnect".into(),
                "exit".into()
            ],
            "{isolate}"
        );
        let calls = rig.agent_calls();
        match isolate {
            "yes" => assert!(
                matches!(
                    &calls[..],
                    [AgentCall::Prepare(_), AgentCall::Isolate(_), AgentCall::Release(ns, true, STOPPING)]
                    if ns == "work"
                ),
                "{calls:?}"
            ),
            _ => assert_eq!(calls, []),
        }
        assert!(rig.exit_status().await.success());
    }
}

#[tokio::test]
async fn stock_failure_is_reported_after_the_stop() {
    let mut rig = Rig::fake("stock-failure").await;
    rig.call("Connect", connection(&[("remote", "x")], vec![]))
        .await
        .unwrap();
    rig.emit("Failure", Variant::from((LOGIN_FAILED,))).await;
    rig.assert_failed(LOGIN_FAILED).await;
    assert_eq!(
        rig.stock_calls(),
        ["Connect\tremote=x", "Disconnect", "exit"]
    );
    assert!(rig.exit_status().await.success());
}

#[tokio::test]
async fn stock_service_crash_stops_the_plugin() {
    let mut rig = Rig::fake("crash").await;
    rig.call("Connect", connection(&[("remote", "x")], vec![]))
        .await
        .unwrap();
    // A crash loses what the process had not written yet.
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));
    let crash = rig
        .nm
        .call_method(Some(STOCK), PATH, Some(FAKE_STOCK_CONTROL), "Crash", &());
    crash.await.unwrap_err();
    assert_eq!(
        rig.signals_until_stopped().await,
        [Sig::State(STOPPING), Sig::State(STOPPED)]
    );
    assert!(rig.exit_status().await.success());
    assert!(rig.shim_log().contains("exit status: 3"));
}

#[tokio::test]
async fn nm_leaving_stops_the_plugin() {
    let mut rig = Rig::fake("nm-leaves").await;
    let nm = rig.bus.connect().await;
    let conn = connection(&[("remote", "x")], vec![]);
    nm.call_method(Some(SHIM), PATH, Some(IFACE), "Connect", &(conn,))
        .await
        .unwrap();
    nm.close().await.unwrap();
    assert!(rig.exit_status().await.success());
    assert_eq!(
        rig.stock_calls(),
        ["Connect\tremote=x", "Disconnect", "exit"]
    );
    assert!(rig.shim_log().contains("NetworkManager left the bus"));
}

/// The stock service leads a process group of its own, which openvpn joins, and however it goes,
/// the shim ends that group before it reports STOPPED: nothing that the stock service started (a
/// child of the fake here) outlives the plugin, even when the stock service crashed or left it.
#[tokio::test]
async fn nothing_the_stock_service_started_outlives_the_plugin() {
    for how in ["Crash", "Disconnect"] {
        let mut rig = Rig::fake(&format!("group-{how}")).await;
        rig.call("Connect", connection(&[("remote", "x")], vec![]))
            .await
            .unwrap();
        assert_eq!(rig.next_signal().await, Sig::State(STARTING));
        let stock = rig.stock_pid().await;
        let child = rig.stock_child().await;
        assert_eq!(running_group(stock), Some(stock), "it leads a group");
        assert_eq!(running_group(child), Some(stock), "its child is in it");
        if how == "Crash" {
            let crash =
                rig.nm
                    .call_method(Some(STOCK), PATH, Some(FAKE_STOCK_CONTROL), "Crash", &());
            crash.await.unwrap_err();
        } else {
            rig.disconnect().await;
        }
        assert_eq!(
            rig.signals_until_stopped().await,
            [Sig::State(STOPPING), Sig::State(STOPPED)],
            "{how}"
        );
        assert_eq!(
            running_group(child),
            None,
            "{how}: its child {child} runs on"
        );
        assert!(rig.exit_status().await.success());
        let log = rig.shim_log();
        assert!(
            log.contains("ending the stock service's process group"),
            "{log}"
        );
    }
}

/// A shim killed with SIGKILL tears nothing down: the kernel then sends the stock service SIGTERM,
/// on which it ends what it started and exits, as nm-openvpn-service ends openvpn.
#[tokio::test]
async fn a_killed_shim_takes_the_stock_service_along() {
    let mut rig = Rig::fake("shim-killed").await;
    rig.call("Connect", connection(&[("remote", "x")], vec![]))
        .await
        .unwrap();
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));
    let stock = rig.stock_pid().await;
    let child = rig.stock_child().await;
    rig.shim.kill().unwrap();
    rig.shim.wait().unwrap();
    let running = ended(&[stock, child]).await;
    assert!(
        running.is_empty(),
        "{running:?} still run after {TIMEOUT:?}"
    );
}

/// Only the stock service's owner speaks for it, and only the bus tells who owns a name. Signals
/// that another peer forges, broadcast or sent to the shim alone, change nothing: not a Config,
/// not a stop, not the stock service's or NetworkManager's name changing hands and then lost.
/// A signal sent to the shim alone passes every match rule of the bus; zbus then checks the
/// sender itself, against the stock service's unique name or against `org.freedesktop.DBus`,
/// which it parses as a unique name too. This test keeps an upgrade of zbus honest.
#[tokio::test]
async fn forged_signals_change_nothing() {
    let mut rig = Rig::fake("forged").await;
    rig.connect_isolated().await;
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));
    let forger = rig.bus.connect().await;
    let me = forger.unique_name().unwrap().to_string();
    let shim = rig.owner(SHIM).await;
    let stock = rig.owner(STOCK).await;
    let nm = rig.nm.unique_name().unwrap().to_string();
    let mut forged = config("lo");
    forged.insert("banner".into(), ov("forged"));
    let dbus = ("/org/freedesktop/DBus", "org.freedesktop.DBus");
    for to in [None, Some(shim.as_str())] {
        for (member, body) in [("Config", &forged), ("Ip4Config", &openvpn_ip4("lo"))] {
            let body = (body,);
            let signal = forger.emit_signal(to, PATH, IFACE, member, &body);
            signal.await.unwrap();
        }
        for (member, reason) in [("StateChanged", STOPPED), ("Failure", LOGIN_FAILED)] {
            let body = (reason,);
            let signal = forger.emit_signal(to, PATH, IFACE, member, &body);
            signal.await.unwrap();
        }
        for (name, owner) in [(STOCK, &stock), (&nm, &nm)] {
            for body in [(name, owner.as_str(), me.as_str()), (name, me.as_str(), "")] {
                let noc = forger.emit_signal(to, dbus.0, dbus.1, "NameOwnerChanged", &body);
                noc.await.unwrap();
            }
        }
    }
    // Time for the shim to act on them, if it would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.emit_configs("lo").await;
    let Sig::Config(reduced) = rig.next_signal().await else {
        panic!("not a Config:\n{}", rig.shim_log())
    };
    let banner = String::try_from(reduced["banner"].clone()).unwrap();
    assert!(
        banner.starts_with("welcome\nThis VPN is isolated"),
        "{banner}"
    );
    let calls = rig.agent_calls();
    let [AgentCall::Isolate(request)] = &calls[..] else {
        panic!("{calls:?}")
    };
    assert_eq!(
        VarDict::try_from(request["config"].clone()).unwrap(),
        config("lo")
    );
    rig.disconnect().await;
    assert_eq!(
        rig.signals_until_stopped().await,
        [Sig::State(STOPPING), Sig::State(STOPPED)]
    );
    assert!(rig.exit_status().await.success());
    let log = rig.shim_log();
    assert!(!log.contains("left the bus"), "{log}");
}

/// A system profile has no `connection.permissions` in NM's dict; the shim still sends the field,
/// empty, which the agent requires and reads as "system".
#[tokio::test]
async fn a_system_profile_sends_empty_permissions() {
    let mut rig = Rig::fake("system-profile").await;
    let mut conn = connection(&[("remote", "x"), ("netns-isolate", "yes")], vec![]);
    conn.get_mut("connection").unwrap().remove("permissions");
    rig.call("Connect", conn).await.unwrap();
    rig.emit_configs("lo").await;
    rig.await_agent_calls(1).await;
    let calls = rig.agent_calls();
    let [AgentCall::Isolate(request)] = &calls[..] else {
        panic!("{calls:?}")
    };
    assert_eq!(request.get("permissions"), Some(&ov(Vec::<String>::new())));
    rig.disconnect().await;
    assert!(rig.exit_status().await.success());
}

/// The real nm-openvpn-service refuses unknown `vpn.data` keys in key order, so it names
/// `netns-isolate` unless the shim stripped it, and its error must reach NM as it sent it.
#[tokio::test]
async fn real_stock_service_sees_no_netns_keys() {
    if !Path::new(STOCK_SERVICE).exists() {
        eprintln!("skipped: {STOCK_SERVICE} is not installed");
        return;
    }
    // Normally it quits as soon as a failed Connect has stopped it, and nm-openvpn 1.10.2 then
    // often loses its error reply (the bus answers NoReply; it does so without the shim too).
    // In debug mode it does not quit, so the reply always leaves, and this test stops it.
    let env = [("OPENVPN_DEBUG", "1")];
    let mut rig = Rig::start("real-stock", Path::new(STOCK_SERVICE), None, &env).await;
    let dbus = zbus::fdo::DBusProxy::new(&rig.nm).await.unwrap();
    let pid = async {
        loop {
            if let Ok(pid) = dbus
                .get_connection_unix_process_id(STOCK.try_into().unwrap())
                .await
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let pid = tokio::time::timeout(TIMEOUT, pid).await.unwrap();
    let data = [
        ("connection-type", "password"),
        ("netns-isolate", "no"),
        ("remote", "192.0.2.1"),
        ("zzz-bogus", "1"),
    ];
    let e = rig
        .call("Connect", connection(&data, vec![]))
        .await
        .unwrap_err();
    let zbus::Error::MethodError(name, Some(message), _) = e else {
        panic!("{e:?}")
    };
    assert_eq!(name.as_str(), BAD_ARGUMENTS);
    assert_eq!(message, "property “zzz-bogus” invalid or not supported");
    // It stopped; the shim follows and waits for it to exit.
    assert_eq!(rig.next_signal().await, Sig::State(STOPPING));
    let pid = nix::unistd::Pid::from_raw(pid.try_into().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(rig.next_signal().await, Sig::State(STOPPED));
    assert!(rig.exit_status().await.success());
}

/// The real nm-openconnect-service has no ConnectInteractive: its answer reaches NM as libnm sent
/// it, and the Connect that NM falls back to reaches it, which here refuses it for want of the
/// gateway secret before it would make a tun (`nm_openconnect_start_openconnect_binary`).
#[tokio::test]
async fn real_openconnect_service_takes_the_fallback_connect() {
    if !Path::new(OPENCONNECT_SERVICE).exists() {
        eprintln!("skipped: {OPENCONNECT_SERVICE} is not installed");
        return;
    }
    let mut rig = Rig::start(
        "real-openconnect",
        Path::new(OPENCONNECT_SERVICE),
        None,
        &[],
    )
    .await;
    let data = [("gateway", "192.0.2.1"), ("netns-isolate", "no")];
    expect_interactive_not_supported(&rig, &data).await;
    // It quits once the failed Connect has stopped it, and often loses its reply then, as
    // nm-openvpn does without the shim too: the bus answers NoReply for it. Either way the
    // Connect reached it; the shim's own refusal would be WrongState.
    let e = rig
        .call("Connect", connection(&data, vec![]))
        .await
        .unwrap_err();
    let reached = match &e {
        zbus::Error::MethodError(name, message, _) => {
            name.as_str() == "org.freedesktop.NetworkManager.VPN.Error.LaunchFailed"
                && message.as_deref() == Some("No VPN gateway specified.")
        }
        zbus::Error::FDO(e) => matches!(**e, zbus::fdo::Error::NoReply(_)),
        _ => false,
    };
    assert!(reached, "{e:?}");
    assert_eq!(
        rig.signals_until_stopped().await.last(),
        Some(&Sig::State(STOPPED))
    );
    assert!(rig.exit_status().await.success());
}

/// An agent of 0.2 or later reports the processes a release stranded in the namespace it
/// deleted, and the shim names them in NetworkManager's log; an older agent has only `Release`,
/// which the other tests' fake agent stands for.
#[tokio::test]
async fn stranded_processes_are_named_in_nms_log() {
    let mut rig = Rig::fake("stranded").await;
    *rig.agent_stranded.lock().unwrap() = Some(vec![(4242, "sleep".into())]);
    let data = [
        ("remote", "vpn.example.com"),
        ("netns-isolate", "yes"),
        ("netns-name", "work"),
    ];
    rig.call("Connect", connection(&data, vec![]))
        .await
        .unwrap();
    assert_eq!(rig.next_signal().await, Sig::State(STARTING));
    rig.emit_configs("lo").await;
    rig.emit("StateChanged", Variant::from((STARTED,))).await;
    rig.await_agent_calls(1).await;
    rig.disconnect().await;
    assert!(rig.exit_status().await.success());
    assert!(matches!(
        rig.agent_calls()[..],
        [AgentCall::Isolate(_), AgentCall::Release(..)]
    ));
    let log = rig.shim_log();
    assert!(
        log.contains(
            "<ERROR> namespace work was deleted at down while processes still ran in it: \
             4242 (sleep)."
        ),
        "{log}"
    );
    assert!(log.contains("set netns-persistent=yes"), "{log}");
}

/// A profile whose `vpn.data` lost the keys (GNOME's editor saved it) is isolated from their
/// mirror in `user.data`; once NM reports the VPN activated, and not before, the shim puts the keys
/// back into `vpn.data` with `Update2` (TO_DISK | NO_REAPPLY), from `GetSettings`, so without
/// secrets. A refused `Update2` is logged and leaves the VPN up.
#[tokio::test]
async fn keys_from_the_mirror_go_back_into_vpn_data_once_activated() {
    for refuse_updates in [false, true] {
        let mut rig = Rig::fake(&format!("mirror-{refuse_updates}")).await;
        let mirror = [("io.github.nm-vpn-netns.netns-isolate", "yes")];
        let user: HashMap<String, String> = mirror
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut edited = connection(&[("remote", "x")], vec![]);
        edited.insert(
            "user".into(),
            dict(vec![("data", OwnedVariant::from(user))]),
        );
        let mut profile = edited.clone();
        profile.get_mut("vpn").unwrap().remove("secrets");
        let nm: SharedNm = Arc::new(Mutex::new(NmState {
            uuid: UUID.into(),
            profile,
            state: 1,
            refuse_updates,
            updates: vec![],
        }));
        let _nm = common::nm::serve(&rig.bus.address, nm.clone()).await;

        rig.call("Connect", edited).await.unwrap();
        assert_eq!(rig.next_signal().await, Sig::State(STARTING));
        rig.emit_configs("lo").await;
        assert!(matches!(rig.next_signal().await, Sig::Config(_)));
        let calls = rig.agent_calls();
        let [AgentCall::Isolate(request)] = &calls[..] else {
            panic!("{calls:?}")
        };
        let keys: HashMap<String, String> = request["netns-settings"].clone().try_into().unwrap();
        assert_eq!(
            keys,
            HashMap::from([("netns-isolate".into(), "yes".into())])
        );
        assert_eq!(rig.stock_calls(), ["Connect\tremote=x"]);

        // Still ACTIVATING: the profile waits.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(nm.lock().unwrap().updates.is_empty());
        nm.lock().unwrap().state = 2;
        let logged = |text: &'static str| {
            let log = rig.shim_log.clone();
            async move {
                while !fs::read_to_string(&log).unwrap().contains(text) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let text = match refuse_updates {
            false => "put the netns-* keys back into vpn.data of connection",
            true => "cannot put the netns-* keys back into vpn.data of connection",
        };
        tokio::time::timeout(TIMEOUT, logged(text))
            .await
            .unwrap_or_else(|_| panic!("{}", rig.shim_log()));
        let updates = nm.lock().unwrap().updates.clone();
        if refuse_updates {
            assert!(updates.is_empty());
            assert!(
                rig.signals.next().now_or_never().is_none(),
                "the VPN stays up"
            );
        } else {
            let [(restored, flags)] = &updates[..] else {
                panic!("{updates:?}")
            };
            assert_eq!(*flags, 0x1 | 0x40);
            let data: HashMap<String, String> = restored["vpn"]["data"].clone().try_into().unwrap();
            assert_eq!(data["netns-isolate"], "yes");
            assert_eq!(data["remote"], "x");
            assert!(!restored["vpn"].contains_key("secrets"));
            assert_eq!(restored["user"], nm.lock().unwrap().profile["user"]);
        }
        rig.disconnect().await;
        assert!(rig.exit_status().await.success());
        assert!(!rig.shim_log().contains("hunter2"));
    }
}
