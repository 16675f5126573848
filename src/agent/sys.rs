//! Every side effect the agent has on the system, behind one narrow trait.
//!
//! [`Sys`] is what the executor may do: namespaces (`ip netns`), links and their configuration
//! inside a namespace (`ip link`, `ip addr`, `ip route`), files that must never be reached through
//! a symbolic link, and one sysctl read. [`RealSys`] does it to the kernel; [`RecordingSys`] keeps a
//! model of the same world in memory, records every call and fails on request, so the executor's
//! ordering and rollback can be tested without privileges.
//!
//! Two rules hold throughout [`RealSys`]:
//! - `setns` changes only the calling thread, so namespace work runs on a short-lived
//!   [`std::thread`] of its own, never on the caller's thread (which may be a runtime's worker).
//! - A netlink socket talks to the namespace it was created in, so each one is opened on the
//!   thread that is already inside the namespace it is meant for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use nix::fcntl::{self, Flock, FlockArg, OFlag, RenameFlags};
use nix::mount::{self, MntFlags, MsFlags};
use nix::sched::{self, CloneFlags};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::sys::statfs;
use nix::unistd::{self, UnlinkatFlags};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::plan::FamilyPlan;

/// A failed side effect. Each message names the operation and the object it was applied to.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{op} {object}: {source}")]
    Os {
        op: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: is a symbolic link, and nm-vpn-netns never follows one here", path.display())]
    Symlink { path: PathBuf },
    #[error(
        "{}: is {found}, not a network namespace; refusing to use it (if it is a leftover, \
         remove it)",
        path.display()
    )]
    NotNetns { path: PathBuf, found: &'static str },
    #[error("{}: is {found}, not a regular file", path.display())]
    NotRegularFile { path: PathBuf, found: &'static str },
    #[error("{}: is {found}, not a directory", path.display())]
    NotDirectory { path: PathBuf, found: &'static str },
}

impl SysError {
    fn os(op: &'static str, object: impl fmt::Display, source: impl Into<io::Error>) -> Self {
        SysError::Os {
            op,
            object: object.to_string(),
            source: source.into(),
        }
    }

    /// The errno behind an [`SysError::Os`].
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SysError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A network link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`tun`, `veth`, `ovpn-dco`, …); `None` for a device without one, such as
    /// a physical NIC.
    pub kind: Option<String>,
    pub mtu: u32,
    pub up: bool,
}

/// What [`Sys::netns_configure`] applies inside a namespace, borrowed from the plan.
#[derive(Debug, Clone, Copy)]
pub struct NetnsConfig<'a> {
    /// The link's name inside the namespace.
    pub link: &'a str,
    pub mtu: Option<u32>,
    pub ipv4: Option<&'a FamilyPlan<Ipv4Addr>>,
    pub ipv6: Option<&'a FamilyPlan<Ipv6Addr>>,
    /// Written to the namespace's `net.ipv4.ping_group_range`; `None` leaves it alone.
    pub ping_group_range: Option<&'a str>,
    /// The link was configured before: addresses and routes that the plan no longer has go.
    pub reapply: bool,
}

/// The agent's side effects. Paths are absolute; every file operation refuses to follow a
/// symbolic link in the last component or in its parent directory's last component.
pub trait Sys {
    /// An open handle on a network namespace (a file descriptor of an nsfs file).
    type Netns;

    fn now(&self) -> Instant;

    /// `ip netns add`: creates the namespace and its nsfs mount at `path`, in a directory made a
    /// shared mount point first. Fails with EEXIST if `path` exists.
    fn netns_add(&mut self, path: &Path) -> Result<Self::Netns, SysError>;
    /// Opens the namespace mounted at `path`; `None` if nothing is there, an error if something
    /// other than a network namespace is.
    fn netns_open(&mut self, path: &Path) -> Result<Option<Self::Netns>, SysError>;
    /// `ip netns del`: detaches the mount and removes the file; a missing one counts as done.
    fn netns_del(&mut self, path: &Path) -> Result<(), SysError>;

    /// The link with this index in the agent's own namespace; `None` if there is none.
    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError>;
    /// The names of every link inside the namespace.
    fn link_names(&mut self, netns: &Self::Netns) -> Result<Vec<String>, SysError>;
    /// `ip link set dev IFINDEX netns NETNS [name NAME]`, in one request.
    fn link_set_netns(
        &mut self,
        ifindex: u32,
        netns: &Self::Netns,
        name: Option<&str>,
    ) -> Result<(), SysError>;
    /// `ip -n NETNS link set dev LINK netns AGENT name … mtu … [up]`: moves the link back to the
    /// agent's namespace and restores the name, MTU and state it had there.
    fn link_set_netns_back(
        &mut self,
        netns: &Self::Netns,
        link: &str,
        original: &Link,
    ) -> Result<(), SysError>;
    /// Brings up `lo` and the link inside the namespace and applies addresses, routes and the
    /// sysctl of `config`.
    fn netns_configure(
        &mut self,
        netns: &Self::Netns,
        config: &NetnsConfig<'_>,
    ) -> Result<(), SysError>;

    /// A sysctl of the agent's own namespace, such as `net.ipv4.ping_group_range`.
    fn sysctl_read(&mut self, key: &str) -> Result<String, SysError>;

    /// Creates a directory; `false` if one already exists there.
    fn dir_create(&mut self, path: &Path, mode: u32) -> Result<bool, SysError>;
    fn dir_remove(&mut self, path: &Path) -> Result<(), SysError>;
    /// The names in a directory.
    fn dir_list(&mut self, path: &Path) -> Result<Vec<String>, SysError>;
    /// A regular file's content; `None` if there is no file.
    fn file_read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError>;
    /// Writes a new file atomically (temporary file and rename); fails if `path` exists.
    fn file_create(&mut self, path: &Path, content: &[u8], mode: u32) -> Result<(), SysError>;
    /// Writes a file atomically (temporary file and rename), replacing any file at `path`.
    fn file_replace(&mut self, path: &Path, content: &[u8], mode: u32) -> Result<(), SysError>;
    /// Rewrites an existing regular file in place, so that its inode stays the same.
    fn file_rewrite(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError>;
    /// Removes a file; a missing one counts as done.
    fn file_remove(&mut self, path: &Path) -> Result<(), SysError>;
}

// ---------------------------------------------------------------------------------------------
// The real system
// ---------------------------------------------------------------------------------------------

/// An open network namespace and the path it was opened at, for messages.
#[derive(Debug)]
pub struct NetnsFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetnsFd {
    fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

impl AsFd for NetnsFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// [`Sys`] on the running kernel.
///
/// Its methods that act on the agent's own namespace use the calling thread, so that thread must
/// stay in the agent's namespace; it does, because `setns` only ever happens on threads that
/// `RealSys` starts for the purpose.
#[derive(Debug)]
pub struct RealSys {
    agent_netns: OwnedFd,
}

const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

// NS_GET_NSTYPE from <linux/nsfs.h>: _IO(0xb7, 0x3).
nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);

impl RealSys {
    /// Holds on to the calling thread's network namespace as the agent's own.
    pub fn new() -> Result<Self, SysError> {
        let agent_netns = fcntl::open(
            THREAD_SELF_NETNS,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::os("open", THREAD_SELF_NETNS, e))?;
        Ok(RealSys { agent_netns })
    }
}

/// Runs `work` on a new thread that has joined `netns`, and returns its result.
fn in_netns<T: Send>(
    netns: &NetnsFd,
    work: impl FnOnce() -> Result<T, SysError> + Send,
) -> Result<T, SysError> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("nm-vpn-netns-ns".to_owned())
            .spawn_scoped(scope, || {
                sched::setns(netns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| SysError::os("setns", netns.path.display(), e))?;
                work()
            })
            .map_err(|e| SysError::os("spawn a thread for namespace", netns.name(), e))?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn describe(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        _ => "an unknown kind of file",
    }
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Splits `path` into its parent directory, opened without following a symbolic link, and its
/// last component.
fn open_parent(path: &Path) -> Result<(OwnedFd, &std::ffi::OsStr), SysError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SysError::os(
            "open",
            path.display(),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    };
    let dir = fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP => SysError::Symlink {
            path: parent.to_owned(),
        },
        Errno::ENOTDIR => SysError::NotDirectory {
            path: parent.to_owned(),
            found: "not a directory",
        },
        e => SysError::os("open", parent.display(), e),
    })?;
    Ok((dir, name))
}

/// Opens the existing regular file `name` in `dir` without following a symbolic link. O_NONBLOCK
/// keeps a FIFO planted there from blocking the agent until its type is checked.
fn open_regular(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    path: &Path,
    access: OFlag,
) -> Result<Option<File>, SysError> {
    let flags = access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match fcntl::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => {
            return Err(SysError::Symlink {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(SysError::os("open", path.display(), e)),
    };
    let st = stat::fstat(&fd).map_err(|e| SysError::os("fstat", path.display(), e))?;
    if !is_kind(&st, SFlag::S_IFREG) {
        return Err(SysError::NotRegularFile {
            path: path.to_owned(),
            found: describe(&st),
        });
    }
    Ok(Some(File::from(fd)))
}

/// Writes `content` to a temporary file beside `path` and renames it over `path`.
fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    rename: RenameFlags,
) -> Result<(), SysError> {
    let (dir, name) = open_parent(path)?;
    let tmp = format!(".{}.nm-vpn-netns.tmp", name.to_string_lossy());
    let tmp_path = path.with_file_name(&tmp);
    let open_tmp = || {
        fcntl::openat(
            &dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
    };
    // Only the agent writes these names, so one that exists is a crashed write's leftover.
    let fd = match open_tmp() {
        Err(Errno::EEXIST) => {
            unistd::unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| SysError::os("unlink", tmp_path.display(), e))?;
            open_tmp()
        }
        other => other,
    }
    .map_err(|e| SysError::os("create", tmp_path.display(), e))?;
    let written = stat::fchmod(&fd, Mode::from_bits_truncate(mode))
        .map_err(|e| SysError::os("chmod", tmp_path.display(), e))
        .and_then(|()| {
            File::from(fd)
                .write_all(content)
                .map_err(|e| SysError::os("write", tmp_path.display(), e))
        })
        .and_then(|()| {
            // No fsync: these files describe namespaces, which do not survive a reboot either.
            fcntl::renameat2(&dir, tmp.as_str(), &dir, name, rename).map_err(|e| match e {
                Errno::EEXIST => SysError::os("create", path.display(), e),
                e => SysError::os("rename", format!("{} to {}", tmp, path.display()), e),
            })
        });
    if written.is_err() {
        // The temporary name is ours alone; losing it only leaves a file the next write reuses.
        let _ = unistd::unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// Makes the directory that holds namespace mounts a shared mount point, as `ip netns add` does,
/// so that a mount or unmount there reaches every mount namespace (the user's shell among them).
fn make_shared_mount_point(dir: &Path) -> Result<(), SysError> {
    match unistd::mkdir(dir, Mode::from_bits_truncate(0o755)) {
        Ok(()) => info!("created {}", dir.display()),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(SysError::os("mkdir", dir.display(), e)),
    }
    let dir_fd = fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::os("open", dir.display(), e))?;
    // iproute2 takes the same lock: two processes making the mount point at once stack bind
    // mounts without end (Debian bug 949235). Like iproute2, go on without the lock if it fails.
    let _lock = Flock::lock(dir_fd, FlockArg::LockExclusive)
        .map_err(|(_, e)| warn!("could not lock {}: {e}; going on without", dir.display()))
        .ok();
    let mut made_mount_point = false;
    loop {
        match mount::mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EINVAL) if !made_mount_point => {}
            Err(e) => return Err(SysError::os("mount --make-rshared", dir.display(), e)),
        }
        mount::mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| SysError::os("mount --rbind", dir.display(), e))?;
        // Private first, then shared again: the mount then starts a peer group of its own.
        mount::mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| SysError::os("mount --make-rprivate", dir.display(), e))?;
        info!("made {} a mount point", dir.display());
        made_mount_point = true;
    }
}

impl Sys for RealSys {
    type Netns = NetnsFd;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn netns_add(&mut self, path: &Path) -> Result<NetnsFd, SysError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        make_shared_mount_point(dir)?;
        fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::os("netns_add", path.display(), e))?;
        let bound = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("nm-vpn-netns-add".to_owned())
                .spawn_scoped(scope, || {
                    sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                        SysError::os("unshare(CLONE_NEWNET) for", path.display(), e)
                    })?;
                    // /proc/self is the main thread, which is still in the agent's namespace.
                    mount::mount(
                        Some(THREAD_SELF_NETNS),
                        path,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(|e| SysError::os("bind mount a new namespace on", path.display(), e))
                })
                .map_err(|e| SysError::os("spawn a thread for", path.display(), e))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .and_then(|()| {
            self.netns_open(path)?.ok_or_else(|| {
                SysError::os(
                    "netns_add",
                    path.display(),
                    io::Error::from(io::ErrorKind::NotFound),
                )
            })
        });
        if bound.is_err() {
            if let Err(e) = self.netns_del(path) {
                warn!("cleaning up after a failed netns_add: {e}");
            }
        }
        bound
    }

    fn netns_open(&mut self, path: &Path) -> Result<Option<NetnsFd>, SysError> {
        let fd = match fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(SysError::Symlink {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(SysError::os("netns_open", path.display(), e)),
        };
        let fs = statfs::fstatfs(&fd).map_err(|e| SysError::os("statfs", path.display(), e))?;
        if fs.filesystem_type() != statfs::NSFS_MAGIC {
            let st = stat::fstat(&fd).map_err(|e| SysError::os("fstat", path.display(), e))?;
            return Err(SysError::NotNetns {
                path: path.to_owned(),
                found: describe(&st),
            });
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the open descriptor.
        let nstype = unsafe { ns_get_nstype(fd.as_raw_fd()) }
            .map_err(|e| SysError::os("NS_GET_NSTYPE", path.display(), e))?;
        if nstype != CloneFlags::CLONE_NEWNET.bits() {
            return Err(SysError::NotNetns {
                path: path.to_owned(),
                found: "a namespace of another type",
            });
        }
        debug!("opened network namespace {}", path.display());
        Ok(Some(NetnsFd {
            fd,
            path: path.to_owned(),
        }))
    }

    fn netns_del(&mut self, path: &Path) -> Result<(), SysError> {
        match mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            // EINVAL: not a mount point, as after a half-finished netns_add.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(SysError::os("umount", path.display(), e)),
        }
        match unistd::unlink(path) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::os("unlink", path.display(), e)),
        }
    }

    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError> {
        let object = format!("ifindex {ifindex}");
        let mut nl = Rtnl::open().map_err(|e| SysError::os("netlink socket", &object, e))?;
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        match nl.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(reply) => Ok(reply.into_iter().find_map(link_from)),
            Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => Ok(None),
            Err(e) => Err(SysError::os("link_get", &object, e)),
        }
    }

    fn link_names(&mut self, netns: &NetnsFd) -> Result<Vec<String>, SysError> {
        let object = format!("in namespace {}", netns.name());
        in_netns(netns, || {
            let mut nl = Rtnl::open().map_err(|e| SysError::os("netlink socket", &object, e))?;
            let links = nl
                .request(
                    RouteNetlinkMessage::GetLink(LinkMessage::default()),
                    NLM_F_DUMP,
                )
                .map_err(|e| SysError::os("link_list", &object, e))?;
            Ok(links
                .into_iter()
                .filter_map(link_from)
                .map(|l| l.name)
                .collect())
        })
    }

    fn link_set_netns(
        &mut self,
        ifindex: u32,
        netns: &NetnsFd,
        name: Option<&str>,
    ) -> Result<(), SysError> {
        let object = format!("ifindex {ifindex} to namespace {}", netns.name());
        let mut nl = Rtnl::open().map_err(|e| SysError::os("netlink socket", &object, e))?;
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        msg.attributes
            .push(LinkAttribute::NetNsFd(netns.fd.as_raw_fd()));
        if let Some(name) = name {
            msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        }
        nl.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| SysError::os("link_set_netns", &object, e))?;
        Ok(())
    }

    fn link_set_netns_back(
        &mut self,
        netns: &NetnsFd,
        link: &str,
        original: &Link,
    ) -> Result<(), SysError> {
        let object = format!(
            "{link} from namespace {} as {}",
            netns.name(),
            original.name
        );
        let agent_netns = self.agent_netns.as_raw_fd();
        in_netns(netns, || {
            let mut nl = Rtnl::open().map_err(|e| SysError::os("netlink socket", &object, e))?;
            let index = nl
                .link_index(link)
                .map_err(|e| SysError::os("link_set_netns", &object, e))?;
            let mut msg = LinkMessage::default();
            msg.header.index = index;
            msg.attributes.push(LinkAttribute::NetNsFd(agent_netns));
            if link != original.name {
                msg.attributes
                    .push(LinkAttribute::IfName(original.name.clone()));
            }
            if original.mtu > 0 {
                msg.attributes.push(LinkAttribute::Mtu(original.mtu));
            }
            if original.up {
                msg.header.flags = LinkFlags::Up;
                msg.header.change_mask = LinkFlags::Up;
            }
            nl.request(RouteNetlinkMessage::SetLink(msg), 0)
                .map_err(|e| SysError::os("link_set_netns", &object, e))?;
            Ok(())
        })
    }

    fn netns_configure(
        &mut self,
        netns: &NetnsFd,
        config: &NetnsConfig<'_>,
    ) -> Result<(), SysError> {
        let name = netns.name();
        in_netns(netns, || Configure::run(&name, config))
    }

    fn sysctl_read(&mut self, key: &str) -> Result<String, SysError> {
        let path = sysctl_path(key);
        std::fs::read_to_string(&path)
            .map(|v| v.trim_end().to_owned())
            .map_err(|e| SysError::os("sysctl_read", key, e))
    }

    fn dir_create(&mut self, path: &Path, mode: u32) -> Result<bool, SysError> {
        let (dir, name) = open_parent(path)?;
        match stat::mkdirat(&dir, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => return Ok(true),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(SysError::os("mkdir", path.display(), e)),
        }
        let st = stat::fstatat(&dir, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| SysError::os("stat", path.display(), e))?;
        if is_kind(&st, SFlag::S_IFDIR) {
            Ok(false)
        } else if is_kind(&st, SFlag::S_IFLNK) {
            Err(SysError::Symlink {
                path: path.to_owned(),
            })
        } else {
            Err(SysError::NotDirectory {
                path: path.to_owned(),
                found: describe(&st),
            })
        }
    }

    fn dir_remove(&mut self, path: &Path) -> Result<(), SysError> {
        let (dir, name) = open_parent(path)?;
        match unistd::unlinkat(&dir, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::os("rmdir", path.display(), e)),
        }
    }

    fn dir_list(&mut self, path: &Path) -> Result<Vec<String>, SysError> {
        std::fs::read_dir(path)
            .and_then(|entries| {
                entries
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .map_err(|e| SysError::os("list", path.display(), e))
    }

    fn file_read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError> {
        let (dir, name) = open_parent(path)?;
        let Some(mut file) = open_regular(&dir, name, path, OFlag::O_RDONLY)? else {
            return Ok(None);
        };
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| SysError::os("read", path.display(), e))?;
        Ok(Some(content))
    }

    fn file_create(&mut self, path: &Path, content: &[u8], mode: u32) -> Result<(), SysError> {
        write_atomic(path, content, mode, RenameFlags::RENAME_NOREPLACE)
    }

    fn file_replace(&mut self, path: &Path, content: &[u8], mode: u32) -> Result<(), SysError> {
        write_atomic(path, content, mode, RenameFlags::empty())
    }

    fn file_rewrite(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError> {
        let (dir, name) = open_parent(path)?;
        // Truncating only after the type check: O_TRUNC at open would act before it.
        let mut file = open_regular(&dir, name, path, OFlag::O_WRONLY)?
            .ok_or_else(|| SysError::os("rewrite", path.display(), Errno::ENOENT))?;
        file.set_len(0)
            .and_then(|()| file.write_all(content))
            .map_err(|e| SysError::os("rewrite", path.display(), e))
    }

    fn file_remove(&mut self, path: &Path) -> Result<(), SysError> {
        let (dir, name) = open_parent(path)?;
        match unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::os("unlink", path.display(), e)),
        }
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn link_from(msg: RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(msg) = msg else {
        return None;
    };
    let mut link = Link {
        ifindex: msg.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.into_iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Some(link)
}

fn route_dest(msg: &RouteMessage) -> Option<IpAddr> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::from(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::from(*a)),
        _ => None,
    })
}

/// A minimal synchronous rtnetlink client: one request at a time, each acknowledged.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends one request and returns what the kernel answered before its ACK or, for a dump,
    /// before NLMSG_DONE.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut packet = NetlinkMessage::from(msg);
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut rest = data.as_slice();
            while !rest.is_empty() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let len = (reply.header.length as usize).next_multiple_of(4);
                if len == 0 {
                    break;
                }
                rest = rest.get(len..).unwrap_or_default();
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) if !dump => return Ok(replies),
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.request(RouteNetlinkMessage::GetLink(msg), 0)?
            .into_iter()
            .find_map(link_from)
            .map(|l| l.ifindex)
            .ok_or_else(|| io::Error::from_raw_os_error(Errno::ENODEV as i32))
    }

    fn link_set(&mut self, index: u32, attributes: Vec<LinkAttribute>, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        msg.attributes = attributes;
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }
}

/// One address family of a plan, with the address type erased.
struct Family {
    family: AddressFamily,
    label: &'static str,
    address: IpAddr,
    prefix: u8,
    peer: Option<IpAddr>,
    routes: Vec<(IpAddr, u8, Option<IpAddr>, u32)>,
    default_via: Option<Option<IpAddr>>,
    preserve_routes: bool,
}

impl Family {
    fn new<A: Copy + Into<IpAddr>>(
        family: AddressFamily,
        label: &'static str,
        plan: &FamilyPlan<A>,
    ) -> Self {
        Family {
            family,
            label,
            address: plan.address.into(),
            prefix: plan.prefix,
            peer: plan.peer.map(Into::into),
            routes: plan
                .routes
                .iter()
                .map(|r| (r.dest.into(), r.prefix, r.via.map(Into::into), r.metric))
                .collect(),
            default_via: plan.default_route.as_ref().map(|d| d.via.map(Into::into)),
            preserve_routes: plan.preserve_routes,
        }
    }

    fn any(&self) -> IpAddr {
        match self.family {
            AddressFamily::Inet6 => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        }
    }
}

/// The work of [`Sys::netns_configure`], on a thread inside the namespace.
struct Configure<'a> {
    nl: Rtnl,
    netns: &'a str,
    link: &'a str,
    index: u32,
}

impl Configure<'_> {
    fn run(netns: &str, config: &NetnsConfig<'_>) -> Result<(), SysError> {
        let inside = format!("in namespace {netns}");
        let mut nl = Rtnl::open().map_err(|e| SysError::os("netlink socket", &inside, e))?;
        nl.link_index("lo")
            .and_then(|lo| nl.link_set(lo, Vec::new(), true))
            .map_err(|e| SysError::os("link_set lo up", &inside, e))?;
        debug!("set lo up in namespace {netns}");
        let index = nl
            .link_index(config.link)
            .map_err(|e| SysError::os("link_get", format!("{} {inside}", config.link), e))?;
        let mut c = Configure {
            nl,
            netns,
            link: config.link,
            index,
        };
        c.link_up(config.mtu)?;
        let families = [
            (
                AddressFamily::Inet,
                config
                    .ipv4
                    .map(|p| Family::new(AddressFamily::Inet, "inet", p)),
            ),
            (
                AddressFamily::Inet6,
                config
                    .ipv6
                    .map(|p| Family::new(AddressFamily::Inet6, "inet6", p)),
            ),
        ];
        for (family, plan) in &families {
            if config.reapply {
                c.flush(*family, plan.as_ref())?;
            }
            if let Some(plan) = plan {
                c.apply(plan, config.reapply)?;
            }
        }
        if let Some(range) = config.ping_group_range {
            let key = "net.ipv4.ping_group_range";
            std::fs::write(sysctl_path(key), range)
                .map_err(|e| SysError::os("sysctl_write", format!("{key} {inside}"), e))?;
            debug!("set {key} to {range:?} in namespace {netns}");
        }
        Ok(())
    }

    fn on(&self, what: impl fmt::Display) -> String {
        format!("{what} dev {} in namespace {}", self.link, self.netns)
    }

    fn link_up(&mut self, mtu: Option<u32>) -> Result<(), SysError> {
        // A tun needs no link-local address; without one the kernel sends no router
        // solicitations or MLD reports into the tunnel, and the namespace holds only the
        // routes of the plan. It must happen before `up`, which is when the kernel makes one.
        let gen_mode =
            LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
                In6AddrGenMode::None,
            )])]);
        match self.nl.link_set(self.index, vec![gen_mode], false) {
            Ok(()) => {}
            // No IPv6 on this device (IPv6 disabled, or an MTU below 1280): nothing to make.
            Err(e) if e.raw_os_error() == Some(Errno::EAFNOSUPPORT as i32) => {}
            Err(e) => return Err(SysError::os("link_set", self.on("addrgenmode none"), e)),
        }
        let attrs = mtu.map(LinkAttribute::Mtu).into_iter().collect();
        self.nl
            .link_set(self.index, attrs, true)
            .map_err(|e| SysError::os("link_set", self.on(format!("mtu {mtu:?} up")), e))?;
        debug!("set {} up with mtu {mtu:?}", self.on("link"));
        Ok(())
    }

    /// Removes the link's addresses that the plan does not have, and the routes this module
    /// added (proto static), so that a re-applied plan replaces the previous one.
    fn flush(&mut self, family: AddressFamily, plan: Option<&Family>) -> Result<(), SysError> {
        let mut query = AddressMessage::default();
        query.header.family = family;
        let addresses = self
            .nl
            .request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP)
            .map_err(|e| SysError::os("addr_list", self.on(""), e))?;
        for msg in addresses {
            let RouteNetlinkMessage::NewAddress(msg) = msg else {
                continue;
            };
            let local = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(a) => Some(*a),
                _ => None,
            });
            let address = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            });
            let local = local.or(address);
            let keep =
                plan.is_some_and(|p| local == Some(p.address) && msg.header.prefix_len == p.prefix);
            if msg.header.index != self.index || keep {
                continue;
            }
            let what = format!(
                "{}/{}",
                local.map_or("?".into(), |a| a.to_string()),
                msg.header.prefix_len
            );
            self.nl
                .request(RouteNetlinkMessage::DelAddress(msg), 0)
                .map_err(|e| SysError::os("addr_del", self.on(&what), e))?;
            debug!("deleted address {}", self.on(&what));
        }
        if plan.is_some_and(|p| p.preserve_routes) {
            return Ok(());
        }
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let routes = self
            .nl
            .request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)
            .map_err(|e| SysError::os("route_list", self.on(""), e))?;
        for msg in routes {
            let RouteNetlinkMessage::NewRoute(msg) = msg else {
                continue;
            };
            let ours = msg.header.table == RouteHeader::RT_TABLE_MAIN
                && msg.header.protocol == RouteProtocol::Static
                && msg.attributes.contains(&RouteAttribute::Oif(self.index));
            if !ours {
                continue;
            }
            let what = match route_dest(&msg) {
                Some(dest) => format!("{dest}/{}", msg.header.destination_prefix_length),
                None => "default".to_owned(),
            };
            self.nl
                .request(RouteNetlinkMessage::DelRoute(msg), 0)
                .map_err(|e| SysError::os("route_del", self.on(&what), e))?;
            debug!("deleted route {}", self.on(&what));
        }
        Ok(())
    }

    fn apply(&mut self, plan: &Family, reapply: bool) -> Result<(), SysError> {
        self.addr_add(plan)?;
        if reapply && plan.preserve_routes {
            return Ok(());
        }
        for &(dest, prefix, via, metric) in &plan.routes {
            self.route_add(plan, Some((dest, prefix)), via, metric)?;
        }
        if let Some(via) = plan.default_via {
            self.route_add(plan, None, via, 0)?;
        }
        Ok(())
    }

    fn addr_add(&mut self, plan: &Family) -> Result<(), SysError> {
        let mut msg = AddressMessage::default();
        msg.header.family = plan.family;
        msg.header.prefix_len = plan.prefix;
        msg.header.index = self.index;
        if plan.family == AddressFamily::Inet6 {
            // The far end of a tun is openvpn, which answers no neighbour solicitation: duplicate
            // address detection would only hold the address back as tentative.
            msg.header.flags = AddressHeaderFlags::Nodad;
        }
        msg.attributes.push(AddressAttribute::Local(plan.address));
        msg.attributes
            .push(AddressAttribute::Address(plan.peer.unwrap_or(plan.address)));
        let what = match plan.peer {
            Some(peer) => format!(
                "{} {} peer {peer}/{}",
                plan.label, plan.address, plan.prefix
            ),
            None => format!("{} {}/{}", plan.label, plan.address, plan.prefix),
        };
        self.nl
            .request(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map_err(|e| SysError::os("addr_add", self.on(&what), e))?;
        debug!("added address {}", self.on(&what));
        Ok(())
    }

    fn route_add(
        &mut self,
        plan: &Family,
        dest: Option<(IpAddr, u8)>,
        via: Option<IpAddr>,
        metric: u32,
    ) -> Result<(), SysError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = plan.family;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        // Static marks the routes this module added, for `flush` to find.
        msg.header.protocol = RouteProtocol::Static;
        msg.header.kind = RouteType::Unicast;
        // As `ip route add`: a route with no next hop is on the link.
        msg.header.scope = if via.is_none() && plan.family == AddressFamily::Inet {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        let (dest_addr, prefix) = dest.unwrap_or((plan.any(), 0));
        if dest.is_some() {
            msg.header.destination_prefix_length = prefix;
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dest_addr)));
        }
        if let Some(via) = via {
            // A tun has no neighbours, so any next hop is reachable on it; onlink spares the
            // kernel's check for a link route that covers it, which a pushed gateway may lack.
            msg.header.flags = RouteFlags::Onlink;
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(via)));
        }
        msg.attributes.push(RouteAttribute::Oif(self.index));
        if metric > 0 {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        let dest_text = match dest {
            Some((d, p)) => format!("{d}/{p}"),
            None => "default".to_owned(),
        };
        let via_text = via.map_or(String::new(), |v| format!(" via {v}"));
        let metric_text = if metric > 0 {
            format!(" metric {metric}")
        } else {
            String::new()
        };
        let what = format!("{} {dest_text}{via_text}{metric_text}", plan.label);
        match self.nl.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Ok(_) => debug!("added route {}", self.on(&what)),
            // The same route on this link, such as a pushed route to the tunnel's own subnet
            // that the address already made, is reused. On another link it would carry the
            // namespace's traffic past the VPN, so it stays an error.
            Err(e)
                if e.raw_os_error() == Some(Errno::EEXIST as i32)
                    && self
                        .route_on_link(plan.family, dest, metric)
                        .map_err(|e| SysError::os("route_list", self.on(&what), e))? =>
            {
                debug!("route {} already there", self.on(&what));
            }
            Err(e) => return Err(SysError::os("route_add", self.on(&what), e)),
        }
        Ok(())
    }

    /// Whether the main table has a route to `dest` with `metric` through this link.
    fn route_on_link(
        &mut self,
        family: AddressFamily,
        dest: Option<(IpAddr, u8)>,
        metric: u32,
    ) -> io::Result<bool> {
        // The metric IPv6 gives a route added without one.
        let metric = match (family, metric) {
            (AddressFamily::Inet6, 0) => 1024,
            (_, m) => m,
        };
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let routes = self
            .nl
            .request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
        Ok(routes.into_iter().any(|r| {
            let RouteNetlinkMessage::NewRoute(r) = r else {
                return false;
            };
            let priority = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            r.header.table == RouteHeader::RT_TABLE_MAIN
                && route_dest(&r).map(|d| (d, r.header.destination_prefix_length)) == dest
                && priority.unwrap_or(0) == metric
                && r.attributes.contains(&RouteAttribute::Oif(self.index))
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// The recording fake
// ---------------------------------------------------------------------------------------------

/// One call made to a [`RecordingSys`], with the objects it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    NetnsAdd(PathBuf),
    NetnsOpen(PathBuf),
    NetnsDel(PathBuf),
    LinkGet(u32),
    LinkNames(PathBuf),
    LinkSetNetns {
        ifindex: u32,
        netns: PathBuf,
        name: Option<String>,
    },
    LinkSetNetnsBack {
        netns: PathBuf,
        link: String,
        name: String,
    },
    NetnsConfigure {
        netns: PathBuf,
        link: String,
        reapply: bool,
    },
    SysctlRead(String),
    DirCreate(PathBuf),
    DirRemove(PathBuf),
    DirList(PathBuf),
    FileRead(PathBuf),
    FileCreate(PathBuf),
    FileReplace(PathBuf),
    FileRewrite(PathBuf),
    FileRemove(PathBuf),
}

/// What sits at a path under the namespace directory in a [`World`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeNetnsEntry {
    Netns,
    RegularFile,
}

/// A link of a [`World`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub link: Link,
    /// The namespace mount it is in; `None`: the agent's namespace.
    pub netns: Option<PathBuf>,
    /// What `netns_configure` last applied to it; a move clears it, as the kernel does.
    pub configured: Option<String>,
}

/// A file of a [`World`]; rewriting in place keeps the inode, a rename gives a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    pub content: Vec<u8>,
    pub inode: u64,
}

/// The state a [`RecordingSys`] models: namespaces, links, directories, files, symlinks, sysctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub netns: BTreeMap<PathBuf, FakeNetnsEntry>,
    pub links: BTreeMap<u32, FakeLink>,
    pub dirs: BTreeSet<PathBuf>,
    pub files: BTreeMap<PathBuf, FakeFile>,
    pub symlinks: BTreeSet<PathBuf>,
    pub sysctls: BTreeMap<String, String>,
}

impl Default for World {
    fn default() -> Self {
        World {
            netns: BTreeMap::new(),
            links: BTreeMap::new(),
            dirs: ["/", "/etc", "/run"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            files: BTreeMap::new(),
            symlinks: BTreeSet::new(),
            sysctls: BTreeMap::from([(
                "net.ipv4.ping_group_range".to_owned(),
                "0 2147483647".to_owned(),
            )]),
        }
    }
}

/// A namespace handle of [`RecordingSys`]: the path it was opened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNetns(pub PathBuf);

type FailWhen = Box<dyn Fn(&Call) -> bool + Send>;

/// [`Sys`] on an in-memory [`World`]: records every call, fails chosen ones with EIO, and has a
/// clock that chosen calls move forward.
pub struct RecordingSys {
    pub world: World,
    pub calls: Vec<Call>,
    fail_at: BTreeSet<usize>,
    fail_when: Vec<FailWhen>,
    slow: Vec<(FailWhen, Duration)>,
    next_inode: u64,
    start: Instant,
    elapsed: Duration,
}

impl fmt::Debug for RecordingSys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingSys")
            .field("world", &self.world)
            .field("calls", &self.calls)
            .field("fail_at", &self.fail_at)
            .field("elapsed", &self.elapsed)
            .finish_non_exhaustive()
    }
}

impl Default for RecordingSys {
    fn default() -> Self {
        Self::new(World::default())
    }
}

impl RecordingSys {
    pub fn new(world: World) -> Self {
        RecordingSys {
            world,
            calls: Vec::new(),
            fail_at: BTreeSet::new(),
            fail_when: Vec::new(),
            slow: Vec::new(),
            next_inode: 0,
            start: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    /// Makes the call with this index (counting from 0 over every call made) fail.
    pub fn fail_at(&mut self, index: usize) {
        self.fail_at.insert(index);
    }

    /// Makes every call that `when` matches fail.
    pub fn fail_when(&mut self, when: impl Fn(&Call) -> bool + Send + 'static) {
        self.fail_when.push(Box::new(when));
    }

    /// Moves the clock forward by `by` during every call that `when` matches.
    pub fn slow_when(&mut self, when: impl Fn(&Call) -> bool + Send + 'static, by: Duration) {
        self.slow.push((Box::new(when), by));
    }

    /// Forgets injected failures and slow calls.
    pub fn heal(&mut self) {
        self.fail_at.clear();
        self.fail_when.clear();
        self.slow.clear();
    }

    /// Adds a link to the agent's namespace, or to the namespace mounted at `netns`.
    pub fn add_link(&mut self, ifindex: u32, name: &str, kind: Option<&str>, netns: Option<&str>) {
        self.world.links.insert(
            ifindex,
            FakeLink {
                link: Link {
                    ifindex,
                    name: name.to_owned(),
                    kind: kind.map(str::to_owned),
                    mtu: 1500,
                    up: false,
                },
                netns: netns.map(PathBuf::from),
                configured: None,
            },
        );
    }

    /// Adds a namespace that someone else made, as `ip netns add` would.
    pub fn add_netns(&mut self, path: &str) {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            self.world.dirs.insert(dir.to_owned());
        }
        self.world.netns.insert(path, FakeNetnsEntry::Netns);
    }

    pub fn add_file(&mut self, path: &str, content: &str) {
        let inode = self.inode();
        self.world.files.insert(
            PathBuf::from(path),
            FakeFile {
                content: content.as_bytes().to_vec(),
                inode,
            },
        );
    }

    fn inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    fn call(&mut self, call: Call) -> Result<(), SysError> {
        let index = self.calls.len();
        for (when, by) in &self.slow {
            if when(&call) {
                self.elapsed += *by;
            }
        }
        let fail = self.fail_at.contains(&index) || self.fail_when.iter().any(|w| w(&call));
        let object = format!("{call:?}");
        self.calls.push(call);
        if fail {
            Err(SysError::os(
                "injected failure of",
                object,
                io::Error::from_raw_os_error(Errno::EIO as i32),
            ))
        } else {
            Ok(())
        }
    }

    fn enoent(op: &'static str, path: &Path) -> SysError {
        SysError::os(
            op,
            path.display(),
            io::Error::from_raw_os_error(Errno::ENOENT as i32),
        )
    }

    fn check_parent(&self, op: &'static str, path: &Path) -> Result<(), SysError> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        if self.world.symlinks.contains(parent) {
            return Err(SysError::Symlink {
                path: parent.to_owned(),
            });
        }
        if !self.world.dirs.contains(parent) {
            return Err(Self::enoent(op, parent));
        }
        if self.world.symlinks.contains(path) {
            return Err(SysError::Symlink {
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    fn link_in(&mut self, netns: &Path, name: &str) -> Option<&mut FakeLink> {
        self.world
            .links
            .values_mut()
            .find(|l| l.netns.as_deref() == Some(netns) && l.link.name == name)
    }

    fn write_new(&mut self, path: &Path, content: &[u8]) {
        let inode = self.inode();
        self.world.files.insert(
            path.to_owned(),
            FakeFile {
                content: content.to_vec(),
                inode,
            },
        );
    }
}

impl Sys for RecordingSys {
    type Netns = FakeNetns;

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    fn netns_add(&mut self, path: &Path) -> Result<FakeNetns, SysError> {
        self.call(Call::NetnsAdd(path.to_owned()))?;
        if self.world.netns.contains_key(path) {
            return Err(SysError::os(
                "netns_add",
                path.display(),
                io::Error::from_raw_os_error(Errno::EEXIST as i32),
            ));
        }
        if let Some(dir) = path.parent() {
            self.world.dirs.insert(dir.to_owned());
        }
        self.world
            .netns
            .insert(path.to_owned(), FakeNetnsEntry::Netns);
        Ok(FakeNetns(path.to_owned()))
    }

    fn netns_open(&mut self, path: &Path) -> Result<Option<FakeNetns>, SysError> {
        self.call(Call::NetnsOpen(path.to_owned()))?;
        if self.world.symlinks.contains(path) {
            return Err(SysError::Symlink {
                path: path.to_owned(),
            });
        }
        match self.world.netns.get(path) {
            None => Ok(None),
            Some(FakeNetnsEntry::Netns) => Ok(Some(FakeNetns(path.to_owned()))),
            Some(FakeNetnsEntry::RegularFile) => Err(SysError::NotNetns {
                path: path.to_owned(),
                found: "a regular file",
            }),
        }
    }

    fn netns_del(&mut self, path: &Path) -> Result<(), SysError> {
        self.call(Call::NetnsDel(path.to_owned()))?;
        self.world.netns.remove(path);
        // The kernel destroys a tun whose namespace goes away.
        self.world
            .links
            .retain(|_, l| l.netns.as_deref() != Some(path));
        Ok(())
    }

    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError> {
        self.call(Call::LinkGet(ifindex))?;
        Ok(self
            .world
            .links
            .get(&ifindex)
            .filter(|l| l.netns.is_none())
            .map(|l| l.link.clone()))
    }

    fn link_names(&mut self, netns: &FakeNetns) -> Result<Vec<String>, SysError> {
        self.call(Call::LinkNames(netns.0.clone()))?;
        Ok(std::iter::once("lo".to_owned())
            .chain(
                self.world
                    .links
                    .values()
                    .filter(|l| l.netns.as_ref() == Some(&netns.0))
                    .map(|l| l.link.name.clone()),
            )
            .collect())
    }

    fn link_set_netns(
        &mut self,
        ifindex: u32,
        netns: &FakeNetns,
        name: Option<&str>,
    ) -> Result<(), SysError> {
        self.call(Call::LinkSetNetns {
            ifindex,
            netns: netns.0.clone(),
            name: name.map(str::to_owned),
        })?;
        let link = self
            .world
            .links
            .get_mut(&ifindex)
            .filter(|l| l.netns.is_none())
            .ok_or_else(|| {
                SysError::os(
                    "link_set_netns",
                    ifindex,
                    io::Error::from_raw_os_error(Errno::ENODEV as i32),
                )
            })?;
        link.netns = Some(netns.0.clone());
        link.link.up = false;
        link.configured = None;
        if let Some(name) = name {
            link.link.name = name.to_owned();
        }
        Ok(())
    }

    fn link_set_netns_back(
        &mut self,
        netns: &FakeNetns,
        link: &str,
        original: &Link,
    ) -> Result<(), SysError> {
        self.call(Call::LinkSetNetnsBack {
            netns: netns.0.clone(),
            link: link.to_owned(),
            name: original.name.clone(),
        })?;
        let found = self.link_in(&netns.0, link).ok_or_else(|| {
            SysError::os(
                "link_set_netns",
                link,
                io::Error::from_raw_os_error(Errno::ENODEV as i32),
            )
        })?;
        found.netns = None;
        found.configured = None;
        found.link = original.clone();
        Ok(())
    }

    fn netns_configure(
        &mut self,
        netns: &FakeNetns,
        config: &NetnsConfig<'_>,
    ) -> Result<(), SysError> {
        self.call(Call::NetnsConfigure {
            netns: netns.0.clone(),
            link: config.link.to_owned(),
            reapply: config.reapply,
        })?;
        let summary = format!(
            "mtu {:?} ipv4 {:?} ipv6 {:?} ping_group_range {:?}",
            config.mtu, config.ipv4, config.ipv6, config.ping_group_range
        );
        let link = self.link_in(&netns.0, config.link).ok_or_else(|| {
            SysError::os(
                "link_get",
                config.link,
                io::Error::from_raw_os_error(Errno::ENODEV as i32),
            )
        })?;
        link.link.up = true;
        if let Some(mtu) = config.mtu {
            link.link.mtu = mtu;
        }
        link.configured = Some(summary);
        Ok(())
    }

    fn sysctl_read(&mut self, key: &str) -> Result<String, SysError> {
        self.call(Call::SysctlRead(key.to_owned()))?;
        self.world.sysctls.get(key).cloned().ok_or_else(|| {
            SysError::os("sysctl_read", key, io::Error::from(io::ErrorKind::NotFound))
        })
    }

    fn dir_create(&mut self, path: &Path, _mode: u32) -> Result<bool, SysError> {
        self.call(Call::DirCreate(path.to_owned()))?;
        self.check_parent("mkdir", path)?;
        if self.world.files.contains_key(path) {
            return Err(SysError::NotDirectory {
                path: path.to_owned(),
                found: "a regular file",
            });
        }
        Ok(self.world.dirs.insert(path.to_owned()))
    }

    fn dir_remove(&mut self, path: &Path) -> Result<(), SysError> {
        self.call(Call::DirRemove(path.to_owned()))?;
        self.check_parent("rmdir", path)?;
        let busy = self.world.files.keys().any(|f| f.parent() == Some(path))
            || self.world.dirs.iter().any(|d| d.parent() == Some(path));
        if busy {
            return Err(SysError::os(
                "rmdir",
                path.display(),
                io::Error::from_raw_os_error(Errno::ENOTEMPTY as i32),
            ));
        }
        self.world.dirs.remove(path);
        Ok(())
    }

    fn dir_list(&mut self, path: &Path) -> Result<Vec<String>, SysError> {
        self.call(Call::DirList(path.to_owned()))?;
        if !self.world.dirs.contains(path) {
            return Err(Self::enoent("list", path));
        }
        Ok(self
            .world
            .files
            .keys()
            .filter(|f| f.parent() == Some(path))
            .filter_map(|f| f.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    fn file_read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError> {
        self.call(Call::FileRead(path.to_owned()))?;
        self.check_parent("open", path)?;
        Ok(self.world.files.get(path).map(|f| f.content.clone()))
    }

    fn file_create(&mut self, path: &Path, content: &[u8], _mode: u32) -> Result<(), SysError> {
        self.call(Call::FileCreate(path.to_owned()))?;
        self.check_parent("create", path)?;
        if self.world.files.contains_key(path) {
            return Err(SysError::os(
                "create",
                path.display(),
                io::Error::from_raw_os_error(Errno::EEXIST as i32),
            ));
        }
        self.write_new(path, content);
        Ok(())
    }

    fn file_replace(&mut self, path: &Path, content: &[u8], _mode: u32) -> Result<(), SysError> {
        self.call(Call::FileReplace(path.to_owned()))?;
        self.check_parent("create", path)?;
        self.write_new(path, content);
        Ok(())
    }

    fn file_rewrite(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError> {
        self.call(Call::FileRewrite(path.to_owned()))?;
        self.check_parent("open", path)?;
        let file = self
            .world
            .files
            .get_mut(path)
            .ok_or_else(|| Self::enoent("rewrite", path))?;
        file.content = content.to_vec();
        Ok(())
    }

    fn file_remove(&mut self, path: &Path) -> Result<(), SysError> {
        self.call(Call::FileRemove(path.to_owned()))?;
        self.check_parent("unlink", path)?;
        self.world.files.remove(path);
        Ok(())
    }
}
