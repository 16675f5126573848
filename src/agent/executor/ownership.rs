//! Who may use what: the lease, the namespace's identity, namespaces the agent did not create,
//! a user's entries under `/etc/netns` and the per-user limit (ARCHITECTURE.md, "Ownership").
//!
//! A refusal tells the caller only that another connection holds the name; which one is written
//! to the agent's own log, since a user must not learn another's connection.

use log::{info, warn};

use super::{ExecError, Executor, PrepareArgs, TeardownError};
use crate::agent::record::{DnsFile, Record};
use crate::agent::sys::{NetnsId, Sys};
use crate::plan::settings::NetnsName;

impl<S: Sys> Executor<S> {
    /// The record of `netns`, once what a failed teardown left of it is gone: a record neither
    /// leased nor kept for its connection must not block the name for good, nor may a kept
    /// namespace hold a stale tun, with its addresses and routes, under the next VPN's.
    pub(super) fn previous_record(
        &mut self,
        netns: &NetnsName,
    ) -> Result<Option<Record>, ExecError> {
        let Some(mut record) = self.records.get(netns).cloned() else {
            return Ok(None);
        };
        if record.leased || (record.persistent && record.link.is_none()) {
            return Ok(Some(record));
        }
        let errors = if record.persistent {
            info!(
                "namespace {netns} still holds the tun an earlier release left; deleting it first"
            );
            let deleted = self.delete_link(&mut record);
            match deleted.and_then(|()| self.save(&record)) {
                Ok(()) => return Ok(Some(record)),
                Err(e) => vec![e],
            }
        } else {
            info!("namespace {netns} holds what an earlier teardown left; removing it first");
            self.tear_down(record)
        };
        if errors.is_empty() {
            return Ok(None);
        }
        Err(ExecError::Leftover(TeardownError {
            netns: netns.clone(),
            errors,
        }))
    }

    /// A user's connections may hold only `max_per_user` namespaces, leased or kept.
    pub(super) fn check_user_limit(&self, req: &PrepareArgs) -> Result<(), ExecError> {
        let Some(user) = &req.user else {
            return Ok(());
        };
        let held: Vec<&NetnsName> = self
            .records
            .values()
            .filter(|r| r.user.as_ref() == Some(user) && (r.leased || r.persistent))
            .filter(|r| r.netns != req.netns)
            .map(|r| &r.netns)
            .collect();
        let max = req.policy.max_per_user;
        if held.len() < max as usize {
            return Ok(());
        }
        warn!(
            "user {user:?} holds namespaces {held:?}; refusing namespace {}",
            req.netns
        );
        Err(ExecError::UserLimit {
            user: user.clone(),
            held: held.len(),
            max,
        })
    }

    /// A user's connection may write only where the agent created `/etc/netns/NAME` and every
    /// DNS file in it, and nobody changed such a file since.
    pub(super) fn check_user_entries(
        &mut self,
        netns: &NetnsName,
        previous: Option<&Record>,
    ) -> Result<(), ExecError> {
        let dir = self.paths.etc_netns.join(netns.as_str());
        if !self.sys.dir_exists(&dir)? {
            return Ok(());
        }
        if !previous.is_some_and(|r| r.etc_dir_created) {
            return Err(ExecError::NotOurs { path: dir });
        }
        for file in DnsFile::ALL {
            let path = dir.join(file.name());
            let content = self.sys.file_read(&path)?;
            let ours = content.is_none()
                || previous.and_then(|r| r.file(file)).is_some_and(|f| {
                    f.backup.is_none() && (f.written.is_none() || f.holds_ours(content.as_deref()))
                });
            if !ours {
                return Err(ExecError::NotOurs { path });
            }
        }
        Ok(())
    }
}

/// The lease and the connection that owns the name. The caller's own `Prepare` leased it with no
/// link yet: the namespace waits for this isolation.
pub(super) fn check_lease(
    netns: &NetnsName,
    previous: Option<&Record>,
    req: &PrepareArgs,
) -> Result<(), ExecError> {
    let Some(r) = previous else {
        return Ok(());
    };
    if prepared_for(r, req) {
        return Ok(());
    }
    if r.leased {
        warn!(
            "namespace {netns} is leased by connection {:?} ({}); refusing {:?} ({})",
            r.connection_id, r.connection_uuid, req.connection_id, req.connection_uuid
        );
        return Err(ExecError::InUse {
            netns: netns.clone(),
        });
    }
    // Not leased, the record is kept for its connection (netns-persistent). A user chooses a
    // profile's uuid, so the connection is its uuid and its user together.
    if r.connection_uuid != req.connection_uuid || r.user != req.user {
        warn!(
            "namespace {netns} is kept for connection {:?} ({}) of user {:?}; refusing {:?} ({}) \
             of user {:?}",
            r.connection_id,
            r.connection_uuid,
            r.user,
            req.connection_id,
            req.connection_uuid,
            req.user
        );
        return Err(ExecError::OwnedByOther {
            netns: netns.clone(),
        });
    }
    Ok(())
}

/// Whether the namespace with identity `id` is the one the agent created, as `previous` says.
///
/// A record without an identity takes the namespace found under its name only if 0.1.0 wrote
/// it, as 0.1.0 did. Today's agent records the identity before the namespace has a name, so a
/// record of its own without one was cut short before that: whatever is under the name now,
/// someone else made.
pub(super) fn is_ours(previous: Option<&Record>, id: NetnsId) -> bool {
    let Some(r) = previous.filter(|r| r.created) else {
        return false;
    };
    match r.netns_id {
        Some(recorded) if recorded == id => true,
        Some(recorded) => {
            warn!(
                "namespace {} is not the one nm-vpn-netns created ({recorded:?}, now {id:?}); it \
                 is foreign",
                r.netns
            );
            false
        }
        None if r.identity_first => {
            warn!(
                "namespace {} was made by someone else: nm-vpn-netns's creation of it was cut \
                 short before it had a name",
                r.netns
            );
            false
        }
        None => {
            info!(
                "the record of namespace {} is from 0.1.0 and has no identity; taking the \
                 namespace found under its name as the one it created",
                r.netns
            );
            true
        }
    }
}

/// Only a system connection may use a namespace the agent did not create, and only one that the
/// policy lists.
pub(super) fn check_foreign(netns: &NetnsName, req: &PrepareArgs) -> Result<(), ExecError> {
    match &req.user {
        Some(_) => Err(ExecError::ForeignNetns {
            netns: netns.clone(),
            connection_id: req.connection_id.clone(),
        }),
        None if req.policy.system_foreign.contains(netns) => Ok(()),
        None => Err(ExecError::ForeignNotListed {
            netns: netns.clone(),
        }),
    }
}

/// Whether `r` is what `req`'s caller prepared for this connection: leased to it, with no link,
/// and its namespace's creation complete (a crash may cut it short, and then no `Prepare` ended).
pub(super) fn prepared_for(r: &Record, req: &PrepareArgs) -> bool {
    r.leased
        && r.link.is_none()
        && !r.netns_pending
        && r.owner == req.owner
        && r.connection_uuid == req.connection_uuid
        && r.user == req.user
}
