//! The privileged part's effects, in one process that stays single-threaded (setns(2) and
//! unshare(2) of a mount namespace refuse a process that shares its filesystem attributes):
//! into the network namespace, into a private mount namespace, down to the user, then the command.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{getgrouplist, getresgid, getresuid, setgid, setgroups, setuid, Uid, User};

use super::mounts::{self, MountError};
use crate::plan::NETNS_RUN_DIR;

/// Every way entering the namespace or becoming the user can fail.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("{0} threads run; entering a namespace needs one")]
    Threads(usize),
    #[error("cannot open the namespace {0}")]
    Open(PathBuf, #[source] io::Error),
    #[error("cannot enter the namespace {0}")]
    Setns(PathBuf, #[source] nix::Error),
    #[error("cannot make a private mount namespace")]
    Unshare(#[source] nix::Error),
    #[error("cannot set up the namespace's mounts")]
    Mounts(#[source] MountError),
    #[error("cannot look up user {0}")]
    User(u32, #[source] nix::Error),
    #[error("no user has uid {0}")]
    NoUser(u32),
    #[error("cannot become user {0}")]
    Drop(String, #[source] nix::Error),
    #[error("user {0} could become root again after dropping privileges")]
    Regained(String),
}

/// This process's thread count, from `/proc/self/task`.
pub fn threads() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Joins network namespace `netns` in a mount namespace of its own, set up as `ip netns exec`
/// sets it up (ip/ipnetns.c `netns_switch`), with the host's resolver sockets hidden.
pub fn enter(netns: &str) -> Result<(), EnterError> {
    match threads() {
        Ok(1) => {}
        Ok(n) => return Err(EnterError::Threads(n)),
        Err(e) => return Err(EnterError::Open("/proc/self/task".into(), e)),
    }
    let path = Path::new(NETNS_RUN_DIR).join(netns);
    let fd = File::open(&path).map_err(|e| EnterError::Open(path.clone(), e))?;
    setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| EnterError::Setns(path.clone(), e))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(EnterError::Unshare)?;
    // No mount made here propagates back to the host; the host's still reach us, as with ip.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(EnterError::Unshare)?;
    let facts = mounts::gather(netns).map_err(EnterError::Mounts)?;
    mounts::apply(netns, &mounts::plan(&facts)).map_err(EnterError::Mounts)
}

/// The user a uid names, from the name service.
pub fn user(uid: u32) -> Result<User, EnterError> {
    User::from_uid(Uid::from_raw(uid))
        .map_err(|e| EnterError::User(uid, e))?
        .ok_or(EnterError::NoUser(uid))
}

/// Becomes `user` for good: supplementary groups from the group database (getgrouplist(3), as
/// login and sudo set them), then the gid, then the uid; and checks that root is out of reach.
pub fn become_user(user: &User) -> Result<(), EnterError> {
    let fail = |e| EnterError::Drop(user.name.clone(), e);
    let name = CString::new(user.name.as_bytes()).map_err(|_| fail(nix::Error::EINVAL))?;
    let groups = getgrouplist(&name, user.gid).map_err(fail)?;
    setgroups(&groups).map_err(fail)?;
    setgid(user.gid).map_err(fail)?;
    setuid(user.uid).map_err(fail)?;
    if user.uid.is_root() {
        return Ok(());
    }
    let (r, e, s) = getresuid()
        .map(|ids| (ids.real, ids.effective, ids.saved))
        .map_err(fail)?;
    let gids = getresgid().map_err(fail)?;
    if [r, e, s] != [user.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [user.gid; 3]
        || setuid(Uid::from_raw(0)).is_ok()
    {
        return Err(EnterError::Regained(user.name.clone()));
    }
    Ok(())
}

/// Replaces this process with the command, searched in the command's `PATH`; returns only on
/// failure.
pub fn exec(command: &[OsString], env: &BTreeMap<OsString, OsString>) -> io::Error {
    let Some((program, args)) = command.split_first() else {
        return io::Error::from(io::ErrorKind::InvalidInput);
    };
    Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .exec()
}
