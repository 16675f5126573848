//! [`RealSys`]: [`Sys`] on the running kernel, and its file and namespace helpers.
//!
//! Two rules hold throughout:
//! - `setns` changes only the calling thread, so namespace work runs on a short-lived
//!   [`std::thread`] of its own, never on the caller's thread (which may be a runtime's worker).
//! - A netlink socket talks to the namespace it was created in, so each one is opened on the
//!   thread that is already inside the namespace it is meant for.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::fcntl::{self, Flock, FlockArg, OFlag, RenameFlags};
use nix::mount::{self, MntFlags, MsFlags};
use nix::sched::{self, CloneFlags};
use nix::sys::stat::{self, Mode, SFlag};
use nix::sys::statfs;
use nix::unistd::{self, UnlinkatFlags};

pub use crate::agent::netlink::link_watch;
use crate::agent::netlink::{sysctl_path, Configure, Rtnl};
use crate::agent::procs;
use crate::agent::rtmsg;
use crate::agent::safe_fs::{
    describe, existing, is_kind, open_parent, open_parent_if_any, open_regular, sync_dir,
    write_atomic, NO_FOLLOW,
};
use crate::agent::sys::{Durability, FileId, Link, NetnsId, NetnsSetup, Process, Sys, SysError};
use crate::report::Chain;

/// An open network namespace and the path it was opened at, for messages.
#[derive(Debug)]
pub struct NetnsFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl NetnsFd {
    pub(crate) fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// An empty file in the namespace directory that has no name yet, to mount a namespace on.
#[derive(Debug)]
pub struct MountPointFd {
    file: OwnedFd,
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
pub(crate) fn in_netns<T: Send>(
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
    type MountPoint = MountPointFd;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn netns_create(&mut self, path: &Path) -> Result<(NetnsFd, NetnsId), SysError> {
        let fd = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("nm-vpn-netns-add".to_owned())
                .spawn_scoped(scope, || {
                    sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
                        SysError::os("unshare(CLONE_NEWNET) for", path.display(), e)
                    })?;
                    // The descriptor holds the namespace once this thread has ended. Not
                    // /proc/self: that is the main thread, still in the agent's namespace.
                    fcntl::open(
                        THREAD_SELF_NETNS,
                        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| SysError::os("open the new namespace for", path.display(), e))
                })
                .map_err(|e| SysError::os("spawn a thread for", path.display(), e))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let netns = NetnsFd {
            fd,
            path: path.to_owned(),
        };
        let id = self.netns_id(&netns)?;
        Ok((netns, id))
    }

    fn netns_mount_point(&mut self, dir: &Path) -> Result<(MountPointFd, FileId), SysError> {
        make_shared_mount_point(dir)?;
        // Without O_EXCL, which would keep the file from ever getting a name.
        let file = fcntl::open(
            dir,
            OFlag::O_TMPFILE | OFlag::O_RDWR | NO_FOLLOW,
            Mode::empty(),
        )
        .map_err(|e| SysError::os("create a mount point in", dir.display(), e))?;
        let st = stat::fstat(&file).map_err(|e| SysError::os("fstat", dir.display(), e))?;
        let id = FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        Ok((MountPointFd { file }, id))
    }

    fn netns_bind(
        &mut self,
        netns: &NetnsFd,
        mount_point: MountPointFd,
        path: &Path,
    ) -> Result<(), SysError> {
        // Through the descriptor's magic link: linking the descriptor itself (AT_EMPTY_PATH)
        // needs CAP_DAC_READ_SEARCH, which the agent's unit does not have. EEXIST if the name
        // is taken, which stays as it is; the unnamed file goes with its descriptor.
        let file = format!("/proc/self/fd/{}", mount_point.file.as_raw_fd());
        unistd::linkat(
            fcntl::AT_FDCWD,
            file.as_str(),
            fcntl::AT_FDCWD,
            path,
            fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(|e| SysError::os("netns_bind", path.display(), e))?;
        // The source is the descriptor's magic link in /proc, which names the namespace itself,
        // whatever thread runs this and whatever namespace it is in.
        let source = format!("/proc/self/fd/{}", netns.fd.as_raw_fd());
        let bound = mount::mount(
            Some(source.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| SysError::os("bind mount a new namespace on", path.display(), e));
        if bound.is_err() {
            if let Err(e) = self.netns_del(path) {
                warn!("cleaning up after a failed netns_bind: {}", Chain(&e));
            }
        }
        bound
    }

    fn netns_open(&mut self, path: &Path) -> Result<Option<NetnsFd>, SysError> {
        // O_PATH first, which needs no read permission: the file under a namespace's mount is
        // mode 0000 (as iproute2 makes it too), so once unmounted only CAP_DAC_OVERRIDE, which
        // the agent's unit does not keep, could open it for reading, and it must be found to be
        // no namespace (a leftover), not fail with EACCES.
        let opened = fcntl::open(path, OFlag::O_PATH | NO_FOLLOW, Mode::empty());
        let Some(found) = existing(opened, "netns_open", path)? else {
            return Ok(None);
        };
        let fs = statfs::fstatfs(&found).map_err(|e| SysError::os("statfs", path.display(), e))?;
        if fs.filesystem_type() != statfs::NSFS_MAGIC {
            let st = stat::fstat(&found).map_err(|e| SysError::os("fstat", path.display(), e))?;
            return Err(SysError::NotNetns {
                path: path.to_owned(),
                found: describe(&st),
            });
        }
        // The same inode, now for reading: an nsfs inode is readable by its owner.
        let reopened = format!("/proc/self/fd/{}", found.as_raw_fd());
        let fd = fcntl::open(
            reopened.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::os("netns_open", path.display(), e))?;
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
            // EINVAL: not a mount point, as after a half-finished netns_bind.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(SysError::os("umount", path.display(), e)),
        }
        match unistd::unlink(path) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::os("unlink", path.display(), e)),
        }
    }

    fn netns_leftover_remove(
        &mut self,
        path: &Path,
        file: Option<FileId>,
    ) -> Result<bool, SysError> {
        let st = match stat::lstat(path) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(true),
            Err(e) => return Err(SysError::os("lstat", path.display(), e)),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFREG || st.st_size != 0 || st.st_uid != 0 {
            return Ok(false);
        }
        // Once the agent's own file is unlinked, someone's `ip netns add` makes a new one, with
        // a new inode: tmpfs numbers its inodes from a counter, which comes back to a number
        // only after 2^32 files made on /run. A reboot starts it anew, and the agent's records
        // drop the file's identity then (`Executor::recover`).
        if file.is_some_and(|f| (f.dev, f.ino) != (st.st_dev, st.st_ino)) {
            return Ok(false);
        }
        // A plain unlink, never an unmount: a file mounted there fails it with EBUSY, and stays.
        unistd::unlink(path).map_err(|e| SysError::os("unlink", path.display(), e))?;
        info!(
            "removed {}, left by a namespace deletion that was cut short",
            path.display()
        );
        Ok(true)
    }

    fn netns_id(&mut self, netns: &NetnsFd) -> Result<NetnsId, SysError> {
        let st = stat::fstat(netns).map_err(|e| SysError::os("fstat", netns.path.display(), e))?;
        Ok(NetnsId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    fn netns_processes(&mut self, path: &Path) -> Result<Vec<Process>, SysError> {
        match self.netns_open(path)? {
            Some(netns) => procs::in_netns(&netns.fd, &netns.name()),
            None => Ok(Vec::new()),
        }
    }

    fn netns_processes_end(
        &mut self,
        path: &Path,
        grace: Duration,
    ) -> Result<Vec<Process>, SysError> {
        match self.netns_open(path)? {
            Some(netns) => procs::end_in_netns(&netns.fd, &netns.name(), grace),
            None => Ok(Vec::new()),
        }
    }

    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError> {
        let object = format!("ifindex {ifindex}");
        Rtnl::open(&object)?
            .link_get(ifindex)
            .map_err(|e| SysError::os("link_get", &object, e))
    }

    fn link_list(&mut self, netns: &NetnsFd) -> Result<Vec<Link>, SysError> {
        let object = format!("in namespace {}", netns.name());
        in_netns(netns, || {
            let links = Rtnl::open(&object)?
                .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
                .map_err(|e| SysError::os("link_list", &object, e))?;
            Ok(links.into_iter().filter_map(rtmsg::link_from).collect())
        })
    }

    fn link_set_netns(
        &mut self,
        ifindex: u32,
        netns: &NetnsFd,
        name: Option<&str>,
    ) -> Result<(), SysError> {
        let object = format!("ifindex {ifindex} to namespace {}", netns.name());
        let msg = rtmsg::link_set_netns(ifindex, netns.fd.as_raw_fd(), name);
        Rtnl::open(&object)?
            .link_set(msg)
            .map_err(|e| SysError::os("link_set_netns", &object, e))
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
            let mut nl = Rtnl::open(&object)?;
            nl.link_index(link)
                .and_then(|index| {
                    nl.link_set(rtmsg::link_set_netns_back(
                        index,
                        agent_netns,
                        link,
                        original,
                    ))
                })
                .map_err(|e| SysError::os("link_set_netns", &object, e))
        })
    }

    fn link_delete(&mut self, netns: &NetnsFd, ifindex: u32) -> Result<(), SysError> {
        let object = format!("ifindex {ifindex} in namespace {}", netns.name());
        in_netns(netns, || {
            Rtnl::open(&object)?
                .link_del(ifindex)
                .map_err(|e| SysError::os("link_delete", &object, e))
        })
    }

    fn netns_setup(&mut self, netns: &NetnsFd, setup: &NetnsSetup<'_>) -> Result<u32, SysError> {
        let name = netns.name();
        in_netns(netns, || Configure::run(&name, setup))
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
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(SysError::os("rmdir", path.display(), e)),
        }
        // Also when it was already gone, as in `file_remove`.
        sync_dir(&dir, path)
    }

    fn dir_exists(&mut self, path: &Path) -> Result<bool, SysError> {
        let Some((dir, name)) = open_parent_if_any(path)? else {
            return Ok(false);
        };
        let st = match stat::fstatat(&dir, name, fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(SysError::os("stat", path.display(), e)),
        };
        if is_kind(&st, SFlag::S_IFLNK) {
            return Err(SysError::Symlink {
                path: path.to_owned(),
            });
        }
        if !is_kind(&st, SFlag::S_IFDIR) {
            return Err(SysError::NotDirectory {
                path: path.to_owned(),
                found: describe(&st),
            });
        }
        Ok(true)
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
        let Some((dir, name)) = open_parent_if_any(path)? else {
            return Ok(None);
        };
        let Some(mut file) = open_regular(&dir, name, path, OFlag::O_RDONLY)? else {
            return Ok(None);
        };
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| SysError::os("read", path.display(), e))?;
        Ok(Some(content))
    }

    fn file_create(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), SysError> {
        let noreplace = RenameFlags::RENAME_NOREPLACE;
        write_atomic(path, content, mode, noreplace, durability)
    }

    fn file_replace(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), SysError> {
        write_atomic(path, content, mode, RenameFlags::empty(), durability)
    }

    // In place, not a temporary file and a rename: `ip netns exec` bind-mounts these files over
    // `/etc`, so apps already in the namespace hold the inode, and would not see a new one. The
    // executor saves what it is writing first, so a crash that leaves part of it is known.
    fn file_rewrite(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError> {
        let (dir, name) = open_parent(path)?;
        // Truncating only after the type check: O_TRUNC at open would act before it.
        let mut file = open_regular(&dir, name, path, OFlag::O_WRONLY)?
            .ok_or_else(|| SysError::os("rewrite", path.display(), Errno::ENOENT))?;
        file.set_len(0)
            .and_then(|()| file.write_all(content))
            .and_then(|()| file.sync_all())
            .map_err(|e| SysError::os("rewrite", path.display(), e))
    }

    fn file_remove(&mut self, path: &Path, durability: Durability) -> Result<(), SysError> {
        let (dir, name) = open_parent(path)?;
        match unistd::unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(SysError::os("unlink", path.display(), e)),
        }
        // Also when the file was already gone: an earlier unlink may not be on disk yet.
        if durability == Durability::Durable {
            sync_dir(&dir, path)?;
        }
        Ok(())
    }
}
