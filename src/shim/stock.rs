//! The stock nm-openvpn service behind the shim: which program it is, the bus name it gets, its
//! process, and the calls and signals that pass between it and the shim.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use log::{debug, error, warn};
use nix::sys::signal::{kill, Signal as UnixSignal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::zvariant::DynamicType;
use zbus::{Connection, Message};

use super::error::{within, Leaf, Peer, ShimError};
use super::keyfile;
use super::session::Signal;
use super::{CALL_TIMEOUT, PLUGIN_INTERFACE, PLUGIN_PATH, SERVICE, STOCK_PROGRAM};

/// NM allows a plugin as long to own its name; the stock service gets the same.
const STOCK_START_TIMEOUT: Duration = Duration::from_secs(5);

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
pub fn stock_bus_name(ours: &str) -> Result<String, ShimError> {
    match ours.strip_prefix(SERVICE) {
        Some("") => Ok(format!("{SERVICE}.netns")),
        Some(rest) if rest.starts_with('.') => Ok(format!("{SERVICE}.netns{rest}")),
        _ => Err(ShimError::BusName(ours.to_owned())),
    }
}

/// Refuses to run the shim itself as the stock service, which would recurse until the machine
/// gives out.
pub(super) fn refuse_self(program: &Path) -> Result<(), ShimError> {
    let own = std::env::current_exe().and_then(|p| p.canonicalize()).ok();
    if own.is_some() && program.canonicalize().ok() == own {
        return Err(ShimError::StockIsShim(program.to_owned()));
    }
    Ok(())
}

/// Where the stock service is, as the plugin's methods see it: they wait for it to be on the bus.
#[derive(Debug, Clone)]
pub(super) enum StockStatus {
    Starting,
    /// Its unique name.
    Ready(String),
    Gone,
}

/// What the driver has of the stock service, and so what teardown must stop: its process once
/// spawned, and its unique name once it owns its bus name.
#[derive(Default)]
pub(super) struct Stock {
    pub process: Option<StockProcess>,
    pub owner: Option<String>,
}

/// Calls `method` of the stock service at `owner` with `body`, bounded as NM bounds its calls.
pub(super) async fn call<B>(
    conn: &Connection,
    owner: &str,
    method: &'static str,
    body: &B,
) -> Result<Message, ShimError>
where
    B: serde::Serialize + DynamicType,
{
    let call = conn.call_method(
        Some(owner),
        PLUGIN_PATH,
        Some(PLUGIN_INTERFACE),
        method,
        body,
    );
    within(Peer::Stock, method, CALL_TIMEOUT, call)
        .await?
        .map_err(|error| ShimError::Call {
            peer: Peer::Stock,
            method,
            error: Leaf(error),
        })
}

/// Waits for the stock service to own `name`, and returns its unique name together with a
/// stream that tells when it goes.
pub(super) async fn owned(
    conn: &Connection,
    process: &mut StockProcess,
    name: &str,
) -> Result<(String, NameOwnerChangedStream), ShimError> {
    let dbus = DBusProxy::new(conn).await?;
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
        Err(ShimError::StockGone)
    };
    let owner = tokio::select! {
        owner = tokio::time::timeout(STOCK_START_TIMEOUT, owned) => {
            owner.map_err(|_| ShimError::StockStartTimeout {
                name: name.to_owned(),
                timeout: STOCK_START_TIMEOUT,
            })?
        }
        status = process.exited() => Err(ShimError::StockExited {
            name: name.to_owned(),
            status,
        }),
    }?;
    debug!("the stock service owns {name} as {owner}");
    Ok((owner, changes))
}

/// The stock service's signal in `msg`, if it is one of the interface's.
pub(super) fn decode(msg: &Message) -> Option<Signal> {
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
pub(super) struct StockProcess {
    child: Child,
    exit: oneshot::Receiver<()>,
    exited: bool,
}

impl StockProcess {
    pub fn spawn(program: &Path, bus_name: &str) -> Result<Self, ShimError> {
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
        let pid = pid(&child);
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
        Ok(StockProcess {
            child,
            exit,
            exited: false,
        })
    }

    /// Waits until it has exited, reaps it, and tells how it ended.
    pub async fn exited(&mut self) -> String {
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
    pub async fn wait_or_kill(&mut self, bound: Duration) -> String {
        if let Ok(status) = tokio::time::timeout(bound, self.exited()).await {
            return status;
        }
        warn!("the stock service did not exit within {bound:?}; killing it");
        let pid = pid(&self.child);
        if let Err(e) = kill(pid, UnixSignal::SIGKILL) {
            error!("cannot kill the stock service (PID {pid}): {e}");
        }
        self.exited().await
    }
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("PIDs fit in pid_t"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;
    use crate::report::chain;

    #[test]
    fn stock_names() {
        assert_eq!(
            stock_bus_name("org.freedesktop.NetworkManager.openvpn.Connection_3").unwrap(),
            "org.freedesktop.NetworkManager.openvpn.netns.Connection_3"
        );
        assert_eq!(
            stock_bus_name(SERVICE).unwrap(),
            "org.freedesktop.NetworkManager.openvpn.netns"
        );
        for bad in [
            "org.freedesktop.NetworkManager.openvpnx.Connection_3",
            "org.example.vpn",
            "",
        ] {
            assert!(
                matches!(stock_bus_name(bad), Err(ShimError::BusName(_))),
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
        let e = chain(&stock_program(&file).unwrap_err());
        assert_eq!(
            e,
            format!(
                "{}: line 1: a key comes before the first group",
                file.display()
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn script(name: &str, body: &str) -> PathBuf {
        let path = temp_dir(name).join("stock.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn stock_service_that_exits_is_reaped() {
        let program = script("exits", "test \"$1\" = --bus-name && exit 3");
        let mut process = StockProcess::spawn(&program, "x.y").unwrap();
        let status = process.wait_or_kill(Duration::from_secs(10)).await;
        assert_eq!(status, "exit status: 3");
        // Asking again is harmless.
        assert_eq!(process.exited().await, "exit status: 3");
        std::fs::remove_dir_all(program.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn stuck_stock_service_is_killed() {
        let program = script("stuck", "exec sleep 60");
        let mut process = StockProcess::spawn(&program, "x.y").unwrap();
        let started = Instant::now();
        let status = process.wait_or_kill(Duration::from_millis(200)).await;
        assert_eq!(status, "signal: 9 (SIGKILL)");
        assert!(started.elapsed() < Duration::from_secs(10));
        std::fs::remove_dir_all(program.parent().unwrap()).unwrap();
    }
}
