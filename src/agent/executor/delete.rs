//! `Delete`: the administrator's removal of a namespace the agent keeps, such as one kept by
//! `netns-persistent` whose profile was renamed or deleted since. It tears down as a release of
//! a namespace that is not persistent does, through the same code, so that the records stay true.

use std::time::Duration;

use log::info;

use super::{ExecError, Executor, TeardownError};
use crate::agent::sys::{Process, Sys};
use crate::plan::settings::NetnsName;

/// How long the processes in a namespace get to end after SIGTERM, and then after SIGKILL, when
/// a deletion is forced. The executor's thread waits meanwhile, so it is short.
pub const END_GRACE: Duration = Duration::from_secs(2);

/// A finished deletion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Deleted {
    /// The processes that ran in the namespace, which a forced deletion ended.
    pub ended: Vec<Process>,
    /// Those still running when the namespace was deleted: they outlived SIGKILL.
    pub stranded: Vec<Process>,
}

impl<S: Sys> Executor<S> {
    /// Tears down the namespace `netns` the agent keeps a record of, persistent or not. Refused
    /// while a VPN is connected in it, and while processes run in it unless `force`, which ends
    /// them first.
    pub fn delete(&mut self, netns: &NetnsName, force: bool) -> Result<Deleted, ExecError> {
        let record = self
            .records
            .get(netns)
            .cloned()
            .ok_or_else(|| ExecError::NoRecord {
                netns: netns.clone(),
            })?;
        if record.leased {
            return Err(ExecError::Connected {
                netns: netns.clone(),
                connection_id: record.connection_id,
            });
        }
        let inside = self.doomed_processes(&record)?;
        let stranded = match (inside.is_empty(), force) {
            (true, _) => Vec::new(),
            (false, false) => {
                return Err(ExecError::Busy {
                    netns: netns.clone(),
                    processes: inside,
                })
            }
            (false, true) => {
                let path = self.paths.run_netns.join(netns.as_str());
                info!("ending the processes in namespace {netns} before deleting it");
                self.sys.netns_processes_end(&path, END_GRACE)?
            }
        };
        let errors = self.tear_down(record);
        if !errors.is_empty() {
            return Err(TeardownError {
                netns: netns.clone(),
                errors,
            }
            .into());
        }
        info!("deleted namespace {netns} on request");
        Ok(Deleted {
            ended: inside,
            stranded,
        })
    }
}
