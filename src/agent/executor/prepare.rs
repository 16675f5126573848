//! `Prepare`: the part of an isolation that needs no tun, done at Connect while openvpn still
//! connects: the checks, the namespace created or opened, and the record of it, leased to the
//! caller with no link. The `Isolate` that follows finds it as the agent's own namespace
//! ([`super::ownership::check_lease`] lets the caller's prepared record through) and only moves
//! and configures the tun. A preparation that no isolation took is undone by
//! [`Executor::unprepare`].

use std::path::Path;
use std::time::{Duration, Instant};

use log::{error, info};

use super::{check_deadline, new_record, ExecError, Executor, Record, TeardownError};
use crate::agent::policy::Policy;
use crate::agent::sys::Sys;
use crate::plan::settings::NetnsName;
use crate::report::Chain;

/// What a request tells of the connection and its namespace, the tun aside: all of `Prepare`,
/// and the part of [`IsolateArgs`] known at Connect.
#[derive(Debug, Clone)]
pub struct PrepareArgs {
    pub netns: NetnsName,
    pub connection_uuid: String,
    pub connection_id: String,
    /// Keep the namespace and its DNS files after release, for the next isolation of this
    /// connection.
    pub persistent: bool,
    /// The user of a user connection (one with `connection.permissions`); `None` for a system
    /// connection, the only kind that may use a namespace the agent did not create.
    pub user: Option<String>,
    /// The administrator's policy, as read for this request.
    pub policy: Policy,
    /// Who holds the lease, such as the caller's unique bus name; kept in the record.
    pub owner: String,
    /// The connection's `ipv4.never-default` and `ipv6.never-default`, kept in the record for
    /// a `Reapply` after the agent restarted.
    pub never_default_v4: bool,
    pub never_default_v6: bool,
    /// The profile's `tunnel-mtu`, kept in the record for the same reason.
    pub tunnel_mtu: Option<u32>,
    /// From `netns-timeout`: past it, the step is rolled back.
    pub deadline: Instant,
}

/// A prepared namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub netns: NetnsName,
    /// This call created the namespace.
    pub created: bool,
    pub elapsed: Duration,
}

impl<S: Sys> Executor<S> {
    /// Checks `req` as an isolation would, and creates or opens its namespace, on record as
    /// leased to the caller with no link; or leaves nothing behind.
    pub fn prepare(&mut self, req: &PrepareArgs) -> Result<Prepared, ExecError> {
        let start = self.sys.now();
        let netns = &req.netns;
        info!(
            "preparing namespace {netns} for connection {} ({})",
            req.connection_id, req.connection_uuid
        );
        let previous = self.check_claim(req)?;
        let path = self.paths.run_netns.join(netns.as_str());
        let (existing, ours) = self.open_claimed(req, &path, previous.as_ref())?;
        let record = match existing {
            Some((_, id)) => {
                let mut record = new_record(req, previous.as_ref(), ours);
                record.netns_id = Some(id);
                record.netns_file = previous
                    .as_ref()
                    .filter(|_| ours)
                    .and_then(|r| r.netns_file);
                record
            }
            None => self.prepare_new(req, &path, previous.as_ref(), start)?,
        };
        let created = existing.is_none();
        if let Err(e) = self.save(&record) {
            // A namespace made here is on record already, as its creation saved it: the
            // teardown deletes it by that record.
            if let Some(made) = self.records.get(netns).filter(|_| created).cloned() {
                for left in self.tear_down(made) {
                    error!(
                        "undoing the preparation of namespace {netns}: {}",
                        Chain(&left)
                    );
                }
            }
            return Err(e.into());
        }
        let elapsed = self.sys.now().saturating_duration_since(start);
        info!(
            "prepared namespace {netns} ({}) in {} µs",
            if created { "created" } else { "opened" },
            elapsed.as_micros()
        );
        Ok(Prepared {
            netns: netns.clone(),
            created,
            elapsed,
        })
    }

    /// Creates the namespace, and returns its record as [`Executor::create_netns`] left it.
    fn prepare_new(
        &mut self,
        req: &PrepareArgs,
        path: &Path,
        previous: Option<&Record>,
        start: Instant,
    ) -> Result<Record, ExecError> {
        check_deadline(&self.sys, req, start, "creating the namespace")?;
        let (_, id, file) = self.create_netns(req, path, previous)?;
        let mut record = new_record(req, previous, true);
        record.netns_id = Some(id);
        record.netns_file = Some(file);
        Ok(record)
    }

    /// Undoes a preparation of `netns` that no isolation took. A namespace the agent created and
    /// never wrote DNS files for, as every isolation does, never held a VPN: it is deleted even if
    /// the connection keeps its namespace (`netns-persistent`), as a failed isolation rolls back
    /// the namespace it created. Any other is released as at `down` (a kept one stays kept).
    pub fn unprepare(&mut self, netns: &NetnsName) -> Result<(), TeardownError> {
        let unused = self
            .records
            .get(netns)
            .filter(|r| r.leased && r.link.is_none() && r.created && r.files.is_empty())
            .cloned();
        match unused {
            Some(record) => {
                info!("deleting namespace {netns}: prepared, but no VPN was isolated in it");
                let errors = self.tear_down(record);
                match errors.is_empty() {
                    true => Ok(()),
                    false => Err(TeardownError {
                        netns: netns.clone(),
                        errors,
                    }),
                }
            }
            _ => self.release(netns),
        }
    }
}
