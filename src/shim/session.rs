//! The shim's decisions as a state machine without I/O: which of the stock service's signals NM
//! sees, which are held back, when the agent is asked, and when the plugin stops.
//!
//! ```text
//!            Connect (isolated): Prepare     all announced dicts in,     Isolate ok
//!   Idle ─────────────────────────► Isolating ───────────────► (agent) ─────────────► Isolated
//!     │  Connect (not isolated)           and Prepare answered                           │ config re-sent:
//!     └───────────────────────► PassThrough                                              └─► Reapply
//!   any phase ── Disconnect · NM or the stock service gone · its Failure or STOPPED ──► Stopping
//!   Isolated ── the agent's LinkLost (the tun left, or the namespace lost its name) ──► Stopping, failed
//!
//!   the stock service declines ConnectInteractive (InteractiveNotSupported), NM falls back to Connect:
//!   PassThrough ──► Idle          Isolating ──► Declined ── Connect, the same connection ──► Isolating
//! ```

use std::mem;

use log::{error, warn};

use crate::contract::LinkLoss;
use crate::plan::VarDict;
use crate::report::chain;

use super::codec::{ConfigSet, NetnsIntent};
use super::ShimError;

/// `NMVpnServiceState` values (NetworkManager's nm-vpn-dbus-interface.h) that the shim acts on.
pub mod state {
    pub const INIT: u32 = 1;
    pub const STARTED: u32 = 4;
    pub const STOPPING: u32 = 5;
    pub const STOPPED: u32 = 6;
}

/// `NMVpnPluginFailure` values (nm-vpn-dbus-interface.h).
pub mod failure {
    pub const CONNECT_FAILED: u32 = 1;
    /// NM turns it into `IP_CONFIG_INVALID`, the reason it gives when it refuses a config itself.
    pub const BAD_IP_CONFIG: u32 = 2;
}

/// A signal of the VPN plugin interface, as the stock service emits it and as NM receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    StateChanged(u32),
    Config(VarDict),
    Ip4Config(VarDict),
    Ip6Config(VarDict),
    LoginBanner(String),
    Failure(u32),
    SecretsRequired(String, Vec<String>),
}

/// What the driver must do next.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Emit this signal to NM.
    Emit(Signal),
    /// Ask the agent to prepare the namespace while the VPN client connects (ARCHITECTURE.md,
    /// "Prepare"); the session waits for its answer before it asks for `Isolate`.
    Prepare(Box<NetnsIntent>),
    /// Ask the agent to isolate the tun; the driver looks up its ifindex.
    Isolate(Box<IsolateCall>),
    /// Ask the agent to re-apply a config that the stock service re-sent.
    Reapply(Box<ReapplyCall>),
    /// Put the mirrored `netns-*` keys back into `vpn.data` of the profile with this uuid, now
    /// that NM has the Config that activates the VPN; the driver does it beside its loop.
    RestoreKeys(String),
    /// Tear down; then emit this failure, if any, and STOPPED.
    Stop(Option<u32>),
}

#[derive(Debug, PartialEq)]
pub struct IsolateCall {
    pub intent: NetnsIntent,
    pub set: ConfigSet,
}

#[derive(Debug, PartialEq)]
pub struct ReapplyCall {
    pub netns: String,
    pub set: ConfigSet,
}

/// Where the connection stands.
#[derive(Debug)]
enum Phase {
    /// No Connect yet: signals pass through.
    Idle,
    /// Not isolated: every signal passes through.
    PassThrough,
    /// Isolated, and NM has no Config yet.
    Isolating(Box<Isolating>),
    /// Isolated and reported to NM.
    Isolated(Box<Isolated>),
    /// Isolated, but the stock service declined ConnectInteractive: what `Prepare` made, or is
    /// making, waits for the Connect that NM sends instead.
    Declined(Box<Isolating>),
    /// Tearing down; the stock service's signals are dropped. `lease` is what to release.
    Stopping { lease: Option<String> },
}

#[derive(Debug)]
struct Isolating {
    intent: NetnsIntent,
    /// `None` while the agent prepares; then the namespace it prepared, if it did.
    prepared: Option<Option<String>>,
    dicts: Dicts,
    /// The Config NM gets once the agent is done; `Some` while the agent works.
    reduced: Option<VarDict>,
    /// The stock service reported STARTED, which NM must only hear after the Config.
    started: bool,
}

#[derive(Debug)]
struct Isolated {
    netns: String,
    /// A config that the stock service re-sent: openvpn's after a restart.
    dicts: Dicts,
    reapplying: bool,
}

/// The stock service's Config and the Ip4Config/Ip6Config it announces, as they come in.
#[derive(Debug, Default)]
struct Dicts {
    config: Option<VarDict>,
    ip4: Option<VarDict>,
    ip6: Option<VarDict>,
}

impl Dicts {
    fn announces(&self, key: &str) -> bool {
        let flag = self.config.as_ref().and_then(|c| c.get(key));
        flag.and_then(|v| bool::try_from(v).ok()) == Some(true)
    }

    /// Keeps a config signal, and hands any other back.
    fn collect(&mut self, signal: Signal) -> Option<Signal> {
        let (v6, d) = match signal {
            Signal::Config(d) => {
                // A new Config starts a new set: the VPN client re-ran its script.
                *self = Dicts {
                    config: Some(d),
                    ..Dicts::default()
                };
                return None;
            }
            Signal::Ip4Config(d) => (false, d),
            Signal::Ip6Config(d) => (true, d),
            other => return Some(other),
        };
        let (key, name) = if v6 {
            ("has-ip6", "Ip6Config")
        } else {
            ("has-ip4", "Ip4Config")
        };
        if self.announces(key) {
            *if v6 { &mut self.ip6 } else { &mut self.ip4 } = Some(d);
        } else {
            // NM ignores such a dict too, and the planner would refuse it.
            warn!("ignoring an {name} that the stock service's Config did not announce");
        }
        None
    }

    /// The complete set, leaving this one empty.
    fn take_complete(&mut self) -> Option<ConfigSet> {
        let complete = self.config.is_some()
            && (!self.announces("has-ip4") || self.ip4.is_some())
            && (!self.announces("has-ip6") || self.ip6.is_some());
        if !complete {
            return None;
        }
        let Dicts { config, ip4, ip6 } = mem::take(self);
        Some(ConfigSet {
            config: config?,
            ip4,
            ip6,
        })
    }
}

impl Isolated {
    fn reapply(&mut self) -> Vec<Action> {
        if self.reapplying {
            return vec![];
        }
        match self.dicts.take_complete() {
            Some(set) => {
                self.reapplying = true;
                vec![Action::Reapply(Box::new(ReapplyCall {
                    netns: self.netns.clone(),
                    set,
                }))]
            }
            None => vec![],
        }
    }
}

/// The state machine; see the module documentation for the picture.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
}

impl Default for Session {
    fn default() -> Self {
        Session { phase: Phase::Idle }
    }
}

impl Session {
    /// The namespace that the agent leased to us, once we are stopping.
    pub fn lease(&self) -> Option<&str> {
        match &self.phase {
            Phase::Stopping { lease } => lease.as_deref(),
            _ => None,
        }
    }

    /// Connect or ConnectInteractive, before it reaches the stock service. Like libnm's plugins,
    /// a plugin connects once. An isolated connection's namespace is prepared meanwhile.
    pub fn connect(&mut self, intent: Option<NetnsIntent>) -> Result<Vec<Action>, ShimError> {
        match (mem::replace(&mut self.phase, Phase::Idle), intent) {
            (Phase::Idle, None) => {
                self.phase = Phase::PassThrough;
                Ok(vec![])
            }
            (Phase::Idle, Some(intent)) => {
                let prepare = Action::Prepare(Box::new(intent.clone()));
                self.phase = Phase::Isolating(Box::new(Isolating {
                    intent,
                    prepared: None,
                    dicts: Dicts::default(),
                    reduced: None,
                    started: false,
                }));
                Ok(vec![prepare])
            }
            // The Connect NM falls back to: it carries the connection of the ConnectInteractive.
            (Phase::Declined(i), Some(intent)) if intent == i.intent => {
                self.phase = Phase::Isolating(i);
                Ok(vec![])
            }
            (phase, _) => {
                let e = match phase {
                    Phase::Declined(_) => ShimError::ConnectChanged,
                    Phase::Stopping { .. } => ShimError::WrongState("stopping"),
                    _ => ShimError::WrongState("connecting or connected"),
                };
                self.phase = phase;
                Err(e)
            }
        }
    }

    /// The stock service answered ConnectInteractive with `InteractiveNotSupported`, as libnm does
    /// for a plugin without `connect_interactive`, nm-openconnect's (NM's
    /// src/libnm-client-impl/nm-vpn-service-plugin.c, `_connect_generic`): it did not start, and NM
    /// falls back to Connect at once with the same connection (src/core/vpn/nm-vpn-connection.c,
    /// `connect_interactive_cb`). So that Connect finds the session as a first one would, but
    /// for the namespace prepared for the connection, which it takes over. If it never comes,
    /// the stop that follows releases that namespace as any other.
    pub fn on_connect_declined(&mut self) {
        self.phase = match mem::replace(&mut self.phase, Phase::Idle) {
            Phase::PassThrough => Phase::Idle,
            Phase::Isolating(i) => Phase::Declined(i),
            other => other,
        };
    }

    /// A signal from the stock service.
    pub fn on_signal(&mut self, signal: Signal) -> Vec<Action> {
        let stop = match signal {
            Signal::Failure(reason) => Some(Some(reason)),
            Signal::StateChanged(state::STOPPED) => Some(None),
            _ => None,
        };
        match (&mut self.phase, stop) {
            (Phase::Stopping { .. }, _) => vec![],
            (_, Some(failure)) => self.begin_stop(failure),
            (Phase::Idle | Phase::PassThrough, None) => vec![Action::Emit(signal)],
            (Phase::Isolating(i) | Phase::Declined(i), None) => match i.dicts.collect(signal) {
                None => self.isolate(),
                Some(Signal::StateChanged(state::STARTED)) => {
                    i.started = true;
                    vec![]
                }
                Some(other) => vec![Action::Emit(other)],
            },
            // openvpn kept root and re-ran its up script: the namespace takes the new config,
            // and NM never hears of the tun. (nm-openconnect's helper sends its config once per
            // openconnect process: only at "connect", never at a reconnect.)
            (Phase::Isolated(i), None) => match i.dicts.collect(signal) {
                None => i.reapply(),
                Some(other) => vec![Action::Emit(other)],
            },
        }
    }

    fn isolate(&mut self) -> Vec<Action> {
        let Phase::Isolating(i) = &mut self.phase else {
            return vec![];
        };
        // One agent call at a time; and `Isolate` finds what `Prepare` made.
        if i.reduced.is_some() || i.prepared.is_none() {
            return vec![];
        }
        let Some(set) = i.dicts.take_complete() else {
            return vec![];
        };
        match super::codec::isolated_nm_config(&set.config) {
            Ok(reduced) => {
                i.reduced = Some(reduced);
                vec![Action::Isolate(Box::new(IsolateCall {
                    intent: i.intent.clone(),
                    set,
                }))]
            }
            Err(e) => {
                let e = ShimError::Plan(e);
                error!("connection {:?}: {}", i.intent.id, chain(&e));
                self.begin_stop(Some(e.failure()))
            }
        }
    }

    /// The agent answered `Prepare` with this namespace, or failed (the driver logged why; the
    /// isolation then does the whole work).
    pub fn on_prepared(&mut self, result: Result<String, ShimError>) -> Vec<Action> {
        match (&mut self.phase, result) {
            (Phase::Isolating(i) | Phase::Declined(i), result) => {
                i.prepared = Some(result.ok());
                self.isolate()
            }
            // It came in while stopping: the namespace is ours to release.
            (Phase::Stopping { lease: None }, Ok(netns)) => {
                self.phase = Phase::Stopping { lease: Some(netns) };
                vec![]
            }
            _ => vec![],
        }
    }

    /// The agent answered `Isolate` with this namespace, or failed (the driver logged why).
    pub fn on_isolated(&mut self, result: Result<String, ShimError>) -> Vec<Action> {
        match (mem::replace(&mut self.phase, Phase::Idle), result) {
            (Phase::Isolating(mut i), Ok(netns)) => {
                let mut reduced = i.reduced.take().expect("Isolate answered only when asked");
                super::codec::add_netns_banner(&mut reduced, &netns);
                let mut actions = vec![Action::Emit(Signal::Config(reduced))];
                if i.started {
                    actions.push(Action::Emit(Signal::StateChanged(state::STARTED)));
                }
                // Never from within Connect: NM activates on this Config, and only then is the
                // profile touched.
                if i.intent.from_mirror {
                    actions.push(Action::RestoreKeys(i.intent.uuid.clone()));
                }
                let mut isolated = Isolated {
                    netns,
                    dicts: i.dicts,
                    reapplying: false,
                };
                actions.extend(isolated.reapply());
                self.phase = Phase::Isolated(Box::new(isolated));
                actions
            }
            // What `Prepare` made is released.
            (phase @ Phase::Isolating(_), Err(e)) => {
                self.phase = phase;
                self.begin_stop(Some(e.failure()))
            }
            // It came in while stopping: whatever it made is ours to release.
            (Phase::Stopping { lease: None }, Ok(netns)) => {
                self.phase = Phase::Stopping { lease: Some(netns) };
                vec![]
            }
            (phase, _) => {
                self.phase = phase;
                vec![]
            }
        }
    }

    /// The agent answered `Reapply`.
    pub fn on_reapplied(&mut self, result: Result<(), ShimError>) -> Vec<Action> {
        let Phase::Isolated(i) = &mut self.phase else {
            return vec![];
        };
        i.reapplying = false;
        match result {
            Ok(()) => i.reapply(),
            // The namespace keeps the old addresses, so its traffic fails closed; stop so that
            // the user sees it.
            Err(e) => self.begin_stop(Some(e.failure())),
        }
    }

    /// The agent reports that the tun `link` can no longer serve the namespace `netns`: it left it
    /// (its VPN client closed it, as openvpn does to reopen it after the server pushed another
    /// address), or the namespace lost its name. Either way NM must hear it. Ignored unless it is
    /// our namespace.
    pub fn on_link_lost(&mut self, netns: &str, link: &str, loss: &LinkLoss) -> Vec<Action> {
        match &self.phase {
            Phase::Isolated(i) if i.netns == netns => {
                match loss {
                    LinkLoss::Removed => error!(
                        "tunnel {link} left namespace {netns} (its VPN client closed it, as openvpn \
                         does to reopen it after the server changed the pushed address); stopping \
                         the VPN"
                    ),
                    LinkLoss::NetnsDeleted => error!(
                        "namespace {netns} was deleted or unmounted from outside while the VPN \
                         was up; no app can start in it any more; stopping the VPN"
                    ),
                    LinkLoss::Other(reason) => error!(
                        "the agent reports tunnel {link} lost in namespace {netns} ({}); \
                         stopping the VPN",
                        reason.escape_debug()
                    ),
                }
                self.begin_stop(Some(failure::CONNECT_FAILED))
            }
            _ => vec![],
        }
    }

    /// NM asked to disconnect, or NM or the stock service left; nothing if already stopping.
    pub fn stop(&mut self) -> Vec<Action> {
        match self.phase {
            Phase::Stopping { .. } => vec![],
            _ => self.begin_stop(None),
        }
    }

    fn begin_stop(&mut self, failure: Option<u32>) -> Vec<Action> {
        let lease = match &self.phase {
            Phase::Isolated(i) => Some(i.netns.clone()),
            Phase::Isolating(i) | Phase::Declined(i) => i.prepared.clone().flatten(),
            _ => None,
        };
        self.phase = Phase::Stopping { lease };
        vec![Action::Stop(failure)]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;

    use crate::plan::{owned as ov, var_dict as dict};

    fn intent() -> NetnsIntent {
        NetnsIntent {
            id: "work".into(),
            uuid: "8d3e2c1a-5b4f-4e6d-9a7b-0c1d2e3f4a5b".into(),
            permissions: vec![],
            netns_settings: BTreeMap::from([("netns-isolate".into(), "yes".into())]),
            from_mirror: false,
            never_default_v4: false,
            never_default_v6: false,
            tunnel_mtu: None,
            timeout: Duration::from_secs(2),
            connect_timeout: None,
        }
    }

    /// nm-openvpn's Config from the rig (topology subnet with IPv6).
    fn config(has_ip6: bool) -> VarDict {
        dict(vec![
            ("gateway", ov(16782022u32)),
            ("can-persist", ov(true)),
            ("tundev", ov("tun0")),
            ("mtu", ov(1500u32)),
            ("has-ip4", ov(true)),
            ("has-ip6", ov(has_ip6)),
        ])
    }

    fn ip4() -> VarDict {
        dict(vec![
            ("address", ov(33559494u32)),
            ("prefix", ov(24u32)),
            ("tundev", ov("tun0")),
        ])
    }

    fn ip6() -> VarDict {
        dict(vec![("prefix", ov(64u32))])
    }

    /// The Config NM gets for `config(_)` isolated in namespace `work`.
    fn reduced() -> VarDict {
        dict(vec![
            ("gateway", ov(16782022u32)),
            ("can-persist", ov(true)),
            ("has-ip4", ov(false)),
            ("has-ip6", ov(false)),
            (
                "banner",
                ov(
                    "This VPN is isolated in network namespace \"work\": run apps there with: \
                    nm-vpn-netns exec work -- COMMAND",
                ),
            ),
        ])
    }

    /// Connected, and the namespace prepared.
    fn isolating() -> Session {
        let mut s = Session::default();
        assert_eq!(
            s.connect(Some(intent())).unwrap(),
            [Action::Prepare(Box::new(intent()))]
        );
        assert_eq!(s.on_prepared(Ok("work".into())), []);
        s
    }

    /// Connected, and `Prepare` failed: the isolation does the whole work, as without `Prepare`.
    fn unprepared() -> Session {
        let mut s = Session::default();
        s.connect(Some(intent())).unwrap();
        assert_eq!(s.on_prepared(Err(ShimError::WrongState("test"))), []);
        s
    }

    fn isolated() -> Session {
        let mut s = isolating();
        s.on_signal(Signal::Config(config(false)));
        assert_eq!(s.on_signal(Signal::Ip4Config(ip4())).len(), 1);
        s.on_isolated(Ok("work".into()));
        s
    }

    #[test]
    fn pass_through_forwards_everything() {
        let mut s = Session::default();
        s.connect(None).unwrap();
        for signal in [
            Signal::StateChanged(3),
            Signal::Config(config(true)),
            Signal::Ip4Config(ip4()),
            Signal::Ip6Config(ip6()),
            Signal::LoginBanner("hello".into()),
            Signal::SecretsRequired("otp".into(), vec!["x".into()]),
            Signal::StateChanged(state::STARTED),
        ] {
            assert_eq!(s.on_signal(signal.clone()), [Action::Emit(signal)]);
        }
    }

    #[test]
    fn before_connect_signals_pass_through() {
        let mut s = Session::default();
        assert_eq!(
            s.on_signal(Signal::StateChanged(3)),
            [Action::Emit(Signal::StateChanged(3))]
        );
    }

    #[test]
    fn failure_or_stopped_stop_in_any_phase() {
        for mut s in [Session::default(), isolating(), isolated()] {
            assert_eq!(s.on_signal(Signal::Failure(0)), [Action::Stop(Some(0))]);
            assert_eq!(s.on_signal(Signal::StateChanged(state::STOPPED)), []);
        }
        let mut s = Session::default();
        s.connect(None).unwrap();
        assert_eq!(
            s.on_signal(Signal::StateChanged(state::STOPPED)),
            [Action::Stop(None)]
        );
        assert_eq!(s.on_signal(Signal::Failure(1)), []);
        assert_eq!(s.stop(), []);
    }

    #[test]
    fn connect_only_once() {
        let mut s = isolating();
        assert!(matches!(
            s.connect(None),
            Err(ShimError::WrongState("connecting or connected"))
        ));
        s.stop();
        assert!(matches!(
            s.connect(None),
            Err(ShimError::WrongState("stopping"))
        ));
    }

    #[test]
    fn isolation_waits_for_every_announced_dict() {
        let mut s = isolating();
        assert_eq!(
            s.on_signal(Signal::StateChanged(3)),
            [Action::Emit(Signal::StateChanged(3))]
        );
        assert_eq!(s.on_signal(Signal::Config(config(true))), []);
        assert_eq!(s.on_signal(Signal::Ip6Config(ip6())), []);
        // libnm reports STARTED after the last dict; NM must hear it after our Config.
        assert_eq!(
            s.on_signal(Signal::Ip4Config(ip4())),
            [Action::Isolate(Box::new(IsolateCall {
                intent: intent(),
                set: ConfigSet {
                    config: config(true),
                    ip4: Some(ip4()),
                    ip6: Some(ip6()),
                },
            }))]
        );
        assert_eq!(s.on_signal(Signal::StateChanged(state::STARTED)), []);
        assert_eq!(
            s.on_signal(Signal::LoginBanner("hi".into())),
            [Action::Emit(Signal::LoginBanner("hi".into()))]
        );
        assert_eq!(
            s.on_isolated(Ok("work".into())),
            [
                Action::Emit(Signal::Config(reduced())),
                Action::Emit(Signal::StateChanged(state::STARTED)),
            ]
        );
        assert!(matches!(s.phase, Phase::Isolated(_)));
    }

    #[test]
    fn unannounced_dicts_are_dropped() {
        let mut s = isolating();
        assert_eq!(s.on_signal(Signal::Ip4Config(ip4())), []);
        assert_eq!(s.on_signal(Signal::Config(config(false))), []);
        assert_eq!(s.on_signal(Signal::Ip6Config(ip6())), []);
        let actions = s.on_signal(Signal::Ip4Config(ip4()));
        assert!(
            matches!(&actions[..], [Action::Isolate(c)] if c.set.ip6.is_none() && c.set.ip4 == Some(ip4()))
        );
    }

    #[test]
    fn a_config_nm_cannot_take_fails_before_the_agent() {
        let mut s = unprepared();
        let mut bad = config(false);
        bad.remove("gateway");
        bad.insert("has-ip4".into(), ov(false));
        assert_eq!(
            s.on_signal(Signal::Config(bad)),
            [Action::Stop(Some(failure::BAD_IP_CONFIG))]
        );
        assert_eq!(s.lease(), None);
    }

    #[test]
    fn agent_failures_map_to_nm_reasons() {
        for (error, reason) in [
            (ShimError::NoTunDev, failure::BAD_IP_CONFIG),
            (ShimError::StockGone, failure::CONNECT_FAILED),
        ] {
            let mut s = unprepared();
            s.on_signal(Signal::Config(config(false)));
            s.on_signal(Signal::Ip4Config(ip4()));
            assert_eq!(s.on_isolated(Err(error)), [Action::Stop(Some(reason))]);
            assert_eq!(s.lease(), None);
        }
    }

    #[test]
    fn nothing_but_the_reduced_config_reaches_nm() {
        let mut s = isolated();
        assert!(matches!(s.phase, Phase::Isolated(_)));
        assert_eq!(
            s.on_signal(Signal::StateChanged(4)),
            [Action::Emit(Signal::StateChanged(4))]
        );
        assert_eq!(s.lease(), None);
        assert_eq!(s.stop(), [Action::Stop(None)]);
        assert_eq!(s.lease(), Some("work"));
    }

    #[test]
    fn resent_config_is_reapplied_not_reported() {
        let mut s = isolated();
        assert_eq!(s.on_signal(Signal::Config(config(false))), []);
        let reapply = |config, ip4| {
            vec![Action::Reapply(Box::new(ReapplyCall {
                netns: "work".into(),
                set: ConfigSet {
                    config,
                    ip4,
                    ip6: None,
                },
            }))]
        };
        assert_eq!(
            s.on_signal(Signal::Ip4Config(ip4())),
            reapply(config(false), Some(ip4()))
        );
        // A third set while the agent works waits for its answer.
        let mut newer = config(false);
        newer.insert("mtu".into(), ov(1400u32));
        assert_eq!(s.on_signal(Signal::Config(newer.clone())), []);
        assert_eq!(s.on_signal(Signal::Ip4Config(ip4())), []);
        assert_eq!(s.on_reapplied(Ok(())), reapply(newer, Some(ip4())));
        assert_eq!(s.on_reapplied(Ok(())), []);
        assert_eq!(
            s.on_reapplied(Err(ShimError::StockGone)),
            [Action::Stop(Some(failure::CONNECT_FAILED))]
        );
        assert_eq!(s.lease(), Some("work"));
    }

    #[test]
    fn config_resent_during_isolation_is_reapplied_after() {
        let mut s = isolating();
        s.on_signal(Signal::Config(config(false)));
        s.on_signal(Signal::Ip4Config(ip4()));
        assert_eq!(s.on_signal(Signal::Config(config(false))), []);
        assert_eq!(s.on_signal(Signal::Ip4Config(ip4())), []);
        let actions = s.on_isolated(Ok("work".into()));
        assert!(matches!(
            &actions[..],
            [Action::Emit(Signal::Config(_)), Action::Reapply(_)]
        ));
    }

    #[test]
    fn a_lease_granted_while_stopping_is_released() {
        let mut s = unprepared();
        s.on_signal(Signal::Config(config(false)));
        s.on_signal(Signal::Ip4Config(ip4()));
        assert_eq!(s.stop(), [Action::Stop(None)]);
        assert_eq!(s.on_isolated(Ok("work".into())), []);
        assert_eq!(s.lease(), Some("work"));

        let mut s = unprepared();
        s.stop();
        assert_eq!(s.on_isolated(Err(ShimError::NoTunDev)), []);
        assert_eq!(s.lease(), None);
    }

    /// The tun left our namespace, or the namespace lost its name, or a reason this build does not
    /// know: the VPN fails, and the lease is released. A loss in another namespace, before the
    /// isolation or while stopping changes nothing.
    #[test]
    fn a_lost_link_fails_the_vpn() {
        let other = LinkLoss::Other("link-eaten".into());
        for loss in [LinkLoss::Removed, LinkLoss::NetnsDeleted, other] {
            let mut s = isolated();
            assert_eq!(s.on_link_lost("other", "tun0", &loss), []);
            assert_eq!(
                s.on_link_lost("work", "tun0", &loss),
                [Action::Stop(Some(failure::CONNECT_FAILED))]
            );
            assert_eq!(s.lease(), Some("work"));
            assert_eq!(s.on_link_lost("work", "tun0", &loss), []);
            assert_eq!(s.stop(), []);

            let mut s = isolating();
            assert_eq!(s.on_link_lost("work", "tun0", &loss), []);
            assert_eq!(Session::default().on_link_lost("work", "tun0", &loss), []);
        }
    }

    /// Keys read from the mirror go back into vpn.data once NM has the Config that activates the
    /// VPN, never before; keys from vpn.data need nothing.
    #[test]
    fn keys_from_the_mirror_are_restored_after_the_config() {
        let mut s = Session::default();
        let from_mirror = NetnsIntent {
            from_mirror: true,
            ..intent()
        };
        s.connect(Some(from_mirror.clone())).unwrap();
        s.on_prepared(Ok("work".into()));
        assert_eq!(s.on_signal(Signal::Config(config(false))), []);
        assert!(matches!(
            &s.on_signal(Signal::Ip4Config(ip4()))[..],
            [Action::Isolate(_)]
        ));
        assert_eq!(
            s.on_isolated(Ok("work".into())),
            [
                Action::Emit(Signal::Config(reduced())),
                Action::RestoreKeys(from_mirror.uuid),
            ]
        );
    }

    /// The complete Config of an isolated connection, as the stock service sends it.
    fn configured(s: &mut Session) -> Vec<Action> {
        assert_eq!(s.on_signal(Signal::Config(config(false))), []);
        s.on_signal(Signal::Ip4Config(ip4()))
    }

    /// `Isolate` waits for `Prepare`'s answer, whatever it is, and goes on to do the whole
    /// work if `Prepare` failed.
    #[test]
    fn isolate_waits_for_prepare() {
        for prepared in [Ok("work".to_owned()), Err(ShimError::WrongState("test"))] {
            let mut s = Session::default();
            assert_eq!(
                s.connect(Some(intent())).unwrap(),
                [Action::Prepare(Box::new(intent()))]
            );
            assert_eq!(configured(&mut s), []);
            assert!(matches!(&s.on_prepared(prepared)[..], [Action::Isolate(_)]));
            assert_eq!(
                s.on_isolated(Ok("work".into())),
                [Action::Emit(Signal::Config(reduced()))]
            );
        }
    }

    /// A stop before the Config, or a failed `Isolate`, releases what `Prepare` made; a
    /// `Prepare` that answers while stopping leaves its namespace to release.
    #[test]
    fn a_stop_releases_the_prepared_namespace() {
        let mut s = isolating();
        assert_eq!(s.stop(), [Action::Stop(None)]);
        assert_eq!(s.lease(), Some("work"));

        let mut s = isolating();
        assert!(matches!(&configured(&mut s)[..], [Action::Isolate(_)]));
        let failed = s.on_isolated(Err(ShimError::WrongState("test")));
        assert!(matches!(&failed[..], [Action::Stop(Some(_))]), "{failed:?}");
        assert_eq!(s.lease(), Some("work"));

        let mut s = Session::default();
        s.connect(Some(intent())).unwrap();
        assert_eq!(s.stop(), [Action::Stop(None)]);
        assert_eq!(s.lease(), None);
        assert_eq!(s.on_prepared(Ok("work".into())), []);
        assert_eq!(s.lease(), Some("work"));

        let mut s = Session::default();
        s.connect(Some(intent())).unwrap();
        s.on_prepared(Err(ShimError::WrongState("test")));
        assert_eq!(s.stop(), [Action::Stop(None)]);
        assert_eq!(s.lease(), None);
    }

    /// nm-openconnect has no ConnectInteractive: NM's Connect after its `InteractiveNotSupported`
    /// works as a first one would, pass-through or isolated. An isolated one takes over what
    /// `Prepare` made or is making, whenever it answers.
    #[test]
    fn connect_after_a_declined_connect_interactive() {
        let mut s = Session::default();
        s.connect(None).unwrap();
        s.on_connect_declined();
        assert!(matches!(s.phase, Phase::Idle));
        assert_eq!(s.connect(None).unwrap(), []);
        assert!(matches!(s.phase, Phase::PassThrough));

        let answered_before = |s: &mut Session| {
            assert_eq!(s.on_prepared(Ok("work".into())), []);
            assert_eq!(s.connect(Some(intent())).unwrap(), []);
            configured(s)
        };
        let answered_between = |s: &mut Session| {
            s.on_connect_declined();
            answered_before(s)
        };
        let answered_after = |s: &mut Session| {
            s.on_connect_declined();
            assert_eq!(s.connect(Some(intent())).unwrap(), []);
            assert_eq!(configured(s), []);
            s.on_prepared(Ok("work".into()))
        };
        for (case, answered) in [
            (
                "between",
                &answered_between as &dyn Fn(&mut Session) -> Vec<Action>,
            ),
            ("after", &answered_after),
        ] {
            let mut s = Session::default();
            s.connect(Some(intent())).unwrap();
            assert!(
                matches!(&answered(&mut s)[..], [Action::Isolate(_)]),
                "{case}"
            );
            assert_eq!(
                s.on_isolated(Ok("work".into())),
                [Action::Emit(Signal::Config(reduced()))],
                "{case}"
            );
        }
        let mut s = Session::default();
        s.connect(Some(intent())).unwrap();
        s.on_connect_declined();
        assert!(matches!(&answered_before(&mut s)[..], [Action::Isolate(_)]));

        // NM sends the same connection; another one finds the session as it was.
        let mut s = isolating();
        s.on_connect_declined();
        assert!(matches!(s.connect(None), Err(ShimError::ConnectChanged)));
        let other = NetnsIntent {
            id: "other".into(),
            ..intent()
        };
        assert!(matches!(
            s.connect(Some(other)),
            Err(ShimError::ConnectChanged)
        ));
        assert_eq!(s.connect(Some(intent())).unwrap(), []);
        assert!(matches!(
            s.connect(Some(intent())),
            Err(ShimError::WrongState("connecting or connected"))
        ));
    }

    /// A Connect that never comes after a declined ConnectInteractive: the stop that follows (NM's
    /// Disconnect or its leaving, or the stock service's own stop) releases the namespace,
    /// prepared already or answered while stopping.
    #[test]
    fn a_stop_after_a_declined_connect_interactive_releases_the_namespace() {
        let mut s = isolating();
        s.on_connect_declined();
        assert_eq!(
            s.on_signal(Signal::StateChanged(state::STOPPED)),
            [Action::Stop(None)]
        );
        assert_eq!(s.lease(), Some("work"));

        let mut s = Session::default();
        s.connect(Some(intent())).unwrap();
        s.on_connect_declined();
        assert_eq!(s.stop(), [Action::Stop(None)]);
        assert_eq!(s.lease(), None);
        assert_eq!(s.on_prepared(Ok("work".into())), []);
        assert_eq!(s.lease(), Some("work"));
        // Declined after the stop: nothing to roll back.
        s.on_connect_declined();
        assert_eq!(s.lease(), Some("work"));
    }
}
