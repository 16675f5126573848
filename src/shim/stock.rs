//! The stock service behind the shim (nm-openvpn-service or nm-openconnect-service): its process,
//! and the calls and signals that pass between it and the shim.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use log::{debug, error, warn};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{killpg, Signal as UnixSignal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getppid, Pid};
use tokio::sync::oneshot;
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};
use zbus::zvariant::DynamicType;
use zbus::{Connection, Message};

use super::error::{bus_call_within, Peer, ShimError};
use super::session::Signal;
use super::{CALL_TIMEOUT, PLUGIN_INTERFACE, PLUGIN_PATH};

/// NM allows a plugin as long to own its name; the stock service gets the same.
const STOCK_START_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What the driver has of the stock service, and so what teardown must stop: its process, and its
/// unique name once it owns its bus name.
pub(super) struct Stock {
    pub process: StockProcess,
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
    bus_call_within(Peer::Stock, method, CALL_TIMEOUT, call).await
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

/// After the stock service has exited, or failed to within its bound, what is left of its process
/// group gets SIGTERM, and SIGKILL after this. nm-openvpn-service itself gives openvpn 2 s after
/// SIGTERM and 3 s in all (`pids_pending_send_sigterm`), so a stock service that gets SIGTERM
/// has ended openvpn by then. nm-openconnect-service sends openconnect SIGINT when it is stopped
/// (`real_disconnect`), on which openconnect logs out and exits.
pub(super) const GROUP_TERM_TIMEOUT: Duration = Duration::from_secs(4);
/// How often the group is looked at while it ends.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// The stock service's process, the leader of a process group of its own, which its VPN client
/// joins: nm-openvpn-service starts openvpn, and nm-openconnect-service openconnect, with
/// `g_spawn_async` and no `setsid`. So the group is everything the shim must end, even once the
/// stock service itself has died and left its client behind.
///
/// The leader is reaped only once its group has ended: until then its PID, which is the group's
/// id, cannot be reused, so no signal to the group can hit a stranger.
pub(super) struct StockProcess {
    child: Child,
    exit: oneshot::Receiver<String>,
    status: Option<String>,
}

impl StockProcess {
    pub fn spawn(program: &Path, bus_name: &str) -> Result<Self, ShimError> {
        let spawn_error = |error| ShimError::Spawn {
            program: program.to_owned(),
            error,
        };
        let shim = getpid();
        // It inherits NM_VPN_LOG_LEVEL/NM_VPN_LOG_SYSLOG and stderr, which NM puts in its log.
        let mut command = std::process::Command::new(program);
        command
            .arg("--bus-name")
            .arg(bus_name)
            // nm-openconnect-service sets it to its own bus name only if it is unset (`main`:
            // `setenv("NM_DBUS_SERVICE_OPENCONNECT", bus_name, 0)`), and its helper sends the
            // VPN's config to that name: inherited, it would reach the shim instead. nm-openvpn
            // passes its bus name to its helper as an argument, so it needs nothing of the kind.
            .env_remove("NM_DBUS_SERVICE_OPENCONNECT")
            .stdin(Stdio::null())
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec, and makes only system calls,
        // which are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // A shim killed with SIGKILL has no teardown: the kernel then sends the stock
                // service SIGTERM, on which it ends its VPN client and exits, as when NM stops it. The
                // signal comes when the thread that forked ends; that is the runtime's thread, which
                // lives as long as the shim.
                set_pdeathsig(UnixSignal::SIGTERM).map_err(io::Error::from)?;
                // The shim died before that: nobody would tell it.
                if getppid() != shim {
                    return Err(io::Error::from(nix::errno::Errno::ESRCH));
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(spawn_error)?;
        let pid = pid(&child);
        let (exited, exit) = oneshot::channel();
        std::thread::Builder::new()
            .name("stock-service".into())
            .spawn(move || {
                // WNOWAIT leaves it a zombie until `stop` reaps it.
                let status = loop {
                    match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                        Err(nix::errno::Errno::EINTR) => {}
                        status => break status,
                    }
                };
                exited.send(describe(status)).ok();
            })
            .map_err(spawn_error)?;
        Ok(StockProcess {
            child,
            exit,
            status: None,
        })
    }

    /// Waits until it has exited, and tells how it ended. It is not reaped yet.
    pub async fn exited(&mut self) -> String {
        if self.status.is_none() {
            let status = (&mut self.exit).await;
            self.status = Some(status.unwrap_or_else(|_| "unknown".to_owned()));
        }
        self.status.clone().unwrap_or_default()
    }

    /// Waits `bound` for it to exit; then ends what is left of its process group, its VPN client
    /// included: SIGTERM, and SIGKILL after `term_bound`. Reaps it, and tells how it ended.
    pub async fn stop(&mut self, bound: Duration, term_bound: Duration) -> String {
        if tokio::time::timeout(bound, self.exited()).await.is_err() {
            warn!("the stock service did not exit within {bound:?}");
        }
        let group = pid(&self.child);
        if group_alive(group).await {
            warn!("ending the stock service's process group {group}");
            signal_group(group, UnixSignal::SIGTERM);
            if !group_gone_within(group, term_bound).await {
                warn!("killing the stock service's process group {group}");
                signal_group(group, UnixSignal::SIGKILL);
                group_gone_within(group, term_bound).await;
            }
        }
        let status = self.exited().await;
        self.child.wait().ok();
        status
    }
}

fn signal_group(group: Pid, signal: UnixSignal) {
    if let Err(e) = killpg(group, signal) {
        error!("cannot send {signal} to process group {group}: {e}");
    }
}

/// Whether a process of `group` other than a zombie is running.
async fn group_alive(group: Pid) -> bool {
    tokio::task::spawn_blocking(move || group_members(group))
        .await
        .unwrap_or(true)
}

/// Whether `group` has no running process left within `bound`, looked at every [`GROUP_POLL`].
async fn group_gone_within(group: Pid, bound: Duration) -> bool {
    let gone = async {
        while group_alive(group).await {
            tokio::time::sleep(GROUP_POLL).await;
        }
    };
    tokio::time::timeout(bound, gone).await.is_ok()
}

/// Whether `/proc` shows a running process of `group`; if `/proc` cannot be read, the group
/// counts as running, so that it gets its signals anyway.
fn group_members(group: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| running_group(&stat))
            == Some(group.as_raw())
    })
}

/// The process group in a `/proc/PID/stat` line, unless the process has ended (a zombie).
fn running_group(stat: &str) -> Option<i32> {
    // The command name before them, in parentheses, may hold anything, `)` and spaces too.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let group = fields.nth(1)?.parse().ok()?;
    (!matches!(state, "Z" | "X")).then_some(group)
}

/// As `std::process::ExitStatus` says it.
fn describe(status: nix::Result<WaitStatus>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => format!("exit status: {code}"),
        Ok(WaitStatus::Signaled(_, signal, _)) => format!("signal: {} ({signal})", signal as i32),
        Ok(other) => format!("{other:?}"),
        Err(e) => e.to_string(),
    }
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("PIDs fit in pid_t"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nm-vpn-netns-shim-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn script(name: &str, body: &str) -> PathBuf {
        let path = temp_dir(name).join("stock.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn stock_service_that_exits_is_reaped() {
        let program = script("exits", "test \"$1\" = --bus-name && exit 3");
        let mut process = StockProcess::spawn(&program, "x.y").unwrap();
        let status = process.stop(LONG, LONG).await;
        assert_eq!(status, "exit status: 3");
        // Asking again is harmless.
        assert_eq!(process.exited().await, "exit status: 3");
        std::fs::remove_dir_all(program.parent().unwrap()).unwrap();
    }

    /// A stuck stock service gets SIGTERM, and SIGKILL if it ignores that; so does what it
    /// started, which is in its group, and what it left behind when it exited.
    #[tokio::test]
    async fn the_whole_group_is_ended() {
        for (name, body, want) in [
            ("stuck", "exec sleep 60", "signal: 15 (SIGTERM)"),
            ("deaf", "trap '' TERM; exec sleep 60", "signal: 9 (SIGKILL)"),
            ("leaves-one", "sleep 60 & exit 0", "exit status: 0"),
            (
                "leaves-a-deaf-one",
                "trap '' TERM; sleep 60 & exit 0",
                "exit status: 0",
            ),
            (
                "waits-on-a-deaf-one",
                "(trap '' TERM; exec sleep 60) & wait",
                "signal: 15 (SIGTERM)",
            ),
        ] {
            let program = script(name, body);
            let mut process = StockProcess::spawn(&program, "x.y").unwrap();
            let group = pid(&process.child);
            let started = Instant::now();
            let bound = Duration::from_millis(300);
            assert_eq!(process.stop(bound, bound).await, want, "{name}");
            assert!(started.elapsed() < LONG, "{name}");
            assert!(
                !group_members(group),
                "{name}: a process of group {group} runs on"
            );
            std::fs::remove_dir_all(program.parent().unwrap()).unwrap();
        }
    }

    #[test]
    fn stat_lines() {
        let stat = "4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 95 0";
        assert_eq!(running_group(stat), Some(4240));
        assert_eq!(running_group("4242 (x) Z 1 4240 4240 0"), None);
        assert_eq!(running_group("4242 (x) R 1"), None);
        assert_eq!(running_group("garbage"), None);
    }
}
