//! The processes a release would strand: a namespace the agent deletes at `down` vanishes from
//! `/run/netns`, and the processes still running in it keep a network with no VPN, no name and
//! no way out. The release goes on (the VPN is gone either way), but they are named, so that the
//! user can end them or choose `netns-persistent=yes`.

use log::warn;

use super::Executor;
use crate::agent::sys::{pid_comm, Process, Sys};
use crate::contract::stranded_message;
use crate::plan::settings::NetnsName;
use crate::report::Chain;

impl<S: Sys> Executor<S> {
    /// The processes in `netns` if its release will delete it; none if it stays (persistent,
    /// or not the agent's). Asked right before the release, on the same thread.
    pub fn stranded(&mut self, netns: &NetnsName) -> Vec<Process> {
        let Some(record) = self.records.get(netns) else {
            return Vec::new();
        };
        if record.persistent || !record.created {
            return Vec::new();
        }
        let path = self.paths.run_netns.join(netns.as_str());
        let processes = match self.sys.netns_processes(&path) {
            Ok(processes) => processes,
            Err(e) => {
                warn!(
                    "cannot list the processes in namespace {netns}: {}",
                    Chain(&e)
                );
                return Vec::new();
            }
        };
        if !processes.is_empty() {
            warn!(
                "{}",
                stranded_message(netns.as_str(), &pid_comm(&processes))
            );
        }
        processes
    }
}
