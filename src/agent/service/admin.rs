//! `List` and `Delete`: the administrator's view of the namespaces the agent keeps, and the
//! removal of one, such as a persistent namespace whose profile was renamed or deleted.

use log::{info, warn};
use tokio::sync::oneshot;

use super::{executor_gone, Agent, ExecutorHandle, Job};
use crate::agent::record::Record;
use crate::agent::sys::pid_comm;
use crate::contract::{AgentError, DeleteReport, NetnsEntry};
use crate::plan::settings::NetnsName;

impl From<&Record> for NetnsEntry {
    fn from(r: &Record) -> Self {
        NetnsEntry {
            netns: r.netns.to_string(),
            uuid: r.connection_uuid.clone(),
            id: r.connection_id.clone(),
            user: r.user.clone(),
            persistent: r.persistent,
            created: r.created,
            connected: r.leased,
            link: r.link.clone().filter(|_| r.leased),
        }
    }
}

impl ExecutorHandle {
    pub(super) async fn list(&self) -> Result<Vec<NetnsEntry>, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::List(tx))?;
        let records = rx.await.map_err(|_| executor_gone())?;
        Ok(records.iter().map(NetnsEntry::from).collect())
    }
}

impl Agent {
    /// `Delete` of `ns` for `owner`, a root caller: refused while a lease holds it; the executor
    /// checks the rest.
    pub(super) async fn delete_checked(
        &self,
        ns: NetnsName,
        force: bool,
        owner: &str,
    ) -> Result<DeleteReport, AgentError> {
        let reply = {
            // Queued under the lock: no `Isolate` can take the namespace between the check and
            // the deletion; one that comes after it waits on the executor, and finds it gone.
            let leases = self.leases.lock().await;
            if leases.held.contains_key(&ns) {
                warn!("refused Delete of namespace {ns} from {owner}: a VPN is connected in it");
                return Err(AgentError::InUse(format!(
                    "namespace {ns} holds a connected VPN; take the VPN down first"
                )));
            }
            let (tx, rx) = oneshot::channel();
            self.executor.send(Job::Delete(ns.clone(), force, tx))?;
            rx
        };
        match reply.await.map_err(|_| executor_gone())? {
            Ok(deleted) => {
                info!("deleted namespace {ns} for {owner}");
                Ok(DeleteReport {
                    ended: Some(pid_comm(&deleted.ended)),
                    stranded: Some(pid_comm(&deleted.stranded)),
                })
            }
            Err(e) => {
                let e = AgentError::from(e);
                warn!("Delete of namespace {ns} from {owner} failed: {e}");
                Err(e)
            }
        }
    }
}
