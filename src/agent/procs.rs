//! Processes the agent finds through `/proc`: those that run in a network namespace (what a `down`
//! would strand if it deleted the namespace under them, and what a forced `Delete` ends), and
//! those a caller started in process groups of their own (what the agent ends when that caller
//! dies without releasing).

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{self, FileStat};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::agent::sys::{Process, SysError};

/// Every process whose network namespace is the one `netns` refers to. Processes that end or
/// cannot be read during the scan are skipped: the list is advice, and a release goes on anyway.
pub fn in_netns(netns: impl AsFd, object: &str) -> Result<Vec<Process>, SysError> {
    let ns = stat::fstat(netns.as_fd()).map_err(|e| SysError::os("fstat", object, e))?;
    let mut found = Vec::new();
    for pid in pids().map_err(|e| SysError::os("read_dir", "/proc", e))? {
        if !runs_in(pid, &ns) {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        found.push(Process {
            pid,
            comm: comm.trim_end().to_owned(),
        });
    }
    found.sort_by_key(|p| p.pid);
    Ok(found)
}

/// Whether process `pid` runs in the namespace whose nsfs file is `ns`: stat follows the
/// `ns/net` link to the namespace's own nsfs inode.
fn runs_in(pid: u32, ns: &FileStat) -> bool {
    stat::stat(format!("/proc/{pid}/ns/net").as_str())
        .is_ok_and(|st| (st.st_dev, st.st_ino) == (ns.st_dev, ns.st_ino))
}

/// Ends every process in the namespace `netns` refers to: SIGTERM, then SIGKILL to those still
/// running after `grace`, which get as long again. Each is held by a pidfd opened before it is
/// found in the namespace again, so that no signal reaches a process that got its PID since.
/// Returns those still running at the end.
pub fn end_in_netns(
    netns: impl AsFd,
    object: &str,
    grace: Duration,
) -> Result<Vec<Process>, SysError> {
    let ns = stat::fstat(netns.as_fd()).map_err(|e| SysError::os("fstat", object, e))?;
    let mut held = Vec::new();
    for p in in_netns(&netns, object)? {
        let Some(pid) = Pid::from_raw(p.pid as i32) else {
            continue;
        };
        // One that fails here ended meanwhile.
        if let Ok(fd) = pidfd_open(pid, PidfdFlags::empty()) {
            if runs_in(p.pid, &ns) {
                held.push((p, fd));
            }
        }
    }
    for signal in [Signal::TERM, Signal::KILL] {
        if held.is_empty() {
            break;
        }
        for (p, fd) in &held {
            send(fd, p.pid, &p.comm, signal);
        }
        info!("sent {signal:?} to {} process(es) in {object}", held.len());
        held = still_running(held, grace);
    }
    Ok(held.into_iter().map(|(p, _)| p).collect())
}

/// Those of `held` still running after `grace`: a pidfd polls readable once its process has
/// exited (pidfd_open(2)).
fn still_running(mut held: Vec<(Process, OwnedFd)>, grace: Duration) -> Vec<(Process, OwnedFd)> {
    let deadline = Instant::now() + grace;
    while !held.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds: Vec<PollFd> = held
            .iter()
            .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                warn!("cannot wait for processes to exit: poll: {e}");
                break;
            }
        }
        let exited: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut exited = exited.into_iter();
        held.retain(|_| !exited.next().unwrap_or(false));
    }
    held
}

/// Sends `signal` through a pidfd; a process that has exited meanwhile counts as done.
fn send(fd: &OwnedFd, pid: u32, comm: &str, signal: Signal) {
    match pidfd_send_signal(fd, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => warn!("cannot send {signal:?} to {pid} ({comm}): {e}"),
    }
}

/// The PIDs in `/proc`.
fn pids() -> io::Result<impl Iterator<Item = u32>> {
    Ok(fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())))
}

/// The fields of `/proc/PID/stat` that tell whose child a process is and which group it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    pub pgrp: u32,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp …`. The name may hold spaces and
/// parentheses, so it ends at the last `)` (proc_pid_stat(5)).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(')')?;
    let (pid, comm) = head.split_once(" (")?;
    let mut fields = rest.split_ascii_whitespace().skip(1);
    Some(Stat {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_owned(),
        ppid: fields.next()?.parse().ok()?,
        pgrp: fields.next()?.parse().ok()?,
    })
}

/// The members of each process group led by a child of `caller`. The plugin starts its stock
/// service so, as the leader of a group of its own, and openvpn joins that group; so this is the
/// VPN's every process, even once the stock service has died and left openvpn to init.
pub fn groups_led_by_children(stats: &[Stat], caller: u32) -> Vec<&Stat> {
    let leaders: HashSet<u32> = stats
        .iter()
        .filter(|s| s.ppid == caller && s.pgrp == s.pid)
        .map(|s| s.pid)
        .collect();
    stats.iter().filter(|s| leaders.contains(&s.pgrp)).collect()
}

fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The processes a caller started in groups of their own ([`groups_led_by_children`]), each held
/// by a pidfd: a signal through it reaches that process or none, never one that got its PID since.
#[derive(Default)]
pub struct Started(Vec<(Stat, OwnedFd)>);

impl Started {
    /// Finds them for `caller`, off the event loop. A scan that fails finds none: the caller's
    /// own teardown, or its stock service's, is the first line, and this the second.
    pub async fn by(caller: u32) -> Started {
        tokio::task::spawn_blocking(move || Started::scan(caller))
            .await
            .unwrap_or_else(|e| {
                error!("cannot find the processes caller {caller} started: {e}");
                Started::default()
            })
    }

    fn scan(caller: u32) -> Started {
        let stats: Vec<Stat> = match pids() {
            Ok(pids) => pids.filter_map(read_stat).collect(),
            Err(e) => {
                error!("cannot find the processes caller {caller} started: /proc: {e}");
                return Started::default();
            }
        };
        let mut started = Vec::new();
        for s in groups_led_by_children(&stats, caller) {
            let Some(pid) = Pid::from_raw(s.pid as i32) else {
                continue;
            };
            // Read again once held: the PID is still the process that was scanned, in its group.
            if let Ok(fd) = pidfd_open(pid, PidfdFlags::empty()) {
                if read_stat(s.pid).is_some_and(|now| now.pgrp == s.pgrp && now.comm == s.comm) {
                    started.push((s.clone(), fd));
                }
            }
        }
        Started(started)
    }

    /// Ends them: SIGTERM, then SIGKILL to any still running after `grace`, which gets as long
    /// again to end. Returns whether the VPN is known to have ended: it held processes, and
    /// every one of them has exited; its tun is closed then.
    pub async fn end(&self, grace: Duration) -> bool {
        if self.0.is_empty() {
            return false;
        }
        self.signal(Signal::TERM);
        if let Ok(ended) = tokio::time::timeout(grace, self.ended()).await {
            return ended;
        }
        warn!("{self} still running {grace:?} after SIGTERM; sending SIGKILL");
        self.signal(Signal::KILL);
        let ended = tokio::time::timeout(grace, self.ended()).await;
        if ended.is_err() {
            warn!("{self} still running {grace:?} after SIGKILL; releasing anyway");
        }
        ended.unwrap_or(false)
    }

    fn signal(&self, signal: Signal) {
        for (s, fd) in &self.0 {
            send(fd, s.pid, &s.comm, signal);
        }
    }

    /// Resolves once every one has exited: a pidfd polls readable then (pidfd_open(2)); `false`
    /// if one could not be waited for, which may still run.
    async fn ended(&self) -> bool {
        let mut all = true;
        for (s, fd) in &self.0 {
            let exited = async {
                // SAFETY: the `AsyncFd` owns its copy of the pidfd, open as long as it is.
                let fd = unsafe {
                    AsyncFd::register_with_interest(fd.try_clone()?, Interest::READABLE)
                }?;
                fd.readable().await.map(drop)
            };
            if let Err(e) = exited.await {
                warn!("cannot wait for {} ({}) to exit: {e}", s.pid, s.comm);
                all = false;
            }
        }
        all
    }
}

impl fmt::Display for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no process it started");
        }
        let all: Vec<String> = self
            .0
            .iter()
            .map(|(s, _)| format!("{} ({})", s.pid, s.comm))
            .collect();
        write!(f, "its processes {}", all.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: u32, ppid: u32, pgrp: u32) -> Stat {
        Stat {
            pid,
            comm: format!("p{pid}"),
            ppid,
            pgrp,
        }
    }

    /// A held process that ends on SIGTERM is gone within the grace; one that ignores it is
    /// still running after it, until SIGKILL.
    #[test]
    fn only_processes_that_have_not_exited_are_still_running() {
        let spawn = |script: &str| {
            let child = std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .unwrap();
            let pid = Pid::from_raw(child.id() as i32).unwrap();
            let fd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
            let p = Process {
                pid: child.id(),
                comm: "sh".into(),
            };
            (child, p, fd)
        };
        // The trap is set before the marker file, so the test signals only once it holds.
        let marker = std::env::temp_dir().join(format!("procs-trap-{}", std::process::id()));
        let stubborn = format!(
            "trap '' TERM; : > {}; while :; do sleep 0.05; done",
            marker.display()
        );
        let (mut a, pa, fa) = spawn("exec sleep 30");
        let (mut b, pb, fb) = spawn(&stubborn);
        while !marker.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        for (p, fd) in [(&pa, &fa), (&pb, &fb)] {
            send(fd, p.pid, &p.comm, Signal::TERM);
        }
        let left = still_running(vec![(pa, fa), (pb.clone(), fb)], Duration::from_millis(500));
        let left_pids: Vec<u32> = left.iter().map(|(p, _)| p.pid).collect();
        assert_eq!(
            left_pids,
            [pb.pid],
            "expected only the one that ignores SIGTERM"
        );
        send(&left[0].1, pb.pid, &pb.comm, Signal::KILL);
        assert!(still_running(left, Duration::from_secs(5)).is_empty());
        let _ = (a.wait(), b.wait(), std::fs::remove_file(&marker));
    }

    /// Only a VPN whose every process it held has exited is known to have ended; with none held,
    /// nothing is known.
    #[tokio::test(flavor = "current_thread")]
    async fn the_end_is_known_only_of_processes_held() {
        let grace = Duration::from_secs(5);
        assert!(!Started::default().end(grace).await, "nothing held");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32).unwrap();
        let fd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
        let held = stat(child.id(), std::process::id(), child.id());
        assert!(
            Started(vec![(held, fd)]).end(grace).await,
            "sleep ends on SIGTERM"
        );
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
    }

    #[test]
    fn a_stat_line_parses_whatever_the_name_holds() {
        let line = "1777 (open) vpn (x)) S 1 1771 1771 0 -1 4194560 1234 0 0 0";
        let got = parse_stat(line).expect("a stat line");
        let want = Stat {
            pid: 1777,
            comm: "open) vpn (x)".into(),
            ppid: 1,
            pgrp: 1771,
        };
        assert_eq!(got, want, "parsed {line:?}");
        assert_eq!(parse_stat("1777 (openvpn) S 1"), None, "a line cut short");
    }

    #[test]
    fn the_groups_led_by_the_callers_children_are_all_their_members() {
        let stats = [
            stat(100, 1, 100),   // the caller, a group leader itself
            stat(101, 100, 101), // its stock service, leader of a group
            stat(102, 1, 101),   // openvpn, left to init by a dead stock service
            stat(103, 100, 100), // a child in the caller's own group
            stat(104, 7, 104),   // another process's group leader
            stat(105, 104, 104), // and its member
        ];
        let got: Vec<u32> = groups_led_by_children(&stats, 100)
            .iter()
            .map(|s| s.pid)
            .collect();
        assert_eq!(
            got,
            [101, 102],
            "the members of groups led by children of 100"
        );
        assert!(
            groups_led_by_children(&stats, 999).is_empty(),
            "a caller with no child"
        );
    }
}
