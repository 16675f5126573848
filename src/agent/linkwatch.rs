//! The watch on each isolated tun: when it leaves its leased namespace (openvpn closed it, as
//! when it reopens its tun after the server pushed another address, or it was moved out), the
//! agent sends [`contract::LINK_LOST`] to the lease holder, which stops the VPN. Without it NM
//! would report the VPN connected while nothing can pass.
//!
//! The watch is a netlink socket opened inside the namespace ([`Opener`]), read on the service's
//! event loop; it ends, closing the socket, when the lease is released.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::{error, info, warn};
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::AbortHandle;
use zbus::Connection;

use crate::agent::record::Record;
use crate::agent::rtmsg;
use crate::agent::sys::SysError;
use crate::contract;
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
            if let Some((fd, ifindex)) = watch {
                if let Err(e) = removed(fd, ifindex).await {
                    error!("watching tun {} in {}: {e}", lost.link, lost.netns);
                    return;
                }
            }
            tell(&conn, &lost).await;
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
            // The kernel dropped messages for want of room: the removal may be among them.
            Ok(Err(e)) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                warn!("the watch on link {ifindex} lost messages; it goes on");
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Logs the loss and sends [`contract::LINK_LOST`] to the lease holder.
async fn tell(conn: &Connection, lost: &Lost) {
    let Lost { netns, link, owner } = lost;
    info!(
        "tun {link} left namespace {netns} (openvpn closed it, e.g. to reopen it after the \
         server changed the pushed address); telling the lease holder {owner}"
    );
    let destination = (!owner.is_empty()).then_some(owner.as_str());
    let body = (netns.to_string(), link.as_str());
    let sent = conn
        .emit_signal(
            destination,
            contract::OBJECT_PATH,
            contract::INTERFACE,
            contract::LINK_LOST,
            &body,
        )
        .await;
    if let Err(e) = sent {
        error!("cannot send {} to {owner}: {e}", contract::LINK_LOST);
    }
}
