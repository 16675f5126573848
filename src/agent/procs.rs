//! The processes that run in a network namespace, found through `/proc`: what a `down` would
//! strand if it deleted the namespace under them.

use std::fs;
use std::os::fd::AsFd;

use nix::sys::stat;

use crate::agent::sys::{Process, SysError};

/// Every process whose network namespace is the one `netns` refers to. Processes that end or
/// cannot be read during the scan are skipped: the list is advice, and a release goes on anyway.
pub fn in_netns(netns: impl AsFd, object: &str) -> Result<Vec<Process>, SysError> {
    let ns = stat::fstat(netns.as_fd()).map_err(|e| SysError::os("fstat", object, e))?;
    let entries = fs::read_dir("/proc").map_err(|e| SysError::os("read_dir", "/proc", e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // stat follows the ns/net link to the namespace's own nsfs inode.
        let Ok(st) = stat::stat(&entry.path().join("ns/net")) else {
            continue;
        };
        if (st.st_dev, st.st_ino) != (ns.st_dev, ns.st_ino) {
            continue;
        }
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        found.push(Process {
            pid,
            comm: comm.trim_end().to_owned(),
        });
    }
    found.sort_by_key(|p| p.pid);
    Ok(found)
}
