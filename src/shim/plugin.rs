//! The VPN plugin interface that NM calls, and its signals. It only checks and forwards; the
//! driver decides.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use log::{error, warn};
use tokio::sync::{mpsc, oneshot, watch};
use zbus::message::Header;
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::{interface, Connection};

use crate::plan::settings::NmConnection;
use crate::plan::VarDict;
use crate::report::chain;

use super::codec::{self, NetnsIntent};
use super::error::{Leaf, Peer, Reply, ShimError};
use super::session::Signal;
use super::stock::{self, StockStatus};

/// What the facade asks of the driver.
pub(super) enum Command {
    Connect {
        /// NM's unique name: the plugin follows it, as libnm's `watch_peer` does.
        peer: Option<String>,
        intent: Option<NetnsIntent>,
        accepted: oneshot::Sender<Result<(), ShimError>>,
    },
    /// The stock service declined ConnectInteractive; NM falls back to Connect.
    ConnectDeclined,
    Disconnect {
        stopped: oneshot::Sender<()>,
    },
}

/// The object NM calls at [`super::PLUGIN_PATH`].
pub(super) struct Plugin {
    commands: mpsc::UnboundedSender<Command>,
    stock: watch::Receiver<StockStatus>,
    state: Arc<AtomicU32>,
    /// The VPN service it stands in for, which decides what some keys of `vpn.data` mean.
    service: String,
}

impl Plugin {
    pub fn new(
        commands: mpsc::UnboundedSender<Command>,
        stock: watch::Receiver<StockStatus>,
        state: Arc<AtomicU32>,
        service: &str,
    ) -> Self {
        Plugin {
            commands,
            stock,
            state,
            service: service.to_owned(),
        }
    }

    /// The stock service's unique name, once it is on the bus: calls are forwarded to it.
    async fn stock(&self) -> Result<String, ShimError> {
        let mut stock = self.stock.clone();
        loop {
            let status = stock.borrow_and_update().clone();
            match status {
                StockStatus::Ready(name) => return Ok(name),
                StockStatus::Gone => return Err(ShimError::StockGone),
                StockStatus::Starting => {
                    stock.changed().await.map_err(|_| ShimError::StockGone)?;
                }
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
        let checked = checked(connection, &self.service)?;
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

/// Emits `signal` to NM; a StateChanged also updates the State property.
pub(super) async fn emit(iface: &InterfaceRef<Plugin>, state: &AtomicU32, signal: Signal) {
    let emitter = iface.signal_emitter();
    let result = match &signal {
        Signal::StateChanged(new) => {
            state.store(*new, Ordering::Relaxed);
            let result = Plugin::state_changed_signal(emitter, *new).await;
            let plugin = iface.get().await;
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

/// [`codec::check`], logging a refusal.
fn checked(connection: NmConnection, service: &str) -> Result<codec::Checked, ShimError> {
    codec::check(connection, service).inspect_err(|e| warn!("{}", chain(e)))
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
        stock::call(conn, &self.stock().await?, "Connect", &(connection,)).await?;
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
        let body = (connection, details);
        let called = stock::call(conn, &self.stock().await?, "ConnectInteractive", &body).await;
        if called.as_ref().is_err_and(ShimError::declines_interactive) {
            // Before NM has the answer, so before its Connect: the driver takes them in order.
            self.commands.send(Command::ConnectDeclined).ok();
        }
        called?;
        Ok(())
    }

    #[zbus(out_args("setting_name"))]
    async fn need_secrets(
        &self,
        settings: NmConnection,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, Reply> {
        let checked = checked(settings, &self.service)?;
        let reply = stock::call(
            conn,
            &self.stock().await?,
            "NeedSecrets",
            &(checked.connection,),
        )
        .await?;
        let setting: String = reply
            .body()
            .deserialize()
            .map_err(|error| ShimError::Call {
                peer: Peer::Stock,
                method: "NeedSecrets",
                error: Leaf(error),
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
        stock::call(conn, &self.stock().await?, "NewSecrets", &(connection,)).await?;
        Ok(())
    }

    // The stock service's helper calls these on the stock service itself; forwarding keeps the
    // interface whole.
    async fn set_config(
        &self,
        config: VarDict,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        stock::call(conn, &self.stock().await?, "SetConfig", &(config,)).await?;
        Ok(())
    }

    #[zbus(name = "SetIp4Config")]
    async fn set_ip4_config(
        &self,
        config: VarDict,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        stock::call(conn, &self.stock().await?, "SetIp4Config", &(config,)).await?;
        Ok(())
    }

    #[zbus(name = "SetIp6Config")]
    async fn set_ip6_config(
        &self,
        config: VarDict,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        stock::call(conn, &self.stock().await?, "SetIp6Config", &(config,)).await?;
        Ok(())
    }

    async fn set_failure(
        &self,
        reason: String,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Reply> {
        stock::call(conn, &self.stock().await?, "SetFailure", &(reason,)).await?;
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
