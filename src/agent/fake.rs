//! [`RecordingSys`]: [`Sys`] on an in-memory [`World`], for tests only. It records every call and
//! fails chosen ones, so the executor's ordering and rollback can be tested without privileges.
//! Built only for the crate's own tests and under the `test-support` feature.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::agent::sys::{Durability, FileId, Link, NetnsId, NetnsSetup, Process, Sys, SysError};

mod world;

pub use world::{Call, FakeFile, FakeLink, FakeNetnsEntry, World};

/// A namespace handle of [`RecordingSys`]: the path it was opened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNetns(pub PathBuf);

/// A mount point of [`RecordingSys`] that has no name yet: its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMountPoint(pub u64);

type FailWhen = Box<dyn Fn(&Call) -> bool + Send>;

/// [`Sys`] on an in-memory [`World`]: records every call, fails chosen ones with EIO, and has a
/// clock that chosen calls move forward.
pub struct RecordingSys {
    pub world: World,
    pub calls: Vec<Call>,
    fail_at: BTreeSet<usize>,
    fail_when: Vec<FailWhen>,
    slow: Vec<(FailWhen, Duration)>,
    crash_when: Option<FailWhen>,
    /// The world as a crash just before the call that `crash_when` matched would leave it.
    pub crashed: Option<World>,
    per_message: Duration,
    /// The inode of each namespace created and not yet bound, by the path it is meant for.
    unbound: BTreeMap<PathBuf, u64>,
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
            crash_when: None,
            crashed: None,
            per_message: Duration::ZERO,
            unbound: BTreeMap::new(),
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

    /// Keeps in `crashed` the world as it is just before the first call that `when` matches:
    /// what the agent would leave if it died there.
    pub fn crash_when(&mut self, when: impl Fn(&Call) -> bool + Send + 'static) {
        self.crash_when = Some(Box::new(when));
    }

    /// Moves the clock forward by `by` during every call that `when` matches.
    pub fn slow_when(&mut self, when: impl Fn(&Call) -> bool + Send + 'static, by: Duration) {
        self.slow.push((Box::new(when), by));
    }

    /// Moves the clock forward by `by` before each netlink message that `netns_setup` models.
    pub fn slow_messages(&mut self, by: Duration) {
        self.per_message = by;
    }

    /// Forgets injected failures and slow calls.
    pub fn heal(&mut self) {
        self.fail_at.clear();
        self.fail_when.clear();
        self.slow.clear();
        self.per_message = Duration::ZERO;
    }

    fn inode(&mut self) -> u64 {
        // Unique across every fake of the process: a world handed to a new fake (an agent
        // started anew) must not see a namespace made there get the inode of one on record.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    fn call(&mut self, call: Call) -> Result<(), SysError> {
        let index = self.calls.len();
        for (when, by) in &self.slow {
            if when(&call) {
                self.elapsed += *by;
            }
        }
        if self.crashed.is_none() && self.crash_when.as_ref().is_some_and(|w| w(&call)) {
            self.crashed = Some(self.world.clone());
        }
        let fail = self.fail_at.contains(&index) || self.fail_when.iter().any(|w| w(&call));
        let object = format!("{call:?}");
        self.calls.push(call);
        if fail {
            Err(Self::errno("injected failure of", object, Errno::EIO))
        } else {
            Ok(())
        }
    }

    fn enoent(op: &'static str, path: &Path) -> SysError {
        Self::errno(op, path.display(), Errno::ENOENT)
    }

    fn errno(op: &'static str, object: impl fmt::Display, errno: Errno) -> SysError {
        SysError::os(op, object, io::Error::from_raw_os_error(errno as i32))
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

    /// [`RecordingSys::check_parent`]; `false` if the parent directory is missing.
    fn check_parent_if_any(&self, op: &'static str, path: &Path) -> Result<bool, SysError> {
        match self.check_parent(op, path) {
            Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => Ok(false),
            checked => checked.map(|()| true),
        }
    }

    fn link_in(&mut self, netns: &Path, name: &str) -> Option<&mut FakeLink> {
        self.world
            .links
            .values_mut()
            .find(|l| l.netns.as_deref() == Some(netns) && l.link.name == name)
    }

    /// A sync of `path`'s directory, which makes every removal in it durable.
    fn sync_dir_of(&mut self, path: &Path) {
        self.world
            .unsynced_removals
            .retain(|removed| removed.parent() != path.parent());
    }

    fn write_new(&mut self, path: &Path, content: &[u8], durability: Durability) {
        if durability == Durability::Durable {
            self.sync_dir_of(path);
        }
        let inode = self.inode();
        self.world.files.insert(
            path.to_owned(),
            FakeFile {
                content: content.to_vec(),
                inode,
                durable: durability == Durability::Durable,
            },
        );
    }
}

impl Sys for RecordingSys {
    type Netns = FakeNetns;
    type MountPoint = FakeMountPoint;

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    fn netns_create(&mut self, path: &Path) -> Result<(FakeNetns, NetnsId), SysError> {
        self.call(Call::NetnsCreate(path.to_owned()))?;
        let ino = self.inode();
        self.unbound.insert(path.to_owned(), ino);
        Ok((FakeNetns(path.to_owned()), NetnsId { dev: 4, ino }))
    }

    fn netns_mount_point(&mut self, dir: &Path) -> Result<(FakeMountPoint, FileId), SysError> {
        self.call(Call::NetnsMountPoint(dir.to_owned()))?;
        self.world.dirs.insert(dir.to_owned());
        let ino = self.inode();
        Ok((FakeMountPoint(ino), FileId { dev: 25, ino }))
    }

    fn netns_bind(
        &mut self,
        netns: &FakeNetns,
        mount_point: FakeMountPoint,
        path: &Path,
    ) -> Result<(), SysError> {
        self.call(Call::NetnsBind(path.to_owned()))?;
        if self.world.netns.contains_key(path) {
            return Err(Self::errno("netns_bind", path.display(), Errno::EEXIST));
        }
        let ino = self
            .unbound
            .remove(&netns.0)
            .ok_or_else(|| Self::enoent("netns_bind", &netns.0))?;
        self.world
            .netns
            .insert(path.to_owned(), FakeNetnsEntry::Leftover);
        self.world
            .netns_files
            .insert(path.to_owned(), mount_point.0);
        if let Err(e) = self.call(Call::NetnsBindMount(path.to_owned())) {
            self.world.netns.remove(path);
            self.world.netns_files.remove(path);
            return Err(e);
        }
        self.world
            .netns
            .insert(path.to_owned(), FakeNetnsEntry::Netns);
        self.world.netns_inodes.insert(path.to_owned(), ino);
        Ok(())
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
            Some(FakeNetnsEntry::RegularFile | FakeNetnsEntry::Leftover) => {
                Err(SysError::NotNetns {
                    path: path.to_owned(),
                    found: "a regular file",
                })
            }
        }
    }

    fn netns_del(&mut self, path: &Path) -> Result<(), SysError> {
        self.call(Call::NetnsDel(path.to_owned()))?;
        self.world.netns.remove(path);
        self.world.netns_inodes.remove(path);
        self.world.netns_files.remove(path);
        // The kernel destroys a tun whose namespace goes away.
        self.world
            .links
            .retain(|_, l| l.netns.as_deref() != Some(path));
        Ok(())
    }

    fn netns_leftover_remove(
        &mut self,
        path: &Path,
        file: Option<FileId>,
    ) -> Result<bool, SysError> {
        self.call(Call::NetnsLeftoverRemove(path.to_owned()))?;
        let that_file = file.is_none_or(|f| self.world.netns_files.get(path) == Some(&f.ino));
        let leftover = match self.world.netns.get(path) {
            None => true,
            Some(FakeNetnsEntry::Leftover) => that_file,
            Some(_) => false,
        };
        if leftover {
            self.world.netns.remove(path);
            self.world.netns_files.remove(path);
        }
        Ok(leftover)
    }

    fn netns_id(&mut self, netns: &FakeNetns) -> Result<NetnsId, SysError> {
        self.call(Call::NetnsId(netns.0.clone()))?;
        let ino = *self
            .world
            .netns_inodes
            .get(&netns.0)
            .ok_or_else(|| Self::enoent("fstat", &netns.0))?;
        Ok(NetnsId { dev: 4, ino })
    }

    fn netns_processes(&mut self, path: &Path) -> Result<Vec<Process>, SysError> {
        self.call(Call::NetnsProcesses(path.to_owned()))?;
        let mounted = self.world.netns.contains_key(path);
        let found = self.world.processes.get(path).filter(|_| mounted);
        Ok(found.cloned().unwrap_or_default())
    }

    fn netns_processes_end(
        &mut self,
        path: &Path,
        _grace: Duration,
    ) -> Result<Vec<Process>, SysError> {
        self.call(Call::NetnsProcessesEnd(path.to_owned()))?;
        self.world.processes.remove(path);
        Ok(Vec::new())
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

    fn link_list(&mut self, netns: &FakeNetns) -> Result<Vec<Link>, SysError> {
        self.call(Call::LinkList(netns.0.clone()))?;
        let lo = Link {
            ifindex: 1,
            name: "lo".to_owned(),
            kind: None,
            mtu: 65536,
            up: true,
        };
        Ok(std::iter::once(lo)
            .chain(
                self.world
                    .links
                    .values()
                    .filter(|l| l.netns.as_ref() == Some(&netns.0))
                    .map(|l| l.link.clone()),
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
            .ok_or_else(|| Self::errno("link_set_netns", ifindex, Errno::ENODEV))?;
        link.netns = Some(netns.0.clone());
        link.link.up = false;
        link.setup = None;
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
        let found = self
            .link_in(&netns.0, link)
            .ok_or_else(|| Self::errno("link_set_netns", link, Errno::ENODEV))?;
        found.netns = None;
        found.setup = None;
        found.link = original.clone();
        Ok(())
    }

    fn link_delete(&mut self, netns: &FakeNetns, ifindex: u32) -> Result<(), SysError> {
        self.call(Call::LinkDelete {
            netns: netns.0.clone(),
            ifindex,
        })?;
        if self.world.links.get(&ifindex).map(|l| &l.netns) == Some(&Some(netns.0.clone())) {
            self.world.links.remove(&ifindex);
        }
        Ok(())
    }

    fn netns_setup(&mut self, netns: &FakeNetns, setup: &NetnsSetup<'_>) -> Result<u32, SysError> {
        self.call(Call::NetnsSetup {
            netns: netns.0.clone(),
            link: setup.link.to_owned(),
            reapply: setup.reapply,
        })?;
        // The messages the real one sends: lo and the link, then each family's address, routes
        // and default route. The clock moves on before each, as a slow kernel's would.
        let family = |routes: usize, default: bool| 1 + routes + usize::from(default);
        let messages = 2
            + setup
                .ipv4
                .map_or(0, |p| family(p.routes.len(), p.default_route.is_some()))
            + setup
                .ipv6
                .map_or(0, |p| family(p.routes.len(), p.default_route.is_some()));
        for n in 0..messages {
            self.elapsed += self.per_message;
            setup.check_deadline(self.now(), format_args!("message {n} of {messages}"))?;
        }
        let summary = format!(
            "mtu {:?} ipv4 {:?} ipv6 {:?} ping_group_range {:?}",
            setup.mtu, setup.ipv4, setup.ipv6, setup.ping_group_range
        );
        let link = self
            .link_in(&netns.0, setup.link)
            .ok_or_else(|| Self::errno("link_get", setup.link, Errno::ENODEV))?;
        link.link.up = true;
        if let Some(mtu) = setup.mtu {
            link.link.mtu = mtu;
        }
        link.setup = Some(summary);
        Ok(link.link.ifindex)
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
            return Err(Self::errno("rmdir", path.display(), Errno::ENOTEMPTY));
        }
        if self.world.dirs.remove(path) {
            self.world.unsynced_removals.insert(path.to_owned());
        }
        self.sync_dir_of(path);
        Ok(())
    }

    fn dir_exists(&mut self, path: &Path) -> Result<bool, SysError> {
        self.call(Call::DirExists(path.to_owned()))?;
        if !self.check_parent_if_any("stat", path)? {
            return Ok(false);
        }
        if self.world.files.contains_key(path) {
            return Err(SysError::NotDirectory {
                path: path.to_owned(),
                found: "a regular file",
            });
        }
        Ok(self.world.dirs.contains(path))
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
        if !self.check_parent_if_any("open", path)? {
            return Ok(None);
        }
        Ok(self.world.files.get(path).map(|f| f.content.clone()))
    }

    fn file_create(
        &mut self,
        path: &Path,
        content: &[u8],
        _mode: u32,
        durability: Durability,
    ) -> Result<(), SysError> {
        self.call(Call::FileCreate(path.to_owned()))?;
        self.check_parent("create", path)?;
        if self.world.files.contains_key(path) {
            return Err(Self::errno("create", path.display(), Errno::EEXIST));
        }
        self.write_new(path, content, durability);
        Ok(())
    }

    fn file_replace(
        &mut self,
        path: &Path,
        content: &[u8],
        _mode: u32,
        durability: Durability,
    ) -> Result<(), SysError> {
        self.call(Call::FileReplace(path.to_owned()))?;
        self.check_parent("create", path)?;
        self.write_new(path, content, durability);
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
        file.durable = true;
        Ok(())
    }

    fn file_remove(&mut self, path: &Path, durability: Durability) -> Result<(), SysError> {
        self.call(Call::FileRemove(path.to_owned()))?;
        self.check_parent("unlink", path)?;
        if self.world.files.remove(path).is_some_and(|f| f.durable) {
            self.world.unsynced_removals.insert(path.to_owned());
        }
        if durability == Durability::Durable {
            self.sync_dir_of(path);
        }
        Ok(())
    }
}
