//! The DNS files of a namespace, `/etc/netns/NAME/resolv.conf` and `nsswitch.conf`, written with
//! their backups on record first.

use log::info;

use super::{ExecError, Executor, Undo};
use crate::agent::record::{DnsFile, FileRecord, Record};
use crate::agent::sys::{Durability, Sys};
use crate::plan::IsolationPlan;

impl<S: Sys> Executor<S> {
    /// Writes resolv.conf and nsswitch.conf: a new file atomically, an existing one in place so
    /// that apps that see it through `ip netns exec`'s bind mount get the new content. A rename
    /// would give the name a new inode, and those apps would keep reading the old one; so the
    /// rewrite is not atomic, and the record says what it is writing until it is done.
    pub(super) fn write_dns_files(
        &mut self,
        record: &mut Record,
        plan: &IsolationPlan,
        undo: &mut Vec<Undo>,
    ) -> Result<(), ExecError> {
        if self.sys.dir_create(&self.paths.etc_netns, 0o755)? {
            info!("created {}", self.paths.etc_netns.display());
        }
        let dir = self.paths.etc_netns.join(record.netns.as_str());
        // On record before the mkdir, with the files below: a power loss between the two then
        // leaves nothing that the record does not name.
        let create_dir = !self.sys.dir_exists(&dir)?;
        record.etc_dir_created |= create_dir;
        let mut old = Vec::new();
        for file in DnsFile::ALL {
            let content = self.sys.file_read(&dir.join(file.name()))?;
            let written = Some(file.content(plan).as_bytes().to_vec());
            match record.file_mut(file) {
                None => record.files.push(FileRecord {
                    file,
                    backup: content.clone(),
                    written,
                    rewriting: None,
                }),
                Some(f) => {
                    // Changed since the agent wrote it: what is there now is someone's, and
                    // what a release puts back.
                    if f.written.is_some() && !f.holds_ours(content.as_deref()) {
                        info!(
                            "{} changed since nm-vpn-netns wrote it; keeping the new content as \
                             the one to put back",
                            dir.join(file.name()).display()
                        );
                        f.backup = content.clone();
                    }
                    f.written = written;
                }
            }
            let recorded = record.file_mut(file);
            if let (Some(_), Some(f)) = (&content, recorded) {
                f.rewriting = Some(file.content(plan).into());
            }
            old.push((file, content));
        }
        // The backups, and what is about to be written, reach the disk before the files
        // change, or a crash would lose them.
        if self.records.get(&record.netns) != Some(record) {
            self.save(record)?;
        }
        if create_dir {
            if self.sys.dir_create(&dir, 0o755)? {
                info!("created {}", dir.display());
                undo.push(Undo::DirRemove(dir.clone()));
            } else {
                // Someone made it since the check: theirs. The caller's next save says so.
                record.etc_dir_created = false;
            }
        }
        for (file, content) in old {
            let path = dir.join(file.name());
            let new = file.content(plan).as_bytes();
            match content {
                Some(content) => {
                    self.sys.file_rewrite(&path, new)?;
                    info!("rewrote {} in place", path.display());
                    undo.push(Undo::FileRestore(file, path, content));
                }
                None => {
                    // Not synced: the record already names it and what it holds, and a power
                    // loss leaves the name absent, or holding a prefix of that, the empty file
                    // included, which a release still takes for the agent's
                    // (`FileRecord::holds_ours`). A sync here cost a journal commit per file.
                    self.sys
                        .file_create(&path, new, 0o644, Durability::Volatile)?;
                    info!("wrote {}", path.display());
                    undo.push(Undo::FileRemove(path));
                }
            }
        }
        // Done: the file holds all of it. The caller's next save records that.
        for f in &mut record.files {
            f.rewriting = None;
        }
        Ok(())
    }
}
