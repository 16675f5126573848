//! Taking an isolation down again: the rollback of a failed attempt, step by step in reverse,
//! and the release of a finished one. Both go on past a failed step and report every error.
//!
//! What a release deletes, keeps or restores follows who owns what: ARCHITECTURE.md, "Ownership".

use std::path::Path;

use log::{error, info, warn};
use nix::errno::Errno;

use super::{Attempt, ExecError, Executor, TeardownError, Undo};
use crate::agent::record::{DnsFile, FileRecord, Record};
use crate::agent::sys::{Durability, Link, NetnsId, Sys, SysError};
use crate::plan::settings::NetnsName;
use crate::report::Chain;

impl<S: Sys> Executor<S> {
    pub(super) fn roll_back(&mut self, attempt: Attempt<S::Netns>, error: ExecError) -> ExecError {
        let netns = attempt.name.clone();
        warn!(
            "isolating in namespace {netns} failed: {}; rolling back",
            Chain(&error)
        );
        let mut errors = Vec::new();
        for step in attempt.undo.iter().rev() {
            match self.undo(step, &attempt) {
                Ok(done) => info!("rolled back: {done}"),
                Err(e) => {
                    error!("rolling back: {}", Chain(&e));
                    errors.push(e);
                }
            }
        }
        if let Err(e) = self.restore_record(&attempt, errors.is_empty()) {
            error!("rolling back: {}", Chain(&e));
            errors.push(e);
        }
        if errors.is_empty() {
            return error;
        }
        ExecError::Incomplete {
            error: Box::new(error),
            rollback: TeardownError { netns, errors },
        }
    }

    /// Puts the record back as it was before the attempt; if not everything was `undone`, what
    /// is left stays on record as the agent's, with no lease.
    fn restore_record(
        &mut self,
        attempt: &Attempt<S::Netns>,
        undone: bool,
    ) -> Result<(), SysError> {
        let current = self.records.get(&attempt.name).cloned();
        if current == attempt.previous {
            return Ok(());
        }
        match (&attempt.previous, current) {
            (Some(previous), _) if undone => self.save(previous),
            (None, _) if undone => self.forget(&attempt.name),
            (_, Some(current)) => self.save_unleased(current),
            (_, None) => Ok(()),
        }
    }

    fn undo(&mut self, step: &Undo, attempt: &Attempt<S::Netns>) -> Result<String, SysError> {
        match step {
            Undo::NetnsDel => {
                self.delete_netns(&attempt.name, Some(attempt.netns_id))?;
                Ok(format!("deleted namespace {}", attempt.path.display()))
            }
            Undo::LinkBack { link, original } => {
                match self.sys.link_set_netns_back(&attempt.netns, link, original) {
                    // openvpn exited and the kernel destroyed its tun: nothing to move back.
                    Err(e) if e.raw_os_error() == Some(Errno::ENODEV as i32) => {
                        return Ok(format!("link {link} is gone; nothing to move back"));
                    }
                    other => other?,
                }
                Ok(format!(
                    "moved link {link} back out of {} as {}",
                    attempt.path.display(),
                    original.name
                ))
            }
            Undo::DirRemove(path) => {
                self.sys.dir_remove(path)?;
                Ok(format!("removed {}", path.display()))
            }
            Undo::FileRemove(path) => {
                self.sys.file_remove(path, Durability::Durable)?;
                Ok(format!("removed {}", path.display()))
            }
            Undo::FileRestore(file, path, content) => {
                if let Some(mut record) = self.records.get(&attempt.name).cloned() {
                    self.save_rewriting(&mut record, *file, content)?;
                }
                self.sys.file_rewrite(path, content)?;
                Ok(format!("restored {}", path.display()))
            }
        }
    }

    /// Ends the isolation in `netns`, going on past every failed step.
    ///
    /// The tun on record goes first, in every namespace ([`Executor::delete_link`]). Then a
    /// persistent namespace stays, with its DNS files. Otherwise a namespace the agent created
    /// is deleted; in one it did not create, the files it wrote are removed and the ones it
    /// replaced restored. A namespace with no record has nothing to release.
    pub fn release(&mut self, netns: &NetnsName) -> Result<(), TeardownError> {
        let Some(mut record) = self.records.get(netns).cloned() else {
            info!("namespace {netns} has no isolation to release");
            return Ok(());
        };
        let errors = if record.persistent {
            let mut errors: Vec<SysError> =
                self.delete_link(&mut record).err().into_iter().collect();
            errors.extend(self.save_unleased(record).err());
            info!("released namespace {netns}; kept it and its DNS files (netns-persistent)");
            errors
        } else {
            self.tear_down(record)
        };
        if errors.is_empty() {
            return Ok(());
        }
        for e in &errors {
            error!("releasing namespace {netns}: {}", Chain(e));
        }
        Err(TeardownError {
            netns: netns.clone(),
            errors,
        })
    }

    /// Deletes the tun on record, then the namespace if the agent created it, puts the DNS files
    /// back as they were and removes the directory the agent made for them. Goes on past every
    /// failed step.
    pub(super) fn tear_down(&mut self, mut record: Record) -> Vec<SysError> {
        let netns = record.netns.clone();
        // Before the namespace is deleted or kept: one the agent did not create outlives the
        // release, and so would the tun in it.
        let mut errors: Vec<SysError> = self.delete_link(&mut record).err().into_iter().collect();
        if record.created_under_its_name() {
            let deleted = self.delete_netns(&netns, record.netns_id);
            record.netns_pending = self.records.get(&netns).is_some_and(|r| r.netns_pending);
            errors.extend(deleted.err());
        }
        let dir = self.paths.etc_netns.join(netns.as_str());
        for f in record.files.clone() {
            let path = dir.join(f.file.name());
            match self.put_back(&mut record, &path, &f) {
                Ok(done) => info!("{done} {}", path.display()),
                Err(e) => errors.push(e),
            }
        }
        if record.etc_dir_created {
            errors.extend(self.remove_etc_dir(&dir).err());
        }
        // A record that outlives a failed teardown keeps what is left known as the agent's.
        let recorded = if errors.is_empty() {
            self.forget(&netns)
        } else {
            self.save_unleased(record)
        };
        errors.extend(recorded.err());
        errors
    }

    /// Deletes the tun that `record` says the agent moved into its namespace, by the index it
    /// had there, and takes it off the record; if that fails, it stays on record, for the next
    /// release, `Delete` or isolation in the namespace to try again.
    ///
    /// openvpn's tun goes by itself as openvpn exits. NetworkManager-openconnect's is persistent:
    /// its service makes `vpnN` with TUNSETPERSIST before openconnect starts, and destroys it by
    /// name in its own namespace once openconnect has exited (nm-openconnect-service.c,
    /// `create_persistent_tundev`, `destroy_persistent_tundev`), which it cannot do once the tun
    /// is here; so nothing else removes it. The release runs only once the VPN's processes have
    /// exited: the plugin releases after its stock service has stopped, and the agent, for a
    /// holder that left the bus, after it ended what that holder started. Deleting the link
    /// under a running VPN would cut its tunnel.
    pub(super) fn delete_link(&mut self, record: &mut Record) -> Result<(), SysError> {
        if let (Some(link), Some(ifindex)) = (record.link.clone(), record.link_ifindex) {
            let netns = record.netns.clone();
            let handle = self.netns_on_record(record)?;
            let found = match &handle {
                Some(handle) => self.sys.link_list(handle)?,
                None => Vec::new(),
            }
            .into_iter()
            .find(|l| l.ifindex == ifindex);
            match (link_fate(&link, found.as_ref()), handle, found) {
                (LinkFate::Delete, Some(handle), _) => {
                    self.sys.link_delete(&handle, ifindex)?;
                    info!("deleted tun {link} (ifindex {ifindex}) in namespace {netns}");
                }
                (LinkFate::Leave, _, Some(other)) => warn!(
                    "left link {} (ifindex {ifindex}) in namespace {netns}: it is not the tun \
                     {link} that nm-vpn-netns moved there",
                    other.name
                ),
                _ => info!("tun {link} in namespace {netns} is already gone"),
            }
        }
        record.link = None;
        record.link_ifindex = None;
        Ok(())
    }

    /// The namespace under `record`'s name if it is the one on record (any, for a record of
    /// 0.1.0); `None` if it is gone, only its leftover file is there, or one made anew since.
    pub(super) fn netns_on_record(
        &mut self,
        record: &Record,
    ) -> Result<Option<S::Netns>, SysError> {
        let path = self.paths.run_netns.join(record.netns.as_str());
        let handle = match self.sys.netns_open(&path) {
            Ok(Some(handle)) => handle,
            Ok(None) | Err(SysError::NotNetns { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match record.netns_id {
            Some(id) if self.sys.netns_id(&handle)? != id => Ok(None),
            _ => Ok(Some(handle)),
        }
    }

    /// Removes `/etc/netns/NAME`, unless it holds files that the agent did not write.
    fn remove_etc_dir(&mut self, dir: &Path) -> Result<(), SysError> {
        match self.sys.dir_remove(dir) {
            Ok(()) => info!("removed {}", dir.display()),
            Err(e) if e.raw_os_error() == Some(Errno::ENOTEMPTY as i32) => {
                warn!(
                    "kept {}: it holds files nm-vpn-netns did not write",
                    dir.display()
                );
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Deletes the namespace of `netns` if it is the one with identity `id` (any, for a record
    /// of 0.1.0); one created since under the same name is someone else's, and stays.
    fn delete_netns(&mut self, netns: &NetnsName, id: Option<NetnsId>) -> Result<(), SysError> {
        let path = self.paths.run_netns.join(netns.as_str());
        let recorded = self.records.get(netns);
        let pending = recorded.is_some_and(|r| r.netns_pending);
        let file = recorded.and_then(|r| r.netns_file);
        if let Some(id) = id {
            let opened = match self.sys.netns_open(&path) {
                // The file at `path` is not mounted: the agent's own creation or deletion was cut
                // short (a crash), or someone unmounted the namespace (`umount` alone). It goes if
                // it is the very file the agent made (its identity is on record), or, for a
                // record without it, if the agent's creation or deletion was under way; never
                // anyone else's, whose `ip netns add` may be under way: that is another file.
                Err(SysError::NotNetns { .. })
                    if (pending || file.is_some())
                        && self.sys.netns_leftover_remove(&path, file)? =>
                {
                    self.set_netns_pending(netns, false)?;
                    return Ok(());
                }
                opened => opened?,
            };
            let Some(found) = opened else {
                info!("namespace {} is already gone", path.display());
                return Ok(());
            };
            let now = self.sys.netns_id(&found)?;
            if now != id {
                warn!(
                    "kept namespace {}: it is not the one nm-vpn-netns created ({id:?}, now \
                     {now:?})",
                    path.display()
                );
                return Ok(());
            }
        }
        self.set_netns_pending(netns, true)?;
        self.sys.netns_del(&path)?;
        info!("deleted namespace {}", path.display());
        // Only in memory: every caller saves or forgets the record next.
        if let Some(r) = self.records.get_mut(netns) {
            r.netns_pending = false;
        }
        Ok(())
    }

    /// Saves `netns_pending` in the record of `netns` if it changes.
    fn set_netns_pending(&mut self, netns: &NetnsName, pending: bool) -> Result<(), SysError> {
        match self.records.get(netns) {
            Some(r) if r.netns_pending != pending => {
                let record = Record {
                    netns_pending: pending,
                    ..r.clone()
                };
                self.save(&record)
            }
            _ => Ok(()),
        }
    }

    /// Removes a file the agent created, or puts back the content it replaced; a file changed
    /// or removed since the agent wrote it is someone else's doing, and stays as it is.
    fn put_back(
        &mut self,
        record: &mut Record,
        path: &Path,
        f: &FileRecord,
    ) -> Result<&'static str, SysError> {
        let now = match f.written {
            Some(_) => Some(self.sys.file_read(path)?),
            None => None,
        };
        match put_back_of(f, now.as_ref().map(Option::as_deref)) {
            PutBack::Leave(why) => {
                warn!("left {}: {why}", path.display());
                Ok("left")
            }
            PutBack::Gone => Ok("found already removed:"),
            PutBack::Remove => self
                .sys
                .file_remove(path, Durability::Durable)
                .map(|()| "removed"),
            PutBack::Restore(backup) => {
                self.save_rewriting(record, f.file, backup)?;
                self.restore(path, backup).map(|()| "restored")
            }
        }
    }

    /// Saves, before a rewrite in place, the content it puts in `file`: a crash in the middle
    /// leaves a prefix of it, which must still count as the agent's.
    pub(super) fn save_rewriting(
        &mut self,
        record: &mut Record,
        file: DnsFile,
        content: &[u8],
    ) -> Result<(), SysError> {
        if let Some(f) = record.file_mut(file) {
            f.rewriting = Some(content.to_vec());
        }
        self.save(record)
    }

    /// Puts back a file's old content, in place if it is still there.
    fn restore(&mut self, path: &Path, content: &[u8]) -> Result<(), SysError> {
        match self.sys.file_rewrite(path, content) {
            // Someone's content, which nothing else keeps once the record is gone.
            Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => {
                self.sys
                    .file_create(path, content, 0o644, Durability::Durable)
            }
            other => other,
        }
    }
}

/// What a release does with the tun on record, by what has its index in the namespace now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkFate {
    /// The tun on record, with its name and kind: it goes.
    Delete,
    /// No link has the index: the tun went with its process, as openvpn's does.
    Gone,
    /// Another link has the index since, or the tun was renamed: it is not the agent's to delete.
    Leave,
}

/// What a release does with the tun on record as `link`, given `found`, the link that has its
/// index now.
pub(super) fn link_fate(link: &str, found: Option<&Link>) -> LinkFate {
    match found {
        None => LinkFate::Gone,
        Some(l) if l.name == link && l.kind.as_deref() == Some("tun") => LinkFate::Delete,
        Some(_) => LinkFate::Leave,
    }
}

/// What a release does with a file the agent wrote under `/etc/netns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PutBack<'f> {
    /// Someone changed or removed it since the agent wrote it: it stays as it is, for this reason
    /// (the postrm says the same). What the agent replaced is not put back over someone's change.
    Leave(&'static str),
    /// The agent created it and someone removed it: nothing is left to do.
    Gone,
    /// The agent created it: it goes.
    Remove,
    /// The agent replaced it: its old content goes back.
    Restore(&'f [u8]),
}

/// What a release does with the file `f` records, given what it holds `now`: `Some(None)` when
/// there is no file, and `None` for a record that kept no copy of what the agent wrote (0.1.0),
/// whose file is taken as the agent's.
pub(super) fn put_back_of<'f>(f: &'f FileRecord, now: Option<Option<&[u8]>>) -> PutBack<'f> {
    match (now, &f.backup) {
        (Some(None), None) => PutBack::Gone,
        (Some(None), Some(_)) => PutBack::Leave("it was removed since nm-vpn-netns wrote it"),
        (Some(now), _) if !f.holds_ours(now) => {
            PutBack::Leave("it changed since nm-vpn-netns wrote it")
        }
        (_, None) => PutBack::Remove,
        (_, Some(backup)) => PutBack::Restore(backup),
    }
}
