//! The watch on each isolated tun: when it leaves its leased namespace (openvpn closed it, as
//! when it reopens its tun after the server pushed another address, or it was moved out), or the
//! namespace loses its name (`ip netns delete` while the VPN is up), the agent sends `LinkLost`
//! ([`crate::contract::Agent1Proxy::receive_link_lost`]) to the lease holder, which stops the VPN.
//! Without it NM would report the VPN connected while nothing can pass, or while no one can start
//! an app in the namespace any more.
//!
//! The watch is a netlink socket opened inside the namespace ([`Opener`]) and an inotify watch on
//! the directory of the namespace's name, read on the service's event loop; it ends, closing
//! both, when the lease is released. The socket holds the namespace: closing it once the name is
//! gone lets the kernel destroy a namespace no process holds, and the tun with it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::{error, info, warn};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::AbortHandle;
use zbus::names::BusName;
use zbus::object_server::SignalEmitter;
use zbus::Connection;

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
    tasks: Mutex<HashMap<NetnsName, AbortHandle>>,
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
        // The name's watch first, so that a deletion while the link's watch opens is seen.
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
                Some((fd, ifindex)) => tokio::select! {
                    removed = removed(fd, ifindex) => removed.map(|()| LinkLoss::Removed),
                    deleted = NameWatch::deleted(name) => deleted.map(|()| LinkLoss::NetnsDeleted),
                },
                None => Ok(LinkLoss::Removed),
            };
            match loss {
                Ok(loss) => tell(&conn, &lost, &loss).await,
                Err(e) => error!("watching tun {} in {}: {e}", lost.link, lost.netns),
            }
        });
        if let Some(old) = self.lock().insert(ns, task.abort_handle()) {
            old.abort();
        }
    }

    /// Ends the watch on `netns`, if any, and closes its socket.
    pub fn stop(&self, netns: &NetnsName) {
        if let Some(task) = self.lock().remove(netns) {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NetnsName, AbortHandle>> {
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
            // may be among them, so ask for the link; `link_removed` reads the answer.
            Ok(Err(e)) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                warn!("the watch on link {ifindex} lost messages; asking the kernel for the link");
                fd.get_ref().write_all(&rtmsg::link_query(ifindex))?;
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// An inotify watch on the directory of a namespace's name, for the name's removal.
struct NameWatch {
    inotify: Inotify,
    name: NetnsName,
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
        })
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
                Ok(Ok(events)) => {
                    let name = OsStr::new(watch.get_ref().name.as_str());
                    if events.iter().any(|e| e.name.as_deref() == Some(name)) {
                        return Ok(());
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

/// Logs the loss and sends `LinkLost` to the lease holder.
async fn tell(conn: &Connection, lost: &Lost, loss: &LinkLoss) {
    let Lost { netns, link, owner } = lost;
    match loss {
        LinkLoss::NetnsDeleted => info!(
            "namespace {netns} lost its name (ip netns delete) while its VPN was up; telling \
             the lease holder {owner}"
        ),
        _ => info!(
            "tun {link} left namespace {netns} (openvpn closed it, e.g. to reopen it after the \
             server changed the pushed address); telling the lease holder {owner}"
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
