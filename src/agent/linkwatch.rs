//! The watch on each isolated tun: when it leaves its leased namespace (openvpn closed it, as
//! when it reopens its tun after the server pushed another address, or it was moved out), or the
//! namespace loses its name (`ip netns delete`, or `umount` alone, while the VPN is up), the
//! agent sends `LinkLost` ([`crate::contract::Agent1Proxy::receive_link_lost`]) to the lease
//! holder, which stops the VPN. Without it NM would report the VPN connected while nothing can
//! pass, or while no one can start an app in the namespace any more.
//!
//! The watch is a netlink socket opened inside the namespace ([`Opener`]), an inotify watch on
//! the directory of the namespace's name, and a watch on the mount table (for `umount` alone),
//! read on the service's event loop; it ends, closing them, when the lease is released. The socket
//! holds the namespace: closing it once the name is gone lets the kernel destroy a namespace no
//! process holds, and the tun with it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use log::{error, info, warn};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

use crate::agent::lifecycle;
use crate::agent::record::Record;
use crate::agent::rtmsg;
use crate::agent::sys::SysError;
use crate::agent::Agent;
use crate::contract::{LinkLoss, LINK_LOST, OBJECT_PATH};
use crate::plan::settings::NetnsName;
use crate::report::chain;

/// Opens a watch on `link` in the namespace mounted at the path: a non-blocking socket that
/// receives the namespace's rtnetlink link messages, and the link's index there; `None` if the
/// link is not there. [`crate::agent::linux::link_watch`] on the kernel.
pub type Opener = fn(&Path, &str) -> Result<Option<(OwnedFd, u32)>, SysError>;

/// One lease's watch.
pub struct Lost {
    pub netns: NetnsName,
    pub link: String,
    /// The lease holder's unique name, the signal's only destination.
    pub owner: String,
}

/// The running watches, by namespace.
pub struct Watches {
    /// Where the namespaces are mounted.
    run_netns: PathBuf,
    /// Opens each watch; `None`: no watch.
    pub open: Option<Opener>,
    tasks: Mutex<HashMap<NetnsName, JoinHandle<()>>>,
    /// The leases taken back at start, watched once the agent serves.
    adopted: Mutex<Vec<Lost>>,
}

impl Watches {
    pub fn new(run_netns: PathBuf) -> Self {
        Watches {
            run_netns,
            open: None,
            tasks: Mutex::default(),
            adopted: Mutex::default(),
        }
    }

    /// Notes a lease taken back at start, for [`Watches::start_adopted`].
    pub fn adopted(&self, record: &Record) {
        if let Some(link) = &record.link {
            let mut adopted = self.adopted.lock().unwrap_or_else(|p| p.into_inner());
            adopted.push(Lost {
                netns: record.netns.clone(),
                link: link.clone(),
                owner: record.owner.clone(),
            });
        }
    }

    /// Watches the leases taken back at start, now that the agent is on the bus.
    pub fn start_adopted(&self, conn: &Connection) {
        let adopted = std::mem::take(&mut *self.adopted.lock().unwrap_or_else(|p| p.into_inner()));
        for lost in adopted {
            self.start(conn, lost);
        }
    }

    /// Starts watching `lost.link`, which was just isolated in `lost.netns`. A watch that cannot
    /// start is logged and left out: the VPN works without it.
    pub fn start(&self, conn: &Connection, lost: Lost) {
        let Some(open) = self.open else {
            return;
        };
        // The name's watch first: a deletion from here on is among its events, and one before it
        // leaves no name, which `gone` reads when the link's watch finds nothing.
        let name = match NameWatch::new(&self.run_netns, &lost.netns) {
            Ok(name) => Some(name),
            Err(e) => {
                warn!(
                    "cannot watch the name of namespace {} in {}: {e}",
                    lost.netns,
                    self.run_netns.display()
                );
                None
            }
        };
        let path = self.run_netns.join(lost.netns.as_str());
        let mounted = identity(&path);
        let watch = match open(&path, &lost.link) {
            Ok(watch) => watch,
            Err(e) => {
                warn!(
                    "cannot watch tun {} in {}: {}",
                    lost.link,
                    lost.netns,
                    chain(&e)
                );
                return;
            }
        };
        let ns = lost.netns.clone();
        let conn = conn.clone();
        let task = tokio::spawn(async move {
            let loss = match watch {
                // Each side that fails says so and leaves the other one watching.
                Some((fd, ifindex)) => tokio::select! {
                    () = or_log(removed(fd, ifindex), &lost, "tun") => LinkLoss::Removed,
                    () = or_log(NameWatch::deleted(name), &lost, "name") => LinkLoss::NetnsDeleted,
                    () = or_log(unmounted(&path, mounted), &lost, "mount") => LinkLoss::NetnsDeleted,
                },
                None if gone(&path) => LinkLoss::NetnsDeleted,
                None => LinkLoss::Removed,
            };
            tell(&conn, &lost, &loss).await;
        });
        if let Some(old) = self.lock().insert(ns, task) {
            old.abort();
        }
    }

    /// Ends the watch on `netns`, if any, and closes its socket.
    pub fn stop(&self, netns: &NetnsName) {
        if let Some(task) = self.lock().remove(netns) {
            task.abort();
        }
    }

    /// Waits, at most `within`, until the watch on `netns` has seen its tun go (or its name), then
    /// ends it. For a lease whose holder left the bus, while its VPN's processes are not known to
    /// have ended: openvpn is being ended, and deleting the namespace or the tun first would
    /// destroy the tun under it, and it would then spin on its dead descriptor instead of exiting.
    pub async fn stop_once_lost(&self, netns: &NetnsName, within: Duration) {
        let Some(mut task) = self.lock().remove(netns) else {
            return;
        };
        if tokio::time::timeout(within, &mut task).await.is_err() {
            info!("the tun in namespace {netns} is still there after {within:?}; releasing anyway");
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NetnsName, JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Resolves once the socket `fd` has received the removal of the link `ifindex`.
async fn removed(fd: OwnedFd, ifindex: u32) -> io::Result<()> {
    // SAFETY: the `File` owns the descriptor and keeps it open, with the same description, for as
    // long as the `AsyncFd` that owns the `File`.
    let fd = unsafe { AsyncFd::register_with_interest(File::from(fd), Interest::READABLE) }
        .map_err(io::Error::from)?;
    // A link message is well under a page; a datagram larger than this is cut, which only a
    // message with many attributes would be, and the removal's header comes first.
    let mut buf = vec![0; 32 * 1024];
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|fd| fd.get_ref().read(&mut buf)) {
            Ok(Ok(n)) if rtmsg::link_removed(&buf[..n], ifindex) => return Ok(()),
            Ok(Ok(_)) | Err(_) => {}
            // The kernel dropped messages for want of room (rtnetlink(7), ENOBUFS): the removal
            // may be among them, so ask for the link; `link_removed` reads the answer. A query
            // that cannot be sent is tried again at the next loss.
            Ok(Err(e)) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                warn!("the watch on link {ifindex} lost messages; asking the kernel for the link");
                if let Err(e) = fd.get_ref().write_all(&rtmsg::link_query(ifindex)) {
                    warn!("cannot ask the kernel for link {ifindex}: {e}");
                }
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Resolves when `watch` does; if it fails, logs why and never resolves, so that the other side
/// of the watch goes on.
async fn or_log(watch: impl Future<Output = io::Result<()>>, lost: &Lost, side: &str) {
    if let Err(e) = watch.await {
        error!(
            "the watch on the {side} of tun {} in {} failed: {e}; the other side goes on",
            lost.link, lost.netns
        );
        std::future::pending::<()>().await;
    }
}

/// The device and inode at `path`, through a mount on it: the namespace's, while it is mounted.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Resolves once the namespace `mounted` (its identity) is no longer what `path` shows: `umount`
/// alone leaves the name, an empty file under it, and the namespace reachable by no name. The
/// kernel flags `/proc/self/mountinfo` with `POLLPRI` at each change of the mount table (proc(5));
/// the agent's unit has no mount namespace of its own, so that is the host's. Never resolves
/// without an identity to compare.
async fn unmounted(path: &Path, mounted: Option<(u64, u64)>) -> io::Result<()> {
    let Some(mounted) = mounted else {
        return std::future::pending().await;
    };
    let table = File::open("/proc/self/mountinfo")?;
    // SAFETY: the `File` owns the descriptor and keeps it open for as long as the `AsyncFd` that
    // owns the `File`.
    let table = unsafe { AsyncFd::register_with_interest(table, Interest::PRIORITY) }
        .map_err(io::Error::from)?;
    loop {
        // The poll that reports a change also takes note of it, so the table need not be read.
        let mut ready = table.ready(Interest::PRIORITY).await?;
        ready.clear_ready();
        if identity(path) != Some(mounted) {
            return Ok(());
        }
    }
}

/// Whether nothing is at the namespace's path any more.
fn gone(path: &Path) -> bool {
    matches!(path.symlink_metadata(), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// An inotify watch on the directory of a namespace's name, for the name's removal.
struct NameWatch {
    inotify: Inotify,
    name: NetnsName,
    path: PathBuf,
}

impl AsRawFd for NameWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_fd().as_raw_fd()
    }
}

impl NameWatch {
    fn new(dir: &Path, name: &NetnsName) -> nix::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // `ip netns delete` unmounts and unlinks the name; a rename to or from it takes it too.
        let events = AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(dir, events)?;
        Ok(NameWatch {
            inotify,
            name: name.clone(),
            path: dir.join(name.as_str()),
        })
    }

    /// Whether `events` take the name: one names it, or the kernel dropped events
    /// (`IN_Q_OVERFLOW`) or ended the watch (`IN_IGNORED`: the directory went) and nothing is at
    /// the path any more (inotify(7)).
    fn taken(&self, events: &[InotifyEvent]) -> bool {
        let name = OsStr::new(self.name.as_str());
        let lost = AddWatchFlags::IN_Q_OVERFLOW | AddWatchFlags::IN_IGNORED;
        events.iter().any(|e| e.name.as_deref() == Some(name))
            || events.iter().any(|e| e.mask.intersects(lost)) && gone(&self.path)
    }

    /// Resolves once the name is removed from its directory; never if there is no watch. The
    /// agent stops the watch before it deletes a namespace itself, so the removal is someone
    /// else's.
    async fn deleted(watch: Option<Self>) -> io::Result<()> {
        let Some(watch) = watch else {
            return std::future::pending().await;
        };
        // SAFETY: the `NameWatch` owns the inotify descriptor and keeps it open for as long as
        // the `AsyncFd` that owns the `NameWatch`.
        let watch = unsafe { AsyncFd::register_with_interest(watch, Interest::READABLE) }
            .map_err(io::Error::from)?;
        loop {
            let mut ready = watch.readable().await?;
            let events =
                ready.try_io(|w| w.get_ref().inotify.read_events().map_err(io::Error::from));
            match events {
                Ok(Ok(events)) if watch.get_ref().taken(&events) => return Ok(()),
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// Logs the loss and sends `LinkLost` to the lease holder.
async fn tell(conn: &Connection, lost: &Lost, loss: &LinkLoss) {
    let Lost { netns, link, owner } = lost;
    // A holder that left the bus is being released ([`Watches::stop_once_lost`]): its tun goes
    // because the agent ended its openvpn, and there is no one to tell.
    if !lifecycle::on_the_bus(conn, owner).await.unwrap_or(true) {
        return;
    }
    match loss {
        LinkLoss::NetnsDeleted => info!(
            "namespace {netns} lost its name (deleted or unmounted from outside) while its \
             VPN was up; telling the lease holder {owner}"
        ),
        _ => info!(
            "tun {link} left namespace {netns} (its VPN client closed it, as openvpn does to \
             reopen it after the server changed the pushed address); telling the lease holder \
             {owner}"
        ),
    }
    let sent = async {
        let mut emitter = SignalEmitter::new(conn, OBJECT_PATH)?;
        if !owner.is_empty() {
            emitter = emitter.set_destination(BusName::try_from(owner.as_str())?);
        }
        Agent::link_lost(&emitter, netns.as_str(), link, loss.as_str()).await
    };
    if let Err(e) = sent.await {
        error!("cannot send {LINK_LOST} to {owner}: {e}");
    }
}
