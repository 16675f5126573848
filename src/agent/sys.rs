//! Every side effect the agent has on the system, behind one narrow trait.
//!
//! [`Sys`] is what the executor may do: namespaces (`ip netns`), links and their setup inside a
//! namespace (`ip link`, `ip addr`, `ip route`), files that must never be reached through a
//! symbolic link, and one sysctl read. [`crate::agent::linux::RealSys`] does it to the kernel;
//! the recording fake of `fake.rs` (tests and the `test-support` feature only) keeps a model of
//! the same world in memory.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::plan::FamilyPlan;

/// A failed side effect. Each message names the operation and the object it was applied to.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("{op} {object}")]
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
    /// Only the agent's own user may have written what it trusts: a file or directory that
    /// someone else owns or may write, or a file with a second name (a hard link planted to make
    /// the agent write elsewhere), is refused.
    #[error("{}: {why}; nm-vpn-netns does not trust it", path.display())]
    Untrusted { path: PathBuf, why: String },
    /// The request's deadline passed in the middle of a step; the executor reports it as its
    /// own timeout.
    #[error("the deadline passed before {op}")]
    Deadline { op: String },
}

impl SysError {
    pub(crate) fn os(
        op: &'static str,
        object: impl fmt::Display,
        source: impl Into<io::Error>,
    ) -> Self {
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

/// A namespace's identity: the device and inode of its nsfs file, the same for every mount and
/// descriptor of one namespace, and different for a namespace created later under the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

/// A file's identity: its device and inode. A file made anew under the same name has another
/// inode, so this tells the agent's own mount point at `/run/netns/NAME` from the file of
/// someone's later `ip netns add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Whether a written file must be on disk before the write returns: what a power loss must not
/// lose or tear, such as the durable record or a backup put back, is synced; a file under `/run`,
/// gone at a reboot anyway, is not, nor is a file whose every torn state its record covers (a
/// DNS file the agent creates, see `FileRecord::holds_ours`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// No sync.
    Volatile,
    /// The file, then its directory, synced before and after the rename.
    Durable,
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

/// A process, by its pid and its `comm` (the kernel's 15-byte name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

/// Processes as the contract carries them: (pid, comm).
pub fn pid_comm(processes: &[Process]) -> Vec<(u32, String)> {
    processes.iter().map(|p| (p.pid, p.comm.clone())).collect()
}

/// What [`Sys::netns_setup`] applies inside a namespace, borrowed from the plan.
#[derive(Debug, Clone, Copy)]
pub struct NetnsSetup<'a> {
    /// The link's name inside the namespace.
    pub link: &'a str,
    pub mtu: Option<u32>,
    pub ipv4: Option<&'a FamilyPlan<Ipv4Addr>>,
    pub ipv6: Option<&'a FamilyPlan<Ipv6Addr>>,
    /// Written to the namespace's `net.ipv4.ping_group_range`; `None` leaves it alone.
    pub ping_group_range: Option<&'a str>,
    /// The link was configured before: addresses and routes that the plan no longer has go.
    pub reapply: bool,
    /// Checked before each message, so that a long list of routes cannot hold the executor's
    /// thread past `netns-timeout`; `None`: no deadline.
    pub deadline: Option<Instant>,
}

impl NetnsSetup<'_> {
    /// Refuses to go on with `op` once `now` is past the deadline.
    pub fn check_deadline(&self, now: Instant, op: impl fmt::Display) -> Result<(), SysError> {
        match self.deadline {
            Some(deadline) if now >= deadline => Err(SysError::Deadline { op: op.to_string() }),
            _ => Ok(()),
        }
    }
}

/// The agent's side effects. Paths are absolute; every file operation refuses to follow a
/// symbolic link in the last component or in its parent directory's last component.
pub trait Sys {
    /// An open handle on a network namespace (a file descriptor of an nsfs file).
    type Netns;
    /// An unnamed file to mount a namespace on (a file descriptor of one).
    type MountPoint;

    fn now(&self) -> Instant;

    /// The first step of `ip netns add`: a new namespace, held open, and its identity. It has no
    /// name yet, so nobody else can find it; `path` is where [`Sys::netns_bind`] will put it, for
    /// messages. The caller records the identity before the namespace gets its name, so that a
    /// crash in between never leaves a name whose namespace the agent cannot tell from another.
    fn netns_create(&mut self, path: &Path) -> Result<(Self::Netns, NetnsId), SysError>;
    /// The second step: makes `dir` a shared mount point, then creates in it an empty file with
    /// no name yet, to mount the namespace on, and returns it with its identity. The caller
    /// records that identity before [`Sys::netns_bind`] names the file: a crash before leaves
    /// nothing (a file without a name goes with its descriptor), and after, that very file.
    fn netns_mount_point(&mut self, dir: &Path) -> Result<(Self::MountPoint, FileId), SysError>;
    /// The last step: links `mount_point` at `path`, in the directory it was made in, and
    /// bind-mounts `netns` on it. Fails with EEXIST if `path` exists, which stays as it is.
    fn netns_bind(
        &mut self,
        netns: &Self::Netns,
        mount_point: Self::MountPoint,
        path: &Path,
    ) -> Result<(), SysError>;
    /// Opens the namespace mounted at `path`; `None` if nothing is there, an error if something
    /// other than a network namespace is.
    fn netns_open(&mut self, path: &Path) -> Result<Option<Self::Netns>, SysError>;
    /// `ip netns del`: detaches the mount and removes the file; a missing one counts as done.
    fn netns_del(&mut self, path: &Path) -> Result<(), SysError>;
    /// Removes what [`Sys::netns_bind`] leaves when it is cut short between its link and its
    /// mount, or `ip netns del` (and [`Sys::netns_del`]) between its unmount and its unlink: an
    /// empty regular file owned by root, not a mount point, and with `Some(file)`, that very file
    /// ([`Sys::netns_mount_point`]'s). `false` if something else is at `path`, which stays;
    /// `true` if nothing is left there.
    fn netns_leftover_remove(
        &mut self,
        path: &Path,
        file: Option<FileId>,
    ) -> Result<bool, SysError>;
    /// The identity of an open namespace.
    fn netns_id(&mut self, netns: &Self::Netns) -> Result<NetnsId, SysError>;
    /// `ip netns pids`: the processes that run in the namespace mounted at `path`; none if
    /// nothing is mounted there.
    fn netns_processes(&mut self, path: &Path) -> Result<Vec<Process>, SysError>;
    /// Ends the processes that run in the namespace mounted at `path`: SIGTERM, then SIGKILL to
    /// those still running after `grace`, which get as long again. Returns those that outlived
    /// it all.
    fn netns_processes_end(
        &mut self,
        path: &Path,
        grace: Duration,
    ) -> Result<Vec<Process>, SysError>;

    /// The link with this index in the agent's own namespace; `None` if there is none.
    fn link_get(&mut self, ifindex: u32) -> Result<Option<Link>, SysError>;
    /// `ip -n NETNS link show`: every link inside the namespace.
    fn link_list(&mut self, netns: &Self::Netns) -> Result<Vec<Link>, SysError>;
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
    /// `ip -n NETNS link del dev IFINDEX`; a link that is not there counts as done.
    fn link_delete(&mut self, netns: &Self::Netns, ifindex: u32) -> Result<(), SysError>;
    /// Brings up `lo` and the link inside the namespace and applies addresses, routes and the
    /// sysctl of `setup`. Returns the link's index there, as the kernel reports it: a move keeps
    /// the index unless another link has it in the namespace.
    fn netns_setup(&mut self, netns: &Self::Netns, setup: &NetnsSetup<'_>)
        -> Result<u32, SysError>;

    /// A sysctl of the agent's own namespace, such as `net.ipv4.ping_group_range`.
    fn sysctl_read(&mut self, key: &str) -> Result<String, SysError>;

    /// Creates a directory; `false` if one already exists there.
    fn dir_create(&mut self, path: &Path, mode: u32) -> Result<bool, SysError>;
    /// Removes an empty directory; a missing one counts as done. Its parent is synced after, so
    /// that a power loss does not bring it back: the agent removes directories only under
    /// `/etc/netns`, which outlives a reboot.
    fn dir_remove(&mut self, path: &Path) -> Result<(), SysError>;
    /// Whether a directory is at `path`, `false` if its parent is missing too; an error if
    /// something else is.
    fn dir_exists(&mut self, path: &Path) -> Result<bool, SysError>;
    /// The names in a directory.
    fn dir_list(&mut self, path: &Path) -> Result<Vec<String>, SysError>;
    /// A regular file's content; `None` if there is no file, nor a directory it could be in.
    fn file_read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError>;
    /// Writes a new file atomically (temporary file and rename); fails if `path` exists.
    fn file_create(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), SysError>;
    /// Writes a file atomically (temporary file and rename), replacing any file at `path`;
    /// [`Durability::Durable`]: on disk before this returns.
    fn file_replace(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), SysError>;
    /// Rewrites an existing regular file in place, so that its inode stays the same, and syncs
    /// it. Not atomic: a crash can leave any prefix of `content`.
    fn file_rewrite(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError>;
    /// Removes a file; a missing one counts as done. [`Durability::Durable`]: the directory is
    /// synced after, so that a power loss does not bring the file back.
    fn file_remove(&mut self, path: &Path, durability: Durability) -> Result<(), SysError>;
}
