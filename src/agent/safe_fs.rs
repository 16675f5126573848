//! Files under `/etc/netns` and the agent's state directories, opened without following
//! symbolic links and checked for trust before the agent reads or writes them.
//!
//! A planted symlink or hard link would make root write elsewhere, and a file someone else may
//! write is no proof of what the agent wrote, so every path goes through these helpers.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, RenameFlags};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use crate::agent::sys::{Durability, SysError};

pub(super) fn describe(st: &FileStat) -> &'static str {
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

pub(super) fn is_kind(st: &FileStat, kind: SFlag) -> bool {
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
pub(super) fn open_parent(path: &Path) -> Result<(OwnedFd, &std::ffi::OsStr), SysError> {
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

/// [`open_parent`], or `None` if the parent directory does not exist: nothing is at `path`.
pub(super) fn open_parent_if_any(
    path: &Path,
) -> Result<Option<(OwnedFd, &std::ffi::OsStr)>, SysError> {
    match open_parent(path) {
        Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => Ok(None),
        opened => opened.map(Some),
    }
}

/// How every path the agent opens is opened: a symbolic link fails with ELOOP, a FIFO planted
/// there cannot block the agent until its type is checked, and no descriptor leaks to a child.
pub(super) const NO_FOLLOW: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_CLOEXEC);

/// The descriptor `opened` with [`NO_FOLLOW`], `None` when nothing is at `path`, or why not.
pub(super) fn existing(
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
pub(super) fn open_regular(
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

/// Writes `content` to a temporary file beside `path` and renames it over `path`. Durably, the
/// temporary file is synced before the rename, so that a power loss never leaves the name with an
/// empty or torn file, and the directory after it, so that the new name itself survives.
pub(super) fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    rename: RenameFlags,
    durability: Durability,
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
            let mut file = File::from(fd);
            file.write_all(content)
                .map_err(|e| SysError::os("write", tmp_path.display(), e))?;
            if durability == Durability::Durable {
                file.sync_all()
                    .map_err(|e| SysError::os("fsync", tmp_path.display(), e))?;
            }
            Ok(())
        })
        .and_then(|()| {
            fcntl::renameat2(&dir, tmp.as_str(), &dir, name, rename).map_err(|e| match e {
                Errno::EEXIST => SysError::os("create", path.display(), e),
                e => SysError::os("rename", format!("{} to {}", tmp, path.display()), e),
            })
        });
    if written.is_err() {
        // The temporary name is ours alone; losing it only leaves a file the next write reuses.
        let _ = unistd::unlinkat(&dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written?;
    if durability == Durability::Durable {
        sync_dir(&dir, path)?;
    }
    Ok(())
}

/// Syncs `dir`, the directory of `path`, so that a name added to it or taken from it survives a
/// power loss.
pub(super) fn sync_dir(dir: &OwnedFd, path: &Path) -> Result<(), SysError> {
    unistd::fsync(dir).map_err(|e| {
        let parent = path.parent().unwrap_or(Path::new("/"));
        SysError::os("fsync", parent.display(), e)
    })
}
