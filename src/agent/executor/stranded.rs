//! The processes a release would strand: a namespace the agent deletes at `down` vanishes from
//! `/run/netns`, and the processes still running in it keep a network with no VPN, no name and
//! no way out. The release goes on (the VPN is gone either way), but they are named, so that the
//! user can end them or choose `netns-persistent=yes`.

use log::warn;

use super::Executor;
use crate::agent::record::Record;
use crate::agent::sys::{pid_comm, Process, Sys, SysError};
use crate::contract::stranded_message;
use crate::plan::settings::NetnsName;
use crate::report::Chain;

impl<S: Sys> Executor<S> {
    /// The processes in `netns` if its release will delete it; none if it stays (persistent,
    /// or not the agent's). Asked right before the release, on the same thread.
    pub fn stranded(&mut self, netns: &NetnsName) -> Vec<Process> {
        let Some(record) = self.records.get(netns).cloned() else {
            return Vec::new();
        };
        if record.persistent {
            return Vec::new();
        }
        let processes = match self.doomed_processes(&record) {
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

    /// The processes in the namespace that tearing `record` down deletes; none if it stays: one
    /// the agent did not create, or one made anew under the name since. A release and a
    /// `Delete` ask this alike, by the rule the teardown itself follows.
    pub(super) fn doomed_processes(&mut self, record: &Record) -> Result<Vec<Process>, SysError> {
        if !record.created_under_its_name() {
            return Ok(Vec::new());
        }
        // Gone, a leftover file that the teardown removes, or another namespace: no process.
        if self.netns_on_record(record)?.is_none() {
            return Ok(Vec::new());
        }
        let path = self.paths.run_netns.join(record.netns.as_str());
        self.sys.netns_processes(&path)
    }
}
