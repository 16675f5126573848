//! The in-memory world of [`super::RecordingSys`] and the calls it records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::RecordingSys;
use crate::agent::sys::{Link, Process};

/// One call made to a [`super::RecordingSys`], with the objects it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    NetnsCreate(PathBuf),
    NetnsMountPoint(PathBuf),
    /// The link of the mount point under its name, the first half of `netns_bind`.
    NetnsBind(PathBuf),
    /// The mount on it, the second half: a crash here leaves the linked, empty file.
    NetnsBindMount(PathBuf),
    NetnsOpen(PathBuf),
    NetnsDel(PathBuf),
    NetnsLeftoverRemove(PathBuf),
    NetnsId(PathBuf),
    NetnsProcesses(PathBuf),
    NetnsProcessesEnd(PathBuf),
    LinkGet(u32),
    LinkList(PathBuf),
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
    LinkDelete {
        netns: PathBuf,
        ifindex: u32,
    },
    NetnsSetup {
        netns: PathBuf,
        link: String,
        reapply: bool,
    },
    SysctlRead(String),
    DirCreate(PathBuf),
    DirRemove(PathBuf),
    DirExists(PathBuf),
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
    /// An empty file of root's: what `ip netns del` leaves between its unmount and its unlink,
    /// and `netns_bind` between its link and its mount.
    Leftover,
}

/// A link of a [`World`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub link: Link,
    /// The namespace mount it is in; `None`: the agent's namespace.
    pub netns: Option<PathBuf>,
    /// What `netns_setup` last applied to it; a move clears it, as the kernel does.
    pub setup: Option<String>,
}

/// A file of a [`World`]; rewriting in place keeps the inode, a rename gives a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    pub content: Vec<u8>,
    pub inode: u64,
    /// Synced as it was last written, so a power loss would not lose it.
    pub durable: bool,
}

/// The state a [`super::RecordingSys`] models: namespaces, links, directories, files, symlinks, sysctls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub netns: BTreeMap<PathBuf, FakeNetnsEntry>,
    pub links: BTreeMap<u32, FakeLink>,
    pub dirs: BTreeSet<PathBuf>,
    pub files: BTreeMap<PathBuf, FakeFile>,
    pub symlinks: BTreeSet<PathBuf>,
    pub sysctls: BTreeMap<String, String>,
    /// The inode of each namespace in `netns`: a namespace made anew at a path gets a new one.
    pub netns_inodes: BTreeMap<PathBuf, u64>,
    /// The inode of the file at each path in `netns`: the mount point under a namespace, or the
    /// bare file. A file made anew at a path gets a new one.
    pub netns_files: BTreeMap<PathBuf, u64>,
    /// Synced files, and directories, removed without a sync of their directory after, which a
    /// power loss could bring back.
    pub unsynced_removals: BTreeSet<PathBuf>,
    /// The processes that run in the namespace mounted at a path.
    pub processes: BTreeMap<PathBuf, Vec<Process>>,
}

impl Default for World {
    fn default() -> Self {
        World {
            netns: BTreeMap::new(),
            links: BTreeMap::new(),
            dirs: ["/", "/etc", "/run", "/var", "/var/lib"]
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            files: BTreeMap::new(),
            symlinks: BTreeSet::new(),
            sysctls: BTreeMap::from([(
                "net.ipv4.ping_group_range".to_owned(),
                "0 2147483647".to_owned(),
            )]),
            netns_inodes: BTreeMap::new(),
            netns_files: BTreeMap::new(),
            unsynced_removals: BTreeSet::new(),
            processes: BTreeMap::new(),
        }
    }
}

/// Building the world a test starts from.
impl RecordingSys {
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
                setup: None,
            },
        );
    }

    /// Adds a namespace that someone else made, as `ip netns add` would.
    pub fn add_netns(&mut self, path: &str) {
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            self.world.dirs.insert(dir.to_owned());
        }
        let inode = self.inode();
        self.world.netns_inodes.insert(path.clone(), inode);
        self.add_netns_file(&path, FakeNetnsEntry::Netns);
    }

    /// Puts `entry` at `path` on a new file, as `ip netns add` creates one before it mounts.
    pub fn add_netns_file(&mut self, path: &Path, entry: FakeNetnsEntry) {
        let inode = self.inode();
        self.world.netns_files.insert(path.to_owned(), inode);
        self.world.netns.insert(path.to_owned(), entry);
    }

    pub fn add_file(&mut self, path: &str, content: &str) {
        let inode = self.inode();
        self.world.files.insert(
            PathBuf::from(path),
            FakeFile {
                content: content.as_bytes().to_vec(),
                inode,
                durable: true,
            },
        );
    }
}
