//! The records on disk: one per namespace under [`Paths::state`], gone at a reboot like the
//! namespaces they describe, and a copy under [`Paths::durable`], which survives it like
//! `/etc/netns` does.
//!
//! At start the agent loads both. A durable record without its twin in the state directory
//! outlived a reboot: its namespace, lease and identity are gone, and only `/etc/netns/NAME` is
//! left. A persistent connection's entry is kept for its next connect; any other is put back as
//! it was before the agent wrote it.

use std::collections::BTreeMap;
use std::path::Path;

use log::{error, info, warn};

use super::{ExecError, Executor, Paths};
use crate::agent::record::{Format, Record};
use crate::agent::sys::{Durability, Sys, SysError};
use crate::plan::settings::NetnsName;
use crate::report::Chain;

impl<S: Sys> Executor<S> {
    /// Loads the records under `paths.state` and `paths.durable`, creating those directories if
    /// needed, and puts back what a reboot left of non-persistent isolations.
    pub fn new(mut sys: S, paths: Paths) -> Result<Self, ExecError> {
        for dir in [&paths.state, &paths.durable] {
            if sys.dir_create(dir, 0o700)? {
                info!("created state directory {}", dir.display());
            }
        }
        let records = load_dir(&mut sys, &paths.state, Durability::Volatile)?;
        let durable = load_dir(&mut sys, &paths.durable, Durability::Durable)?;
        let mut executor = Executor {
            sys,
            paths,
            records,
            durable: durable
                .iter()
                .map(|(netns, r)| (netns.clone(), r.after_reboot()))
                .collect(),
        };
        for (netns, record) in durable {
            if !executor.records.contains_key(&netns) {
                executor.recover(record);
            }
        }
        Ok(executor)
    }

    /// Takes up a durable record that outlived its namespace.
    fn recover(&mut self, record: Record) {
        let netns = record.netns.clone();
        let record = record.after_reboot();
        if record.persistent {
            info!(
                "namespace {netns} is gone since the reboot; keeping /etc/netns/{netns} for the \
                 next connect of {:?} (netns-persistent)",
                record.connection_id
            );
            if let Err(e) = self.save(&record) {
                error!("keeping the record of {netns}: {}", Chain(&e));
            }
            return;
        }
        info!("namespace {netns} is gone since the reboot; putting /etc/netns/{netns} back");
        for e in self.tear_down(record) {
            error!("putting back /etc/netns/{netns}: {}", Chain(&e));
        }
    }

    /// Writes `record` under `paths.state`, and under `paths.durable` if what a reboot leaves of
    /// it ([`Record::after_reboot`]) changed since the durable copy was last written.
    ///
    /// Only a rebooted agent reads a durable copy without its twin in the state directory (see
    /// [`Executor::new`]), and it reads no more than those remains; a power loss takes the
    /// namespace with it. So a change of the lease, the link or the namespace's identity alone,
    /// such as the record that ends an isolation, needs no synced write: the durable copy already
    /// on disk says to a rebooted agent all that the new record would. Nor does a record of a
    /// namespace that has nothing under `/etc/netns` yet, such as the one `Prepare` writes: a
    /// rebooted agent would have nothing to put back. Each synced write costs two journal commits
    /// on a real disk (the file and its directory), so a fresh isolation makes one.
    pub(super) fn save(&mut self, record: &Record) -> Result<(), SysError> {
        let text = record.encode();
        let netns = &record.netns;
        let remains = record.after_reboot();
        let on_disk = self.durable.get(netns);
        // The durable copy first: it is the one a power loss must not take.
        if on_disk != Some(&remains) && (on_disk.is_some() || remains.touches_etc_netns()) {
            let path = self.paths.durable.join(netns.as_str());
            self.sys
                .file_replace(&path, &text, 0o600, Durability::Durable)?;
            self.durable.insert(netns.clone(), remains);
        }
        let path = self.paths.state.join(netns.as_str());
        self.sys
            .file_replace(&path, &text, 0o600, Durability::Volatile)?;
        info!(
            "recorded namespace {} (created {}, leased {})",
            record.netns, record.created, record.leased
        );
        self.records.insert(record.netns.clone(), record.clone());
        Ok(())
    }

    /// Saves `record` as no longer leased: its namespace is the agent's, with no VPN in it. A
    /// link still on record is one a release could not delete ([`Executor::delete_link`]).
    pub(super) fn save_unleased(&mut self, mut record: Record) -> Result<(), SysError> {
        record.leased = false;
        self.save(&record)
    }

    /// Removes the record of `netns`; the durable copy's removal is synced, or a power loss could
    /// bring back a record of what the agent no longer holds.
    pub(super) fn forget(&mut self, netns: &NetnsName) -> Result<(), SysError> {
        let mut dirs = vec![(&self.paths.state, Durability::Volatile)];
        // Only one that was written, or found at start, can be there.
        if self.durable.contains_key(netns) {
            dirs.push((&self.paths.durable, Durability::Durable));
        }
        for (dir, durability) in dirs {
            let path = dir.join(netns.as_str());
            self.sys.file_remove(&path, durability)?;
            info!("removed record {}", path.display());
        }
        self.durable.remove(netns);
        self.records.remove(netns);
        Ok(())
    }
}

/// The records in `dir`. One that cannot be read is skipped: its namespace then looks foreign,
/// which only makes the agent more careful with it, as it never deletes a foreign namespace.
fn load_dir<S: Sys>(
    sys: &mut S,
    dir: &Path,
    durability: Durability,
) -> Result<BTreeMap<NetnsName, Record>, SysError> {
    let mut records = BTreeMap::new();
    for entry in sys.dir_list(dir)? {
        // Dot files are temporary files of an interrupted write.
        if entry.starts_with('.') {
            continue;
        }
        let path = dir.join(&entry);
        let Ok(netns) = entry.parse::<NetnsName>() else {
            warn!("ignoring {}: not a namespace name", path.display());
            continue;
        };
        match load_record(sys, &path, &netns, durability) {
            Ok(Some(record)) => drop(records.insert(netns, record)),
            Ok(None) => {}
            Err(e) => error!("ignoring record {}: {}", path.display(), Chain(&e)),
        }
    }
    Ok(records)
}

/// Reads one record, rewriting a version 1 record in the current format.
fn load_record<S: Sys>(
    sys: &mut S,
    path: &Path,
    netns: &NetnsName,
    durability: Durability,
) -> Result<Option<Record>, SysError> {
    let Some(text) = sys.file_read(path)? else {
        return Ok(None);
    };
    let (record, format) = match Record::decode(netns, &text) {
        Ok(decoded) => decoded,
        Err(e) => {
            error!("ignoring record {}: {}", path.display(), Chain(&e));
            return Ok(None);
        }
    };
    info!(
        "loaded record {}: connection {:?} ({}), created {}, leased {}",
        path.display(),
        record.connection_id,
        record.connection_uuid,
        record.created,
        record.leased
    );
    if format == Format::V1 {
        // The old file still says the same, so a failed rewrite loses nothing.
        match sys.file_replace(path, &record.encode(), 0o600, durability) {
            Ok(()) => info!("rewrote record {} in the current format", path.display()),
            Err(e) => warn!("could not rewrite record {}: {}", path.display(), Chain(&e)),
        }
    }
    Ok(Some(record))
}
