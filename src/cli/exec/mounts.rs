//! The mounts that make a private mount namespace look like the network namespace's: iproute2's
//! `ip netns exec` (ip/ipnetns.c, `netns_switch` and `bind_etc`) plus the host's resolver sockets
//! hidden. [`plan`] decides from what exists; [`gather`] looks and [`apply`] mounts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::plan::NETNS_ETC_DIR;

/// Directories of unix sockets through which a lookup made inside reaches a resolver on the
/// host: a unix socket is not in any network namespace, so a daemon listening there answers
/// with the host's DNS. Each one that exists gets an empty tmpfs over it.
///
/// - nscd: glibc asks its socket before it reads `hosts:` of nsswitch.conf, at
///   `_PATH_NSCDSOCKET` "/var/run/nscd/socket" (glibc nscd/nscd-client.h).
/// - systemd-resolved: nss-resolve's varlink socket `io.systemd.Resolve` and its monitor
///   (systemd's src/resolve/resolved-varlink.c).
/// - avahi-daemon: nss-mdns asks it at `/run/avahi-daemon/socket` (nss-mdns's src/avahi.c), and it
///   resolves `.local` names on the host's links.
///
/// `/var/run` is a symlink to `/run` on current systems; both are listed for those where it is
/// not, and [`gather`] merges them. sssd's `/var/lib/sss/pipes` is left alone: it answers user
/// and group lookups the command needs, and it resolves hosts only through an nsswitch.conf
/// `hosts:` line, which the namespace's own nsswitch.conf replaces.
pub const RESOLVER_SOCKET_DIRS: [&str; 6] = [
    "/run/nscd",
    "/var/run/nscd",
    "/run/systemd/resolve",
    "/var/run/systemd/resolve",
    "/run/avahi-daemon",
    "/var/run/avahi-daemon",
];

/// One entry of `/etc/netns/NAME`, and the file of `/etc` it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcEntry {
    pub source: PathBuf,
    pub is_dir: bool,
    /// `/etc/ENTRY` with every symlink followed, as mount(2) follows them; `None` if it does
    /// not exist. `/etc/resolv.conf` often points into `/run/systemd/resolve`.
    pub target: Option<PathBuf>,
}

/// What exists, as [`plan`] needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The existing [`RESOLVER_SOCKET_DIRS`], with symlinks followed, each once.
    pub resolver_dirs: Vec<PathBuf>,
    pub etc: Vec<EtcEntry>,
}

/// One mount or file to make, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A sysfs of the network namespace on `/sys`, as `ip netns exec` mounts it.
    RemountSys,
    /// An empty tmpfs over a resolver's socket directory.
    Hide(PathBuf),
    /// An empty file or directory in a hidden directory, for a bind that `/etc` points there.
    Create { path: PathBuf, is_dir: bool },
    /// `/etc/netns/NAME/ENTRY` over the file `/etc/ENTRY` stands for.
    Bind { source: PathBuf, target: PathBuf },
    /// `/etc/ENTRY` does not exist: `ip netns exec` warns and goes on, and so does `exec`.
    Unbound { source: PathBuf, etc: PathBuf },
}

/// The steps, in order: `/sys`, the resolver directories hidden, then `/etc/netns/NAME` bound.
/// Hiding comes first, since a tmpfs over a directory would hide a bind made into it; a bind
/// target that lies in a hidden directory is created there first, in the tmpfs.
pub fn plan(facts: &Facts) -> Vec<Step> {
    let mut steps = vec![Step::RemountSys];
    steps.extend(facts.resolver_dirs.iter().cloned().map(Step::Hide));
    for entry in &facts.etc {
        let Some(target) = &entry.target else {
            steps.push(Step::Unbound {
                source: entry.source.clone(),
                etc: etc_path(&entry.source),
            });
            continue;
        };
        if facts
            .resolver_dirs
            .iter()
            .any(|dir| target.starts_with(dir))
        {
            steps.push(Step::Create {
                path: target.clone(),
                is_dir: entry.is_dir,
            });
        }
        steps.push(Step::Bind {
            source: entry.source.clone(),
            target: target.clone(),
        });
    }
    steps
}

fn etc_path(source: &Path) -> PathBuf {
    Path::new("/etc").join(source.file_name().unwrap_or_default())
}

/// Every way setting the mounts up can fail.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("cannot mount a sysfs of the namespace on /sys")]
    Sys(#[source] nix::Error),
    #[error("cannot hide {0}")]
    Hide(PathBuf, #[source] nix::Error),
    #[error("cannot create {0} in the hidden directory")]
    Create(PathBuf, #[source] io::Error),
    #[error("cannot bind {0} over {1}")]
    Bind(PathBuf, PathBuf, #[source] nix::Error),
}

/// The [`RESOLVER_SOCKET_DIRS`] that exist, with symlinks followed, each once.
pub fn resolver_dirs() -> Result<Vec<PathBuf>, MountError> {
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in RESOLVER_SOCKET_DIRS {
        match fs::canonicalize(dir) {
            Ok(dir) if dir.is_dir() && !found.contains(&dir) => found.push(dir),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(MountError::Read(dir.into(), e)),
        }
    }
    Ok(found)
}

/// Looks at what exists for namespace `netns`.
pub fn gather(netns: &str) -> Result<Facts, MountError> {
    let resolver_dirs = resolver_dirs()?;
    let dir = Path::new(NETNS_ETC_DIR).join(netns);
    let read = |e| MountError::Read(dir.clone(), e);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        // `ip netns exec` binds nothing then either.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Facts {
                resolver_dirs,
                etc: vec![],
            })
        }
        Err(e) => return Err(read(e)),
    };
    let mut etc = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read)?;
        let source = entry.path();
        etc.push(EtcEntry {
            is_dir: source.is_dir(),
            target: fs::canonicalize(etc_path(&source)).ok(),
            source,
        });
    }
    etc.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(Facts { resolver_dirs, etc })
}

/// Makes the steps, in this process's own mount namespace.
pub fn apply(netns: &str, steps: &[Step]) -> Result<(), MountError> {
    for step in steps {
        match step {
            Step::RemountSys => remount_sys(netns)?,
            Step::Hide(dir) => mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=0755,size=64k"),
            )
            .map_err(|e| MountError::Hide(dir.clone(), e))?,
            Step::Create { path, is_dir: true } => {
                fs::create_dir(path).map_err(|e| MountError::Create(path.clone(), e))?
            }
            Step::Create {
                path,
                is_dir: false,
            } => fs::File::create(path)
                .map(drop)
                .map_err(|e| MountError::Create(path.clone(), e))?,
            Step::Bind { source, target } => mount(
                Some(source),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| MountError::Bind(source.clone(), target.clone(), e))?,
            Step::Unbound { source, etc } => eprintln!(
                "nm-vpn-netns: warning: {} is not bound: {} does not exist",
                source.display(),
                etc.display()
            ),
        }
    }
    Ok(())
}

/// `/sys` for the namespace, as ip/ipnetns.c `netns_switch` does it: the host's sysfs describes
/// the host's links. A sysfs that cannot be unmounted is covered instead, read-only if it was,
/// since a read-only one cannot be shadowed by a writable one.
fn remount_sys(netns: &str) -> Result<(), MountError> {
    let mut flags = MsFlags::empty();
    if umount2("/sys", MntFlags::MNT_DETACH).is_err()
        && statvfs("/sys").is_ok_and(|st| st.flags().contains(FsFlags::ST_RDONLY))
    {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(Some(netns), "/sys", Some("sysfs"), flags, None::<&str>).map_err(MountError::Sys)
}

#[cfg(test)]
mod tests;
