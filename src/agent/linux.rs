//! [`RealSys`]: [`Sys`] on the running kernel, and its file and namespace helpers.
//!
//! Two rules hold throughout:
//! - `setns` changes only the calling thread, so namespace work runs on a short-lived
//!   [`std::thread`] of its own, never on the caller's thread (which may be a runtime's worker).
//! - A netlink socket talks to the namespace it was created in, so each one is opened on the
//!   thread that is already inside the namespace it is meant for.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, info, warn};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::fcntl::{self, Flock, FlockArg, OFlag, RenameFlags};
use nix::mount::{self, MntFlags, MsFlags};
use nix::sched::{self, CloneFlags};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::sys::statfs;
use nix::unistd::{self, UnlinkatFlags};

use crate::agent::netlink::{Configure, Rtnl};
use crate::agent::procs;
use crate::agent::rtmsg;
use crate::agent::sys::{Link, NetnsId, NetnsSetup, Process, Sys, SysError};
use crate::report::Chain;

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

/// Refuses what the agent's own user did not make alone: owned by another user, writable by
/// group or others, or, for a regular file, with more than one name.
fn check_trusted(st: &FileStat, path: &Path) -> Result<(), SysError> {
    let untrusted = |why: String| {
        Err(SysError::Untrusted {
            path: path.to_owned(),
            why,
        })
    };
    let me = unistd::geteuid().as_raw();
    if st.st_uid != me {
        return untrusted(format!("it is owned by uid {}, not {me}", st.st_uid));
    }
    if st.st_mode & 0o022 != 0 {
        return untrusted(format!(
            "it is writable by group or others (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    if is_kind(st, SFlag::S_IFREG) && st.st_nlink != 1 {
        return untrusted(format!("it has {} hard links, not 1", st.st_nlink));
    }
    Ok(())
}

/// Splits `path` into its parent directory, opened without following a symbolic link, and its
/// last component. The directory must be [trusted](check_trusted): what the agent reads and
/// writes in it must not be swapped by anyone else.
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
    let st = stat::fstat(&dir).map_err(|e| SysError::os("fstat", parent.display(), e))?;
    check_trusted(&st, parent)?;
    Ok((dir, name))
}

/// How every path the agent opens is opened: a symbolic link fails with ELOOP, a FIFO planted
/// there cannot block the agent until its type is checked, and no descriptor leaks to a child.
const NO_FOLLOW: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

/// The descriptor `opened` with [`NO_FOLLOW`], `None` when nothing is at `path`, or why not.
fn existing(
    opened: nix::Result<OwnedFd>,
    op: &'static str,
    path: &Path,
) -> Result<Option<OwnedFd>, SysError> {
    match opened {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) => Err(SysError::Symlink {
            path: path.to_owned(),
        }),
        Err(e) => Err(SysError::os(op, path.display(), e)),
    }
}

/// Opens the existing regular file `name` in `dir` without following a symbolic link. O_NONBLOCK
/// keeps a FIFO planted there from blocking the agent until its type is checked.
fn open_regular(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    path: &Path,
    access: OFlag,
) -> Result<Option<File>, SysError> {
    let opened = fcntl::openat(dir, name, access | NO_FOLLOW, Mode::empty());
    let Some(fd) = existing(opened, "open", path)? else {
        return Ok(None);
    };
    let st = stat::fstat(&fd).map_err(|e| SysError::os("fstat", path.display(), e))?;
    if !is_kind(&st, SFlag::S_IFREG) {
        return Err(SysError::NotRegularFile {
            path: path.to_owned(),
            found: describe(&st),
        });
    }
    check_trusted(&st, path)?;
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
                warn!("cleaning up after a failed netns_add: {}", Chain(&e));
            }
        }
        bound
    }

    fn netns_open(&mut self, path: &Path) -> Result<Option<NetnsFd>, SysError> {
        let opened = fcntl::open(path, OFlag::O_RDONLY | NO_FOLLOW, Mode::empty());
        let Some(fd) = existing(opened, "netns_open", path)? else {
            return Ok(None);
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

    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError> {
        let object = format!("ifindex {ifindex}");
        Rtnl::open(&object)?
            .link_get(ifindex)
            .map_err(|e| SysError::os("link_get", &object, e))
    }

    fn link_names(&mut self, netns: &NetnsFd) -> Result<Vec<String>, SysError> {
        let object = format!("in namespace {}", netns.name());
        in_netns(netns, || {
            let links = Rtnl::open(&object)?
                .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
                .map_err(|e| SysError::os("link_list", &object, e))?;
            Ok(links
                .into_iter()
                .filter_map(rtmsg::link_from)
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

    fn netns_setup(&mut self, netns: &NetnsFd, setup: &NetnsSetup<'_>) -> Result<(), SysError> {
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
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::os("rmdir", path.display(), e)),
        }
    }

    fn dir_exists(&mut self, path: &Path) -> Result<bool, SysError> {
        let (dir, name) = open_parent(path)?;
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

pub(crate) fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}
