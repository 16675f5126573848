//! The driver: one task that feeds the [`Session`] what happens on the bus (the stock service's
//! signals, NM's commands through the [`Plugin`], the agent's answers, peers leaving) and carries
//! out the actions it returns, until it stops; then it tears down.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use log::{debug, info, warn};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Sleep;
use zbus::fdo::{DBusProxy, NameOwnerChanged, NameOwnerChangedStream};
use zbus::object_server::InterfaceRef;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::contract::{LinkLost, LinkLostStream};
use crate::report::chain;

use super::agent_calls::{self, AgentAnswer, AgentCall};
use super::error::ShimError;
use super::plugin::{self, Command, Plugin};
use super::restore;
use super::session::{state, Action, Session, Signal};
use super::stock::{self, Stock, StockProcess, StockStatus};
use super::{PLUGIN_INTERFACE, PLUGIN_PATH};

/// How long the stock service gets to exit after Disconnect. nm-openvpn sends openvpn SIGTERM, and
/// nm-openconnect openconnect SIGINT, each SIGKILL 2 s later; this leaves room for a loaded
/// machine.
const STOCK_EXIT_TIMEOUT: Duration = Duration::from_secs(16);
/// How long after the stock service's exit the bus gets to report its name lost.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long calls still in progress get to answer before the process exits.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Driver {
    conn: Connection,
    iface: InterfaceRef<Plugin>,
    state: Arc<AtomicU32>,
    stock_status: watch::Sender<StockStatus>,
    commands: mpsc::UnboundedReceiver<Command>,
    session: Session,
    /// The agent call in flight; the session allows one at a time.
    agent: Option<AgentCall>,
    /// NM's unique name, followed once it has connected.
    nm: Option<NameOwnerChangedStream>,
    /// Disconnect calls, answered once the plugin has stopped.
    disconnects: Vec<oneshot::Sender<()>>,
}

/// What the stock service tells the driver while it serves.
struct StockWatch {
    signals: MessageStream,
    /// The agent's `LinkLost` signals.
    agent_signals: LinkLostStream,
    owner_changes: NameOwnerChangedStream,
    /// Running once its process has exited: what it emitted may still be on its way, and the bus
    /// reports the name lost only after it has passed on everything the process sent.
    exit_grace: Option<Pin<Box<Sleep>>>,
}

impl StockWatch {
    fn on_exit(&mut self, status: String) -> Vec<Action> {
        warn!("the stock service exited ({status})");
        self.exit_grace = Some(Box::pin(tokio::time::sleep(EXIT_GRACE)));
        vec![]
    }
}

impl Driver {
    /// Owns `bus_name` with the plugin's interface for the VPN `service` on it. NM fails a plugin
    /// that has not owned its name 5 s after the spawn, so this comes before anything else.
    pub async fn new(bus_name: &str, service: &str) -> Result<Driver, ShimError> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (stock_status, stock) = watch::channel(StockStatus::Starting);
        let state = Arc::new(AtomicU32::new(state::INIT));
        let plugin = Plugin::new(commands, stock, state.clone(), service);
        let conn = zbus::connection::Builder::system()
            .serve_at(PLUGIN_PATH, plugin)
            .name(bus_name)
            .build()
            .await?;
        let iface = conn
            .object_server()
            .interface::<_, Plugin>(PLUGIN_PATH)
            .await?;
        Ok(Driver {
            conn,
            iface,
            state,
            stock_status,
            commands: command_rx,
            session: Session::default(),
            agent: None,
            nm: None,
            disconnects: Vec::new(),
        })
    }

    /// Waits for the stock service `process` to own `name`, serves until the session stops, tears
    /// down and lets go of the bus. Every way out, a failed start included, takes the one teardown.
    pub async fn drive(mut self, process: StockProcess, name: &str) -> Result<(), ShimError> {
        let mut stock = Stock {
            process,
            owner: None,
        };
        let served = self.start_and_serve(&mut stock, name).await;
        let failure = served.as_ref().ok().copied().flatten();
        self.teardown(&mut stock, failure).await;
        self.close().await;
        served.map(drop)
    }

    /// Serves until the session stops, and returns the failure to report. What it started is
    /// in `stock`, for teardown.
    async fn start_and_serve(
        &mut self,
        stock: &mut Stock,
        name: &str,
    ) -> Result<Option<u32>, ShimError> {
        let process = &mut stock.process;
        let (owner, owner_changes) = stock::owned(&self.conn, process, name).await?;
        let owner = stock.owner.insert(owner);
        let watch = self.watch(owner, owner_changes).await?;
        Ok(self.serve(process, watch).await)
    }

    /// Subscribes to the signals of the stock service at `owner`; only then may NM's calls reach
    /// it, so that nothing it emits about them can be missed.
    async fn watch(
        &self,
        owner: &str,
        owner_changes: NameOwnerChangedStream,
    ) -> Result<StockWatch, ShimError> {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(owner)
            .path(PLUGIN_PATH)
            .interface(PLUGIN_INTERFACE)
            .build()?;
        let signals = MessageStream::for_match_rule(rule, &self.conn, None).await?;
        let agent_signals = agent_calls::link_lost_signals(&self.conn).await?;
        self.stock_status
            .send_replace(StockStatus::Ready(owner.to_owned()));
        Ok(StockWatch {
            signals,
            agent_signals,
            owner_changes,
            exit_grace: None,
        })
    }

    /// Feeds the session until it stops, and returns the failure to report.
    async fn serve(&mut self, process: &mut StockProcess, mut watch: StockWatch) -> Option<u32> {
        loop {
            // Biased: the stock service's signals go first, so that none is lost to a stop.
            let actions = tokio::select! {
                biased;
                Some(msg) = watch.signals.next() => self.on_stock_signal(msg),
                Some(command) = self.commands.recv() => self.on_command(command).await,
                answer = agent_calls::answer(&mut self.agent) => self.on_agent_answer(answer),
                Some(lost) = watch.agent_signals.next() => self.on_link_lost(&lost),
                () = vanished(&mut self.nm) => self.on_nm_gone(),
                Some(change) = watch.owner_changes.next() => self.on_stock_owner(&change),
                status = process.exited(), if watch.exit_grace.is_none() => watch.on_exit(status),
                () = elapsed(&mut watch.exit_grace), if watch.exit_grace.is_some() => {
                    self.session.stop()
                }
            };
            if let ControlFlow::Break(failure) = self.perform(actions).await {
                return failure;
            }
        }
    }

    /// Carries out the session's actions; `Break` with the failure to report once it stops.
    async fn perform(&mut self, actions: Vec<Action>) -> ControlFlow<Option<u32>> {
        for action in actions {
            match action {
                Action::Emit(signal) => self.emit(signal).await,
                Action::Prepare(intent) => {
                    self.agent = Some(agent_calls::prepare(self.conn.clone(), *intent));
                }
                Action::Isolate(call) => {
                    self.agent = Some(agent_calls::isolate(self.conn.clone(), *call));
                }
                Action::Reapply(call) => {
                    self.agent = Some(agent_calls::reapply(self.conn.clone(), *call));
                }
                // Beside the loop: it waits for NM, which may want the plugin meanwhile.
                Action::RestoreKeys(uuid) => {
                    tokio::spawn(restore::restore_keys(self.conn.clone(), uuid));
                }
                Action::Stop(failure) => return ControlFlow::Break(failure),
            }
        }
        ControlFlow::Continue(())
    }

    fn on_stock_signal(&mut self, msg: zbus::Result<Message>) -> Vec<Action> {
        match msg.ok().as_ref().and_then(stock::decode) {
            Some(signal) => self.session.on_signal(signal),
            None => vec![],
        }
    }

    fn on_link_lost(&mut self, signal: &LinkLost) -> Vec<Action> {
        match agent_calls::link_lost(signal) {
            Some((netns, link, loss)) => self.session.on_link_lost(&netns, &link, &loss),
            None => vec![],
        }
    }

    async fn on_command(&mut self, command: Command) -> Vec<Action> {
        match command {
            Command::Connect {
                peer,
                intent,
                accepted,
            } => {
                let result = self.session.connect(intent);
                let follow = match (&result, peer) {
                    (Ok(_), Some(peer)) => self.follow(&peer).await,
                    _ => Ok(None),
                };
                let (result, actions) = match result {
                    Ok(actions) => (Ok(()), actions),
                    Err(e) => (Err(e), vec![]),
                };
                accepted.send(result).ok();
                match follow {
                    Ok(changes) => {
                        self.nm = changes;
                        actions
                    }
                    // It left before we could follow it.
                    Err(()) => self.session.stop(),
                }
            }
            Command::ConnectDeclined => {
                info!("the stock service has no ConnectInteractive; NetworkManager falls back to Connect");
                self.session.on_connect_declined();
                vec![]
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

    fn on_agent_answer(&mut self, answer: AgentAnswer) -> Vec<Action> {
        self.agent = None;
        match answer {
            AgentAnswer::Prepared(result) => self.session.on_prepared(result),
            AgentAnswer::Isolated(result) => self.session.on_isolated(result),
            AgentAnswer::Reapplied(result) => self.session.on_reapplied(result),
        }
    }

    fn on_nm_gone(&mut self) -> Vec<Action> {
        info!("NetworkManager left the bus");
        self.session.stop()
    }

    fn on_stock_owner(&mut self, change: &NameOwnerChanged) -> Vec<Action> {
        if change.args().is_ok_and(|a| a.new_owner().is_none()) {
            warn!("the stock service left the bus");
            self.session.stop()
        } else {
            vec![]
        }
    }

    async fn emit(&self, signal: Signal) {
        plugin::emit(&self.iface, &self.state, signal).await;
    }

    /// The one teardown, in the order of ARCHITECTURE.md, "Teardown order": the stock service
    /// stops first (its VPN client exits with it; openvpn's tun goes with openvpn), then an Isolate still
    /// in flight finishes, then the lease is released, and only then does NM hear the failure
    /// and STOPPED; so NM sees STOPPED only once the namespace is free.
    async fn teardown(&mut self, stock: &mut Stock, failure: Option<u32>) {
        self.begin_teardown(failure).await;
        // 1. Stop the stock service: Disconnect, then wait for it to exit, or kill it.
        self.stop_stock(stock).await;
        // 2. A Prepare or Isolate still in flight may yet have leased a namespace.
        if let Some(call) = self.agent.take() {
            let answer = call.await;
            self.on_agent_answer(answer);
        }
        // 3. Release the lease.
        if let Some(netns) = self.session.lease() {
            agent_calls::release(&self.conn, netns).await;
        }
        // 4. The failure, if any; 5. STOPPED.
        if let Some(reason) = failure {
            self.emit(Signal::Failure(reason)).await;
        }
        self.emit(Signal::StateChanged(state::STOPPED)).await;
        // 6. Answer what waits for the stop; `close` then flushes and lets go of the bus.
        self.answer_waiting();
    }

    /// Tells the plugin's methods that the stock service is gone, and NM that the plugin stops.
    async fn begin_teardown(&mut self, failure: Option<u32>) {
        info!(
            "stopping{}",
            failure.map_or(String::new(), |f| format!(" (failure reason {f})"))
        );
        self.stock_status.send_replace(StockStatus::Gone);
        // The stock service may have said so already: it reports STOPPING before STOPPED.
        if self.state.load(Ordering::Relaxed) != state::STOPPING {
            self.emit(Signal::StateChanged(state::STOPPING)).await;
        }
    }

    /// Asks the stock service to disconnect if it got as far as owning its name, waits for it to
    /// exit, and ends its process group: what it left running, or itself if it did not exit.
    async fn stop_stock(&self, stock: &mut Stock) {
        let bound = match &stock.owner {
            Some(owner) => {
                if let Err(e) = stock::call(&self.conn, owner, "Disconnect", &()).await {
                    // It quits by itself once it has stopped, so it may be gone already.
                    debug!("{}", chain(&e));
                }
                STOCK_EXIT_TIMEOUT
            }
            None => Duration::ZERO,
        };
        let status = stock.process.stop(bound, stock::GROUP_TERM_TIMEOUT).await;
        info!("the stock service has exited ({status})");
    }

    /// Refuses the commands still queued and answers every Disconnect, now that the plugin has
    /// stopped.
    fn answer_waiting(&mut self) {
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Connect { accepted, .. } => {
                    accepted.send(Err(ShimError::WrongState("stopped"))).ok();
                }
                Command::ConnectDeclined => {}
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

/// Resolves once `grace` has run out; never if it has not started.
async fn elapsed(grace: &mut Option<Pin<Box<Sleep>>>) {
    match grace {
        Some(grace) => grace.await,
        None => std::future::pending().await,
    }
}
